"""The notebook API: DataFrames against the raw JSON, plotting helpers, compare_runs on two models."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
from matplotlib.figure import Figure

from medrobust.errors import ConfigError
from medrobust.evaluation.api import (
    AuditResults,
    audit,
    compare_runs,
    compare_samples,
    load_results,
    plot_comparison,
)
from medrobust.reporting.tables import CELL_COLUMNS, METRIC_COLUMNS, SAMPLE_COLUMNS

N = 12
GATES = ["pgd@2/255:target=bare>=0", "pgd@8/255:target=bare>1"]  # passes / fails by construction


def _config(data, model, **over):
    cfg = {
        "name": "api audit",
        "data": {"source": str(data), "split": "test", "preset": "chest_xray", "size": 32},
        "model": {"path": str(model)},
        "defenses": [{"name": "med", "denoiser": "median", "params": {"kernel_size": 3}}],
        "attacks": [
            "fgsm",
            {"name": "pgd", "params": {"steps": 3}},
            {"name": "deepfool", "params": {"steps": 5}},
        ],
        "budgets": {"linf": ["2/255", "8/255"], "l2": [1.0]},
        "threats": ["graybox"],
        "n_samples": N,
        "batch_size": N,
        "seed": 1,
        "device": "cpu",
        "save_examples": 4,
        "gates": GATES,
    }
    cfg.update(over)
    return cfg


@pytest.fixture(scope="module")
def weak_model(tmp_path_factory, easy_npz, easy_card):
    """A second classifier: same architecture, one epoch on the raw images only (other predictions)."""
    import torch
    import torch.nn.functional as F

    from medrobust.data import load_arrays, make_dataset, open_source
    from medrobust.models import build_classifier, save_checkpoint

    source = open_source(str(easy_npz))
    x, y = load_arrays(make_dataset(source, split="train", preset="chest_xray", spatial_size=(32, 32)))
    card = easy_card(source)
    torch.manual_seed(1)
    model = build_classifier("small_cnn", card, width=6, depth=2)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for i in range(0, 64, 32):
        loss = F.cross_entropy(model(x[i : i + 32]), y[i : i + 32])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return save_checkpoint(model.eval(), tmp_path_factory.mktemp("weak") / "clf")


@pytest.fixture(scope="module")
def runs(tmp_path_factory, easy_npz, tiny_model, weak_model):
    """Two audits of the same images and cells: the trained model (a) and the weak one (b)."""
    root = tmp_path_factory.mktemp("api")
    a = audit(_config(easy_npz, tiny_model), root / "a", progress=False)
    b = audit(_config(easy_npz, weak_model), root / "b", progress=False)
    return a, b


def _ident(c):
    return (c["target"], c["threat"], c["attack"], c["eps_label"])


def test_audit_returns_what_load_results_reads(runs):
    a, _ = runs
    assert isinstance(a, AuditResults) and (a.run_dir / "results.json").is_file()
    assert load_results(a.run_dir).raw == a.raw
    assert a.targets == ["bare", "med"]
    # bare/whitebox and med/graybox: fgsm x 2, pgd x 2, deepfool x (1 budget + inf)
    assert len(a.raw["cells"]) == 12


def test_cells_frame_matches_json(runs):
    a, _ = runs
    df = a.cells
    assert list(df.columns) == [*CELL_COLUMNS, *METRIC_COLUMNS]
    assert len(df) == len(a.raw["cells"])
    for row, c in zip(df.to_dict("records"), a.raw["cells"], strict=True):
        for k in ("key", "target", "threat", "attack", "norm", "eps_label", "seed"):
            assert row[k] == c[k]
        if c["eps"] is None:
            assert row["eps"] is None or math.isnan(row["eps"])
        else:
            assert row["eps"] == pytest.approx(c["eps"])
        for k in METRIC_COLUMNS:
            want = c["metrics"].get(k)
            if want is None:
                assert row[k] is None or (isinstance(row[k], float) and math.isnan(row[k]))
            else:
                assert row[k] == pytest.approx(want), (c["key"], k)


def test_samples_frame_matches_json(runs):
    a, _ = runs
    df = a.samples
    assert len(df) == sum(len(c["samples"]["position"]) for c in a.raw["cells"]) == 12 * N
    assert {"key", "target", "threat", "attack", "eps", "eps_label"} | set(SAMPLE_COLUMNS) <= set(df.columns)
    for c in a.raw["cells"]:
        part = df[df["key"] == c["key"]]
        for k in ("index", "label", "clean_pred", "adv_pred", "success", "attacked"):
            assert part[k].tolist() == c["samples"][k], (c["key"], k)


def test_flipped_are_the_samples_the_attack_fooled(runs):
    a, _ = runs
    names = a.raw["data"]["class_names"]
    want = []
    for c in a.raw["cells"]:
        s = c["samples"]
        for i in range(len(s["index"])):
            if s["clean_pred"][i] == s["label"][i] and s["adv_pred"][i] != s["label"][i]:
                want.append((c["key"], s["index"][i]))
    got = a.flipped()
    assert list(zip(got["key"], got["index"], strict=True)) == want
    assert want, "the attacks flipped no prediction: the test would prove nothing"
    assert (got["label_name"] == [names[v] for v in got["label"]]).all()
    assert (got["adv_pred"] != got["label"]).all() and (got["clean_pred"] == got["label"]).all()
    pgd = a.flipped(target="bare", attack="pgd", eps_label="8/255")
    assert set(pgd["key"]) <= {"bare/whitebox/pgd@8/255"}
    assert len(pgd) == sum(k == "bare/whitebox/pgd@8/255" for k, _ in want)
    with pytest.raises(ConfigError, match="Did you mean 'pgd'"):
        a.flipped(attack="pdg")


def test_gates_frame(runs):
    a, _ = runs
    g = a.gates
    assert g["gate"].tolist() == GATES and g["passed"].tolist() == [True, False]
    assert not a.gates_passed
    assert g["n_checked"].tolist() == [1, 1]
    assert g["failures"].tolist() == [[], ["bare/whitebox/pgd@8/255"]]


def _line_data(ax):
    return [(tuple(line.get_xdata()), tuple(line.get_ydata())) for line in ax.get_lines()]


def test_plot_robust_accuracy_lines(runs):
    a, _ = runs
    fig = a.plot_robust_accuracy("linf")
    assert isinstance(fig, Figure)
    axes = fig.get_axes()
    assert [ax.get_title() for ax in axes] == ["bare · whitebox", "med · graybox"]
    by = {_ident(c): c["metrics"] for c in a.raw["cells"]}
    for ax, (target, threat) in zip(axes, [("bare", "whitebox"), ("med", "graybox")], strict=True):
        lines = _line_data(ax)
        assert len(lines) == 2  # fgsm, pgd
        for (xs, ys), attack in zip(lines, ("fgsm", "pgd"), strict=True):
            np.testing.assert_allclose(xs, [0.0, 2 / 255, 8 / 255])
            m2, m8 = by[(target, threat, attack, "2/255")], by[(target, threat, attack, "8/255")]
            np.testing.assert_allclose(
                ys, [m2["clean_accuracy"], m2["robust_accuracy"], m8["robust_accuracy"]]
            )
    l2 = a.plot_robust_accuracy("l2", targets=["bare"])
    (ax,) = l2.get_axes()
    ((xs, ys),) = _line_data(ax)  # deepfool only; its unbounded cell is not drawn
    m = by[("bare", "whitebox", "deepfool", "1")]
    assert xs == (0.0, 1.0) and ys == pytest.approx((m["clean_accuracy"], m["robust_accuracy"]))
    with pytest.raises(ConfigError, match="'norm'"):
        a.plot_robust_accuracy("l1")
    with pytest.raises(ConfigError, match="'targets'"):
        a.plot_robust_accuracy("linf", targets=["siamese"])


def test_plot_confusion_counts(runs):
    a, _ = runs
    fig = a.plot_confusion("med")
    axes = fig.get_axes()
    assert len(axes) == 2  # clean and the strongest attack
    labels = a.raw["data"]["labels"]
    med = next(t for t in a.raw["targets"] if t["name"] == "med")
    clean = np.zeros((2, 2), int)
    for y, p in zip(labels, med["clean"]["pred"], strict=True):
        clean[y, p] += 1
    shown = np.asarray(axes[0].get_images()[0].get_array())
    np.testing.assert_array_equal(shown, clean)
    assert sum(int(t.get_text()) for t in axes[1].texts) == N
    with pytest.raises(ConfigError, match="'target'"):
        a.plot_confusion("nope")


def test_plot_gallery_panels(runs):
    a, _ = runs
    fig = a.plot_gallery("bare", attack="pgd", n=2)
    assert len(fig.get_axes()) == 2 * 3  # clean / adversarial / perturbation
    assert "pgd@8/255" in fig._suptitle.get_text()  # the strongest pgd cell
    med = a.plot_gallery("med", n=3)
    assert len(med.get_axes()) == 3 * 4  # ... plus the denoised adversarial image
    with pytest.raises(ConfigError, match="no saved examples"):
        AuditResults(a.raw, a.run_dir / "missing").plot_gallery("bare")
    with pytest.raises(ConfigError, match="'threat'"):
        a.plot_gallery("bare", threat="adaptive")


def test_compare_runs_deltas_and_flips(runs):
    a, b = runs
    cmp = compare_runs(a, b.run_dir)  # an AuditResults and a run folder
    ca = {_ident(c): c for c in a.raw["cells"]}
    cb = {_ident(c): c for c in b.raw["cells"]}
    assert len(cmp) == len(ca) == 12
    assert list(cmp["key"]) == [c["key"] for c in a.raw["cells"]]
    total_changes = 0
    for row in cmp.to_dict("records"):
        ident = (row["target"], row["threat"], row["attack"], row["eps_label"])
        ma, mb = ca[ident]["metrics"], cb[ident]["metrics"]
        assert row["robust_accuracy_a"] == pytest.approx(ma["robust_accuracy"])
        assert row["delta"] == pytest.approx(mb["robust_accuracy"] - ma["robust_accuracy"])
        assert row["clean_delta"] == pytest.approx(mb["clean_accuracy"] - ma["clean_accuracy"])
        sa, sb = ca[ident]["samples"], cb[ident]["samples"]
        assert sa["index"] == sb["index"]  # same seed and data: same images
        ok_a = np.asarray(sa["adv_pred"]) == np.asarray(sa["label"])
        ok_b = np.asarray(sb["adv_pred"]) == np.asarray(sb["label"])
        idx = np.asarray(sa["index"])
        assert row["became_wrong"] == sorted(idx[ok_a & ~ok_b].tolist())
        assert row["became_right"] == sorted(idx[~ok_a & ok_b].tolist())
        assert row["n_common"] == N
        # the robust-accuracy change is exactly the net count of flips
        assert row["delta"] == pytest.approx((row["n_became_right"] - row["n_became_wrong"]) / N)
        total_changes += row["n_became_wrong"] + row["n_became_right"]
    assert total_changes > 0 and cmp["delta"].abs().max() > 0  # the two models really differ
    samples = compare_samples(a, b)
    assert len(samples) == total_changes and set(samples["change"]) <= {"became_wrong", "became_right"}
    same = compare_runs(a, a)
    assert (same["delta"] == 0).all() and (same["n_became_wrong"] == 0).all()


def test_compare_runs_outer_join_and_mismatch(runs):
    a, b = runs
    partial = copy.deepcopy(b.raw)
    partial["cells"] = [c for c in partial["cells"] if c["attack"] != "fgsm"]
    inner = compare_runs(a, partial)
    assert len(inner) == 8 and "fgsm" not in set(inner["attack"])
    outer = compare_runs(a, partial, how="outer")
    assert len(outer) == 12
    missing = outer[outer["attack"] == "fgsm"]
    assert missing["robust_accuracy_b"].isna().all() and missing["delta"].isna().all()
    assert (missing["n_common"] == 0).all()
    assert outer["key"].notna().all()
    bad = copy.deepcopy(b.raw)
    bad["cells"][0]["samples"]["label"][0] = 1 - bad["cells"][0]["samples"]["label"][0]
    with pytest.raises(ConfigError, match="different images"):
        compare_runs(a, bad)
    with pytest.raises(ConfigError, match="'how'"):
        compare_runs(a, b, how="left")


def test_plot_comparison_bars(runs):
    a, b = runs
    cmp = compare_runs(a, b)
    fig = plot_comparison(cmp, labels=("v1", "v2"))
    (ax,) = fig.get_axes()
    widths = [p.get_width() for p in ax.patches]
    assert len(widths) == len(cmp)
    np.testing.assert_allclose(widths, cmp["delta"].to_numpy())
    assert "v2 − v1" in ax.get_xlabel()
    with pytest.raises(ConfigError, match="no rows"):
        plot_comparison(cmp.iloc[:0])
