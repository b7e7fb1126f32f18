"""Package logger. Warnings go through ``logging``/``warnings``, never ``print``."""

from __future__ import annotations

import logging

LOGGER_NAME = "medrobust"


def get_logger(name: str | None = None) -> logging.Logger:
    """Return the package logger or a child of it."""
    return logging.getLogger(LOGGER_NAME if not name else f"{LOGGER_NAME}.{name}")
