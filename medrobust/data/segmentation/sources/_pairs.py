"""Matching images to masks by file stem (shared by the folder layouts)."""

from __future__ import annotations

from pathlib import Path

from medrobust.data.sources._files import list_files
from medrobust.errors import DataError

#: Suffixes a mask's stem may add to its image's (``ISIC_0000000_segmentation.png``).
MASK_STEM_SUFFIXES: tuple[str, ...] = ("", "_mask", "_segmentation", "_seg", "_label", "_labels")
#: Suffixes an image's stem may carry that its mask does not (nnU-Net's channel index).
IMAGE_STEM_SUFFIXES: tuple[str, ...] = ("", "_0000")


def stem(path: Path) -> str:
    """File name without its suffix (``.nii.gz`` removed whole)."""
    name = path.name
    return name[: -len(".nii.gz")] if name.lower().endswith(".nii.gz") else path.stem


def match_pairs(image_dir: Path, mask_dir: Path, suffixes: tuple[str, ...]) -> list[tuple[str, Path, Path]]:
    """``(stem, image, mask)`` for every image in ``image_dir``; masks matched by stem in ``mask_dir``.

    Raises:
        DataError: naming the image whose mask is missing, or ``image_dir`` when it holds no images.
    """
    images = list_files(image_dir, suffixes)
    if not images:
        raise DataError(image_dir, f"holds no image files ({', '.join(suffixes)})")
    masks: dict[str, Path] = {}
    for m in list_files(mask_dir, suffixes):
        masks.setdefault(stem(m), m)
    out = []
    for img in images:
        s = stem(img)
        base = next((s[: -len(x)] for x in IMAGE_STEM_SUFFIXES if x and s.endswith(x)), s)
        found = next(
            (masks[b + x] for b in dict.fromkeys((s, base)) for x in MASK_STEM_SUFFIXES if b + x in masks),
            None,
        )
        if found is None:
            raise DataError(
                img,
                f"has no mask in {mask_dir} (looked for {s}{{,_mask,_segmentation,_seg}} as image files)",
            )
        out.append((s, img, found))
    return out
