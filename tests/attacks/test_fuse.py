"""Conv-BN folding in every attack: same logits, model untouched, cached, safe fallback, success on
the model as given."""

from __future__ import annotations

import gc
import weakref

import pytest
import torch
from torch import nn

from medrobust.attacks import _fuse as fuse_module
from medrobust.attacks import create_attack, list_attacks
from medrobust.attacks._fuse import folded_model, inference_copy


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


# --------------------------------------------------------------------------------------------
# BatchNorm folding in every attack (issue 18)
# --------------------------------------------------------------------------------------------
def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / a.abs().max().clamp_min(1.0))


def test_folded_and_unfolded_models_agree_on_logits_and_pgd_success(trained_4class):
    t = trained_4class  # trained: its BatchNorm has real running statistics
    assert not torch.equal(t.model.features[1].running_var, torch.ones(8))
    for cl in (False, True):
        x = t.images.contiguous(memory_format=torch.channels_last) if cl else t.images
        folded, desc = folded_model(t.model, x[:8], channels_last=cl)
        assert folded is not t.model and desc.startswith("conv-BN folded copy")
        with torch.no_grad():
            assert _relative(t.model(t.images), folded(x)) <= 1e-4
    params = {"eps": 0.08, "steps": 5, "seed": 2}
    default = create_attack("pgd", t.model, **params)(t.images, t.labels)
    unfolded = create_attack("pgd", t.model, fuse_bn=False, **params)(t.images, t.labels)
    assert default.info["query_model"].startswith("conv-BN folded copy")
    assert unfolded.info["query_model"] == "model as given (fuse_bn=False)"
    assert 0 < int(default.success.sum()) < len(t.labels)  # a budget where the set means something
    assert torch.equal(default.success, unfolded.success)


@pytest.mark.parametrize("name", list_attacks())
def test_every_attack_queries_the_folded_copy_of_an_eval_model(name, make_model, make_images):
    from tests.attacks.test_conformance import attack_params

    model = _with_stats(make_model(1, 3, (0.0, 1.0)))
    images, labels = make_images(model, n=3, size=16)
    params = attack_params(name, (0.0, 1.0))
    res = create_attack(name, model, **params)(images, labels)
    assert res.info["query_model"].startswith("conv-BN folded copy"), res.info["query_model"]
    res = create_attack(name, model, fuse_bn=False, **params)(images, labels)
    assert res.info["query_model"] == "model as given (fuse_bn=False)"
    model.train()  # adversarial training: weights change between calls, nothing is folded
    res = create_attack(name, model, **params)(images, labels)
    assert res.info["query_model"] == "model as given (in training mode)"
    assert model.training


class _Rolled(nn.Module):
    """A deliberately wrong "folded copy": the model's logits shifted by one class."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x).roll(1, dims=1)


@pytest.mark.parametrize("name", list_attacks())
def test_success_is_decided_on_the_model_as_given(name, make_model, make_images, monkeypatch):
    from tests.attacks.test_conformance import attack_params

    model = _with_stats(make_model(1, 3, (0.0, 1.0)))
    images, labels = make_images(model, n=4, size=16)
    calls = []

    def wrong_copy(m: nn.Module, sample: torch.Tensor, channels_last: bool):
        calls.append(m)
        return _Rolled(m), "conv-BN folded copy (rolled, for the test)"

    monkeypatch.setattr(fuse_module, "folded_model", wrong_copy)
    res = create_attack(name, model, **attack_params(name, (0.0, 1.0)))(images, labels)
    assert calls == [model]
    with torch.no_grad():
        truth = model(res.adv).argmax(1) != labels
    assert torch.equal(res.success, truth)
    if name == "autoattack":  # its per-stage record follows the decision
        assert [b is not None for b in res.info["fooled_by"]] == res.success.tolist()
        assert sum(res.info["fooled_per_attack"].values()) == sum(
            b not in (None, "clean") for b in res.info["fooled_by"]
        )


def test_folded_copy_is_cached_per_model_state_and_released_with_the_model(make_model, make_images):
    model = _with_stats(make_model(1, 2, (0.0, 1.0)))
    images, _ = make_images(model, n=4, size=16)
    first, _ = folded_model(model, images, channels_last=False)
    again, _ = folded_model(model, images, channels_last=False)
    assert again is first  # a new attack per batch (the audit) does not trace again
    other_layout, _ = folded_model(model, images, channels_last=True)
    assert other_layout is not first
    conv = other_layout.get_submodule("features.0")
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert conv.weight.stride() == torch.empty_like(conv.weight, memory_format=torch.channels_last).stride()
    with torch.no_grad():
        model.features[1].running_mean.add_(0.5)  # any in-place change invalidates the copy
    fresh, _ = folded_model(model, images, channels_last=False)
    assert fresh is not first
    with torch.no_grad():
        assert _relative(model(images), fresh(images)) <= 1e-4
    probe = weakref.ref(model)
    del model
    gc.collect()
    assert probe() is None  # the cache holds no strong reference to the model


def test_untraceable_model_is_attacked_as_given(make_images):
    model = _DataDependent().eval()
    model.card = None
    x = torch.rand(4, 1, 8, 8)
    labels = torch.tensor([0, 1, 0, 1])
    res = create_attack("pgd", model, bounds=(0, 1), eps=0.1, steps=2)(x, labels)
    assert "not traceable" in res.info["query_model"]
