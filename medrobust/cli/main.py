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
    add_completion=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"medrobust {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Show version."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log at INFO level."),
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
        ("denoisers", "denoisers"),
        ("demo", None),
    ):
        try:
            module = importlib.import_module(f"medrobust.cli.{module_name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"medrobust.cli.{module_name}":
                raise
            continue
        if group is None:
            module.register(app)
        else:
            app.add_typer(module.app, name=group)


_register_groups()


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; medrobust's own errors print as one line (no traceback) and exit 2."""
    from medrobust.errors import MedrobustError

    try:
        rv = app(args=argv, standalone_mode=False)
    except MedrobustError as exc:
        typer.echo(f"error: {exc}", err=True)
        return 2
    except typer.Exit as exc:
        return int(exc.exit_code or 0)
    except typer.Abort:
        typer.echo("aborted", err=True)
        return 1
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        return 130
    except Exception as exc:  # click usage errors
        try:
            import click
        except ModuleNotFoundError:  # typer >= 0.20 vendors click
            from typer import _click as click  # type: ignore[no-redef]

        if isinstance(exc, click.exceptions.ClickException):
            exc.show()
            return exc.exit_code
        if isinstance(exc, click.exceptions.Exit):
            return exc.exit_code
        raise
    return rv if isinstance(rv, int) else 0


if __name__ == "__main__":
    sys.exit(main())
