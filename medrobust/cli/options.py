"""Options several commands share, spelled one way: the sample count and the progress switch.

Only typer is imported here (the CLI's modules stay light).

* **Sample counts** are ``--samples`` with the short alias ``-n``. The old ``--n`` is a prefix of
  torchrun's ``--nnodes``/``--nproc-per-node``/``--node-rank``/..., so
  ``torchrun ... -m medrobust audit --n 16`` dies inside torchrun's own argument parser ("ambiguous
  option") before medrobust runs; ``-n`` and ``--samples`` pass through torchrun untouched (a test
  parses them with torchrun's parser). ``--n`` is still read, hidden and with a deprecation
  warning, where a command is run without torchrun.
* **Progress bars** are ``--progress/--no-progress``, on by default.
* **Defaults** are shown in ``--help`` for every option that has one; an option whose value
  comes from a config file says so (:func:`from_config`: "the config's, else 32").
"""

from __future__ import annotations

from typing import Any

import typer

#: Option names of the sample count (long form first).
SAMPLES_FLAGS = ("--samples", "-n")
#: The old spelling, read (hidden) with a warning; torchrun cannot pass it on.
DEPRECATED_SAMPLES_FLAG = "--n"
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


def deprecated_samples_option() -> Any:
    """The hidden ``--n`` option, kept for existing scripts (see :func:`resolve_samples`)."""
    return typer.Option(None, DEPRECATED_SAMPLES_FLAG, hidden=True, help="Deprecated: use --samples (-n).")


def resolve_samples(samples: int | None, deprecated: int | None, command: str) -> int | None:
    """The sample count given as ``--samples``/``-n``, or as the deprecated ``--n`` (with a warning).

    Raises:
        ConfigError: when both spellings are given.
    """
    if deprecated is None:
        return samples
    from medrobust.errors import ConfigError
    from medrobust.utils.logging import get_logger

    if samples is not None:
        raise ConfigError(
            f"The '--samples' option of {command} is given twice: as --samples/-n {samples} and as the "
            f"deprecated --n {deprecated}. Give only --samples (or -n)."
        )
    get_logger("cli").warning(
        "'%s --n' is deprecated and will be removed: use --samples (or -n). torchrun reads --n as an "
        "ambiguous prefix of its own options (--nnodes, --nproc-per-node, ...) and stops.",
        command,
    )
    return deprecated


def progress_option(help: str = "Show a progress bar.") -> Any:
    """The ``--progress/--no-progress`` switch, on by default."""
    return typer.Option(True, PROGRESS_FLAGS, help=help, show_default=True)
