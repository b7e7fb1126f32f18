"""Options several commands share, spelled one way: the sample count and the progress switch.

Only typer is imported here (the CLI's modules stay light).

* **Sample counts** are ``--samples`` with the short alias ``-n``. The old ``--n`` is a prefix of
  torchrun's ``--nnodes``/``--nproc-per-node``/``--node-rank``/..., so
  ``torchrun ... -m medrobust audit --n 16`` dies inside torchrun's own argument parser ("ambiguous
  option") before medrobust runs; ``-n`` and ``--samples`` pass through torchrun untouched (a test
  parses them with torchrun's parser). ``--n`` is gone.
* **Progress bars** are ``--progress/--no-progress``, on by default.
* **Defaults** are shown in ``--help`` for every option that has one; an option whose value
  comes from a config file says so (:func:`from_config`: "the config's, else 32").
"""

from __future__ import annotations

from typing import Any

import typer

#: Option names of the sample count (long form first).
SAMPLES_FLAGS = ("--samples", "-n")
#: Option names of the progress switch.
PROGRESS_FLAGS = "--progress/--no-progress"


def from_config(fallback: str | None = None) -> str:
    """The ``--help`` default of an option whose value otherwise comes from a config file.

    ``from_config("32")`` renders as ``[default: (the config's, else 32)]``.
    """
    return "the config's" + ("" if fallback is None else f", else {fallback}")


def samples_option(help: str, default: int | None = None, show_default: bool | str = True) -> Any:
    """A ``--samples`` / ``-n`` option (the sample count, safe under torchrun)."""
    return typer.Option(default, *SAMPLES_FLAGS, help=help, show_default=show_default)


def progress_option(help: str = "Show a progress bar.") -> Any:
    """The ``--progress/--no-progress`` switch, on by default."""
    return typer.Option(True, PROGRESS_FLAGS, help=help, show_default=True)
