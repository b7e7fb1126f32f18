"""Write segmentation phantoms as the files image + mask pairs ship in.

Layouts (``fmt``):

* ``decathlon``: ``OUT/imagesTr/{stem}.nii.gz`` and ``OUT/labelsTr/{stem}.nii.gz`` (Medical
  Segmentation Decathlon; grey phantoms only), plus ``OUT/dataset.json``;
* ``png``: ``OUT/images/{stem}.png`` and ``OUT/masks/{stem}.png`` (2D phantoms; mask values are
  the label indices), plus ``OUT/dataset.json``;
* ``csv``: the files of ``png`` (2D) or ``decathlon`` (3D) plus ``OUT/manifest.csv`` with the
  columns ``image,label,split`` (paths relative to the CSV).

``dataset.json`` follows the Decathlon's ``dataset.json`` (``labels``: index -> name,
``training``: the pairs) and adds a ``medrobust`` block (lesion labels, preset, each stem's
split), which the sources read. NIfTI files carry an affine with the phantom's voxel size; with
``orientation="LPS"`` the voxels are stored in LPS order (affine with negative x and y axes), so
a reader that reorients to RAS gets the phantom's own array back. Every file is written atomically.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import numpy as np

from medrobust.data.segmentation.phantoms.base import SegmentationPhantom, get_segmentation_phantom
from medrobust.errors import ConfigError
from medrobust.limits import MAX_PHANTOM_IMAGES
from medrobust.utils.io import atomic_path, atomic_write_bytes, atomic_write_json, atomic_write_text
from medrobust.validation import check_choice, check_int

#: Layouts :func:`write_segmentation_phantom` writes.
SEGMENTATION_FORMATS: tuple[str, ...] = ("decathlon", "png", "csv")
#: Voxel orders NIfTI files can be stored in.
ORIENTATIONS: tuple[str, ...] = ("RAS", "LPS")
#: Voxel size (mm) of the written NIfTI files.
VOXEL_MM = 1.0


def write_nifti(path: Path, array: np.ndarray, orientation: str = "RAS", voxel_mm: float = VOXEL_MM) -> Path:
    """Write a 2D or 3D array given in RAS voxel order as NIfTI, stored in ``orientation`` order.

    Args:
        path: Output ``.nii.gz`` file.
        array: ``(X, Y)`` or ``(X, Y, Z)`` array in RAS order (axis 0 towards the patient's right).
        orientation: "RAS" (stored as given) or "LPS" (axes 0 and 1 reversed, affine flipped).
        voxel_mm: Voxel size.
    """
    import nibabel as nib

    orientation = check_choice(orientation, "orientation", ORIENTATIONS, "write_nifti")
    data = np.asarray(array)
    diag = [voxel_mm] * 3
    if orientation == "LPS":
        data = data[::-1, ::-1, ...]
        diag[0] = diag[1] = -voxel_mm
    affine = np.diag([*diag, 1.0])
    affine[:3, 3] = [-d * (n - 1) / 2 for d, n in zip(diag, [*data.shape, 1, 1][:3], strict=True)]
    nii = nib.Nifti1Image(np.ascontiguousarray(data), affine)
    nii.header.set_data_dtype(data.dtype)
    nii.header.set_xyzt_units("mm")
    nii.set_qform(affine, code=1)
    nii.set_sform(affine, code=1)
    with atomic_path(path) as tmp:
        nib.save(nii, str(tmp))
    return path


def write_png(path: Path, array: np.ndarray) -> Path:
    """Write a uint8 ``(C, H, W)`` image (1 or 3 channels) or an ``(H, W)`` mask as PNG."""
    from PIL import Image

    data = np.asarray(array)
    if data.ndim == 3:
        data = data[0] if data.shape[0] == 1 else np.ascontiguousarray(np.moveaxis(data, 0, -1))
    buf = io.BytesIO()
    Image.fromarray(data).save(buf, format="PNG")
    return atomic_write_bytes(path, buf.getvalue())


def dataset_json(
    gen: SegmentationPhantom, pairs: list[dict[str, str]], splits: dict[str, str]
) -> dict[str, Any]:
    """The Decathlon-style ``dataset.json`` of a written phantom set."""
    return {
        "name": f"medrobust {gen.modality} segmentation phantom",
        "description": gen.description,
        "tensorImageSize": f"{gen.spatial_dims}D",
        "labels": {str(i): name for i, name in enumerate(gen.label_names)},
        "numTraining": len(pairs),
        "training": pairs,
        "medrobust": {
            "lesion_labels": list(gen.lesion_labels),
            "preset": gen.preset,
            "phantom": gen.info(),
            "splits": splits,
        },
    }


def write_segmentation_phantom(
    modality: str,
    n: int,
    size: int,
    fmt: str,
    out: str | Path,
    seed: int = 0,
    orientation: str = "RAS",
) -> Path:
    """Generate ``n`` phantom images with masks and write them in layout ``fmt``.

    Args:
        modality: A segmentation phantom (``chest_xray``, ``skin``, ``retina_fundus``, ``retina_oct``,
            ``brain_mri``).
        n: Number of samples.
        size: Side length in pixels (voxels for 3D).
        fmt: ``decathlon``, ``png`` or ``csv`` (see the module docstring).
        out: Output folder (created).
        seed: Phantom seed.
        orientation: Voxel order of NIfTI files ("RAS" or "LPS").

    Returns:
        The output folder.

    Raises:
        ConfigError: for an unknown format, a format the phantom cannot be written in (RGB as
            NIfTI, 3D as PNG) or an invalid count.
    """
    gen = get_segmentation_phantom(modality, size=size, seed=seed)
    fmt = check_choice(fmt, "fmt", SEGMENTATION_FORMATS, "write_segmentation_phantom")
    orientation = check_choice(orientation, "orientation", ORIENTATIONS, "write_segmentation_phantom")
    n = check_int(n, "n", "write_segmentation_phantom", low=1, high=MAX_PHANTOM_IMAGES)
    nifti = fmt == "decathlon" or (fmt == "csv" and gen.spatial_dims == 3)
    if nifti and gen.channels != 1:
        raise ConfigError(
            f"The 'fmt' parameter of write_segmentation_phantom: {gen.modality!r} phantoms are RGB and NIfTI "
            f"files here are grey; use fmt='png' or 'csv'. Got {fmt!r}."
        )
    if not nifti and gen.spatial_dims == 3:
        raise ConfigError(
            f"The 'fmt' parameter of write_segmentation_phantom: {gen.modality!r} phantoms are 3D volumes; "
            f"use fmt='decathlon' or 'csv'. Got {fmt!r}."
        )
    root = Path(out)
    image_dir, label_dir = ("imagesTr", "labelsTr") if nifti else ("images", "masks")
    (root / image_dir).mkdir(parents=True, exist_ok=True)
    (root / label_dir).mkdir(parents=True, exist_ok=True)
    suffix = ".nii.gz" if nifti else ".png"
    pairs: list[dict[str, str]] = []
    splits: dict[str, str] = {}
    for i in range(n):
        image, mask, split = gen.sample(i)
        stem = f"{gen.modality}_{i:05d}"
        image_rel, label_rel = f"{image_dir}/{stem}{suffix}", f"{label_dir}/{stem}{suffix}"
        if nifti:
            write_nifti(root / image_rel, image[0], orientation)
            write_nifti(root / label_rel, mask, orientation)
        else:
            write_png(root / image_rel, image)
            write_png(root / label_rel, mask)
        pairs.append({"image": f"./{image_rel}", "label": f"./{label_rel}"})
        splits[stem] = split
    atomic_write_json(root / "dataset.json", dataset_json(gen, pairs, splits))
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(["image", "label", "split"])
        for pair, split in zip(pairs, splits.values(), strict=True):
            writer.writerow([pair["image"][2:], pair["label"][2:], split])
        atomic_write_text(root / "manifest.csv", buf.getvalue())
    return root
