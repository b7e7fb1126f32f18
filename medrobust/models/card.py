"""The model card: what every classifier carries so attacks and audits see it as deployed.

A card is read from ``card.json`` files that come with third-party models, so every field is
validated when it is loaded: positive sizes, a finite intensity interval with low < high,
per-channel normalisation of the right length, a class list no longer than
:data:`medrobust.limits.MAX_CLASSES`, and an input no larger than
:data:`medrobust.limits.MAX_IMAGE_PIXELS`. Errors name the file and the field in one line.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from medrobust.errors import CheckpointError
from medrobust.limits import MAX_CLASSES, MAX_IMAGE_PIXELS

#: Most input channels a card may declare (RGB is 3; multi-sequence MRI stacks a handful).
MAX_IN_CHANNELS = 256
#: Largest ``card.json`` read (bytes); real cards are a few kilobytes.
MAX_CARD_BYTES = 1_000_000
#: Channels a grey image is repeated into with ``channels: "replicate"`` when ``model_channels`` is unset.
DEFAULT_REPLICATE_CHANNELS = 3
#: :func:`check_bounds_against_data` warns when the data span less than this fraction of the bounds.
NARROW_DATA_FRACTION = 0.05


def format_validation_error(exc: ValidationError) -> str:
    """One line from a pydantic error: ``field: message (got X); field: message``."""
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err.get("loc", ())) or "card"
        msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        got = repr(err.get("input"))
        got = got if len(got) <= 60 else got[:57] + "..."
        shown = "" if err.get("type") in ("value_error", "missing") else f" (got {got})"
        parts.append(f"{loc}: {msg}{shown}")
    return " ".join("; ".join(parts).split())


def _replicate_spelling(data: dict[str, Any]) -> dict[str, Any]:
    """Read ``{"in_channels": 3, "channels": "replicate"}`` as ``in_channels 1, model_channels 3``."""
    n = data.get("in_channels")
    if (
        data.get("channels") == "replicate"
        and data.get("model_channels") is None
        and isinstance(n, int)
        and not isinstance(n, bool)
        and n > 1
    ):
        data = {**data, "in_channels": 1, "model_channels": n}
    return data


class ModelCard(BaseModel):
    """Typed description of a classifier's input and output.

    Attacks work in *image space*: inputs lie in ``bounds`` (per-pixel intensity
    interval, e.g. ``[0, 1]`` after a preset, or Hounsfield units for CT).
    Normalisation (``mean``/``std``) is a layer inside the model, never applied by
    the attack. Models always return logits (probability outputs are wrapped).

    A ``card.json`` may also state ``num_classes``; it is checked against ``class_names``
    and not stored (the class list is the one source of truth).

    ``in_channels`` is the number of channels of the images the audit feeds (image space).
    ``channels: "replicate"`` puts grey data into a network that takes several channels
    (an RGB model): the 1-channel image is repeated ``model_channels`` times (default 3)
    *inside* the model wrapper, so attacks perturb the 1-channel image. With
    ``channels: "replicate"`` a card may state the network's channels as ``in_channels``
    (``{"in_channels": 3, "channels": "replicate"}``); it is read as ``in_channels: 1,
    model_channels: 3``. ``mean``/``std`` may have one value per network channel.

    ``preset_options`` tell the audit's modality preset how this model's inputs were prepared
    (:func:`medrobust.data.presets.get_preset` options): ``channels`` (1 or 3, e.g. 3 for RGB
    brain-MRI exports into a 3-channel model), ``scaling`` with ``percentiles`` / ``nonzero`` /
    ``value_range`` (e.g. ``{"scaling": "range", "value_range": [-1000, 400]}``, a fixed window
    in native units), and ``bounds``. The size is the card's ``spatial_size``. An audit config's
    ``data.preset_options`` override them key by key.
    """

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    in_channels: int = Field(ge=1, le=MAX_IN_CHANNELS)
    class_names: list[str] = Field(min_length=2, max_length=MAX_CLASSES)
    spatial_size: tuple[int, ...] | None = None
    spatial_dims: Literal[2, 3] = 2
    modality: str = "unknown"
    bounds: tuple[float, float] = (0.0, 1.0)
    mean: list[float] | None = None
    std: list[float] | None = None
    positive_class: str | None = None
    input_layout: Literal["NCHW", "NHWC"] = "NCHW"
    outputs: Literal["logits", "probabilities", "log_probabilities"] = "logits"
    channels: Literal["as_is", "replicate"] = "as_is"
    model_channels: int | None = Field(None, ge=2, le=MAX_IN_CHANNELS)
    preset_options: dict[str, Any] = Field(default_factory=dict)
    arch: str | None = None
    source: str | None = None
    notes: list[str] = Field(default_factory=list)

    @property
    def num_classes(self) -> int:
        """Number of classes."""
        return len(self.class_names)

    @property
    def network_channels(self) -> int:
        """Channels the network itself takes (``model_channels`` when replicating, else ``in_channels``)."""
        return (
            self.model_channels if self.channels == "replicate" and self.model_channels else self.in_channels
        )

    def network_card(self) -> ModelCard:
        """The card as the bare network sees it: ``in_channels`` = :attr:`network_channels`, no replication.

        Loaders build and check the network with this card; the wrapper then repeats the
        image's channel (see :func:`medrobust.models.channels.with_channel_policy`).
        """
        if self.channels == "as_is":
            return self
        return self.model_copy(
            update={"in_channels": self.network_channels, "channels": "as_is", "model_channels": None}
        )

    @property
    def positive_index(self) -> int | None:
        """Index of the positive class (for sensitivity / specificity), if any."""
        return None if self.positive_class is None else self.class_names.index(self.positive_class)

    @model_validator(mode="before")
    @classmethod
    def _check_num_classes(cls, data: Any) -> Any:
        if isinstance(data, BaseModel):
            return data
        if not isinstance(data, dict):
            raise ValueError(f"a model card must be a JSON object (mapping). Got {type(data).__name__}")
        data = _replicate_spelling(data)
        if "num_classes" not in data:
            return data
        data = dict(data)
        stated = data.pop("num_classes")
        names = data.get("class_names")
        if isinstance(stated, bool) or not isinstance(stated, int) or not 2 <= stated <= MAX_CLASSES:
            raise ValueError(f"num_classes must be an int in [2, {MAX_CLASSES}]. Got {stated!r}")
        if isinstance(names, list) and len(names) != stated:
            raise ValueError(f"num_classes is {stated} but class_names lists {len(names)} names")
        return data

    @field_validator("class_names")
    @classmethod
    def _check_class_names(cls, v: list[str]) -> list[str]:
        empty = [i for i, name in enumerate(v) if not name.strip()]
        if empty:
            raise ValueError(f"class names must be non-empty; entry {empty[0]} is {v[empty[0]]!r}")
        return v

    @field_validator("spatial_size")
    @classmethod
    def _check_spatial_size(cls, v: tuple[int, ...] | None) -> tuple[int, ...] | None:
        if v is None:
            return v
        if len(v) not in (2, 3) or any(s < 1 for s in v):
            raise ValueError(f"spatial_size must be 2 or 3 positive sizes. Got {list(v)}")
        if math.prod(v) > MAX_IMAGE_PIXELS:
            raise ValueError(
                f"spatial_size {list(v)} has {math.prod(v)} pixels; at most {MAX_IMAGE_PIXELS} "
                "(medrobust.limits.MAX_IMAGE_PIXELS) are accepted"
            )
        return v

    @field_validator("preset_options", mode="before")
    @classmethod
    def _check_preset_options(cls, v: Any) -> Any:
        if v is None:
            return {}
        from medrobust.data.presets.base import PRESET_OPTIONS, check_preset_options
        from medrobust.errors import ConfigError

        if isinstance(v, dict) and "spatial_size" in v:
            raise ValueError("the input size is the card's spatial_size, not a preset option")
        allowed = [k for k in PRESET_OPTIONS if k != "spatial_size"]
        try:
            return check_preset_options(v, "card.json", allowed)
        except ConfigError as exc:
            raise ValueError(str(exc)) from None

    @field_validator("bounds")
    @classmethod
    def _check_bounds(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not v[0] < v[1]:
            raise ValueError(f"bounds must satisfy low < high. Got {list(v)}")
        if not math.isfinite(v[1] - v[0]):
            raise ValueError(f"bounds must have a finite width high - low. Got {list(v)}")
        return v

    @model_validator(mode="after")
    def _check_consistency(self) -> ModelCard:
        if self.channels == "replicate":
            if self.in_channels != 1:
                raise ValueError(
                    "channels 'replicate' repeats a 1-channel image into the network's model_channels; "
                    f"in_channels (the images' channels) must be 1. Got {self.in_channels}"
                )
            if self.model_channels is None:
                self.model_channels = DEFAULT_REPLICATE_CHANNELS
        elif self.model_channels is not None and self.model_channels != self.in_channels:
            raise ValueError(
                f"model_channels ({self.model_channels}) differs from in_channels ({self.in_channels}); "
                "set channels: 'replicate' to repeat a grey image into the network's channels"
            )
        wanted = self.preset_options.get("channels")
        if wanted is not None and wanted != self.in_channels:
            raise ValueError(
                f"preset_options.channels ({wanted}) must equal in_channels ({self.in_channels}), the "
                "channels of the images the audit feeds (grey data into an RGB network: channels 'replicate')"
            )
        sizes = sorted({1, self.in_channels, self.network_channels})
        for name in ("mean", "std"):
            val = getattr(self, name)
            if val is not None and len(val) not in sizes:
                shown = " or ".join(str(s) for s in sizes)
                raise ValueError(
                    f"{name} must have {shown} values (1, in_channels={self.in_channels} or the "
                    f"network's {self.network_channels} channels). Got {len(val)}"
                )
        if self.std is not None and any(s <= 0 for s in self.std):
            raise ValueError(f"std values must be > 0. Got {self.std}")
        if self.positive_class is not None and self.positive_class not in self.class_names:
            raise ValueError(
                f"positive_class {self.positive_class!r} is not one of class_names {self.class_names}"
            )
        if len(set(self.class_names)) != len(self.class_names):
            dupes = sorted({n for n in self.class_names if self.class_names.count(n) > 1})
            raise ValueError(f"class_names must be unique; repeated: {dupes}")
        if self.spatial_size is not None and len(self.spatial_size) != self.spatial_dims:
            raise ValueError(
                f"spatial_size {list(self.spatial_size)} has {len(self.spatial_size)} sizes but "
                f"spatial_dims is {self.spatial_dims}"
            )
        pixels = math.prod(self.spatial_size) if self.spatial_size is not None else 0
        if pixels * self.network_channels > 3 * MAX_IMAGE_PIXELS:
            raise ValueError(
                f"in_channels x spatial_size = {self.network_channels} x {list(self.spatial_size or ())} "
                "values per image; at most {3 * MAX_IMAGE_PIXELS} are accepted"
            )
        return self

    @classmethod
    def from_mapping(cls, values: Any, source: str = "the 'card' parameter") -> ModelCard:
        """Validate a mapping into a card; errors are one line naming ``source``.

        Raises:
            CheckpointError: when ``values`` is not a mapping or a field is invalid.
        """
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            raise CheckpointError(
                f"{source}: not a valid model card: {format_validation_error(exc)}"
            ) from None

    def save(self, path: str | Path) -> Path:
        """Write the card as JSON (atomically)."""
        from medrobust.utils.io import atomic_write_text

        return atomic_write_text(path, self.model_dump_json(indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> ModelCard:
        """Read a card from a UTF-8 JSON file, with a one-line error naming the file on failure.

        Raises:
            CheckpointError: when the file is missing, a folder, larger than
                :data:`MAX_CARD_BYTES`, not UTF-8, not JSON, not an object, or a field is invalid.
        """
        path = Path(path)
        if path.is_dir():
            raise CheckpointError(f"{path}: the model card must be a JSON file, but this is a folder.")
        try:
            size = path.stat().st_size
            if size > MAX_CARD_BYTES:
                raise CheckpointError(
                    f"{path}: the model card is {size} bytes; cards of at most {MAX_CARD_BYTES} bytes "
                    "are read."
                )
            raw = path.read_bytes()
        except FileNotFoundError:
            raise CheckpointError(f"{path}: model card not found (expected card.json).") from None
        except OSError as exc:
            raise CheckpointError(f"{path}: cannot read the model card: {exc.strerror or exc}") from None
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise CheckpointError(
                f"{path}: the model card must be UTF-8 JSON; byte {exc.start} is "
                f"{raw[exc.start : exc.start + 1]!r}."
            ) from None
        try:
            values = json.loads(text)
        except json.JSONDecodeError as exc:
            raise CheckpointError(
                f"{path}: the model card is not valid JSON: {exc.msg} at line {exc.lineno} "
                f"column {exc.colno}."
            ) from None
        except RecursionError:
            raise CheckpointError(
                f"{path}: the model card is nested too deeply to be a model card."
            ) from None
        if not isinstance(values, dict):
            raise CheckpointError(
                f"{path}: the model card must be a JSON object with in_channels, class_names, bounds... "
                f"Got a JSON {type(values).__name__}."
            )
        return cls.from_mapping(values, str(path))


def check_bounds_against_data(card: ModelCard, low: float, high: float) -> str | None:
    """Compare the data's observed intensity range with the card's bounds; a warning or None.

    Meant for the audit: a card stating ``[0, 255]`` while the preset scales images to
    ``[0, 1]`` lets every attack budget mean something else than intended, and data
    outside the bounds are clipped by every attack.

    Args:
        card: The model card.
        low: Smallest intensity observed in the (preprocessed) data.
        high: Largest intensity observed.

    Returns:
        A one-line warning when the data lie outside the bounds, when they span less than
        :data:`NARROW_DATA_FRACTION` of the bounds' width, or when the range is not finite;
        otherwise None.
    """
    b_low, b_high = (float(b) for b in card.bounds)
    width = b_high - b_low
    low, high = float(low), float(high)
    shown = f"[{b_low:g}, {b_high:g}]"
    if not (math.isfinite(low) and math.isfinite(high)):
        return (
            f"the data hold non-finite intensities (range [{low:g}, {high:g}]); "
            f"the card's bounds are {shown}."
        )
    if low > high:
        low, high = high, low
    tol = 1e-6 * width
    if low < b_low - tol or high > b_high + tol:
        return (
            f"the data's intensity range [{low:g}, {high:g}] lies outside the model card's bounds {shown}: "
            "check that the preset scales images the way the model was trained (attacks clip to the bounds)."
        )
    if high - low < NARROW_DATA_FRACTION * width:
        share = 100.0 * (high - low) / width
        return (
            f"the data's intensity range [{low:g}, {high:g}] covers {share:.2g} % of the model card's bounds "
            f"{shown} (under {100 * NARROW_DATA_FRACTION:g} %): the preset probably scales the data "
            "differently from what the model was trained on, and attack budgets relative to the bounds "
            "mean little."
        )
    return None
