"""Exception types. Every message says what was expected and what came in."""

from __future__ import annotations


class MedrobustError(Exception):
    """Base class for errors medrobust raises on purpose (the CLI prints them without a traceback)."""


class ConfigError(MedrobustError, ValueError):
    """A configuration value or parameter is invalid."""


class DataError(MedrobustError, ValueError):
    """A data file or source could not be used. The message names the file."""

    def __init__(self, path: object, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class CheckpointError(MedrobustError, ValueError):
    """A model or denoiser checkpoint is missing, malformed or unsafe to load."""
