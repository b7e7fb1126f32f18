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
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from medrobust.errors import ConfigError
from medrobust.registry import Registry
from medrobust.validation import check_bounds, check_int

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


@dataclass(frozen=True)
class Preset:
    """A modality preset.

    Args:
        spatial_size: Default output size (H, W) (or (D, H, W) where 3D is supported).
        bounds: Output intensity interval ``(low, high)``; recorded so attacks can use it.

    Attributes:
        name: Registered name.
        modality: Imaging modality (e.g. "chest_xray").
        channels: Output channel count (1 or 3).
        positive_class_hint: Usual name of the positive class, if the task is binary.
        supports_3d: Whether a 3-value ``spatial_size`` (volumes ``(C, D, H, W)``) is accepted.
        notes: Human-readable reasons for the preset's choices (shown by the CLI/docs).
    """

    spatial_size: tuple[int, ...] = (224, 224)
    bounds: tuple[float, float] = (0.0, 1.0)

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
        """A JSON-friendly summary (name, modality, channels, spatial_size, bounds, notes)."""
        return {
            "name": self.name,
            "modality": self.modality,
            "channels": self.channels,
            "spatial_size": list(self.spatial_size),
            "bounds": list(self.bounds),
            "positive_class_hint": self.positive_class_hint,
            "supports_3d": self.supports_3d,
            "notes": list(self.notes),
        }


def get_preset(name: str, **overrides: Any) -> Preset:
    """Return the preset ``name`` (e.g. ``"chest_xray"``), optionally with ``spatial_size``/``bounds``.

    Raises:
        ConfigError: for an unknown name (with a "did you mean" hint) or bad overrides.
    """
    cls = PRESETS.get(name)
    unknown = set(overrides) - {"spatial_size", "bounds"}
    if unknown:
        raise ConfigError(
            f"get_preset got unexpected parameter(s) {sorted(unknown)}. Valid: ['bounds', 'spatial_size']."
        )
    return cls(**overrides)


def list_presets() -> list[str]:
    """Names of all registered presets."""
    return PRESETS.names()
