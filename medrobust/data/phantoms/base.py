"""The phantom contract: seeded, lazily generated, labelled synthetic images.

A phantom generator renders one image from ``(seed, index)`` alone, so any image of
a set of any size can be regenerated on its own (``PhantomGenerator.sample(i)``) and large
folders can be written image by image. Labels and splits are assigned in blocks of
``20 * K`` indices (``K`` classes): each block holds every class equally often (each
run of ``K`` consecutive indices holds every class once) or per ``class_weights``,
and splits each class exactly 70/15/15 into train/val/test, in a seeded random
order. Block ``b`` depends only on ``(seed, b)``, so the assignment of index ``i``
does not depend on ``n`` either.

Random streams: image ``i`` uses ``np.random.SeedSequence([seed, 0, i])``; block ``b``
uses ``[seed, 1, b]``. Nothing touches global RNG state.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from medrobust.errors import ConfigError
from medrobust.limits import MAX_PHANTOM_IMAGES
from medrobust.registry import Registry
from medrobust.validation import check_float, check_int

PHANTOMS: Registry[type[PhantomGenerator]] = Registry("phantom modality")

SPLITS: tuple[str, ...] = ("train", "val", "test")
SPLIT_FRACTIONS: tuple[float, ...] = (0.70, 0.15, 0.15)
#: Block length per class: 20 gives exact 14/3/3 splits of each class per block.
BLOCK_PER_CLASS = 20
MIN_SIZE, MAX_SIZE = 28, 512
#: Most bytes of uint8 pixels a set held in memory (``make_phantom``, the ``npz`` writer) may take.
MAX_PHANTOM_BYTES = 2 * 2**30
_IMAGE_STREAM, _BLOCK_STREAM = 0, 1


#: ``@register_phantom("name", *aliases)``: registers the class and sets its ``modality``.
register_phantom = PHANTOMS.decorator("modality")


@dataclass
class PhantomSet:
    """A generated phantom data set held in memory.

    Attributes:
        images: uint8 ``(N, C, H, W)``; ``C`` is 1 (grey) or 3 (RGB).
        labels: int64 ``(N,)`` indices into ``class_names``.
        class_names: Class names in label order.
        positive_class: Name of the positive class for binary tasks, else ``None``.
        modality: Phantom modality (also the matching preset's name).
        splits: ``(N,)`` array of "train" / "val" / "test".
        size: Image height and width.
        seed: Seed the set was generated with.
    """

    images: np.ndarray
    labels: np.ndarray
    class_names: list[str]
    positive_class: str | None
    modality: str
    splits: np.ndarray
    size: int = 64
    seed: int = 0
    class_weights: list[float] | None = field(default=None)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def subset(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        """``(images, labels)`` of one split."""
        mask = self.splits == split
        return self.images[mask], self.labels[mask]

    def counts(self) -> dict[str, dict[str, int]]:
        """Image counts per split and class: ``{"train": {"normal": 14, ...}, ...}``."""
        out: dict[str, dict[str, int]] = {}
        for split in SPLITS:
            labels = self.labels[self.splits == split]
            out[split] = {name: int((labels == k).sum()) for k, name in enumerate(self.class_names)}
        return out


def _largest_remainder(weights: Sequence[float], total: int) -> list[int]:
    """Integer counts proportional to ``weights`` summing to ``total``."""
    w = np.asarray(weights, dtype=np.float64)
    raw = w / w.sum() * total
    counts = np.floor(raw).astype(int)
    order = np.argsort(-(raw - counts), kind="stable")
    counts[order[: total - counts.sum()]] += 1
    return counts.tolist()


class PhantomGenerator(ABC):
    """Base class of phantom generators (one file per modality).

    Subclasses set the class attributes and implement :meth:`render`, drawing with
    the given ``numpy.random.Generator`` only.

    Args:
        size: Image height and width in pixels (28..512).
        seed: Seed of the whole set.
        class_weights: Optional relative class frequencies (default: balanced).
    """

    modality: ClassVar[str] = "unknown"
    class_names: ClassVar[tuple[str, ...]] = ()
    positive_class: ClassVar[str | None] = None
    channels: ClassVar[int] = 1
    #: One-line description of the content (shown by ``list_phantoms`` users / docs).
    description: ClassVar[str] = ""

    def __init__(self, size: int = 64, seed: int = 0, class_weights: Sequence[float] | None = None) -> None:
        owner = f"phantom {self.modality!r}"
        self.size = check_int(size, "size", owner, low=MIN_SIZE, high=MAX_SIZE)
        self.seed = check_int(seed, "seed", owner, low=0, high=2**63 - 1)
        k = len(self.class_names)
        if class_weights is None:
            self.class_weights: list[float] | None = None
            per_class = [BLOCK_PER_CLASS] * k
        else:
            weights = list(class_weights)
            if len(weights) != k:
                raise ConfigError(
                    f"The 'class_weights' parameter of {owner} must have {k} values "
                    f"(one per class {list(self.class_names)}). Got {weights!r}."
                )
            weights = [check_float(w, "class_weights", owner, low=0.0) for w in weights]
            self.class_weights = weights
            per_class = _largest_remainder(weights, BLOCK_PER_CLASS * k)
        pairs: list[tuple[int, int]] = []
        for label, count in enumerate(per_class):
            for split, m in enumerate(_largest_remainder(SPLIT_FRACTIONS, count)):
                pairs += [(label, split)] * m
        self._block = np.asarray(pairs, dtype=np.int64)  # (B, 2) label, split index

    @property
    def num_classes(self) -> int:
        """Number of classes."""
        return len(self.class_names)

    def rng(self, index: int) -> np.random.Generator:
        """The private generator of image ``index``."""
        return np.random.default_rng(np.random.SeedSequence([self.seed, _IMAGE_STREAM, int(index)]))

    def assignment(self, index: int) -> tuple[int, str]:
        """``(label, split)`` of image ``index`` (depends on ``seed`` and ``index`` only).

        Balanced sets cycle through all classes in every run of ``K`` consecutive
        indices (so small sets are balanced too); with ``class_weights`` the block's
        labels are shuffled as a whole.
        """
        index = check_int(index, "index", f"phantom {self.modality!r}", low=0)
        block, offset = divmod(index, len(self._block))
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, _BLOCK_STREAM, block]))
        if self.class_weights is not None:
            label, split = self._block[rng.permutation(len(self._block))[offset]]
            return int(label), SPLITS[int(split)]
        k = self.num_classes
        run, pos = divmod(offset, k)
        label_perms = np.stack([rng.permutation(k) for _ in range(BLOCK_PER_CLASS)])
        slots = self._block[self._block[:, 0] == 0, 1]  # the 14/3/3 split slots of one class
        split_perms = np.stack([rng.permutation(slots) for _ in range(k)])
        label = int(label_perms[run, pos])
        return label, SPLITS[int(split_perms[label, run])]

    def sample(self, index: int) -> tuple[np.ndarray, int, str]:
        """Image ``index`` as ``(uint8 (C, H, W), label, split)``."""
        label, split = self.assignment(index)
        img = self.render(self.rng(index), label)
        img = np.asarray(img)
        if img.ndim == 2:
            img = img[None]
        if img.dtype != np.uint8 or img.shape != (self.channels, self.size, self.size):
            raise AssertionError(  # a bug in a generator, not a user error
                f"{type(self).__name__}.render returned {img.dtype} {img.shape}; "
                f"expected uint8 {(self.channels, self.size, self.size)}"
            )
        return img, label, split

    @abstractmethod
    def render(self, rng: np.random.Generator, label: int) -> np.ndarray:
        """Draw one image of class ``label``: uint8 ``(C, size, size)`` (or ``(size, size)`` grey)."""

    def info(self) -> dict[str, Any]:
        """JSON-friendly description of this generator."""
        return {
            "modality": self.modality,
            "class_names": list(self.class_names),
            "positive_class": self.positive_class,
            "channels": self.channels,
            "size": self.size,
            "seed": self.seed,
            "class_weights": self.class_weights,
            "description": self.description,
        }


def check_phantom_count(n: Any, owner: str) -> int:
    """Validate the number of phantom images: an int in ``[1, MAX_PHANTOM_IMAGES]``.

    Raises:
        ConfigError: naming ``'n'`` and ``owner``, before anything is allocated.
    """
    return check_int(n, "n", owner, low=1, high=MAX_PHANTOM_IMAGES)


def check_in_memory(n: int, gen: PhantomGenerator, owner: str) -> None:
    """Refuse an in-memory set larger than :data:`MAX_PHANTOM_BYTES` (n x channels x size²).

    Raises:
        ConfigError: naming ``'n'`` and ``'size'`` with the bytes asked for.
    """
    need = n * gen.channels * gen.size * gen.size
    if need > MAX_PHANTOM_BYTES:
        raise ConfigError(
            f"The 'n' and 'size' parameters of {owner} ask for {n} images of {gen.channels} x {gen.size} x "
            f"{gen.size} = {need / 2**30:.1f} GiB in memory, more than {MAX_PHANTOM_BYTES / 2**30:.0f} GiB. "
            "Use fewer or smaller images, or write png/jpeg/dicom/nifti files (one image at a time)."
        )


def get_phantom(
    modality: str, size: int = 64, seed: int = 0, class_weights: Sequence[float] | None = None
) -> PhantomGenerator:
    """A phantom generator for ``modality`` (lazy, per-index access via ``.sample(i)``)."""
    return PHANTOMS.get(modality)(size=size, seed=seed, class_weights=class_weights)


def list_phantoms() -> list[str]:
    """Modalities that have a phantom generator."""
    return PHANTOMS.names()


def make_phantom(
    modality: str,
    n: int,
    size: int = 64,
    seed: int = 0,
    class_weights: Sequence[float] | None = None,
) -> PhantomSet:
    """Generate ``n`` labelled phantom images of ``modality`` in memory.

    Args:
        modality: One of :func:`list_phantoms` (``chest_xray``, ``brain_mri``, ...).
        n: Number of images (1 .. ``MAX_PHANTOM_IMAGES``; at most ``MAX_PHANTOM_BYTES`` of pixels).
        size: Height and width (28..512).
        seed: Seed; the same ``(seed, index)`` always gives the same image.
        class_weights: Optional relative class frequencies (default balanced).

    Returns:
        A :class:`PhantomSet`.

    Raises:
        ConfigError: naming ``'n'`` when it is out of range or the set would not fit the
            in-memory cap, before anything is allocated.
    """
    gen = get_phantom(modality, size=size, seed=seed, class_weights=class_weights)
    n = check_phantom_count(n, f"phantom {gen.modality!r}")
    check_in_memory(n, gen, "make_phantom")
    images = np.empty((n, gen.channels, gen.size, gen.size), dtype=np.uint8)
    labels = np.empty(n, dtype=np.int64)
    splits = np.empty(n, dtype="<U5")
    for i in range(n):
        images[i], labels[i], splits[i] = gen.sample(i)
    return PhantomSet(
        images=images,
        labels=labels,
        class_names=list(gen.class_names),
        positive_class=gen.positive_class,
        modality=gen.modality,
        splits=splits,
        size=gen.size,
        seed=gen.seed,
        class_weights=gen.class_weights,
    )
