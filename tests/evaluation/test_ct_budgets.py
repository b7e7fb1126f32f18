"""The audit's budgets in the card's units: "2/255" on a CT card (bounds [-1024, 3071]) is 32.1 HU."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

import medrobust

CT = (-1024.0, 3071.0)
SIZE = 16
pytestmark = [
    pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning"),
    pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning"),
]


class MeanHU(nn.Module):
    """Brighter than 50 HU on average → lesion: a margin of ~150 HU, more than 8/255 of the range."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = (x.mean(dim=(1, 2, 3)) - 50.0) / 100.0
        return torch.stack([-f, f], dim=1)


@pytest.fixture(scope="module")
def ct_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("ct")
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", 8), ("val", 4), ("test", 16)):
        labels = np.arange(n) % 2
        base = np.where(labels == 1, 200.0, -100.0)[:, None, None]
        arrays[f"{split}_images"] = (base + 20.0 * rng.standard_normal((n, SIZE, SIZE))).astype(np.float32)
        arrays[f"{split}_labels"] = labels.reshape(-1, 1).astype(np.int64)
    np.savez(root / "ct.npz", **arrays)
    torch.jit.script(MeanHU()).save(str(root / "model.ts"))
    card = {
        "in_channels": 1,
        "class_names": ["0", "1"],
        "spatial_size": [SIZE, SIZE],
        "modality": "ct",
        "bounds": list(CT),
    }
    (root / "card.json").write_text(json.dumps(card))
    config = {
        "name": "CT budgets",
        "data": {"source": str(root / "ct.npz"), "split": "test"},
        "model": {"path": str(root / "model.ts"), "card": str(root / "card.json")},
        "attacks": ["fgsm", {"name": "pgd", "params": {"steps": 3}}],
        "budgets": {"linf": ["2/255", "8/255"]},
        "n_samples": 16,
        "batch_size": 8,
        "seed": 0,
        "device": "cpu",
        "save_examples": 2,
        "gates": ["fgsm@2/255:target=bare>=0.9"],
    }
    res = medrobust.audit(config, root / "audit", progress=False)
    return res.raw, root / "audit"


def test_k_over_255_is_k_over_255_of_the_hu_range(ct_run):
    results, _ = ct_run
    two = 2 / 255 * 4095  # 32.1 HU
    assert results["budgets"]["linf"] == pytest.approx([two, 4 * two])
    cells = {c["key"]: c for c in results["cells"]}
    fgsm = cells["bare/whitebox/fgsm@2/255"]
    assert fgsm["eps"] == pytest.approx(two) and fgsm["eps_label"] == "2/255"
    attacked = np.asarray(fgsm["samples"]["attacked"])
    linf = np.asarray(fgsm["samples"]["linf"])[attacked]
    assert attacked.sum() >= 12 and linf == pytest.approx(np.full(len(linf), two), rel=1e-4)
    pgd = cells["bare/whitebox/pgd@8/255"]
    norms = np.asarray(pgd["samples"]["linf"])[np.asarray(pgd["samples"]["attacked"])]
    assert norms.max() == pytest.approx(4 * two, rel=1e-3) and norms.max() <= 4 * two * (1 + 1e-5)
    assert pgd["params"]["eps"] == pytest.approx(4 * two)  # what the attack ran with, in HU


def test_gate_on_the_ct_cell_resolves_and_the_report_shows_both_units(ct_run):
    results, run_dir = ct_run
    (gate,) = results["gates"]
    assert gate["checked"] == ["bare/whitebox/fgsm@2/255"] and gate["passed"]
    assert results["config"]["budgets"]["linf"] == ["2/255", "8/255"]  # kept as written
    grey = [b["grey"] for b in results["verdict"]["threat_model"]["budgets"]]
    assert grey[0] == "32.12 HU per pixel = 2 of 255 grey levels of the range [-1024, 3071] HU"
    assert "ε = 8/255 (128.5 HU per pixel" in (run_dir / "report.md").read_text(encoding="utf-8")


def test_a_budget_of_a_few_hu_is_audited_not_refused(ct_run, tmp_path):
    """Plain-number budgets are image units: 2 HU on a CT card is a small budget, not an old fraction."""
    _, audit = ct_run
    root = audit.parent
    config = {
        "data": {"source": str(root / "ct.npz"), "split": "test"},
        "model": {"path": str(root / "model.ts"), "card": str(root / "card.json")},
        "attacks": ["fgsm"],
        "budgets": {"linf": [2.0]},
        "n_samples": 8,
        "batch_size": 8,
        "device": "cpu",
    }
    results = medrobust.audit(config, tmp_path / "audit", progress=False).raw
    (cell,) = results["cells"]
    norms = np.asarray(cell["samples"]["linf"])[np.asarray(cell["samples"]["attacked"])]
    assert cell["eps"] == pytest.approx(2.0) and norms == pytest.approx(np.full(len(norms), 2.0), rel=1e-4)
    # in Python, a bare 8/255 on CT bounds still reads like the old fraction meaning and is refused
    from medrobust.attacks import create_attack
    from medrobust.errors import ConfigError

    with pytest.raises(ConfigError, match="Write '8/255'"):
        create_attack("fgsm", MeanHU(), bounds=CT, eps=8 / 255)
