"""Denoised smoothing: CERTIFY / PREDICT against an independent Clopper-Pearson computation, abstentions,
radii of constant and noise-driven models, certified accuracy, batching and the unit of sigma."""

from __future__ import annotations

import pytest
import torch
from scipy.stats import beta, norm
from torch import nn

from medrobust.defenses import create_denoiser
from medrobust.defenses.certify import (
    ABSTAIN,
    certified_accuracy,
    certify_counts,
    clopper_pearson,
    predict_counts,
)
from medrobust.defenses.denoisers.randomized import is_stochastic
from medrobust.defenses.smoothing import smooth
from medrobust.errors import ConfigError
from medrobust.models.card import ModelCard


class Constant(nn.Module):
    """Always predicts ``cls``, whatever the input."""

    def __init__(self, cls: int = 1, k: int = 3, bounds: tuple[float, float] = (0.0, 1.0)) -> None:
        super().__init__()
        self.cls, self.k = cls, k
        self.card = ModelCard(in_channels=1, class_names=[f"c{i}" for i in range(k)], bounds=bounds, arch="t")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.one_hot(torch.full((x.shape[0],), self.cls), self.k).float()


class NoiseSign(nn.Module):
    """Class 1 when the first pixel is above its clean value 0.5: a coin flip under any noise."""

    def __init__(self) -> None:
        super().__init__()
        self.card = ModelCard(in_channels=1, class_names=["a", "b"], bounds=(0.0, 1.0), arch="t")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = x[:, 0, 0, 0] - 0.5
        return torch.stack([-z, z], dim=1)


def _cp_lower(k: int, n: int, alpha: float) -> float:
    """One-sided lower Clopper-Pearson bound from the beta quantile (independent of the code)."""
    return 0.0 if k == 0 else float(beta.ppf(alpha, k, n - k + 1))


@pytest.mark.parametrize(("k", "n"), [(990, 1000), (870, 1000), (95, 100), (100, 100), (60, 100)])
@pytest.mark.parametrize("alpha", [0.001, 0.05])
def test_certify_agrees_with_an_independent_clopper_pearson(k, n, alpha) -> None:
    sigma = 0.25
    cert = certify_counts([3, 90, 7], [n - k, k, 0], sigma, alpha)  # selection picks class 1
    p_lower = _cp_lower(k, n, alpha)
    assert cert.p_lower == pytest.approx(p_lower, rel=1e-9, abs=1e-12)
    if p_lower > 0.5:
        assert cert.prediction == 1 and cert.radius == pytest.approx(sigma * norm.ppf(p_lower), rel=1e-9)
    else:
        assert cert.abstained and cert.radius == 0.0
    low, high = clopper_pearson(k, n, 0.05)
    assert low == pytest.approx(_cp_lower(k, n, 0.025), abs=1e-12)
    assert high == pytest.approx(1.0 if k == n else float(beta.ppf(0.975, k + 1, n - k)), abs=1e-12)


def test_tied_counts_abstain() -> None:
    assert predict_counts([500, 500]) == ABSTAIN
    assert predict_counts([400, 400, 200], alpha=0.5) == ABSTAIN
    assert certify_counts([50, 50], [500, 500], 0.25).abstained
    assert predict_counts([530, 470], alpha=0.001) == ABSTAIN  # not significant at 0.001
    assert predict_counts([600, 400], alpha=0.001) == 0
    with pytest.raises(ConfigError, match="'alpha'"):
        predict_counts([1, 2], alpha=1.5)


def test_constant_model_is_certified_at_sigma_times_the_quantile_of_the_bound() -> None:
    g = smooth(Constant(cls=2), 0.25, seed=0, batch_size=64)
    x = torch.rand(3, 1, 8, 8)
    certs = g.certify(x, n0=10, n=200, alpha=0.001)
    expected = 0.25 * norm.ppf(_cp_lower(200, 200, 0.001))  # p_lower = alpha ** (1 / n)
    for c in certs:
        assert c.prediction == 2 and c.count == 200 and c.n == 200
        assert c.radius == pytest.approx(expected, rel=1e-9) and c.radius > 0
    assert g.predict(x, n=50).tolist() == [2, 2, 2]


def test_noise_driven_model_abstains() -> None:
    g = smooth(NoiseSign(), 0.25, seed=0)
    x = torch.full((4, 1, 8, 8), 0.5)
    certs = g.certify(x, n0=20, n=400, alpha=0.001)
    assert all(c.abstained and c.radius == 0.0 for c in certs)
    assert all(0.35 < c.count / c.n < 0.65 for c in certs)  # about half the draws each way
    assert (g.predict(x, n=400, alpha=0.001) == ABSTAIN).all()


