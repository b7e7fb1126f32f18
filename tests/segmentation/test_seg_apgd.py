"""APGD on segmenters: in the registry (so the shared conformance test covers it), at least as strong
as PGD with the same steps on a trained UNet, both goals, restarts, one forward per iteration."""

from __future__ import annotations

import pytest
import torch

from medrobust.attacks.segmentation import create_segmentation_attack, list_segmentation_attacks
from medrobust.errors import ConfigError
from medrobust.models.segmentation import SegmentationCard, build_segmenter


def test_apgd_is_registered_beside_pgd():
    assert {"apgd", "pgd"} <= set(list_segmentation_attacks())
    model = _tiny()
    assert type(create_segmentation_attack("apgd-ce", model)).__name__ == "SegmentationAPGD"
    with pytest.raises(
        ConfigError, match=r"The 'rho' parameter of SegmentationAPGD must be a float in \(0, 1\]"
    ):
        create_segmentation_attack("apgd", model, rho=1.5)


def test_apgd_lowers_the_dice_at_least_as_much_as_pgd_with_the_same_steps(skin_batch, lesion_dice):
    model, images, masks = skin_batch
    clean = lesion_dice(model, images, masks)
    assert clean > 0.6
    pgd = create_segmentation_attack("pgd", model, eps="8/255", steps=10, seed=0)(images, masks)
    apgd = create_segmentation_attack("apgd", model, eps="8/255", steps=10, seed=0)(images, masks)
    d_pgd, d_apgd = lesion_dice(model, pgd.adv, masks), lesion_dice(model, apgd.adv, masks)
    assert d_apgd < clean - 0.2
    assert d_apgd <= d_pgd + 0.01  # measured 0.376 against 0.427 (clean 0.857)
    # one forward per iteration, like PGD; PGD's label map of its result comes from its ranking forward
    assert torch.equal(apgd.queries, pgd.queries + 1)
    assert float(apgd.linf.max()) <= 8 / 255 * (1 + 1e-5)
    erase = create_segmentation_attack("apgd", model, eps="8/255", steps=10, goal="erase-lesion")(
        images, masks
    )
    assert lesion_dice(model, erase.adv, masks) < clean - 0.2


def _tiny() -> torch.nn.Module:
    torch.manual_seed(0)
    card = SegmentationCard(in_channels=1, class_names=["bg", "lesion"], bounds=(0.0, 1.0))
    return build_segmenter("tiny", card, width=4).eval()


def test_restarts_keep_the_best_run_per_image():
    model = _tiny()
    gen = torch.Generator().manual_seed(0)
    images = torch.rand(4, 1, 16, 16, generator=gen)
    masks = (images[:, 0] > 0.5).long()
    one = create_segmentation_attack("apgd", model, eps="8/255", steps=4, seed=1)
    three = create_segmentation_attack("apgd", model, eps="8/255", steps=4, restarts=3, seed=1)
    r1, r3 = one(images, masks), three(images, masks)
    with torch.no_grad():
        v1 = one.objective(model(r1.adv), masks)
        v3 = three.objective(model(r3.adv), masks)
    assert bool((v3 >= v1 - 1e-6).all())  # the first restart is the single run; others only replace it
    # per restart: start, 4 steps, a ranking forward; then the final label map
    assert int(r3.queries[0]) == 3 * (4 + 1 + 1) + 1
