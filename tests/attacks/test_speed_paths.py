"""Issue 18 speed paths: max-pool before ReLU in the folded copy, global pools with a broadcast
backward, gradient-free 2x2 max-pools, success decided on first read, PGD's in-place box
projection, DeepFool's gradients only for the samples still attacked."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from medrobust.attacks import create_attack
from medrobust.attacks import deepfool as deepfool_module
from medrobust.attacks._fuse import (
    GlobalAvgPool,
    GradientFreeMaxPool2d,
    broadcast_global_pools,
    inference_copy,
    pool_before_relu,
)
from medrobust.errors import ConfigError


def _plain_fold(model: nn.Module) -> nn.Module:
    from torch.fx.experimental.optimization import fuse

    out = fuse(model, inplace=False).eval()
    for p in out.parameters():
        p.requires_grad_(False)
    return out


def test_pool_before_relu_gives_the_same_logits_and_gradients_bit_for_bit(trained_4class):
    t = trained_4class
    x = t.images.contiguous(memory_format=torch.channels_last)
    plain = _plain_fold(t.model)
    moved, desc = inference_copy(t.model, x[:8])
    assert "1 max-pool(s) moved before their ReLU" in desc
    code = moved.code
    assert code.index("torch.relu_") > code.index("features_3")  # the ReLU now follows the pool
    for inp in (t.images, x):
        a, b = inp.clone().requires_grad_(True), inp.clone().requires_grad_(True)
        za, zb = plain(a), moved(b)
        assert torch.equal(za, zb)
        (ga,) = torch.autograd.grad(F.cross_entropy(za, t.labels), a)
        (gb,) = torch.autograd.grad(F.cross_entropy(zb, t.labels), b)
        assert torch.equal(ga, gb)


class _SharedInput(nn.Module):
    """An in-place ReLU whose input is also read elsewhere: moving it would change the model."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.relu = nn.ReLU(inplace=True)
        self.pool = nn.MaxPool2d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv(x)
        p = self.pool(self.relu(h))
        return p.mean(dim=(1, 2, 3)) + h.mean(dim=(1, 2, 3))


def test_pool_before_relu_leaves_a_relu_whose_input_is_shared():
    from torch.fx import symbolic_trace

    model = _SharedInput().eval()
    gm = symbolic_trace(model)
    assert pool_before_relu(gm) == 0
    x = torch.randn(2, 1, 8, 8)
    assert torch.equal(gm(x), model(x))


def test_success_is_decided_on_first_read_by_the_model_as_given(trained_4class):
    t = trained_4class
    calls = []
    hook = t.model.register_forward_hook(lambda m, i, o: calls.append(m.training))
    try:
        atk = create_attack("pgd", t.model, eps=0.08, steps=3)
        atk(t.images, t.labels)  # folds (and checks the copy against the model) once
        calls.clear()
        res = atk(t.images, t.labels)
        assert not res.decided and calls == []  # the attack queried the cached folded copy only
        with torch.no_grad():
            truth = t.model(res.adv).argmax(1) != t.labels
        t.model.train()  # read in training mode: decided in eval mode all the same
        calls.clear()
        assert torch.equal(res.success, truth) and res.decided
        assert calls == [False] and t.model.training  # one forward, in eval mode, mode restored
        res.success  # noqa: B018  (a second read runs nothing)
        assert calls == [False]
    finally:
        hook.remove()
        t.model.eval()


def test_a_pickled_result_carries_the_decision(make_model, make_images):
    import pickle

    model = make_model(1, 3, (0.0, 1.0))
    images, labels = make_images(model, n=4, size=16)
    res = create_attack("fgsm", model, eps=0.2)(images, labels)
    assert not res.decided
    back = pickle.loads(pickle.dumps(res))
    with torch.no_grad():
        truth = model(res.adv).argmax(1) != labels
    assert res.decided and back.decided and torch.equal(back.success, truth)


def test_success_read_after_the_model_changed_is_refused(make_model, make_images):
    model = make_model(1, 3, (0.0, 1.0))
    images, labels = make_images(model, n=4, size=16)
    res = create_attack("fgsm", model, eps=0.05)(images, labels)
    with torch.no_grad():
        model.head.bias.add_(1.0)  # an optimiser step, say
    with pytest.raises(ConfigError, match="before the model changes"):
        res.success  # noqa: B018
    res.success = torch.zeros(4, dtype=torch.bool)  # an explicit value replaces the decision
    assert res.decided and not res.success.any()


def test_ensembles_decide_at_once(make_model, make_images):
    model = make_model(1, 3, (0.0, 1.0))
    images, labels = make_images(model, n=3, size=16)
    from tests.attacks.test_conformance import attack_params

    res = create_attack("autoattack", model, **attack_params("autoattack", (0.0, 1.0)))(images, labels)
    assert res.decided


