"""The hostile-input corpus: each case builds its files in a folder and names a CLI call.

A case module (``cases_*.py`` beside this file) registers builders with :func:`hostile`.
``test_corpus.py`` runs every registered case through ``medrobust.cli.main.main`` and checks
the guarantees the README states for bad input: exit code 2 (or 0 where the file is listed
as unreadable), exactly one ``error:`` line that names the file or parameter, no traceback,
nothing written outside the case folder's ``out`` (or the paths the case allows), and, for
cases marked ``bomb``, peak memory under 1.5 GB measured in a subprocess.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Call:
    """What a case asks of the CLI.

    Attributes:
        argv: arguments after ``medrobust`` (strings; paths already inside the case folder).
        names: substrings of which at least one must appear in the ``error:`` line
            (the file name, the parameter name, ...). Empty only when ``exit_code`` is 0.
        exit_code: 2 for refused input; 0 where the file is correctly listed as unreadable.
        bomb: run in a subprocess and check peak RSS (``resource.getrusage``) < 1.5 GB.
        writes: extra paths (relative to the case folder) the call may create besides ``out/``.
    """

    argv: list[str]
    names: tuple[str, ...] = ()
    exit_code: int = 2
    bomb: bool = False
    writes: tuple[str, ...] = field(default_factory=tuple)


Builder = Callable[[Path], Call]
CASES: dict[str, Builder] = {}


def hostile(name: str) -> Callable[[Builder], Builder]:
    """Register a case builder under a unique ``name`` (``area-what``, e.g. ``csv-zero-byte``)."""

    def deco(fn: Builder) -> Builder:
        if name in CASES:
            raise ValueError(f"hostile case {name!r} registered twice")
        CASES[name] = fn
        return fn

    return deco
