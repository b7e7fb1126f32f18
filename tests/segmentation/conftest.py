"""A segmenter trained once per session on 2D skin phantoms (binary lesion masks), its val+test batch."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="session")
def skin_run(tmp_path_factory):
    """Run folder of a small UNet trained 5 epochs on 40 skin phantoms of 32x32 (about 7 s on one thread)."""
    from medrobust.data.segmentation.phantoms import write_segmentation_phantom
    from medrobust.models.segmentation import train_segmenter

    root = tmp_path_factory.mktemp("skin_seg")
    data = write_segmentation_phantom("skin", 40, 32, "png", root / "data", seed=0)
    return train_segmenter(
        {
            "data": str(data),
            "arch": "unet",
            "arch_kwargs": {"channels": [4, 8, 8, 8], "num_res_units": 1},
            "epochs": 5,
            "batch_size": 8,
            "lr": 0.01,
            "out": str(root / "run"),
            "progress": False,
            "device": "cpu",
        }
    )


@pytest.fixture(scope="module")
def skin_batch(skin_run):
    """``(model, images, masks)``: the trained skin UNet and its val + test phantoms as one batch."""
    from medrobust.data.segmentation import SegmentationDataset, collate_pairs, open_segmentation_source
    from medrobust.models.segmentation import load_segmenter

    src = open_segmentation_source(skin_run.parent / "data")
    items = [
        ds[i]
        for split in ("val", "test")
        for ds in [SegmentationDataset(src, split, "skin")]
        for i in range(len(ds))
    ]
    return load_segmenter(skin_run), *collate_pairs(items)


@pytest.fixture(scope="session")
def lesion_dice():
    """``lesion_dice(model, images, masks)``: mean lesion (label 1) Dice of the model's prediction."""
    from medrobust.metrics_segmentation import dice_per_class

    def dice(model, images, masks) -> float:
        with torch.no_grad():
            pred = model(images).argmax(1)
        return float(torch.as_tensor(dice_per_class(pred, masks, 2)[:, 1]).nanmean())

    return dice


@pytest.fixture
def shipped_plan(tmp_path):
    """``shipped_plan(NAME)``: ``(config, planned cells)`` of ``pipelines/NAME.yaml`` (model in tmp_path)."""
    from pathlib import Path

    import yaml

    from medrobust.evaluation.segmentation.config import segmentation_config_from_dict
    from medrobust.evaluation.segmentation.planning import all_cells, plan_segmentation_audit

    def plan(name: str):
        path = Path(__file__).resolve().parents[2] / "pipelines" / f"{name}.yaml"
        data = yaml.safe_load(path.read_text())
        data["model"]["path"] = str(tmp_path)
        cfg = segmentation_config_from_dict(data, path.name)
        return cfg, all_cells(plan_segmentation_audit(cfg, (0.0, 1.0)))

    return plan
