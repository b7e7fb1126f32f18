"""Contract tests run for every registered attack (new attacks are covered automatically).

Each attack runs with its ``fast_params``; any ``eps`` (given or default) is scaled by the
width of the bounds so the budget means the same for [0, 1], (-1, 2) and HU-like bounds.
"""

from __future__ import annotations

import inspect

import pytest
import torch

from medrobust.attacks import ATTACKS, AttackResult, create_attack, list_attacks
from medrobust.errors import ConfigError

NAMES = list_attacks()

CASES = [
    pytest.param(1, 2, (0.0, 1.0), id="c1-k2-unit"),
    pytest.param(3, 3, (-1.0, 2.0), id="c3-k3-neg"),
    pytest.param(1, 10, (-1024.0, 3071.0), id="c1-k10-hu"),
]


def _eps_default(cls: type) -> float | None:
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is not None and "eps" in inspect.signature(init).parameters:
            default = inspect.signature(init).parameters["eps"].default
            return None if default is inspect.Parameter.empty else float(default)
    return None


def attack_params(name: str, bounds: tuple[float, float]) -> dict:
    cls = ATTACKS.get(name)
    params = dict(cls.fast_params)
    if "eps" in cls.param_names():
        eps = params.get("eps", _eps_default(cls))
        if eps is None:
            eps = 0.03
        params["eps"] = float(eps) * (bounds[1] - bounds[0])
    return params


def _budget_ok(atk, res: AttackResult, bounds: tuple[float, float]) -> None:
    # Float32 rounding of (x + delta) - x grows with |x|: 1e-6 on [0, 1], ~3e-3 for HU.
    tol = 1e-6 * max(1.0, abs(bounds[0]), abs(bounds[1]))
    norm = getattr(atk, "norm", None)
    if norm == "linf":
        assert res.linf.max().item() <= atk.eps + tol
    elif norm == "l2":
        assert res.l2.max().item() <= atk.eps * (1 + 1e-5) + tol * 16
    else:
        assert getattr(atk, "minimal", False) or atk.norm is None


def test_registry_has_the_agreed_gradient_attacks() -> None:
    for name in ("fgsm", "pgd", "pgd-l2", "cw", "deepfool"):
        assert name in NAMES


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize(("channels", "classes", "bounds"), CASES)
def test_contract(name, channels, classes, bounds, make_model, make_images) -> None:
    model = make_model(channels, classes, bounds)
    images, labels = make_images(model, n=4, size=16)
    atk = create_attack(name, model, **attack_params(name, bounds))
    assert atk.bounds == bounds  # taken from the card
    res = atk(images, labels)
    assert isinstance(res, AttackResult)
    assert res.adv.shape == images.shape and res.adv.dtype == images.dtype
    assert torch.isfinite(res.adv).all()
    assert res.adv.min().item() >= bounds[0] and res.adv.max().item() <= bounds[1]
    for per_sample in (res.success, res.linf, res.l2, res.queries):
        assert per_sample.shape == (4,)
    assert res.success.dtype == torch.bool
    assert (res.queries >= 1).all()
    delta = (res.adv - images).flatten(1)
    assert torch.allclose(res.l2, delta.norm(dim=1), rtol=1e-4, atol=1e-6 * (bounds[1] - bounds[0]))
    with torch.no_grad():
        pred = model(res.adv).argmax(1)
    assert torch.equal(res.success, pred != labels)
    _budget_ok(atk, res, bounds)


@pytest.mark.parametrize("name", NAMES)
def test_deterministic_for_a_seed(name, make_model, make_images) -> None:
    model = make_model(1, 3, (0.0, 1.0))
    images, labels = make_images(model, n=4, size=16)
    params = attack_params(name, (0.0, 1.0))
    a = create_attack(name, model, seed=5, **params)(images, labels)
    b = create_attack(name, model, seed=5, **params)(images, labels)
    assert torch.equal(a.adv, b.adv)
    assert torch.equal(a.success, b.success) and torch.equal(a.queries, b.queries)