def test_pgd_box_projection_equals_the_two_clamps_up_to_rounding(make_model, make_images):
    model = make_model(1, 2, (-1.0, 2.0))
    images, _ = make_images(model, n=4, size=16)
    atk = create_attack("pgd", model, eps=0.1, alpha=0.07, steps=1)
    gen = torch.Generator().manual_seed(0)
    adv = (images + 0.3 * torch.randn(images.shape, generator=gen)).clamp(-1.0, 2.0)
    grad = torch.randn(images.shape, generator=gen)
    atk._net = nn.Identity()  # any queried copy: the box path
    box = atk._box(images)
    atk._net = None
    assert box is not None and atk._box(images) is None  # the model as given: torchattacks' arithmetic
    fast = atk._step(adv.clone(), grad.clone(), images, box)
    exact = atk._step(adv.clone(), grad.clone(), images, None)
    assert torch.allclose(fast, exact, rtol=0, atol=1e-6)
    assert (fast - images).abs().max() <= 0.1 + 1e-6 and fast.min() >= -1.0 and fast.max() <= 2.0
    step = adv + 0.07 * grad.sign()
    ref = torch.clamp(images + torch.clamp(step - images, -0.1, 0.1), -1.0, 2.0)
    assert torch.equal(exact, ref)


@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_deepfool_gradients_only_for_kept_samples_change_nothing(norm, trained_4class, monkeypatch):
    t = trained_4class
    monkeypatch.setattr(deepfool_module, "BACKWARD_PER_FORWARD", 1e9)  # always evaluate the kept again
    again = create_attack("deepfool", t.model, norm=norm)(t.images, t.labels)
    monkeypatch.setattr(deepfool_module, "BACKWARD_PER_FORWARD", 0.0)  # never: rows of the full graph
    rows = create_attack("deepfool", t.model, norm=norm)(t.images, t.labels)
    assert torch.equal(again.success, rows.success) and again.success.all()
    assert torch.allclose(again.adv, rows.adv, atol=1e-6)
    assert torch.equal(again.queries, rows.queries) and (again.queries > 2).any()


class _GlobalPools(nn.Module):
    """A module global pool and a functional one (torchvision's ResNet and DenseNet styles)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d((1, 1))
        self.keep = nn.AdaptiveAvgPool2d(2)  # not global: left alone
        self.fc = nn.Linear(4 + 16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.conv(x))
        g = self.pool(h).flatten(1) + F.adaptive_avg_pool2d(h, 1).flatten(1)
        return self.fc(torch.cat([g, self.keep(h).flatten(1)], dim=1))


def test_global_pools_get_a_broadcast_backward_with_the_same_values():
    from torch.fx import symbolic_trace

    model = _GlobalPools().eval()
    gm = symbolic_trace(model)
    assert broadcast_global_pools(gm) == 2
    assert sum(isinstance(m, GlobalAvgPool) for m in gm.modules()) == 2
    assert sum(isinstance(m, nn.AdaptiveAvgPool2d) for m in gm.modules()) == 1
    x = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    for inp in (x, x.contiguous(memory_format=torch.channels_last)):
        a, b = inp.clone().requires_grad_(True), inp.clone().requires_grad_(True)
        za, zb = model(a), gm(b)
        assert torch.allclose(za, zb, rtol=0, atol=1e-6)
        (ga,) = torch.autograd.grad(za[:, 0].sum(), a)
        (gb,) = torch.autograd.grad(zb[:, 0].sum(), b)
        assert torch.allclose(ga, gb, rtol=0, atol=1e-6)
    # the gradient behind the pool is a broadcast, not a full-size NCHW tensor
    h = torch.rand(2, 4, 6, 6).contiguous(memory_format=torch.channels_last).requires_grad_(True)
    (g,) = torch.autograd.grad(GlobalAvgPool(2)(h).sum(), h)
    assert g.stride()[2:] == (0, 0) and torch.allclose(g, torch.full_like(g, 1 / 36))


@pytest.mark.parametrize("size", [16, 15])
def test_gradient_free_max_pool_equals_max_pool_bit_for_bit(size):
    gen = torch.Generator().manual_seed(size)
    x = torch.randn(3, 5, size, size, generator=gen).contiguous(memory_format=torch.channels_last)
    x[0, 1, 2, 3] = float("nan")
    pool = GradientFreeMaxPool2d(2)
    with torch.no_grad():
        fast, ref = pool(x), F.max_pool2d(x, 2)
    assert fast.shape == ref.shape == (3, 5, size // 2, size // 2)
    assert torch.equal(fast.nan_to_num(7.0), ref.nan_to_num(7.0)) and fast.isnan().sum() == 1
    assert fast.is_contiguous(memory_format=torch.channels_last)
    xg = x.nan_to_num().requires_grad_(True)  # with autograd: max_pool2d itself (indices for the backward)
    assert "MaxPool2DWithIndices" in type(pool(xg).grad_fn).__name__


def test_folded_copy_uses_gradient_free_pools_with_the_same_logits(trained_4class):
    t = trained_4class
    x = t.images.contiguous(memory_format=torch.channels_last)
    copy, _ = inference_copy(t.model, x[:8])
    assert sum(isinstance(m, GradientFreeMaxPool2d) for m in copy.modules()) == 1
    with torch.no_grad():
        assert torch.equal(copy(x), _plain_fold(t.model)(x))
