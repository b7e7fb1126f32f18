"""SPSA: per-sample directions, chunked evaluation, early stop, honest queries, strength."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from medrobust.attacks import create_attack
from medrobust.attacks.spsa import rademacher
from medrobust.errors import ConfigError


class BatchRecorder(nn.Module):
    """Wraps a model and records the size of every forward batch."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.card = model.card
        self.sizes: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.sizes.append(x.shape[0])
        return self.model(x)


def test_defaults_are_evaluation_grade(make_model) -> None:
    atk = create_attack("spsa", make_model(1, 2, (0.0, 1.0)))
    assert (atk.steps, atk.samples, atk.delta, atk.lr) == (100, 128, 0.01, 0.01)
    assert atk.random_start and atk.early_stop


def test_rademacher_rows_are_independent() -> None:
    v = rademacher((64, 1, 8, 8), torch.Generator().manual_seed(0), torch.zeros(1))
    assert set(v.unique().tolist()) == {-1.0, 1.0}
    assert len({tuple(row.flatten().tolist()) for row in v}) == 64


def test_rademacher_is_balanced_at_every_bit_position() -> None:
    """Signs unpacked from random bytes: each of the 8 bit positions is a fair coin."""
    v = rademacher((4000, 1, 10, 10), torch.Generator().manual_seed(1), torch.zeros(1))
    flat = v.flatten()
    assert v.shape == (4000, 1, 10, 10) and v.dtype == torch.float32
    for k in range(8):  # 50 000 draws per position: |mean| < 0.02 is > 4 standard errors
        assert abs(flat[k::8].mean().item()) < 0.02, k
    assert abs((flat[1:] * flat[:-1]).mean().item()) < 0.01  # neighbours uncorrelated


def test_directions_are_per_sample(make_model, make_images) -> None:
    model = make_model(1, 3, (0.0, 1.0))
    images, labels = make_images(model, n=1, size=16)
    twins, twin_labels = images.repeat(2, 1, 1, 1), labels.repeat(2)
    res = create_attack("spsa", model, eps=0.05, steps=1, samples=4, random_start=False, early_stop=False)(
        twins, twin_labels
    )
    assert not torch.equal(res.adv[0], res.adv[1])  # shared directions would give equal steps


@pytest.mark.parametrize(("classes", "bounds"), [(2, (0.0, 1.0)), (3, (-1.0, 2.0)), (10, (-1024.0, 3071.0))])
def test_budget_bounds_chunking_and_query_count(classes, bounds, make_model, make_images) -> None:
    model = BatchRecorder(make_model(1, classes, bounds))
    images, labels = make_images(model.model, n=3, size=16)
    eps = 0.02 * (bounds[1] - bounds[0])
    steps, samples = 3, 5
    res = create_attack(
        "spsa", model, eps=eps, steps=steps, samples=samples, chunk=6, delta=0.01 * (bounds[1] - bounds[0])
    )(images, labels)
    tol = 1e-6 * max(1.0, abs(bounds[0]), abs(bounds[1]))
    assert res.linf.max() <= eps + tol
    assert res.adv.min() >= bounds[0] and res.adv.max() <= bounds[1]
    assert max(model.sizes) <= 6  # memory bounded by `chunk`
    full = 1 + 1 + steps * (2 * samples + 1) + 1
    assert (res.queries[~res.success] == full).all()
    assert (res.queries <= full).all()


def test_early_stop_saves_queries_and_lowers_accuracy(trained_binary) -> None:
    tr = trained_binary
    kw = dict(eps=0.12, steps=15, samples=16, lr=0.05)
    res = create_attack("spsa", tr.model, **kw)(tr.images, tr.labels)
    assert res.success.float().mean() >= 0.5
    full = 1 + 1 + 15 * 33 + 1
    assert (res.queries <= full).all() and (res.queries[res.success] < full).any()
    assert res.queries.sum() < 0.75 * full * len(tr.labels)
    slow = create_attack("spsa", tr.model, early_stop=False, **kw)(tr.images, tr.labels)
    assert (slow.queries == full).all()
    assert slow.success.float().mean() >= 0.5


def test_deterministic(make_model, make_images) -> None:
    model = make_model(1, 2, (0.0, 1.0))
    images, labels = make_images(model, n=2)
    a = create_attack("spsa", model, eps=0.03, steps=2, samples=3, seed=9)(images, labels)
    b = create_attack("spsa", model, eps=0.03, steps=2, samples=3, seed=9)(images, labels)
    assert torch.equal(a.adv, b.adv) and torch.equal(a.queries, b.queries)


def test_invalid_parameters(make_model) -> None:
    model = make_model(1, 2, (0.0, 1.0))
    for param, bad in (("chunk", 1), ("samples", 0), ("delta", 0.0), ("lr", -1.0), ("early_stop", "yes")):
        with pytest.raises(ConfigError, match=f"'{param}'"):
            create_attack("spsa", model, **{param: bad})


def test_results_do_not_depend_on_the_chunk_or_free_memory(make_model, make_images, monkeypatch) -> None:
    import medrobust.attacks.spsa as spsa

    model = make_model(1, 3, (0.0, 1.0)).eval()
    images, labels = make_images(model, n=3, size=16)
    kw = dict(eps=0.05, steps=3, samples=7, seed=4)  # 21 pairs: blocks of 16 split across chunks
    runs = {c: create_attack("spsa", model, chunk=c, **kw)(images, labels) for c in (2, 6, 64, None)}
    auto = runs[None].info["chunk"]
    assert auto == 42  # 2 x 7 x 3 perturbed images: one forward per iteration
    monkeypatch.setattr(spsa, "free_memory", lambda device: 200_000)  # a nearly full machine
    starved = create_attack("spsa", model, **kw)(images, labels)
    assert 2 <= starved.info["chunk"] < 42 and starved.info["chunk"] & (starved.info["chunk"] - 1) == 0
    for res in (*runs.values(), starved):
        assert torch.allclose(res.adv, runs[2].adv, atol=1e-6)
        assert torch.equal(res.success, runs[2].success) and torch.equal(res.queries, runs[2].queries)


def test_directions_are_the_same_however_they_are_split() -> None:
    from medrobust.attacks.spsa import Directions

    like = torch.zeros(1)
    whole = Directions((1, 5, 5), torch.Generator().manual_seed(3), like).take(40)
    parts = Directions((1, 5, 5), torch.Generator().manual_seed(3), like)
    split = torch.cat([parts.take(p) for p in (3, 13, 1, 23)])
    assert torch.equal(whole, split) and set(whole.unique().tolist()) == {-1.0, 1.0}


def test_chunks_are_built_in_the_queried_layout(make_model, make_images) -> None:
    model = BatchRecorder(make_model(3, 2, (0.0, 1.0)))
    seen: list[bool] = []
    model.register_forward_pre_hook(
        lambda m, args: seen.append(args[0].is_contiguous(memory_format=torch.channels_last))
    )
    images, labels = make_images(model.model, n=2, size=16)
    # fuse_bn=False: the hook sees the attack's queries (the folded copy is another module)
    res = create_attack(
        "spsa", model, eps=0.05, steps=2, samples=4, chunk=8, fuse_bn=False, early_stop=False
    )(images, labels)
    # clean check, start point, 2 x (16 perturbed images in 2 chunks, check); then, when
    # success is read, its forward on the returned images as returned (contiguous)
    assert res.info["channels_last"] and model.sizes == [2, 2, 8, 8, 2, 8, 8, 2]
    assert res.success.shape == (2,) and model.sizes[-1] == 2 and len(model.sizes) == 9
    assert all(seen[:-1]) and not seen[-1]
