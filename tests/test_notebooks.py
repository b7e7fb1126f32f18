"""The analyst notebooks (notebooks/*.ipynb) run top to bottom in quick mode without an error.

Each notebook is executed with nbclient in its own kernel with ``MEDROBUST_NB_QUICK=1``
(shrunk sizes) and ``MEDROBUST_NB_OUT`` pointing into the test's temporary folder, so
parallel workers (``pytest -n 2``) never share an output folder. The committed notebooks
must have their outputs cleared.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
#: Text each notebook must print or display (proof that its key outputs were produced).
EXPECTED = {
    "01_quickstart_audit": ["bare/whitebox/pgd@8/255", "robust_accuracy", "all gates passed:"],
    "02_siamese_dae_ablation": ["siamese-dae", "no-siam", "no-cls", "plain-dae", "adaptive 8/255"],
    "03_denoiser_similitude": ["mean_deep_pair_similitude", "median-then-dncnn", "results.json"],
    "04_compare_runs": ["n_became_wrong", "bare/whitebox/pgd@2/255", "cells where v2 is worse"],
}
#: Figures (image/png outputs) each notebook must show at least.
MIN_FIGURES = {
    "01_quickstart_audit": 4,
    "02_siamese_dae_ablation": 2,
    "03_denoiser_similitude": 3,
    "04_compare_runs": 1,
}


def _execute(nb: nbformat.NotebookNode, cwd: Path, timeout: int = 300) -> None:
    NotebookClient(
        nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(cwd)}}
    ).execute()


def _text(nb: nbformat.NotebookNode) -> tuple[str, int]:
    parts, figures = [], 0
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if out.output_type == "stream":
                parts.append(out.text)
            elif "data" in out:
                parts.append(out.data.get("text/plain", ""))
                parts.append(out.data.get("text/html", ""))
                figures += "image/png" in out.data
    return "\n".join(parts), figures


def test_notebooks_found():
    assert [p.stem for p in NOTEBOOKS] == sorted(EXPECTED)


def test_python3_kernel_is_this_interpreter(tmp_path):
    """The "python3" kernelspec starts the interpreter running the tests (the .venv one)."""
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("import sys, medrobust\nprint(sys.executable)")]
    _execute(nb, tmp_path, timeout=120)
    (out,) = nb.cells[0].outputs
    assert Path(out.text.strip()).resolve() == Path(sys.executable).resolve()


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_in_quick_mode(path, tmp_path, monkeypatch):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata.kernelspec.name == "python3"
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code), (
        "commit notebooks with outputs cleared"
    )
    assert 'os.environ.get("MEDROBUST_NB_QUICK", "0") == "1"' in code[0].source

    out = tmp_path / "out"
    monkeypatch.setenv("MEDROBUST_NB_QUICK", "1")
    monkeypatch.setenv("MEDROBUST_NB_OUT", str(out))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the kernel inherits it; 2 workers share 2 cores
    _execute(nb, path.parent)  # raises CellExecutionError on the first failing cell

    text, figures = _text(nb)
    assert "QUICK=True" in text and str(out) in text
    for expected in EXPECTED[path.stem]:
        assert expected in text, f"{path.name}: {expected!r} not in its outputs"
    assert figures >= MIN_FIGURES[path.stem]
    # everything went under MEDROBUST_NB_OUT/<notebook>/quick, including at least one results.json
    assert [p.name for p in out.iterdir()] == [path.stem]
    assert [p.name for p in (out / path.stem).iterdir()] == ["quick"]
    assert list((out / path.stem / "quick").rglob("results.json"))