def test_certified_accuracy_on_a_synthetic_set() -> None:
    preds = [0, 1, 1, ABSTAIN, 0, 2]
    radii = [0.5, 0.1, 0.3, 0.0, 0.25, 0.9]
    labels = [0, 1, 0, 1, 0, 2]
    rows = certified_accuracy(preds, radii, labels, [0.0, 0.25, 0.5, 1.0])
    # correct and not abstaining: samples 0, 1, 4, 5 with radii 0.5, 0.1, 0.25, 0.9
    assert [r["certified"] for r in rows] == [4, 3, 2, 0]
    assert [r["accuracy"] for r in rows] == pytest.approx([4 / 6, 3 / 6, 2 / 6, 0.0])
    assert all(r["n"] == 6 and r["abstained"] == 1 for r in rows)
    assert rows[1]["ci_low"] == pytest.approx(_cp_lower(3, 6, 0.025), abs=1e-12)
    assert rows[3]["ci_low"] == 0.0 and 0.0 < rows[3]["ci_high"] < 1.0


def test_counts_are_batched_seeded_and_independent_of_batch_size() -> None:
    clf = NoiseSign()
    x = torch.full((3, 1, 8, 8), 0.5)
    a = smooth(clf, 0.25, batch_size=1000).sample_counts(x, 100, torch.Generator().manual_seed(1))
    b = smooth(clf, 0.25, batch_size=1000).sample_counts(x, 100, torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and (a.sum(dim=1) == 100).all()
    c = smooth(clf, 0.25, batch_size=7).sample_counts(x, 100, torch.Generator().manual_seed(1))
    assert (c.sum(dim=1) == 100).all()


def test_denoiser_sigma_unit_and_stochastic_forward() -> None:
    clf = Constant(cls=0, k=2, bounds=(-1000.0, 400.0))
    d = create_denoiser("median", in_channels=1, bounds=(-1000.0, 400.0))
    g = smooth(clf, "64/255", d)
    assert g.sigma == pytest.approx(64 / 255 * 1400) and g.stochastic and is_stochastic(g)
    assert g(torch.zeros(2, 1, 8, 8)).shape == (2, 2)
    with pytest.raises(ConfigError, match="'sigma'"):
        smooth(clf, -1.0)
    with pytest.raises(ConfigError, match="bounds"):
        smooth(clf, "8/255", create_denoiser("median", in_channels=1))
    with pytest.raises(ConfigError, match="'n0'"):
        g.certify(torch.zeros(1, 1, 8, 8), n0=0)


def test_certify_command_writes_radii_and_certified_accuracy(tmp_path) -> None:
    import json

    import typer
    from typer.testing import CliRunner

    from medrobust.cli.certify import register
    from medrobust.data import write_phantom
    from medrobust.models.checkpoint import save_checkpoint
    from medrobust.models.classifier import build_classifier

    data = write_phantom("chest_xray", 8, 32, "npz", tmp_path / "data", seed=0)
    torch.manual_seed(0)
    card = ModelCard(
        in_channels=1, class_names=["normal", "pneumonia"], spatial_size=(32, 32), modality="chest_xray"
    )
    run = save_checkpoint(build_classifier("small_cnn", card, width=4, depth=2).eval(), tmp_path / "clf")
    noise = create_denoiser("noise-injection", in_channels=1, sigma=0.1, seed=0)
    from medrobust.defenses import save_denoiser

    save_denoiser(noise, tmp_path / "ni")
    app = typer.Typer()
    register(app)
    app.callback()(lambda: None)
    out = tmp_path / "certify.json"
    args = ["certify", "--model", str(run), "--data", str(data), "--defense", str(tmp_path / "ni")]
    args += [
        "--sigma",
        "64/255",
        "--noise-samples",
        "30",
        "--n0",
        "5",
        "--radii",
        "0,0.05",
        "--out",
        str(out),
        "--device",
        "cpu",
    ]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    doc = json.loads(out.read_text())
    assert doc["sigma"] == pytest.approx(64 / 255) and len(doc["samples"]) == 8
    assert [r["radius"] for r in doc["certified_accuracy"]] == [0.0, 0.05]
    for s in doc["samples"]:
        assert s["abstained"] == (s["prediction"] == ABSTAIN) and s["radius"] >= 0.0
    hits = sum(s["prediction"] == s["label"] and s["radius"] >= 0.05 for s in doc["samples"])
    assert doc["certified_accuracy"][1]["certified"] == hits
