"""Conv-BN folding for forward-only queries (SPSA): same logits, model untouched, safe fallback."""

from __future__ import annotations

import torch
from torch import nn

from medrobust.attacks import create_attack
from medrobust.attacks._fuse import inference_copy


def _with_stats(model: nn.Module) -> nn.Module:
    gen = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.rand(m.running_mean.shape, generator=gen) - 0.5)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=gen) + 0.5)
    return model.eval()


def test_folded_copy_gives_the_same_logits_and_leaves_the_model_alone(make_model, make_images):
    model = _with_stats(make_model(3, 4, (0.0, 1.0)))
    images, _ = make_images(model, n=6, size=16)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    copy, desc = inference_copy(model, images)
    assert copy is not model and desc.startswith("conv-BN folded copy")
    assert not any(isinstance(m, nn.BatchNorm2d) for m in copy.modules())
    assert torch.allclose(copy(images), model(images), atol=1e-5, rtol=1e-5)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


class _DataDependent(nn.Module):
    """Control flow on a tensor value: torch.fx cannot trace it."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.bn(self.conv(x))
        if h.mean() > 0:
            h = h.relu()
        return self.fc(h.mean(dim=(2, 3)))


def test_untraceable_or_training_models_are_used_as_given():
    model = _DataDependent().eval()
    x = torch.rand(4, 1, 8, 8)
    same, desc = inference_copy(model, x)
    assert same is model and "not traceable" in desc
    model.train()
    same, desc = inference_copy(model, x)
    assert same is model and "training" in desc
    plain = nn.Sequential(nn.Flatten(), nn.Linear(64, 2)).eval()
    assert inference_copy(plain, x)[0] is plain


def test_spsa_with_and_without_folding_agree(make_model, make_images):
    model = _with_stats(make_model(1, 3, (0.0, 1.0)))
    images, labels = make_images(model, n=4, size=16)
    params = {"eps": 0.1, "steps": 3, "samples": 8, "seed": 3}
    fused = create_attack("spsa", model, **params)(images, labels)
    plain = create_attack("spsa", model, fuse_bn=False, **params)(images, labels)
    assert fused.info["query_model"].startswith("conv-BN folded copy")
    assert plain.info["query_model"].startswith("model as given")
    # same directions, same seed: the trajectories match up to float rounding
    assert torch.allclose(fused.adv, plain.adv, atol=1e-4)
    assert torch.equal(fused.success, plain.success)
