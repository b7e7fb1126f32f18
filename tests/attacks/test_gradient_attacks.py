"""FGSM, PGD (L∞/L2), CW-L2 and DeepFool: parity with torchattacks and effectiveness."""

from __future__ import annotations

import pytest
import torch
import torchattacks
from torch import nn

from medrobust.attacks import create_attack
from medrobust.attacks._utils import frozen_params, margin, project_l2, random_l2_ball

# --------------------------------------------------------------------------------------------
# Parity with torchattacks: bounds (0, 1) and the parity mode (fuse_bn=False, channels_last=False)
# --------------------------------------------------------------------------------------------
PARITY = {"fuse_bn": False, "channels_last": False}


@pytest.mark.parametrize("seed", [0, 7])
def test_pgd_equals_torchattacks(seed, trained_4class) -> None:
    t = trained_4class
    ours = create_attack("pgd", t.model, eps=0.1, alpha=0.02, steps=7, seed=seed, **PARITY)
    res = ours(t.images, t.labels)
    torch.manual_seed(seed)
    ref = torchattacks.PGD(t.model, eps=0.1, alpha=0.02, steps=7, random_start=True)(t.images, t.labels)
    assert torch.equal(res.adv, ref)
    # our random start must actually be random (else parity would be trivial)
    other = create_attack("pgd", t.model, eps=0.1, alpha=0.02, steps=1, seed=seed + 1, **PARITY)
    same = create_attack("pgd", t.model, eps=0.1, alpha=0.02, steps=1, seed=seed, **PARITY)
    assert not torch.equal(other(t.images, t.labels).adv, same(t.images, t.labels).adv)


def test_pgd_equals_torchattacks_three_channels(make_model, make_images) -> None:
    model = make_model(3, 5, (0.0, 1.0))
    images, labels = make_images(model, n=5, size=16, seed=3)
    res = create_attack("pgd", model, eps=0.05, steps=4, seed=11, **PARITY)(images, labels)
    torch.manual_seed(11)
    ref = torchattacks.PGD(model, eps=0.05, alpha=2.5 * 0.05 / 4, steps=4)(images, labels)
    assert torch.equal(res.adv, ref)


def test_fgsm_equals_torchattacks(trained_4class) -> None:
    t = trained_4class
    res = create_attack("fgsm", t.model, eps=0.07, **PARITY)(t.images, t.labels)
    ref = torchattacks.FGSM(t.model, eps=0.07)(t.images, t.labels)
    assert torch.equal(res.adv, ref)


def test_pgd_l2_equals_torchattacks_without_random_start(trained_4class) -> None:
    t = trained_4class
    res = create_attack("pgd-l2", t.model, eps=0.8, alpha=0.2, steps=6, random_start=False, **PARITY)(
        t.images, t.labels
    )
    ref = torchattacks.PGDL2(t.model, eps=0.8, alpha=0.2, steps=6, random_start=False)(t.images, t.labels)
    assert torch.equal(res.adv, ref)


@pytest.mark.parametrize("name", ["fgsm", "pgd"])
def test_channels_last_gives_the_same_attack(name, trained_4class) -> None:
    t = trained_4class
    a = create_attack(name, t.model, eps=0.08, channels_last=True)(t.images, t.labels)
    b = create_attack(name, t.model, eps=0.08, channels_last=False)(t.images, t.labels)
    assert a.info["channels_last"] and not b.info["channels_last"]
    assert a.adv.is_contiguous()
    # conv kernels sum in another order: allow rare sign flips of near-zero gradients
    assert (a.adv - b.adv).abs().le(1e-5).float().mean().item() > 0.99


def test_channels_last_auto_is_off_without_convolutions() -> None:
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(64, 3))
    x = torch.rand(2, 1, 8, 8)
    res = create_attack("pgd", mlp, bounds=(0, 1), eps=0.1, steps=2)(x, torch.tensor([0, 1]))
    assert res.info["channels_last"] is False


# --------------------------------------------------------------------------------------------
# Effectiveness on the trained binary model
# --------------------------------------------------------------------------------------------
ATTACK_SETTINGS = [
    ("fgsm", {"eps": 0.15}),
    ("pgd", {"eps": 0.1, "steps": 10}),
    ("pgd-l2", {"eps": 1.5, "steps": 10}),
    ("cw", {"steps": 30, "binary_steps": 4}),
    ("deepfool", {}),
    ("deepfool", {"norm": "linf"}),
]


@pytest.mark.parametrize(("name", "params"), ATTACK_SETTINGS, ids=lambda v: str(v))
def test_attacks_lower_accuracy_on_trained_binary(name, params, trained_binary) -> None:
    t = trained_binary
    assert t.clean_accuracy >= 0.9
    res = create_attack(name, t.model, **params)(t.images, t.labels)
    with torch.no_grad():
        adv_acc = (t.model(res.adv).argmax(1) == t.labels).float().mean().item()
    assert adv_acc < t.clean_accuracy
    if name in ("cw", "deepfool"):  # unbounded minimal attacks: (near) 0 % robust accuracy
        correct = t.model(t.images).argmax(1) == t.labels
        assert res.success[correct].float().mean().item() >= 0.95


