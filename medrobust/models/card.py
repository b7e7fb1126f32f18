"""The model card: what every classifier carries so attacks and audits see it as deployed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from medrobust.errors import CheckpointError


class ModelCard(BaseModel):
    """Typed description of a classifier's input and output.

    Attacks work in *image space*: inputs lie in ``bounds`` (per-pixel intensity
    interval, e.g. ``[0, 1]`` after a preset, or Hounsfield units for CT).
    Normalisation (``mean``/``std``) is a layer inside the model, never applied by
    the attack. Models always return logits (probability outputs are wrapped).
    """

    model_config = ConfigDict(extra="forbid")

    in_channels: int = Field(ge=1)
    class_names: list[str] = Field(min_length=2)
    spatial_size: tuple[int, ...] | None = None
    spatial_dims: Literal[2, 3] = 2
    modality: str = "unknown"
    bounds: tuple[float, float] = (0.0, 1.0)
    mean: list[float] | None = None
    std: list[float] | None = None
    positive_class: str | None = None
    input_layout: Literal["NCHW", "NHWC"] = "NCHW"
    outputs: Literal["logits", "probabilities", "log_probabilities"] = "logits"
    arch: str | None = None
    source: str | None = None
    notes: list[str] = Field(default_factory=list)

    @property
    def num_classes(self) -> int:
        """Number of classes."""
        return len(self.class_names)

    @property
    def positive_index(self) -> int | None:
        """Index of the positive class (for sensitivity / specificity), if any."""
        return None if self.positive_class is None else self.class_names.index(self.positive_class)

    @field_validator("bounds")
    @classmethod
    def _check_bounds(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not v[0] < v[1]:
            raise ValueError(f"bounds must satisfy low < high. Got {v}.")
        return v

    @model_validator(mode="after")
    def _check_consistency(self) -> ModelCard:
        for name in ("mean", "std"):
            val = getattr(self, name)
            if val is not None and len(val) not in (1, self.in_channels):
                raise ValueError(
                    f"{name} must have 1 or in_channels={self.in_channels} values. Got {len(val)}."
                )
        if self.std is not None and any(s <= 0 for s in self.std):
            raise ValueError(f"std values must be > 0. Got {self.std}.")
        if self.positive_class is not None and self.positive_class not in self.class_names:
            raise ValueError(
                f"positive_class {self.positive_class!r} is not one of class_names {self.class_names}."
            )
        if len(set(self.class_names)) != len(self.class_names):
            raise ValueError(f"class_names must be unique. Got {self.class_names}.")
        return self

    def save(self, path: str | Path) -> Path:
        """Write the card as JSON (atomically)."""
        from medrobust.utils.io import atomic_write_text

        return atomic_write_text(path, self.model_dump_json(indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> ModelCard:
        """Read a card from JSON, with an error naming the file on failure."""
        path = Path(path)
        try:
            return cls.model_validate(json.loads(path.read_text(encoding="utf-8")))
        except FileNotFoundError:
            raise CheckpointError(f"{path}: model card not found (expected card.json).") from None
        except (json.JSONDecodeError, ValueError) as exc:
            raise CheckpointError(f"{path}: not a valid model card: {exc}") from None
