"""The preset contract: a modality's input pipeline as a small registered object.

A :class:`Preset` turns a MONAI-style dict ``{"image": np.ndarray (C, H, W) in the
file's native units, ...}`` into ``{"image": float32 torch.Tensor (C, *spatial_size)
inside preset.bounds, ...}``. Each modality lives in its own file and declares:

* its fixed choices as class attributes (``name``, ``modality``, ``channels``,
  ``positive_class_hint``, ``supports_3d``);
* :meth:`Preset.intensity` - the steps from native units to the internal unit
  range ``[0, 1]`` (percentile scaling, photo scaling, FOV crop, ...);
* :meth:`Preset.resize` - how to reach ``spatial_size`` (plain or aspect-keeping);
* :meth:`Preset.augmentations` - MONAI random transforms used when ``augment=True``.

The base class chains them as ``check -> channels -> intensity -> resize ->
[augment] -> to bounds``. Importing this module does not import torch or MONAI;
:meth:`Preset.transform` does.

Options (``get_preset(name, **options)``, ``make_dataset(..., preset_options={...})``) tell a
preset what it cannot know about the data or the model, and are validated when given:

* ``spatial_size``, ``bounds``: output size and intensity interval;
* ``channels``: 1 or 3, the channel count the pipeline outputs (the model's input), e.g.
  ``channels=3`` for brain MRI shipped as RGB PNGs to a 3-channel model; grey is repeated to
  3 channels, RGB turned grey by luminance;
* ``scaling``: how native intensities reach the unit range, replacing the preset's own:
  ``"percentile"`` (``percentiles=(low, high)``, default (1, 99); ``nonzero=True`` to use only
  non-zero voxels), ``"photo"`` (/255 for 8-bit data, else percentiles 0-99.9), ``"range"``
  (the fixed native interval ``value_range=(low, high)``, e.g. a CT window (-1000, 400) in HU or
  (0, 4095) for 12-bit data) or ``"minmax"`` (each image's own minimum and maximum). Giving
  ``percentiles`` or ``value_range`` alone selects their scaling.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, ClassVar

from medrobust.errors import ConfigError
from medrobust.registry import Registry, did_you_mean
from medrobust.validation import check_bounds, check_choice, check_float, check_int

if TYPE_CHECKING:
    from monai.transforms import Compose

PRESETS: Registry[type[Preset]] = Registry("preset")

#: Key of the image in the dicts the presets transform.
IMAGE_KEY = "image"


#: ``@register_preset("name", *aliases)``: registers the class and sets its ``name``.
register_preset = PRESETS.decorator("name")


def _check_spatial_size(value: Any, owner: str, allow_3d: bool) -> tuple[int, ...]:
    lengths = "2 (H, W) or 3 (D, H, W)" if allow_3d else "2 (H, W)"
    where = f"The 'spatial_size' parameter of {owner}"
    if isinstance(value, int) and not isinstance(value, bool):
        value = (value, value)
    try:
        items = tuple(value)
    except TypeError:
        raise ConfigError(f"{where} must be a tuple of {lengths} ints. Got {value!r}.") from None
    if len(items) not in ((2, 3) if allow_3d else (2,)):
        raise ConfigError(f"{where} must have {lengths} values. Got {value!r}.")
    return tuple(check_int(v, "spatial_size", owner, low=1, high=8192) for v in items)


#: Choices of the ``scaling`` option.
SCALING_CHOICES: tuple[str, ...] = ("percentile", "photo", "range", "minmax")
#: Options every preset accepts (names as given to :func:`get_preset`).
PRESET_OPTIONS: tuple[str, ...] = (
    "bounds",
    "channels",
    "nonzero",
    "percentiles",
    "scaling",
    "spatial_size",
    "value_range",
)
#: Default percentiles of ``scaling="percentile"``.
DEFAULT_PERCENTILES: tuple[float, float] = (1.0, 99.0)


def _check_pair(value: Any, name: str, owner: str, what: str) -> tuple[float, float]:
    where = f"The {name!r} option of {owner}"
    if isinstance(value, (str, bytes)) or not hasattr(value, "__len__") or len(value) != 2:
        raise ConfigError(f"{where} must be two numbers ({what}). Got {value!r}.")
    lo, hi = (check_float(v, name, owner) for v in value)
    if not lo < hi:
        raise ConfigError(f"{where} must be two numbers ({what}) with low < high. Got {value!r}.")
    return lo, hi


@dataclass(frozen=True)
class Preset:
    """A modality preset.

    Args:
        spatial_size: Default output size (H, W) (or (D, H, W) where 3D is supported).
        bounds: Output intensity interval ``(low, high)``; recorded so attacks can use it.
        output_channels: Overrides the preset's channel count (1 or 3); :func:`get_preset`
            takes it as ``channels``.
        scaling: Overrides the preset's intensity scaling (see :data:`SCALING_CHOICES`).
        percentiles: ``(low, high)`` percentiles for ``scaling="percentile"``.
        nonzero: Percentiles of the non-zero voxels only (``scaling="percentile"``).
        value_range: Native ``(low, high)`` mapped to the bounds for ``scaling="range"``.

    Attributes:
        name: Registered name.
        modality: Imaging modality (e.g. "chest_xray").
        channels: Output channel count (1 or 3): the class default, or ``output_channels``.
        positive_class_hint: Usual name of the positive class, if the task is binary.
        supports_3d: Whether a 3-value ``spatial_size`` (volumes ``(C, D, H, W)``) is accepted.
        notes: Human-readable reasons for the preset's choices (shown by the CLI/docs).
    """

    spatial_size: tuple[int, ...] = (224, 224)
    bounds: tuple[float, float] = (0.0, 1.0)
    output_channels: int | None = None
    scaling: str | None = None
    percentiles: tuple[float, float] | None = None
    nonzero: bool | None = None
    value_range: tuple[float, float] | None = None

    name: ClassVar[str] = "preset"
    modality: ClassVar[str] = "unknown"
    channels: ClassVar[int] = 1
    positive_class_hint: ClassVar[str | None] = None
    supports_3d: ClassVar[bool] = False
    notes: ClassVar[tuple[str, ...]] = ()

    def __post_init__(self) -> None:
        owner = f"preset {self.name!r}"
        object.__setattr__(
            self, "spatial_size", _check_spatial_size(self.spatial_size, owner, self.supports_3d)
        )
        object.__setattr__(self, "bounds", check_bounds(self.bounds, "bounds", owner))
        if self.output_channels is not None:
            c = self.output_channels
            if isinstance(c, bool) or not isinstance(c, int) or c not in (1, 3):
                raise ConfigError(f"The 'channels' option of {owner} must be 1 or 3. Got {c!r}.")
            object.__setattr__(self, "channels", c)  # shadows the class default for this instance
        self._check_scaling(owner)

    def _check_scaling(self, owner: str) -> None:
        scaling = self.scaling
        if scaling is None and self.percentiles is not None:
            scaling = "percentile"
        if scaling is None and self.value_range is not None:
            scaling = "range"
        if scaling is None and self.nonzero is not None:
            raise ConfigError(
                f"The 'nonzero' option of {owner} applies to scaling='percentile'. "
                f"Got nonzero={self.nonzero!r} without a scaling."
            )
        if scaling is None:
            return
        scaling = check_choice(scaling, "scaling", SCALING_CHOICES, owner)
        object.__setattr__(self, "scaling", scaling)
        needs_of = {"percentiles": "percentile", "nonzero": "percentile", "value_range": "range"}
        for option, needs in needs_of.items():
            if getattr(self, option) is not None and scaling != needs:
                raise ConfigError(
                    f"The {option!r} option of {owner} applies to scaling={needs!r}. Got scaling={scaling!r}."
                )
        if scaling == "percentile":
            lo, hi = _check_pair(self.percentiles or DEFAULT_PERCENTILES, "percentiles", owner, "low, high")
            if not 0.0 <= lo < hi <= 100.0:
                raise ConfigError(
                    f"The 'percentiles' option of {owner} must satisfy 0 <= low < high <= 100. "
                    f"Got {self.percentiles!r}."
                )
            object.__setattr__(self, "percentiles", (lo, hi))
            if self.nonzero is not None and not isinstance(self.nonzero, bool):
                raise ConfigError(
                    f"The 'nonzero' option of {owner} must be true or false. Got {self.nonzero!r}."
                )
        if scaling == "range":
            if self.value_range is None:
                raise ConfigError(
                    f"The 'value_range' option of {owner} is required with scaling='range' "
                    "(the native (low, high) mapped to the bounds, e.g. [-1000, 400] for a CT window)."
                )
            pair = _check_pair(self.value_range, "value_range", owner, "native low, high")
            object.__setattr__(self, "value_range", pair)

    @property
    def options(self) -> dict[str, Any]:
        """The options this preset was given beyond its class defaults (as :func:`get_preset` names them)."""
        out: dict[str, Any] = {}
        if self.output_channels is not None:
            out["channels"] = self.output_channels
        for key in ("scaling", "percentiles", "nonzero", "value_range"):
            value = getattr(self, key)
            if value is not None:
                out[key] = list(value) if isinstance(value, tuple) else value
        return out

    def with_options(self, **options: Any) -> Preset:
        """A copy of this preset with ``options`` (names as for :func:`get_preset`) applied.

        Raises:
            ConfigError: for an unknown option (with a "did you mean" hint) or an invalid value.
        """
        return replace(self, **_option_fields(options, self.name))

    def scaled(self, default: Callable[..., Any]) -> Callable[..., Any]:
        """The intensity scaling step: ``default`` unless the ``scaling`` option replaces it."""
        if self.scaling is None:
            return default
        from medrobust.data.presets._transforms import (
            MinMaxScaled,
            PercentileScaled,
            PhotoScaled,
            RangeScaled,
        )

        keys = [IMAGE_KEY]
        if self.scaling == "percentile":
            lo, hi = self.percentiles or DEFAULT_PERCENTILES
            return PercentileScaled(keys, lo, hi, nonzero=bool(self.nonzero))
        if self.scaling == "photo":
            return PhotoScaled(keys)
        if self.scaling == "range":
            assert self.value_range is not None  # checked in __post_init__
            return RangeScaled(keys, *self.value_range)
        return MinMaxScaled(keys)

    # -- pieces subclasses override -------------------------------------------------
    def intensity(self) -> list[Callable[..., Any]]:
        """Transforms from native units to the internal ``[0, 1]`` range (after channel conversion)."""
        raise NotImplementedError

    def resize(self, spatial_size: tuple[int, ...]) -> Callable[..., Any]:
        """The resize transform (default: plain resize, aspect ratio not kept)."""
        from medrobust.data.presets._transforms import Resized

        return Resized([IMAGE_KEY], spatial_size, self.name)

    def augmentations(self, spatial_dims: int) -> list[Callable[..., Any]]:
        """MONAI random transforms applied to the ``[0, 1]`` image when ``augment=True``."""
        return []

    # -- public API -----------------------------------------------------------------
    def transform(
        self, spatial_size: Sequence[int] | int | None = None, augment: bool = False, seed: int = 0
    ) -> Compose:
        """Build the MONAI ``Compose`` of this preset.

        Args:
            spatial_size: Output size; defaults to ``self.spatial_size``. Three values
                select the 3D path (``(C, D, H, W)`` volumes) where supported.
            augment: Add the training augmentations (random, seeded by ``seed``).
            seed: Seed of the random transforms, set through MONAI's
                ``Compose.set_random_state`` (no global RNG is touched). The same seed
                gives the same sequence of augmentations.

        Returns:
            A ``monai.transforms.Compose`` mapping ``{"image": array (C, ...), ...}`` to
            ``{"image": float32 torch.Tensor (channels, *spatial_size) in bounds, ...}``.
        """
        from medrobust.data.presets._transforms import CheckImaged, PresetCompose, ToBoundsd, ToChannelsd

        owner = f"preset {self.name!r}"
        size = (
            self.spatial_size
            if spatial_size is None
            else _check_spatial_size(spatial_size, owner, self.supports_3d)
        )
        seed = check_int(seed, "seed", owner, low=0, high=2**32 - 1)
        keys = [IMAGE_KEY]
        steps: list[Callable[..., Any]] = [
            CheckImaged(keys, spatial_dims=len(size), preset=self.name),
            ToChannelsd(keys, channels=self.channels, preset=self.name),
            *self.intensity(),
            self.resize(size),
        ]
        if augment:
            steps += self.augmentations(len(size))
        steps.append(ToBoundsd(keys, self.bounds))
        compose = PresetCompose(steps)
        compose.set_random_state(seed=seed)
        return compose

    def describe(self) -> dict[str, Any]:
        """A JSON-friendly summary (name, modality, channels, spatial_size, bounds, options, notes)."""
        notes = list(self.notes)
        opts = self.options
        if opts:
            notes.append("options: " + ", ".join(f"{k}={v}" for k, v in opts.items()))
        return {
            "name": self.name,
            "modality": self.modality,
            "channels": self.channels,
            "spatial_size": list(self.spatial_size),
            "bounds": list(self.bounds),
            "positive_class_hint": self.positive_class_hint,
            "supports_3d": self.supports_3d,
            "options": opts,
            "notes": notes,
        }


def _option_fields(options: Mapping[str, Any], name: str) -> dict[str, Any]:
    """Map :func:`get_preset` option names onto :class:`Preset` fields; ``None`` values are dropped."""
    unknown = sorted(set(options) - set(PRESET_OPTIONS))
    if unknown:
        hint = did_you_mean(str(unknown[0]), list(PRESET_OPTIONS))
        raise ConfigError(
            f"Preset {name!r} got unknown option(s) {unknown}.{hint} Valid: {list(PRESET_OPTIONS)}."
        )
    fields = {("output_channels" if k == "channels" else k): v for k, v in options.items() if v is not None}
    for key in ("percentiles", "value_range", "bounds"):
        if isinstance(fields.get(key), list):
            fields[key] = tuple(fields[key])
    return fields


def check_preset_options(options: Any, owner: str, allowed: Sequence[str] = PRESET_OPTIONS) -> dict[str, Any]:
    """Validate preset options given outside a preset (a model card, an audit config).

    Args:
        options: A mapping of :data:`PRESET_OPTIONS` names to values (``None`` values dropped).
        owner: What gave them, named in messages (``"card.json preset_options"``).
        allowed: The option names this owner may give (e.g. without ``spatial_size`` where the
            owner states the size elsewhere).

    Returns:
        The options in canonical form (pairs as lists, scaling implied by ``percentiles`` /
        ``value_range`` spelled out), ready for :func:`get_preset` / ``Preset.with_options``.

    Raises:
        ConfigError: naming ``owner`` for a non-mapping, an option not in ``allowed`` (with a
            "did you mean" hint) or an invalid value.
    """
    if not isinstance(options, Mapping):
        raise ConfigError(
            f"The preset options of {owner} must be a mapping such as {{scaling: range, value_range: "
            f"[-1000, 400]}}. Got {type(options).__name__}."
        )
    unknown = sorted(str(k) for k in options if k not in allowed)
    if unknown:
        hint = did_you_mean(unknown[0], list(allowed))
        raise ConfigError(
            f"The preset options of {owner} hold unknown option(s) {unknown}.{hint} Valid: {list(allowed)}."
        )
    given = {k: v for k, v in options.items() if v is not None}
    checked = type("CheckedPreset", (Preset,), {"name": owner, "supports_3d": True})(
        **_option_fields(given, owner)
    )
    out = checked.options
    for key in ("spatial_size", "bounds"):
        if key in given:
            out[key] = list(getattr(checked, key))
    return out


def get_preset(name: str, **options: Any) -> Preset:
    """Return the preset ``name`` (e.g. ``"chest_xray"``), optionally with options.

    Args:
        name: A registered preset name or alias.
        **options: Any of :data:`PRESET_OPTIONS` (``spatial_size``, ``bounds``, ``channels``,
            ``scaling``, ``percentiles``, ``nonzero``, ``value_range``; see the module docstring).
            ``None`` means the preset's default.

    Raises:
        ConfigError: for an unknown name or option (with a "did you mean" hint) or an invalid value.
    """
    cls = PRESETS.get(name)
    return cls(**_option_fields(options, cls.name))


def list_presets() -> list[str]:
    """Names of all registered presets."""
    return PRESETS.names()
