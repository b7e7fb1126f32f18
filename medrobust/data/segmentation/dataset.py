"""A torch ``Dataset`` of transformed image + mask pairs, and their collate function."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch.utils.data import Dataset

from medrobust.data.presets.base import Preset


class SegmentationDataset(Dataset):
    """Pairs of one split of a source, transformed by :func:`.transforms.segmentation_transform`.

    Items are ``{"image": float32 (C, *spatial) in the preset's bounds, "label": int64 (1, *spatial),
    "meta": dict}``. The random state of the augmentations lives in :attr:`transform` (the training
    loop reseeds it every epoch).

    Args:
        source: A :class:`~medrobust.data.segmentation.base.SegmentationSource`.
        split: Split name, or None for every pair.
        preset: Modality preset (name or object).
        spatial_size: Output size (None: each image's own size).
        augment: Apply the paired augmentations.
        seed: Seed of the augmentations.
    """

    def __init__(
        self,
        source: Any,
        split: str | None = None,
        preset: str | Preset = "chest_xray",
        spatial_size: Sequence[int] | None = None,
        augment: bool = False,
        seed: int = 0,
    ) -> None:
        from medrobust.data.segmentation.transforms import segmentation_transform

        self.source = source
        self.records = source.records(split)
        dims = 3 if source.slice == "volume" and self._first_is_volume() else 2
        if spatial_size is not None:
            dims = len(tuple(spatial_size))
        self.spatial_dims = dims
        self.transform = segmentation_transform(
            preset, spatial_size, augment=augment, seed=seed, spatial_dims=dims
        )

    def _first_is_volume(self) -> bool:
        from medrobust.data.suffixes import NIFTI_SUFFIXES, file_suffix

        return (
            bool(self.records) and file_suffix(self.records[0].image) in NIFTI_SUFFIXES and self._ndim() == 4
        )

    def _ndim(self) -> int:
        return int(self.source.load(self.records[0])["image"].ndim)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = self.source.load(self.records[index])
        return dict(self.transform(item))


def collate_pairs(batch: list[dict[str, Any]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack images ``(N, C, ...)`` and masks ``(N, 1, ...)`` (``meta`` stays out of the batch)."""
    images = torch.stack([torch.as_tensor(item["image"]).float() for item in batch])
    labels = torch.stack([torch.as_tensor(item["label"]).long() for item in batch])
    return images, labels
