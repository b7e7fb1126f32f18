import pytest
import torch
from torch import nn

from medrobust.errors import ConfigError
from medrobust.models import MedicalClassifier, ModelCard, build_classifier, wrap_imported


def test_normalisation_is_a_layer_inside(images):
    card = ModelCard(in_channels=1, class_names=["a", "b"], mean=[0.4], std=[0.2], bounds=(0.0, 1.0))
    model = build_classifier("small_cnn", card, width=4).eval()
    assert model.card.arch == "small_cnn" and card.arch is None  # caller's card untouched
    assert {"normalize.mean", "normalize.std"} <= set(model.state_dict())
    expected = model.backbone((images - 0.4) / 0.2)
    assert torch.allclose(model(images), expected)
    # gradients flow through the normalisation back to image space
    x = images.clone().requires_grad_(True)
    model(x).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_identity_normalisation_without_mean_std(images):
    card = ModelCard(in_channels=1, class_names=["a", "b"])
    model = build_classifier("small_cnn", card, width=4).eval()
    assert model.normalize.identity
    assert torch.equal(model(images), model.backbone(images))


def test_per_channel_normalisation_3d():
    card = ModelCard(
        in_channels=2, class_names=["a", "b", "c"], mean=[1.0, -1.0], std=[2.0, 4.0], spatial_dims=3
    )
    model = build_classifier("small_cnn", card, width=4).eval()
    x = torch.rand(1, 2, 8, 8, 8)
    ref = (x - torch.tensor([1.0, -1.0]).view(1, 2, 1, 1, 1)) / torch.tensor([2.0, 4.0]).view(1, 2, 1, 1, 1)
    assert torch.allclose(model.normalize(x), ref)
    assert model(x).shape == (1, 3)


class _NHWCNet(nn.Module):
    """Takes channels-last input; returns softmax probabilities."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(3, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert x.shape[-1] == 3, "expects NHWC"
        return torch.softmax(self.lin(x.mean(dim=(1, 2))), dim=1)


def test_imported_wrapper_nhwc_and_probabilities():
    card = ModelCard(in_channels=3, class_names=["a", "b"], input_layout="NHWC", outputs="probabilities")
    net = _NHWCNet()
    model = wrap_imported(net, card)
    x = torch.rand(2, 3, 8, 8)  # NCHW image space
    out = model(x)
    probs = net(x.permute(0, 2, 3, 1))
    assert torch.allclose(out, torch.log(probs))
    assert torch.allclose(out.exp().sum(1), torch.ones(2))
    assert any("log-probabilities" in n for n in model.card.notes)
    assert any("NHWC" in n for n in model.card.notes)
    assert card.notes == []  # original card unchanged


def test_probabilities_are_clamped_before_log():
    card = ModelCard(in_channels=1, class_names=["a", "b"], outputs="probabilities")

    class Hard(nn.Module):
        def forward(self, x):
            return torch.stack([torch.ones(x.shape[0]), torch.zeros(x.shape[0])], dim=1)

    out = wrap_imported(Hard(), card)(torch.rand(2, 1, 4, 4))
    assert torch.isfinite(out).all()
    assert out[0, 1] == pytest.approx(torch.log(torch.tensor(1e-12)).item())


def test_medical_classifier_requires_card():
    with pytest.raises(ConfigError, match="ModelCard"):
        MedicalClassifier(nn.Identity(), card={"in_channels": 1})  # type: ignore[arg-type]
