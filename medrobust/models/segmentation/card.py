"""The segmentation model card: a :class:`~medrobust.models.card.ModelCard` with ``task: segmentation``.

``class_names`` are the label names (index = mask value, background first). Added fields:

* ``task``: always ``"segmentation"`` (a classifier card never carries it, so a segmenter's
  ``card.json`` is refused by the classifier loader, whose cards forbid unknown fields);
* ``lesion_classes``: labels that count as lesions (detection rate, the "erase the lesion" attack);
* ``roi_size``, ``sw_overlap``, ``sw_batch_size``: the sliding window used for inputs whose size
  differs from ``roi_size`` (differentiable, so attacks reach volumes larger than one window).
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import Field, model_validator

from medrobust.models.card import ModelCard

#: Most samples the sliding window evaluates at once.
MAX_SW_BATCH = 1024


class SegmentationCard(ModelCard):
    """Typed description of a segmentation network's input and output (logits ``(N, K, *spatial)``)."""

    task: Literal["segmentation"] = "segmentation"
    lesion_classes: list[str] = Field(default_factory=list)
    roi_size: tuple[int, ...] | None = None
    sw_overlap: float = Field(0.25, ge=0.0, lt=1.0)
    sw_batch_size: int = Field(4, ge=1, le=MAX_SW_BATCH)

    @property
    def label_names(self) -> list[str]:
        """The label names (``class_names``; index = mask value)."""
        return list(self.class_names)

    @property
    def lesion_indices(self) -> list[int]:
        """Mask values of the lesion labels."""
        return [self.class_names.index(n) for n in self.lesion_classes]

    @model_validator(mode="after")
    def _check_segmentation(self) -> SegmentationCard:
        unknown = [n for n in self.lesion_classes if n not in self.class_names]
        if unknown:
            raise ValueError(f"lesion_classes {unknown} are not among class_names {self.class_names}")
        if self.class_names[0] in self.lesion_classes:
            raise ValueError(f"lesion_classes must not hold the background label {self.class_names[0]!r}")
        if self.roi_size is not None:
            if len(self.roi_size) != self.spatial_dims or any(s < 1 for s in self.roi_size):
                raise ValueError(
                    f"roi_size must be {self.spatial_dims} positive sizes (spatial_dims). "
                    f"Got {list(self.roi_size)}"
                )
            if math.prod(self.roi_size) * self.network_channels > 3 * 8192**2:
                raise ValueError(f"roi_size {list(self.roi_size)} is larger than any image medrobust reads")
        return self
