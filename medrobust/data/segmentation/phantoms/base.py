"""The segmentation-phantom contract: seeded synthetic images with their label masks.

A generator renders image ``i`` and its mask from ``(seed, i)`` alone, so any sample of a set
of any size can be regenerated on its own and large folders are written one sample at a time.
Splits are assigned in blocks of 20 indices (14 train, 3 val, 3 test in a seeded order), so the
split of index ``i`` does not depend on ``n`` either.

Random streams: sample ``i`` uses ``np.random.SeedSequence([seed, 2, i])`` and block ``b``
``[seed, 3, b]`` (streams 0 and 1 belong to the classification phantoms). Nothing touches global
RNG state.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from medrobust.errors import ConfigError
from medrobust.limits import MAX_PHANTOM_IMAGES
from medrobust.registry import Registry
from medrobust.validation import check_int

SEGMENTATION_PHANTOMS: Registry[type[SegmentationPhantom]] = Registry("segmentation phantom")

#: ``@register_segmentation_phantom("name", *aliases)``: registers the class and sets its ``modality``.
register_segmentation_phantom = SEGMENTATION_PHANTOMS.decorator("modality")

SPLITS: tuple[str, ...] = ("train", "val", "test")
#: Split slots of one block of 20 indices (14/3/3).
_BLOCK = np.array([0] * 14 + [1] * 3 + [2] * 3, dtype=np.int64)
_SAMPLE_STREAM, _BLOCK_STREAM = 2, 3
#: Most bytes of uint8 pixels (images and masks) :func:`make_segmentation_phantom` holds in memory.
MAX_SEGMENTATION_PHANTOM_BYTES = 2 * 2**30


@dataclass
class SegmentationPhantomSet:
    """A generated segmentation phantom set held in memory.

    Attributes:
        images: uint8 ``(N, C, *spatial)``.
        masks: uint8 ``(N, *spatial)``, values indexing ``label_names``.
        label_names: Label names, index = mask value (0 is the background).
        lesion_labels: Names of the labels that are lesions (detection rate, "erase the lesion").
        modality: Phantom modality (also the matching preset's name).
        splits: ``(N,)`` array of "train" / "val" / "test".
        size: Side length in pixels (voxels for 3D).
        seed: Seed the set was generated with.
    """

    images: np.ndarray
    masks: np.ndarray
    label_names: list[str]
    lesion_labels: list[str]
    modality: str
    splits: np.ndarray
    size: int
    seed: int

    def __len__(self) -> int:
        return int(self.images.shape[0])


class SegmentationPhantom(ABC):
    """Base class of segmentation phantom generators (one file per modality).

    Subclasses set the class attributes and implement :meth:`render`, drawing with the given
    ``numpy.random.Generator`` only.

    Args:
        size: Side length in pixels (voxels for 3D phantoms).
        seed: Seed of the whole set.
    """

    modality: ClassVar[str] = "unknown"
    #: Data preset that reads the written files (intensity scaling, channels).
    preset: ClassVar[str] = "unknown"
    label_names: ClassVar[tuple[str, ...]] = ("background", "foreground")
    lesion_labels: ClassVar[tuple[str, ...]] = ()
    channels: ClassVar[int] = 1
    spatial_dims: ClassVar[int] = 2
    min_size: ClassVar[int] = 32
    max_size: ClassVar[int] = 512
    description: ClassVar[str] = ""

    def __init__(self, size: int = 64, seed: int = 0) -> None:
        owner = f"segmentation phantom {self.modality!r}"
        self.size = check_int(size, "size", owner, low=self.min_size, high=self.max_size)
        self.seed = check_int(seed, "seed", owner, low=0, high=2**63 - 1)

    @property
    def shape(self) -> tuple[int, ...]:
        """Spatial shape of every sample."""
        return (self.size,) * self.spatial_dims

    def rng(self, index: int) -> np.random.Generator:
        """The private generator of sample ``index``."""
        return np.random.default_rng(np.random.SeedSequence([self.seed, _SAMPLE_STREAM, int(index)]))

    def split(self, index: int) -> str:
        """Split of sample ``index`` (depends on ``seed`` and ``index`` only)."""
        block, offset = divmod(int(index), len(_BLOCK))
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, _BLOCK_STREAM, block]))
        return SPLITS[int(_BLOCK[rng.permutation(len(_BLOCK))[offset]])]

    def sample(self, index: int) -> tuple[np.ndarray, np.ndarray, str]:
        """Sample ``index`` as ``(uint8 image (C, *spatial), uint8 mask (*spatial), split)``."""
        index = check_int(index, "index", f"segmentation phantom {self.modality!r}", low=0)
        image, mask = self.render(self.rng(index))
        image = np.asarray(image)
        if image.ndim == self.spatial_dims:
            image = image[None]
        mask = np.asarray(mask)
        want = (self.channels, *self.shape)
        if (
            image.dtype != np.uint8
            or image.shape != want
            or mask.dtype != np.uint8
            or mask.shape != self.shape
        ):
            raise AssertionError(  # a bug in a generator, not a user error
                f"{type(self).__name__}.render returned image {image.dtype} {image.shape} and mask "
                f"{mask.dtype} {mask.shape}; expected uint8 {want} and uint8 {self.shape}"
            )
        return image, mask, self.split(index)

    @abstractmethod
    def render(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Draw one sample: uint8 image ``(C, *spatial)`` (or ``spatial`` grey) and uint8 mask."""

    def info(self) -> dict[str, Any]:
        """JSON-friendly description of this generator."""
        return {
            "modality": self.modality,
            "preset": self.preset,
            "label_names": list(self.label_names),
            "lesion_labels": list(self.lesion_labels),
            "channels": self.channels,
            "spatial_dims": self.spatial_dims,
            "size": self.size,
            "seed": self.seed,
            "description": self.description,
        }


def get_segmentation_phantom(modality: str, size: int = 64, seed: int = 0) -> SegmentationPhantom:
    """A segmentation phantom generator for ``modality`` (per-index access via ``.sample(i)``)."""
    return SEGMENTATION_PHANTOMS.get(modality)(size=size, seed=seed)


def list_segmentation_phantoms() -> list[str]:
    """Modalities that have a segmentation phantom generator."""
    return SEGMENTATION_PHANTOMS.names()


def make_segmentation_phantom(modality: str, n: int, size: int = 64, seed: int = 0) -> SegmentationPhantomSet:
    """Generate ``n`` images and masks of ``modality`` in memory.

    Args:
        modality: One of :func:`list_segmentation_phantoms`.
        n: Number of samples (1 .. ``MAX_PHANTOM_IMAGES``).
        size: Side length (pixels, or voxels for 3D phantoms).
        seed: Seed; the same ``(seed, index)`` always gives the same sample.

    Raises:
        ConfigError: naming ``'n'`` when it is out of range or the set would not fit in memory.
    """
    gen = get_segmentation_phantom(modality, size=size, seed=seed)
    n = check_int(n, "n", f"segmentation phantom {gen.modality!r}", low=1, high=MAX_PHANTOM_IMAGES)
    need = n * (gen.channels + 1) * int(np.prod(gen.shape))
    if need > MAX_SEGMENTATION_PHANTOM_BYTES:
        raise ConfigError(
            f"The 'n' and 'size' parameters of make_segmentation_phantom ask for {need / 2**30:.1f} GiB of "
            f"images and masks in memory, more than {MAX_SEGMENTATION_PHANTOM_BYTES / 2**30:.0f} GiB. "
            f"Got n={n}, size={gen.size}. Use fewer or smaller samples, or write files."
        )
    images = np.empty((n, gen.channels, *gen.shape), dtype=np.uint8)
    masks = np.empty((n, *gen.shape), dtype=np.uint8)
    splits = np.empty(n, dtype="<U5")
    for i in range(n):
        images[i], masks[i], splits[i] = gen.sample(i)
    return SegmentationPhantomSet(
        images=images,
        masks=masks,
        label_names=list(gen.label_names),
        lesion_labels=list(gen.lesion_labels),
        modality=gen.modality,
        splits=splits,
        size=gen.size,
        seed=gen.seed,
    )