def test_pgd_restarts_keep_successes_and_spend_queries(trained_4class) -> None:
    t = trained_4class
    one = create_attack("pgd", t.model, eps=0.03, steps=3, seed=1)(t.images, t.labels)
    three = create_attack("pgd", t.model, eps=0.03, steps=3, seed=1, restarts=3)(t.images, t.labels)
    assert not one.success.all()  # a weak budget, else the test says nothing
    assert (three.success | ~one.success).all()  # restart 1 is the same run: never worse
    assert torch.equal(one.adv[one.success], three.adv[one.success])  # first success kept
    # steps + 1 per restart run, + 1 for the success forward once there are restarts to choose from
    assert (three.queries[~one.success] == 3 * 4 + 1).all() and (three.queries[one.success] == 4 + 1).all()
    assert (one.queries == 4).all()
    assert three.linf.max().item() <= 0.03 + 1e-6


def test_random_l2_ball_is_uniform_in_the_ball() -> None:
    gen = torch.Generator().manual_seed(0)
    d = random_l2_ball((2000, 1, 4, 4), 2.0, gen)
    norms = d.flatten(1).norm(dim=1)
    assert norms.max().item() <= 2.0 + 1e-5
    # uniform in a 16-d ball: P(r <= 2 * 0.5**(1/16)) = 0.5
    assert abs((norms <= 2.0 * 0.5 ** (1 / 16)).float().mean().item() - 0.5) < 0.05
    p = project_l2(torch.ones(3, 1, 2, 2) * torch.tensor([0.1, 1.0, 10.0]).view(3, 1, 1, 1), 1.0)
    assert torch.allclose(p.flatten(1).norm(dim=1), torch.tensor([0.2, 1.0, 1.0]))


def test_margin_any_k() -> None:
    logits = torch.tensor([[2.0, 1.0], [0.0, 3.0], [1.0, 5.0]])
    assert torch.allclose(margin(logits, torch.tensor([0, 0, 1])), torch.tensor([1.0, -3.0, 4.0]))


def test_frozen_params_restores_on_error() -> None:
    model = nn.Linear(2, 2)
    model.bias.requires_grad_(False)
    with pytest.raises(RuntimeError), frozen_params(model):
        assert not any(p.requires_grad for p in model.parameters())
        raise RuntimeError("boom")
    assert model.weight.requires_grad and not model.bias.requires_grad


def test_metatensor_input_is_stripped(trained_binary) -> None:
    from monai.data import MetaTensor

    t = trained_binary
    res = create_attack("pgd", t.model, eps=0.05, steps=2)(MetaTensor(t.images), t.labels)
    ref = create_attack("pgd", t.model, eps=0.05, steps=2)(t.images, t.labels)
    assert type(res.adv) is torch.Tensor and torch.equal(res.adv, ref.adv)


# --------------------------------------------------------------------------------------------
# CW-L2
# --------------------------------------------------------------------------------------------
def test_cw_unsuccessful_samples_return_the_original(trained_binary) -> None:
    t = trained_binary
    res = create_attack("cw", t.model, c=1e-4, steps=2, binary_steps=1)(t.images, t.labels)
    correct = t.model(t.images).argmax(1) == t.labels
    failed = ~res.success
    assert (failed & correct).any()
    assert torch.equal(res.adv[failed], t.images[failed])
    assert (res.l2[failed] == 0).all()


