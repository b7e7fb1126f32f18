"""The CLI's error boundary: every error is one ``error:`` line and exit 2; 1 is kept for gates."""

from __future__ import annotations

import errno
import subprocess
import sys

import pytest
import typer

from medrobust.cli import main as cli_main


@pytest.fixture
def boom(monkeypatch):
    """Add a hidden command that raises the exception a test hands it."""
    box: dict[str, BaseException] = {}

    @cli_main.app.command("boom", hidden=True)
    def _boom() -> None:
        raise box["exc"]

    yield box
    cli_main.app.registered_commands[:] = [c for c in cli_main.app.registered_commands if c.name != "boom"]


def _errors(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("error:")]


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (RuntimeError("something\nbroke"), "unexpected RuntimeError: something broke"),
        (
            OSError(errno.ENOSPC, "No space left on device", "/runs/a/results.json"),
            "/runs/a/results.json: No space",
        ),
        (PermissionError(errno.EACCES, "Permission denied", "/ro/out"), "/ro/out: Permission denied"),
        (MemoryError(), "out of memory"),
        (KeyError("train_images"), "unexpected KeyError"),
    ],
)
def test_unexpected_errors_are_one_line_exit_2(boom, capsys, exc, expected):
    boom["exc"] = exc
    assert cli_main.main(["boom"]) == 2
    captured = capsys.readouterr()
    lines = _errors(captured.out + captured.err)
    assert len(lines) == 1 and expected in lines[0], lines
    assert "Traceback" not in captured.err


def test_debug_shows_the_traceback(boom, capsys):
    boom["exc"] = ValueError("kaput")
    assert cli_main.main(["boom", "--debug"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and "ValueError: kaput" in err
    assert len(_errors(err)) == 1


def test_exit_1_only_from_an_explicit_exit(boom, capsys):
    boom["exc"] = typer.Exit(1)  # what a failed gate raises
    assert cli_main.main(["boom"]) == 1
    boom["exc"] = SystemExit(1)
    assert cli_main.main(["boom"]) == 1
    boom["exc"] = SystemExit("a message")  # non-int codes are errors, not gate failures
    assert cli_main.main(["boom"]) == 2


def test_usage_errors_are_one_line_exit_2(capsys):
    assert cli_main.main(["audit", "--no-such-flag"]) == 2
    lines = _errors(capsys.readouterr().err)
    assert len(lines) == 1 and "--no-such-flag" in lines[0] and "medrobust audit --help" in lines[0]


def test_console_script_exit_code_in_a_real_process(tmp_path):
    bad = tmp_path / "cfg.yaml"
    bad.mkdir()
    proc = subprocess.run(
        [sys.executable, "-m", "medrobust", "audit", "--config", str(bad), "--out", str(tmp_path / "o")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert _errors(proc.stderr) == [line for line in proc.stderr.splitlines() if line.strip()][-1:]
    assert "cfg.yaml" in proc.stderr and "Traceback" not in proc.stderr


def test_shell_completion_script(capsys):
    assert cli_main.main(["--show-completion", "bash"]) == 0
    assert "_medrobust_completion" in capsys.readouterr().out
