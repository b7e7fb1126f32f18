"""Run every hostile case through the CLI entry point and check the bad-input guarantees."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ._case import CASES

for _module in sorted(Path(__file__).parent.glob("cases_*.py")):
    importlib.import_module(f"{__package__}.{_module.stem}")

PEAK_RSS_LIMIT = 1.5 * 1024**3

_BOMB_RUNNER = r"""
import json, resource, sys, io, contextlib
from medrobust.cli.main import main
err = io.StringIO()
out = io.StringIO()
with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
    code = main(json.loads(sys.argv[1]))
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
sys.__stdout__.write(json.dumps({"code": code, "out": out.getvalue(), "err": err.getvalue(), "peak": peak}))
"""


def _snapshot(root: Path) -> set[Path]:
    return {p for p in root.rglob("*")}


def _run_inprocess(argv, capsys):
    from medrobust.cli.main import main

    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _run_bomb(argv, cwd: Path):
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "1")
    proc = subprocess.run(
        [sys.executable, "-c", _BOMB_RUNNER, json.dumps(list(argv))],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, f"runner died (rc={proc.returncode}): {proc.stderr[-2000:]}"
    result = json.loads(proc.stdout)
    return result["code"], result["out"], result["err"], result["peak"]


@pytest.mark.parametrize("name", sorted(CASES))
def test_hostile_case(name, tmp_path, capsys, monkeypatch):
    case_dir = tmp_path / "case"
    case_dir.mkdir()
    monkeypatch.chdir(case_dir)
    call = CASES[name](case_dir)
    before = _snapshot(tmp_path)
    if call.bomb:
        code, out, err, peak = _run_bomb(call.argv, case_dir)
        assert peak < PEAK_RSS_LIMIT, f"{name}: peak RSS {peak / 2**20:.0f} MiB"
    else:
        code, out, err = _run_inprocess(call.argv, capsys)
    text = out + err
    assert "Traceback" not in text, f"{name}: traceback printed:\n{text}"
    assert code == call.exit_code, f"{name}: exit {code}, expected {call.exit_code}\n{text}"
    error_lines = [line for line in text.splitlines() if line.startswith("error:")]
    if call.exit_code == 0:
        assert error_lines == [], f"{name}: unexpected error lines {error_lines}"
    else:
        assert len(error_lines) == 1, f"{name}: expected exactly one error line, got:\n{text}"
        assert call.names, f"{name}: a refusing case must say what the error names"
        assert any(n in error_lines[0] for n in call.names), (
            f"{name}: the error line names none of {call.names}: {error_lines[0]}"
        )
    allowed = {case_dir / "out", *(case_dir / w for w in call.writes)}
    created = _snapshot(tmp_path) - before
    stray = [p for p in created if not any(p == a or a in p.parents for a in allowed)]
    assert stray == [], f"{name}: files created outside out/: {sorted(map(str, stray))[:5]}"


def test_corpus_is_large_enough():
    assert len(CASES) >= 60, f"only {len(CASES)} hostile cases"