@pytest.mark.parametrize("name", NAMES)
def test_model_mode_and_parameters_restored(name, make_model, make_images) -> None:
    model = make_model(3, 2, (0.0, 1.0), train_mode=True)  # BatchNorm + Dropout, training
    images, labels = make_images(model, n=4, size=16)
    model.train()
    bn = model.features[1]
    stats = (bn.running_mean.clone(), bn.running_var.clone(), bn.num_batches_tracked.clone())
    modes = [m.training for m in model.modules()]
    params = {n: (p, p.detach().clone(), p.stride()) for n, p in model.named_parameters()}
    create_attack(name, model, **attack_params(name, (0.0, 1.0)))(images, labels)
    assert [m.training for m in model.modules()] == modes
    # same Parameter objects, same values, same memory layout (conv weights are switched
    # to channels_last only during the attack)
    for n, p in model.named_parameters():
        obj, value, stride = params[n]
        assert p is obj and torch.equal(p, value) and p.stride() == stride, n
    assert torch.equal(bn.running_mean, stats[0]) and torch.equal(bn.running_var, stats[1])
    assert torch.equal(bn.num_batches_tracked, stats[2])
    assert all(p.requires_grad for p in model.parameters())
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize("name", NAMES)
def test_invalid_parameters_name_the_parameter(name, make_model) -> None:
    model = make_model(1, 2, (0.0, 1.0))
    cls = ATTACKS.get(name)
    with pytest.raises(ConfigError, match="'seed'"):
        create_attack(name, model, seed=-1)
    with pytest.raises(ConfigError, match="not_a_param"):
        create_attack(name, model, not_a_param=1)
    for param, bad in (("eps", -0.1), ("steps", 0), ("steps", 2.5)):
        if param in cls.param_names():
            with pytest.raises(ConfigError, match=f"'{param}'"):
                create_attack(name, model, **{param: bad})


@pytest.mark.parametrize("name", NAMES)
def test_needs_bounds_without_card(name) -> None:
    bare = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 2))
    with pytest.raises(ConfigError, match="bounds"):
        create_attack(name, bare)
    atk = create_attack(name, bare, bounds=(-2, 2))
    assert atk.bounds == (-2.0, 2.0)


def test_unknown_attack_name_suggests() -> None:
    with pytest.raises(ConfigError, match="Did you mean 'deepfool'"):
        create_attack("deepfol", torch.nn.Linear(2, 2), bounds=(0, 1))


@pytest.mark.parametrize("name", ["fgsm", "pgd", "pgd-l2", "cw", "deepfool"])
def test_inputs_outside_bounds_rejected(name, make_model, make_images) -> None:
    model = make_model(1, 2, (0.0, 1.0))
    images, labels = make_images(model, n=2, size=16)
    with pytest.raises(ConfigError, match="inside bounds"):
        create_attack(name, model)(images + 2.0, labels)


def test_conv_weights_are_channels_last_only_during_the_attack(make_model, make_images) -> None:
    """A 1-channel conv net's weights are switched to canonical channels_last strides
    (even where the layout is ambiguous) for the attack, and switched back after."""
    from medrobust.attacks._layout import conv_weights_channels_last

    model = make_model(1, 2, (0.0, 1.0))
    conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    before = conv.weight.stride()
    assert conv.weight.is_contiguous()
    with conv_weights_channels_last(model):
        w = conv.weight
        assert w.stride() == torch.empty_like(w, memory_format=torch.channels_last).stride()
        assert w.stride() != before or w.shape[1] * w.shape[2] * w.shape[3] == 1
    assert conv.weight.stride() == before
    with conv_weights_channels_last(model, enabled=False):
        assert conv.weight.stride() == before


@pytest.mark.parametrize("name", NAMES)
def test_empty_batch(name, make_model) -> None:
    model = make_model(1, 3, (0.0, 1.0))
    images, labels = torch.rand(0, 1, 16, 16), torch.zeros(0, dtype=torch.long)
    res = create_attack(name, model, **attack_params(name, (0.0, 1.0)))(images, labels)
    assert res.adv.shape == (0, 1, 16, 16) and res.success.shape == (0,) and res.queries.shape == (0,)
