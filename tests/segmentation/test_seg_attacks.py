"""Attacks on segmenters: the shared contract for every registered attack, strength on a trained UNet,
the erase-lesion goal, and gradients through the sliding window."""

from __future__ import annotations

import pytest
import torch

from medrobust.attacks import list_attacks
from medrobust.attacks.segmentation import (
    SEGMENTATION_ATTACKS,
    SegmentationAttack,
    create_segmentation_attack,
    list_segmentation_attacks,
)
from medrobust.errors import ConfigError
from medrobust.models.segmentation import SegmentationCard, build_segmenter
from medrobust.models.segmentation.sliding import sliding_window_logits

HU = (-1024.0, 3071.0)


def _tiny(classes: list[str], bounds=(0.0, 1.0), dims: int = 2, **card) -> torch.nn.Module:
    torch.manual_seed(0)
    c = SegmentationCard(in_channels=1, class_names=classes, bounds=bounds, spatial_dims=dims, **card)
    return build_segmenter("tiny", c, width=4)


def test_the_segmentation_registry_is_its_own():
    assert {"fgsm", "pgd", "pgd-l2", "segpgd", "spsa"} <= set(list_segmentation_attacks())
    assert (
        "segpgd" not in list_attacks()
    )  # medrobust.attacks imports the sub-package without mixing registries


@pytest.mark.parametrize("name", list_segmentation_attacks())
@pytest.mark.parametrize("classes", [["bg", "lesion"], ["bg", "organ", "lesion"]])
def test_conformance_hu_bounds_masks_and_mode(name, classes):
    model = _tiny(classes, bounds=HU, lesion_classes=["lesion"]).train()  # given in training mode
    cls = SEGMENTATION_ATTACKS.get(name)
    gen = torch.Generator().manual_seed(1)
    images = torch.rand(3, 1, 16, 16, generator=gen) * 4095.0 - 1024.0
    masks = torch.randint(0, len(classes), (3, 1, 16, 16), generator=gen)
    for goal in ("untargeted", "erase-lesion"):
        atk = create_segmentation_attack(name, model, goal=goal, seed=3, **cls.fast_params)
        assert isinstance(atk, SegmentationAttack)
        result = atk(images, masks)
        assert model.training  # mode restored
        assert all(p.requires_grad for p in model.parameters())
        assert result.adv.shape == images.shape and result.adv.dtype == images.dtype
        assert result.adv.min() >= HU[0] and result.adv.max() <= HU[1]
        eps = atk.eps
        if atk.norm == "linf":
            assert pytest.approx(eps) == 4 / 255 * 4095  # "4/255" is 4/255 of the HU range
            assert float(result.linf.max()) <= eps * (1 + 1e-5)
        else:
            assert float(result.l2.max()) <= eps * (1 + 1e-4)
        assert result.clean_pred.shape == result.adv_pred.shape == (3, 16, 16)
        assert result.changed.shape == (3,) and (result.queries > 1).all()
        again = create_segmentation_attack(name, model, goal=goal, seed=3, **cls.fast_params)(images, masks)
        torch.testing.assert_close(again.adv, result.adv)  # seeded
        assert result.info["goal"] == goal
        assert result.info["lesion_classes"] == ([classes.index("lesion")] if goal == "erase-lesion" else [])


def test_parameters_are_checked_with_one_line_messages():
    model = _tiny(["bg", "lesion"])
    with pytest.raises(
        ConfigError, match=r"The 'eps' parameter of SegmentationPGD must be a float in \(0, 1\]. Got -0.1."
    ):
        create_segmentation_attack("pgd", model, eps=-0.1)
    with pytest.raises(
        ConfigError, match=r"'goal' parameter of SegPGD must be one of .*Did you mean 'erase-lesion'\?"
    ):
        create_segmentation_attack("segpgd", model, goal="erase-lesions")
    with pytest.raises(ConfigError, match=r"unexpected parameter\(s\) \['stpes'\]"):
        create_segmentation_attack("pgd", model, stpes=3)
    with pytest.raises(
        ConfigError, match=r"'lesion_classes' parameter of SegmentationFGSM must name foreground"
    ):
        create_segmentation_attack("fgsm", model, goal="erase-lesion", lesion_classes=["tumour"])(
            torch.rand(1, 1, 8, 8), torch.zeros(1, 8, 8, dtype=torch.long)
        )
    with pytest.raises(ConfigError, match=r"mask values must lie in 0\.\.1"):
        create_segmentation_attack("fgsm", model)(torch.rand(1, 1, 8, 8), torch.full((1, 8, 8), 2))


def test_pgd_lowers_the_dice_and_erasing_the_lesion_lowers_it_more(skin_batch, lesion_dice):
    model, images, masks = skin_batch
    clean = lesion_dice(model, images, masks)
    assert clean > 0.6
    untargeted = create_segmentation_attack("pgd", model, eps="8/255", steps=10)(images, masks)
    erase = create_segmentation_attack("pgd", model, eps="8/255", steps=10, goal="erase-lesion")(
        images, masks
    )
    d_untargeted = lesion_dice(model, untargeted.adv, masks)
    d_erase = lesion_dice(model, erase.adv, masks)
    assert d_untargeted < clean - 0.2
    assert d_erase < d_untargeted
    segpgd = create_segmentation_attack("segpgd", model, eps="8/255", steps=10)(images, masks)
    assert lesion_dice(model, segpgd.adv, masks) < clean - 0.2
    fgsm = create_segmentation_attack("fgsm", model, eps="8/255")(images, masks)
    assert d_untargeted < lesion_dice(model, fgsm.adv, masks) < clean  # one step is weaker than ten


