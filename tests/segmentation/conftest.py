"""A segmenter trained once per session on 2D skin phantoms (binary lesion masks)."""

from __future__ import annotations

import pytest


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
