"""The defense experiment (benchmarks/defenses.py) runs in its --quick mode, and the adaptive
validation of Siamese-DAE training can be thinned out (``adaptive_val_every``)."""

from __future__ import annotations

import json

import pytest
import torch


def test_quick_experiment_runs_and_writes_its_table(tmp_path, load_benchmark):
    bench = load_benchmark("defenses")
    threads = torch.get_num_threads()
    out = tmp_path / "out"
    results = bench.main(["--quick", "--out", str(out), "--work", str(tmp_path / "work")])
    assert torch.get_num_threads() == threads  # the benchmark's thread setting is undone
    text = (out / "results.md").read_text(encoding="utf-8")
    stored = json.loads((out / "results.json").read_text(encoding="utf-8"))
    table = stored["modalities"]["chest_xray"]["table"]
    assert list(table) == bench.DEFAULT_ROWS == list(results["modalities"]["chest_xray"]["table"])
    for key in bench.DEFAULT_ROWS:
        assert f"| {bench.ROWS[key]}" in text
        assert 0.0 <= table[key]["worst"]["mean"] <= table[key]["clean"]["mean"] <= 1.0
    assert len(table["smoothing"]["certified"]) == 2 and "gray" not in table["pgd-at"]
    assert {(t["a"], t["b"]) for t in stored["modalities"]["chest_xray"]["mcnemar"]} == set(bench.PAIRS)
    assert "McNemar" in text and "python benchmarks/defenses.py" in text


def test_square_budget_scales_with_the_image_size(load_benchmark):
    bench = load_benchmark("defenses")
    assert bench.square_queries(5000, torch.zeros(1, 1, 32, 32)) == 5000  # below CIFAR-10's 3072 values
    assert bench.square_queries(5000, torch.zeros(1, 1, 64, 64)) == round(5000 * 4096 / 3072)
    assert bench.square_queries(5000, torch.zeros(1, 3, 224, 224)) == round(5000 * 3 * 224 * 224 / 3072)


def test_mcnemar_is_the_exact_binomial_test_of_the_discordant_pairs(load_benchmark):
    from scipy.stats import binomtest

    bench = load_benchmark("defenses")
    a = [True] * 18 + [False] * 4 + [True] * 10
    b = [False] * 18 + [True] * 4 + [True] * 10
    res = bench.mcnemar(a, b)
    assert (res["a_only"], res["b_only"], res["n"]) == (18, 4, 32)
    assert res["p_value"] == pytest.approx(binomtest(18, 22, 0.5).pvalue) and res["p_value"] < 0.01
    assert bench.mcnemar([True, False], [True, False])["p_value"] == 1.0


@pytest.mark.parametrize(("every", "expected"), [(0, [False, False, True]), (2, [False, True, True])])
def test_adaptive_validation_every_n_epochs_and_after_the_last(tmp_path, every, expected):
    from medrobust.defenses.training import fit_denoiser
    from medrobust.models import ModelCard, build_classifier

    torch.manual_seed(0)
    card = ModelCard(in_channels=1, class_names=["a", "b"], spatial_size=(16, 16), modality="chest_xray")
    clf = build_classifier("small_cnn", card, width=4, depth=2).eval()
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(24, 1, 16, 16, generator=g), torch.arange(24) % 2
    cfg = {
        "classifier": "in-memory",
        "kind": "siamese-dae",
        "adversary": "adaptive",
        "adaptive_val_every": every,
        "arch_params": {"width": 4, "depth": 1},
        "epochs": 3,
        "batch_size": 8,
        "out": str(tmp_path / "d"),
        "progress": False,
        "device": "cpu",
    }
    res = fit_denoiser(cfg, clf, x[:16], y[:16], x[16:], y[16:])
    assert ["val_adaptive_acc" in row for row in res.metrics] == expected
    assert json.loads((res.out / "summary.json").read_text())["final"]["val_adaptive_acc"] is not None