def test_a_pgd_step_through_the_sliding_window_reaches_every_voxel():
    model = _tiny(["bg", "tumour"], dims=3, roi_size=(8, 8, 8), sw_overlap=0.25).eval()
    images = torch.rand(1, 1, 20, 12, 16)  # several windows along every axis
    masks = (images > 0.7).long()[:, 0]
    atk = create_segmentation_attack("pgd", model, eps="4/255", steps=1, random_start=False)
    grad = atk.input_gradient(images, masks)
    assert grad.shape == images.shape and bool((grad != 0).all())
    result = atk(images, masks)
    assert float(result.linf.max()) > 0 and bool((result.adv != images).float().mean() > 0.99)


def test_sliding_window_gradients_equal_the_full_volume_ones_when_it_fits_one_window():
    net = _tiny(["bg", "tumour"], dims=3).backbone.eval()
    x = torch.rand(1, 1, 8, 12, 10, requires_grad=True)
    y = torch.randint(0, 2, (1, 8, 12, 10))
    (full,) = torch.autograd.grad(torch.nn.functional.cross_entropy(net(x), y), x)
    window = sliding_window_logits(net, x, roi_size=(8, 12, 10))
    (slid,) = torch.autograd.grad(torch.nn.functional.cross_entropy(window, y), x)
    torch.testing.assert_close(slid, full, rtol=1e-4, atol=1e-7)


def _saved_bytes_and_grad(net, x, y, checkpoint):
    """Bytes autograd keeps for the backward pass outside any checkpoint, and the input gradient."""
    saved = []

    def pack(t):
        saved.append(t.numel() * t.element_size())
        return t

    x = x.detach().clone().requires_grad_(True)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        logits = sliding_window_logits(net, x, roi_size=(8, 8, 8), sw_batch_size=2, checkpoint=checkpoint)
    (grad,) = torch.autograd.grad(torch.nn.functional.cross_entropy(logits, y), x)
    return sum(saved), grad


def test_sliding_window_checkpointing_keeps_the_gradient_and_not_the_activations():
    torch.manual_seed(0)
    card = SegmentationCard(in_channels=1, class_names=["bg", "tumour"], spatial_dims=3)
    net = build_segmenter("tiny", card, width=8).backbone.eval()
    x = torch.rand(1, 1, 24, 20, 16)  # 4 x 3 x 2 windows of 8³: 12 forwards of 2 windows
    y = torch.randint(0, 2, (1, 24, 20, 16))
    kept, grad_kept = _saved_bytes_and_grad(net, x, y, checkpoint=False)
    recomputed, grad = _saved_bytes_and_grad(net, x, y, checkpoint=True)
    torch.testing.assert_close(grad, grad_kept, rtol=1e-5, atol=1e-8)
    assert bool((grad != 0).any())
    # Without checkpointing every window's activations (8 channels at full resolution, several
    # layers) stay alive for the backward; with it only the blending's window-sized tensors do.
    assert kept > 8 * recomputed
    assert recomputed < 16 * x.numel() * x.element_size()
    # The default checkpoints exactly when gradients are recorded over more than one forward.
    default, _ = _saved_bytes_and_grad(net, x, y, checkpoint=None)
    assert default == recomputed


def test_pgd_label_map_of_its_result_equals_a_fresh_forward():
    model = _tiny(["bg", "organ", "lesion"]).eval()
    gen = torch.Generator().manual_seed(3)
    images = torch.rand(3, 1, 16, 16, generator=gen)
    masks = (images[:, 0] * 3).long().clamp(max=2)
    for name in ("pgd", "segpgd", "pgd-l2"):
        result = create_segmentation_attack(name, model, eps="8/255" if name != "pgd-l2" else 0.5, steps=3)(
            images, masks
        )
        with torch.no_grad():
            assert torch.equal(result.adv_pred, model(result.adv).argmax(1)), name
        assert int(result.queries[0]) == 3 + 1  # steps and the ranking forward
        # the clean label map is one forward when first read (the audit has its own)
        with torch.no_grad():
            clean = model(images).argmax(1)
        assert torch.equal(result.clean_pred, clean)
        expected = (clean != result.adv_pred).flatten(1).float().mean(1)
        torch.testing.assert_close(result.changed, expected)


@pytest.mark.parametrize("shape", [(2, 3, 5, 6), (1, 2, 4, 5, 6), (3, 4)])
def test_label_map_equals_argmax_over_the_label_axis_ties_included(shape):
    from medrobust.utils.labels import label_map

    gen = torch.Generator().manual_seed(0)
    logits = torch.randint(0, 3, shape, generator=gen).float()  # many ties
    assert torch.equal(label_map(logits), logits.argmax(1))


def test_the_clean_label_map_is_refused_once_the_model_changed():
    model = _tiny(["bg", "lesion"]).eval()
    images = torch.rand(2, 1, 16, 16, generator=torch.Generator().manual_seed(5))
    result = create_segmentation_attack("fgsm", model, eps="4/255")(images, (images[:, 0] > 0.5).long())
    with torch.no_grad():
        next(model.parameters()).add_(1.0)
    with pytest.raises(ConfigError, match=r"clean_pred must be read before the model changes"):
        result.clean_pred  # noqa: B018
