"""The ``medrobust`` command. Each command group lives in its own module of this package."""

from __future__ import annotations

import logging
import sys

import typer

from medrobust import __version__

app = typer.Typer(
    name="medrobust",
    help="Adversarial robustness audits and denoising defenses for medical imaging models.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=True,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"medrobust {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Show version."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log at INFO level."),
    debug: bool = typer.Option(False, "--debug", help="Show the traceback of an error."),
) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )


def _register_groups() -> None:
    # Each group module is imported here (light: typer only) and owns its commands.
    # A module exposes either ``app`` (a sub-command group) or ``register(app)``.
    import importlib

    for module_name, group in (
        ("data", "data"),
        ("train", "train"),
        ("audit", None),
        ("certify", None),
        ("denoisers", "denoisers"),
        ("card", "card"),
        ("demo", None),
    ):
        module = importlib.import_module(f"medrobust.cli.{module_name}")
        if group is None:
            module.register(app)
        else:
            app.add_typer(module.app, name=group)


_register_groups()


def _one_line(text: str) -> str:
    return " ".join(str(text).split()) or "(no message)"


def _describe(exc: BaseException) -> str:
    """One line for an exception medrobust did not raise on purpose (names the file when known)."""
    if isinstance(exc, OSError) and (exc.filename or exc.strerror):
        where = f"{exc.filename}: " if exc.filename else ""
        return _one_line(f"{where}{exc.strerror or exc}")
    if isinstance(exc, MemoryError):
        return "out of memory: the input asks for more memory than this machine has."
    if isinstance(exc, RecursionError):
        return "the input is nested too deeply to read (recursion limit reached)."
    return _one_line(f"unexpected {type(exc).__name__}: {exc}")


def main(argv: list[str] | None = None) -> int:
    """Run the CLI and return its exit code.

    Exit codes: 0 success; 1 an audit gate failed (and nothing else); 2 anything else that
    stopped the command: bad input, usage errors, unexpected errors. Every error is printed as
    one ``error:`` line, without a traceback unless ``--debug`` is given (or ``MEDROBUST_DEBUG=1``).
    """
    import os
    import traceback

    from medrobust.errors import MedrobustError

    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args or os.environ.get("MEDROBUST_DEBUG", "") not in ("", "0")
    args = [a for a in args if a != "--debug"]  # accepted anywhere on the line
    try:
        rv = app(args=args, prog_name="medrobust", standalone_mode=False)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        return 130
    except SystemExit as exc:  # typer.Exit / click's Exit carry their own code
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    except BaseException as exc:
        code = getattr(exc, "exit_code", None)
        if type(exc).__name__ == "Exit" and isinstance(code, int):  # click.exceptions.Exit
            return code
        if debug:
            traceback.print_exc()
        if isinstance(exc, MedrobustError):
            message = _one_line(str(exc))
        elif hasattr(exc, "format_message") and isinstance(code, int):  # click usage errors
            message = _one_line(exc.format_message())
            if getattr(exc, "ctx", None) is not None:
                message += f" (see '{exc.ctx.command_path} --help')"
        elif type(exc).__name__ == "Abort":
            message = "aborted"
        else:
            message = _describe(exc)
            if not debug:
                message += " (run with --debug for the traceback)"
        typer.echo(f"error: {message}", err=True)
        return 2
    if isinstance(rv, int) and rv in (0, 1):
        return rv
    return 0 if rv is None or not isinstance(rv, int) else 2


if __name__ == "__main__":
    sys.exit(main())
