"""``medrobust.audit(model=nn.Module, card=...)`` and ``channels: replicate``, audited on phantoms."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import medrobust
from medrobust.errors import CheckpointError, ConfigError
from medrobust.models.live import live_model, register_live_model, state_dict_sha256, unregister_live_model


class GreyNet(nn.Module):
    """A small NCHW conv net with its own preprocessing (scales [0, 1] to [-1, 1]) returning logits."""

    def __init__(self, in_channels: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, 4, 3, padding=1)
        self.drop = nn.Dropout(0.5)
        self.head = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.drop(torch.relu(self.conv(2 * x - 1)).mean(dim=(2, 3))))


def _settings(tmp_path) -> dict:
    return {
        "data": {
            "phantom": {
                "modality": "chest_xray",
                "n": 24,
                "size": 32,
                "seed": 0,
                "cache_dir": str(tmp_path / "c"),
            },
            "preset": "chest_xray",
        },
        "attacks": ["fgsm"],
        "budgets": {"linf": ["2/255"]},
        "n_samples": 4,
        "batch_size": 4,
        "device": "cpu",
        "save_examples": 4,
    }


def _card(in_channels: int = 1, **kw) -> dict:
    return {
        "in_channels": in_channels,
        "class_names": ["normal", "pneumonia"],  # the chest X-ray phantom's class names
        "positive_class": "pneumonia",
        "spatial_size": [32, 32],
        "modality": "chest_xray",
        **kw,
    }


def test_state_dict_sha256_is_stable_and_sensitive():
    torch.manual_seed(0)
    a = GreyNet()
    b = GreyNet()
    b.load_state_dict(a.state_dict())
    assert state_dict_sha256(a) == state_dict_sha256(b)
    with torch.no_grad():
        b.head.bias[0] += 1e-6
    assert state_dict_sha256(a)[0] != state_dict_sha256(b)[0]
    digest, size = state_dict_sha256(a)
    assert len(digest) == 64 and size == 4 * sum(t.numel() for t in a.state_dict().values())


def test_live_registry_and_refusals():
    torch.manual_seed(0)
    net = GreyNet()
    spec = register_live_model(net, _card())
    try:
        assert spec.startswith("module:")
        model = medrobust.load_model(spec)
        assert model is live_model(spec) and model.backbone.module is net
        assert model.import_info["format"] == "module"
    finally:
        unregister_live_model(spec)
    with pytest.raises(CheckpointError, match="no live module with this name"):
        medrobust.load_model(spec)
    with pytest.raises(ConfigError, match="'card' parameter is required"):
        register_live_model(net)
    with pytest.raises(CheckpointError, match="3 classes"):
        register_live_model(net, _card(class_names=["a", "b", "c"], positive_class=None))
    with pytest.raises(ConfigError, match=r"'model' parameter must be a torch.nn.Module"):
        medrobust.audit(model=42, card=_card())
    with pytest.raises(ConfigError, match="needs a config"):
        medrobust.audit()


def test_audit_a_live_module(tmp_path):
    torch.manual_seed(0)
    net = GreyNet().train()
    out = tmp_path / "audit"
    res = medrobust.audit(model=net, card=_card(), out=out, progress=False, **_settings(tmp_path))
    raw = res.raw
    assert raw["model"]["path"].startswith("module:")
    assert raw["model"]["import"]["format"] == "module"
    weights = raw["provenance"]["model"]["weights"]
    assert weights["sha256"] == state_dict_sha256(live_or_wrapped(net))[0]
    assert raw["provenance"]["model"]["card"]["sha256"]
    assert len(res.cells) == 1 and res.cells["attack"].tolist() == ["fgsm"]
    assert net.training  # the caller's module is handed back in the mode it came in
    # the same module resumes; changed weights are a different model
    again = medrobust.audit(model=net, card=_card(), out=out, progress=False, **_settings(tmp_path))
    assert again.raw["provenance"]["run_fingerprint"] == raw["provenance"]["run_fingerprint"]
    with torch.no_grad():
        net.head.bias += 1.0
    with pytest.raises(ConfigError):
        medrobust.audit(model=net, card=_card(), out=out, progress=False, **_settings(tmp_path))


def live_or_wrapped(net: nn.Module) -> nn.Module:
    """The classifier the audit hashes: the module wrapped with its card (normalisation buffers included)."""
    from medrobust.models.live import as_classifier

    return as_classifier(net, _card(), check=False)


def test_replicate_audits_an_rgb_model_on_grey_data(tmp_path):
    torch.manual_seed(0)
    net = GreyNet(in_channels=3).eval()
    card = _card(in_channels=3)
    with pytest.raises(Exception, match="1 channel"):  # grey phantoms into a 3-channel card: refused
        medrobust.audit(model=net, card=card, out=tmp_path / "refused", progress=False, **_settings(tmp_path))
    res = medrobust.audit(
        model=net,
        card={**card, "channels": "replicate"},
        out=tmp_path / "audit",
        progress=False,
        **_settings(tmp_path),
    )
    stored = res.raw["model"]["card"]
    assert (stored["in_channels"], stored["channels"], stored["model_channels"]) == (1, "replicate", 3)
    examples = sorted((tmp_path / "audit" / "examples").glob("*.npz"))
    assert examples
    with np.load(examples[0]) as ex:
        assert ex["adv"].shape[1] == 1 and ex["clean"].shape[1] == 1  # attacks perturbed the grey image
        assert ex["adv"].shape == ex["clean"].shape
        assert np.abs(ex["adv"] - ex["clean"]).max() <= 2 / 255 + 1e-6