class HUWrapper(nn.Module):
    """The [0, 1] model behind a Hounsfield-unit front: x_hu -> (x_hu + 1024) / 4095."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.card = inner.card.model_copy(update={"bounds": (-1024.0, 3071.0)})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner((x + 1024.0) / 4095.0)


@pytest.mark.parametrize("name", ["cw", "deepfool"])
def test_minimal_attacks_are_scale_invariant_in_hounsfield_units(name, trained_binary) -> None:
    t = trained_binary
    params = {"steps": 30, "binary_steps": 4} if name == "cw" else {}
    unit = create_attack(name, t.model, **params)(t.images, t.labels)
    hu_model = HUWrapper(t.model)
    hu = create_attack(name, hu_model, **params)(t.images * 4095.0 - 1024.0, t.labels)
    assert hu.success.float().mean().item() >= 0.95
    assert torch.equal(hu.success, unit.success)
    ratio = hu.l2[hu.success].median() / unit.l2[unit.success].median()
    assert abs(ratio.item() / 4095.0 - 1.0) < 0.05


def test_cw_binary_search_finds_smaller_perturbations(trained_binary) -> None:
    t = trained_binary
    single = create_attack("cw", t.model, c=10.0, steps=30, binary_steps=1)(t.images, t.labels)
    search = create_attack("cw", t.model, c=10.0, steps=30, binary_steps=5)(t.images, t.labels)
    both = single.success & search.success
    assert both.sum() >= 8
    assert (search.l2[both] <= single.l2[both] + 1e-6).all()
    assert search.l2[both].median() < single.l2[both].median()


def test_cw_kappa_gives_confident_examples(trained_4class) -> None:
    t = trained_4class
    res = create_attack("cw", t.model, kappa=2.0, c=10.0, steps=30, binary_steps=3)(t.images, t.labels)
    with torch.no_grad():
        m = margin(t.model(res.adv), t.labels)
    assert res.success.sum() >= 8
    assert (m[res.success] < -2.0 + 1e-3).all()


# --------------------------------------------------------------------------------------------
# DeepFool
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_deepfool_batched_equals_one_image_at_a_time(norm, trained_4class) -> None:
    t = trained_4class
    atk = create_attack("deepfool", t.model, norm=norm, channels_last=False)
    batch = atk(t.images, t.labels)
    single = torch.cat([atk(t.images[i : i + 1], t.labels[i : i + 1]).adv for i in range(8)])
    assert torch.allclose(batch.adv[:8], single, atol=1e-5)


def test_deepfool_matches_torchattacks_success_and_l2(trained_4class) -> None:
    t = trained_4class
    ours = create_attack("deepfool", t.model, steps=50, overshoot=0.02)(t.images, t.labels)
    ref = torchattacks.DeepFool(t.model, steps=50, overshoot=0.02)(t.images, t.labels)
    ref_success = t.model(ref).argmax(1) != t.labels
    assert ours.success.float().mean() >= ref_success.float().mean()
    ref_l2 = (ref - t.images).flatten(1).norm(dim=1)
    assert ours.l2.median() <= ref_l2.median() * 1.05


def test_deepfool_candidates_for_many_classes(make_model, make_images) -> None:
    model = make_model(1, 12, (0.0, 1.0))
    images, labels = make_images(model, n=4, size=16)
    labels = (labels + 1) % 12  # wrong labels: every sample is "fooled" at step 0
    res = create_attack("deepfool", model, candidates=3)(images, labels)
    assert res.success.all() and (res.l2 == 0).all() and (res.queries == 2).all()  # + success forward
    _, labels = make_images(model, n=4, size=16)
    res = create_attack("deepfool", model, candidates=3, steps=100)(images, labels)
    assert res.info["candidates"] == 3 and res.success.all()


def test_deepfool_linf_variant_has_smaller_linf(trained_binary) -> None:
    t = trained_binary
    l2 = create_attack("deepfool", t.model, norm="l2")(t.images, t.labels)
    linf = create_attack("deepfool", t.model, norm="linf")(t.images, t.labels)
    assert linf.linf.median() < l2.linf.median()
    assert linf.l2.median() > l2.l2.median()


def test_deepfool_class_gradients_batched_equal_per_class(make_model, make_images) -> None:
    from medrobust.attacks.deepfool import class_gradients

    model = make_model(3, 6, (0.0, 1.0)).eval()
    images, _ = make_images(model, n=5, size=16, seed=4)
    x = images.clone().requires_grad_(True)

    def margins() -> torch.Tensor:
        z = model(x)
        return z[:, 1:] - z[:, :1]

    batched, used = class_gradients(margins(), x, batched=True)
    per_class, used_loop = class_gradients(margins(), x, batched=False)
    assert used and not used_loop
    assert batched.shape == (5, 5, 3, 16, 16)
    assert torch.allclose(batched, per_class, rtol=1e-5, atol=1e-7)
    # column j is the gradient of z_{j+1} - z_0 (samples are independent in eval mode)
    (g3,) = torch.autograd.grad(margins()[:, 3].sum(), x)
    assert torch.allclose(batched[:, 3], g3, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_deepfool_batched_equals_the_per_class_version(norm, trained_4class) -> None:
    t = trained_4class
    batched = create_attack("deepfool", t.model, norm=norm, batched_gradients=True)(t.images, t.labels)
    per_class = create_attack("deepfool", t.model, norm=norm, batched_gradients=False)(t.images, t.labels)
    assert batched.info["class_gradients"] == "one batched backward"
    assert per_class.info["class_gradients"] == "one backward per class"
    assert torch.equal(batched.success, per_class.success) and batched.success.all()
    assert torch.allclose(batched.adv, per_class.adv, atol=1e-6)
    assert torch.allclose(batched.l2, per_class.l2, rtol=1e-5)
    assert torch.equal(batched.queries, per_class.queries)
    default = create_attack("deepfool", t.model, norm=norm)(t.images, t.labels)  # CPU: per class
    assert default.info["class_gradients"] == "one backward per class"


def test_deepfool_falls_back_when_the_vectorised_pass_fails(trained_4class, monkeypatch) -> None:
    t = trained_4class
    real = torch.autograd.grad

    def no_batching_rule(*args, **kwargs):
        if kwargs.get("is_grads_batched"):
            raise RuntimeError("Batching rule not implemented (test)")
        return real(*args, **kwargs)

    ref = create_attack("deepfool", t.model, batched_gradients=False)(t.images, t.labels)
    monkeypatch.setattr(torch.autograd, "grad", no_batching_rule)
    res = create_attack("deepfool", t.model, batched_gradients=True)(t.images, t.labels)
    assert res.info["class_gradients"] == "one backward per class"
    assert torch.equal(res.adv, ref.adv) and torch.equal(res.success, ref.success)
