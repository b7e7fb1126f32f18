"""Write phantom sets as real files: PNG, JPEG, DICOM, NIfTI or a MedMNIST-style npz.

On-disk layouts (see ``notes/data_api.md``):

* ``png`` / ``jpeg`` / ``dicom``: ``OUT/{train,val,test}/{class}/{modality}_{i:05d}.{ext}``
* ``nifti``: ``OUT/images/{modality}_{i:05d}.nii.gz`` (``(H, W, 8)`` volumes whose middle
  slice ``[..., 4]`` is the phantom image) and ``OUT/labels.csv`` (``path,label,split,patient``;
  ``label`` is the class name, ``path`` relative to the CSV)
* ``npz``: ``OUT/{modality}_phantom.npz`` with ``{train,val,test}_images`` (uint8 ``(N, H, W)``
  or ``(N, H, W, 3)``) and ``{train,val,test}_labels`` (uint8 ``(N, 1)``)

Every file is written atomically, and ``OUT/phantom.json`` records modality, n, size,
seed, class names, positive class, format and the counts per split and class.
DICOM files carry FAKE patient tags (``PatientName "PHANTOM^{i}"``, ...) and UIDs
derived deterministically from ``(modality, seed, i)``, so re-runs write identical files.
"""

from __future__ import annotations

import csv
import datetime as _dt
import io
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from medrobust.data.phantoms.base import (
    SPLITS,
    PhantomGenerator,
    check_in_memory,
    check_phantom_count,
    get_phantom,
)
from medrobust.errors import ConfigError
from medrobust.utils.io import atomic_path, atomic_write_bytes, atomic_write_json, atomic_write_text
from medrobust.validation import check_choice

#: Supported output formats.
FORMATS: tuple[str, ...] = ("png", "jpeg", "dicom", "nifti", "npz")
_EXT = {"png": ".png", "jpeg": ".jpg", "dicom": ".dcm"}
#: Grey DICOM modalities are stored as 12-bit values: stored = uint8 value * 16.
DICOM_GREY_SCALE = 16
#: Slices of the NIfTI volumes; the middle one (index 4) is the phantom image.
NIFTI_DEPTH = 8
NIFTI_MID = NIFTI_DEPTH // 2

# modality -> (SOP Class UID, Modality, BodyPartExamined, 16-bit grey?)
_DICOM_KIND: dict[str, tuple[str, str, str, bool]] = {
    "chest_xray": ("1.2.840.10008.5.1.4.1.1.1.1", "DX", "CHEST", True),  # Digital X-Ray, For Presentation
    "brain_mri": ("1.2.840.10008.5.1.4.1.1.4", "MR", "BRAIN", True),  # MR Image Storage
    "retina_fundus": ("1.2.840.10008.5.1.4.1.1.77.1.5.1", "OP", "EYE", False),  # Ophthalmic Photography 8 Bit
    "retina_oct": ("1.2.840.10008.5.1.4.1.1.77.1.5.4", "OPT", "EYE", False),  # Ophthalmic Tomography
    "skin": ("1.2.840.10008.5.1.4.1.1.77.1.4", "XC", "SKIN", False),  # VL Photographic Image
}
# Physical field of view (mm) used for pixel spacing in DICOM and NIfTI.
_FOV_MM = {"chest_xray": 400.0, "brain_mri": 220.0, "retina_fundus": 12.0, "retina_oct": 6.0, "skin": 20.0}
_NIFTI_SLICE_MM = 5.0


def _stem(modality: str, index: int) -> str:
    return f"{modality}_{index:05d}"


def _hwc(img: np.ndarray) -> np.ndarray:
    """``(C, H, W)`` -> ``(H, W)`` grey or ``(H, W, 3)`` RGB."""
    return img[0] if img.shape[0] == 1 else np.ascontiguousarray(np.moveaxis(img, 0, -1))


# --- per-file writers ---------------------------------------------------------------


def _write_pil(path: Path, img: np.ndarray, fmt: str) -> None:
    from PIL import Image

    pil = Image.fromarray(_hwc(img))
    buf = io.BytesIO()
    if fmt == "jpeg":
        pil.save(buf, format="JPEG", quality=95)
    else:
        pil.save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())


def dicom_dataset(img: np.ndarray, modality: str, index: int, seed: int, label_name: str, size: int) -> Any:
    """Build a pydicom ``FileDataset``-ready ``Dataset`` for one phantom image.

    Args:
        img: uint8 ``(C, H, W)`` image.
        modality: Phantom modality (selects SOP class and DICOM Modality).
        index: Image index (drives the FAKE patient identity and the UIDs).
        seed: Phantom seed (part of the UID entropy).
        label_name: Class name, stored in ``ImageComments`` (not a patient tag).
        size: Image size (for pixel spacing).

    Returns:
        A ``pydicom.Dataset`` with ``file_meta`` set.
    """
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian, generate_uid

    sop_class, dicom_modality, body_part, sixteen = _DICOM_KIND[modality]

    def uid(kind: str) -> str:
        return generate_uid(entropy_srcs=["medrobust-phantom", modality, str(seed), str(index), kind])

    study_date = (_dt.date(2024, 1, 1) + _dt.timedelta(days=index % 365)).strftime("%Y%m%d")
    birth = (_dt.date(1940, 1, 1) + _dt.timedelta(days=(index * 7919) % 20000)).strftime("%Y%m%d")

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = uid("sop")
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID

    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = uid("study")
    ds.SeriesInstanceUID = uid("series")
    ds.FrameOfReferenceUID = uid("frame")
    ds.Modality = dicom_modality
    ds.BodyPartExamined = body_part
    ds.Manufacturer = "medrobust phantom"
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = study_date
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = "120000"
    ds.StudyID = f"{index}"
    ds.SeriesNumber = 1
    ds.InstanceNumber = index + 1
    ds.ImageType = ["DERIVED", "SECONDARY"]
    ds.SeriesDescription = f"medrobust {modality} phantom"
    ds.ImageComments = f"synthetic phantom; class={label_name}"
    # FAKE patient identity (deliberately present so privacy tests have something to strip).
    ds.PatientName = f"PHANTOM^{index}"
    ds.PatientID = f"PH{index:06d}"
    ds.PatientBirthDate = birth
    ds.PatientSex = "F" if index % 2 else "M"
    ds.AccessionNumber = f"ACC{index:08d}"
    ds.InstitutionName = "Phantom General Hospital"
    ds.ReferringPhysicianName = "REFERRER^FAKE"
    ds.PatientIdentityRemoved = "NO"

    spacing = _FOV_MM[modality] / size
    ds.Rows, ds.Columns = int(img.shape[1]), int(img.shape[2])
    ds.PixelSpacing = [f"{spacing:.6g}", f"{spacing:.6g}"]
    if img.shape[0] == 3:
        ds.SamplesPerPixel = 3
        ds.PhotometricInterpretation = "RGB"
        ds.PlanarConfiguration = 0
        ds.BitsAllocated = ds.BitsStored = 8
        ds.HighBit = 7
        ds.PixelRepresentation = 0
        ds.PixelData = np.ascontiguousarray(np.moveaxis(img, 0, -1)).tobytes()
    else:
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.PixelRepresentation = 0
        if sixteen:
            ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
            stored = img[0].astype("<u2") * DICOM_GREY_SCALE
            ds.PixelData = stored.tobytes()
            ds.WindowCenter = 2048
            ds.WindowWidth = 4096
        else:
            ds.BitsAllocated = ds.BitsStored = 8
            ds.HighBit = 7
            ds.PixelData = np.ascontiguousarray(img[0]).tobytes()
    if dicom_modality == "DX":
        ds.PresentationIntentType = "FOR PRESENTATION"
        ds.ViewPosition = "PA"
        ds.ImagerPixelSpacing = ds.PixelSpacing
        ds.RescaleIntercept = 0
        ds.RescaleSlope = 1
        ds.RescaleType = "US"
        ds.PatientOrientation = ["R", "F"]
    elif dicom_modality == "MR":
        ds.ScanningSequence = "SE"
        ds.SequenceVariant = "NONE"
        ds.ScanOptions = ""
        ds.MRAcquisitionType = "2D"
        ds.RepetitionTime = 500
        ds.EchoTime = 15
        ds.MagneticFieldStrength = 1.5
        ds.SliceThickness = _NIFTI_SLICE_MM
        ds.ImagePositionPatient = [-110, -110, 0]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    elif dicom_modality == "OPT":
        ds.NumberOfFrames = 1
    return ds


def _write_dicom(
    path: Path, img: np.ndarray, modality: str, index: int, seed: int, label: str, size: int
) -> None:
    ds = dicom_dataset(img, modality, index, seed, label, size)
    with atomic_path(path) as tmp:
        ds.save_as(tmp, enforce_file_format=True)


def nifti_volume(img: np.ndarray, size: int) -> np.ndarray:
    """An ``(H, W, 8)`` uint8 volume whose middle slice ``[..., 4]`` is ``img[0]`` exactly.

    The other slices fade out (a plausible through-plane fall-off): slice ``k`` is
    ``img`` blurred and scaled by ``1 - 0.1 * |k - 4|``.
    """
    from scipy import ndimage

    grey = img[0].astype(np.float32)
    vol = np.empty((*grey.shape, NIFTI_DEPTH), dtype=np.uint8)
    for k in range(NIFTI_DEPTH):
        d = abs(k - NIFTI_MID)
        if d == 0:
            vol[..., k] = img[0]
        else:
            sl = ndimage.gaussian_filter(grey, 0.4 * d * size / 64.0) * (1.0 - 0.1 * d)
            vol[..., k] = np.clip(np.rint(sl), 0, 255).astype(np.uint8)
    return vol


def _write_nifti(path: Path, img: np.ndarray, modality: str, size: int) -> None:
    import nibabel as nib

    spacing = _FOV_MM[modality] / size
    affine = np.diag([spacing, spacing, _NIFTI_SLICE_MM, 1.0])
    affine[:3, 3] = [-spacing * size / 2, -spacing * size / 2, -_NIFTI_SLICE_MM * NIFTI_DEPTH / 2]
    nii = nib.Nifti1Image(nifti_volume(img, size), affine)
    nii.header.set_data_dtype(np.uint8)
    nii.header.set_xyzt_units("mm")
    with atomic_path(path) as tmp:
        nib.save(nii, str(tmp))


# --- the set writer --------------------------------------------------------------------


def _progress(total: int, desc: str, enabled: bool = True) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="img", disable=not enabled or total <= 200, leave=False)


def _samples(
    gen: PhantomGenerator, n: int, desc: str, progress: bool = True
) -> Iterator[tuple[int, np.ndarray, int, str]]:
    bar = _progress(n, desc, progress)
    try:
        for i in range(n):
            img, label, split = gen.sample(i)
            yield i, img, label, split
            bar.update(1)
    finally:
        bar.close()


def _check_out(out: Path, record: dict[str, Any]) -> None:
    """Refuse to mix files into a folder holding something else or another phantom set."""
    if not out.exists():
        return
    if not out.is_dir():
        raise ConfigError(f"The 'out' parameter must be a folder. Got the file {out}.")
    marker = out / "phantom.json"
    if marker.is_file():
        import json

        try:
            old = json.loads(marker.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            old = {}
        keys = ("modality", "n", "size", "seed", "format", "class_weights")
        if any(old.get(k) != record[k] for k in keys):
            raise ConfigError(
                f"{out} already holds a different phantom set ({marker}); "
                "write into an empty folder or delete it first."
            )
    elif any(out.iterdir()):
        raise ConfigError(f"Refusing to write phantoms into the non-empty folder {out}; use an empty folder.")


def write_phantom(
    modality: str,
    n: int,
    size: int,
    fmt: str,
    out: str | Path,
    seed: int = 0,
    class_weights: list[float] | None = None,
    progress: bool = True,
) -> Path:
    """Generate ``n`` phantom images of ``modality`` and write them in format ``fmt`` under ``out``.

    Images are generated one at a time (constant memory except for ``npz``), with a
    progress bar on stderr for ``n > 200`` unless ``progress=False``. Re-running with the same arguments
    rewrites identical files; a folder holding other files is refused.

    Args:
        modality: One of ``list_phantoms()``.
        n: Number of images.
        size: Height and width (28..512).
        fmt: ``png``, ``jpeg``, ``dicom``, ``nifti`` (grey modalities only) or ``npz``.
        out: Output folder (created).
        seed: Phantom seed.
        class_weights: Optional relative class frequencies.
        progress: Show a progress bar (only ever for more than 200 images).

    Returns:
        The path to hand to ``open_source``: ``out`` for png/jpeg/dicom,
        ``out/labels.csv`` for nifti, ``out/{modality}_phantom.npz`` for npz.

    Raises:
        ConfigError: bad parameters (``n`` above ``MAX_PHANTOM_IMAGES``, an ``npz`` set above
            ``MAX_PHANTOM_BYTES``), an RGB modality with ``nifti``, or an unsuitable ``out``;
            all before anything is written or allocated.
    """
    fmt = check_choice(str(fmt).lower().replace("jpg", "jpeg"), "fmt", FORMATS, "write_phantom")
    gen = get_phantom(modality, size=size, seed=seed, class_weights=class_weights)
    n = check_phantom_count(n, "write_phantom")
    if fmt == "npz":  # the npz writer holds the whole set in memory
        check_in_memory(n, gen, "write_phantom")
    if fmt == "nifti" and gen.channels != 1:
        raise ConfigError(
            f"The 'nifti' format stores grey volumes; phantom {gen.modality!r} is RGB. "
            "Use png, jpeg, dicom or npz."
        )
    out = Path(out)
    names = list(gen.class_names)
    record: dict[str, Any] = {
        "modality": gen.modality,
        "n": n,
        "size": gen.size,
        "seed": gen.seed,
        "format": fmt,
        "class_weights": gen.class_weights,
    }
    _check_out(out, record)
    out.mkdir(parents=True, exist_ok=True)
    # Written first (a crashed run can be re-run into the same folder) and completed at the end.
    atomic_write_json(out / "phantom.json", {**record, "complete": False})
    counts = {s: dict.fromkeys(names, 0) for s in SPLITS}
    desc = f"{gen.modality} -> {fmt}"
    writer: Callable[[], Path]

    if fmt in ("png", "jpeg", "dicom"):

        def writer() -> Path:
            for i, img, label, split in _samples(gen, n, desc, progress):
                path = out / split / names[label] / f"{_stem(gen.modality, i)}{_EXT[fmt]}"
                path.parent.mkdir(parents=True, exist_ok=True)
                if fmt == "dicom":
                    _write_dicom(path, img, gen.modality, i, gen.seed, names[label], gen.size)
                else:
                    _write_pil(path, img, fmt)
                counts[split][names[label]] += 1
            return out

    elif fmt == "nifti":

        def writer() -> Path:
            rows = []
            for i, img, label, split in _samples(gen, n, desc, progress):
                rel = f"images/{_stem(gen.modality, i)}.nii.gz"
                _write_nifti(out / rel, img, gen.modality, gen.size)
                rows.append((rel, names[label], split, f"PH{i:06d}"))
                counts[split][names[label]] += 1
            buf = io.StringIO()
            w = csv.writer(buf, lineterminator="\n")
            w.writerow(["path", "label", "split", "patient"])
            w.writerows(rows)
            return atomic_write_text(out / "labels.csv", buf.getvalue())

    else:

        def writer() -> Path:
            parts: dict[str, tuple[list[np.ndarray], list[int]]] = {s: ([], []) for s in SPLITS}
            for _, img, label, split in _samples(gen, n, desc, progress):
                parts[split][0].append(_hwc(img))
                parts[split][1].append(label)
                counts[split][names[label]] += 1
            arrays: dict[str, np.ndarray] = {}
            shape = (gen.size, gen.size) if gen.channels == 1 else (gen.size, gen.size, 3)
            for s in SPLITS:
                imgs, labels = parts[s]
                arrays[f"{s}_images"] = (
                    np.stack(imgs).astype(np.uint8) if imgs else np.zeros((0, *shape), dtype=np.uint8)
                )
                arrays[f"{s}_labels"] = np.asarray(labels, dtype=np.uint8).reshape(-1, 1)
            path = out / f"{gen.modality}_phantom.npz"
            with atomic_path(path) as tmp:
                np.savez_compressed(tmp, **arrays)
            return path

    result = writer()
    record.update(
        {
            "class_names": names,
            "positive_class": gen.positive_class,
            "channels": gen.channels,
            "counts": counts,
            "source": result.relative_to(out).as_posix() if result != out else ".",
            "description": gen.description,
            "complete": True,
        }
    )
    if fmt == "dicom" and gen.channels == 1 and _DICOM_KIND[gen.modality][3]:
        record["dicom_stored_value"] = f"uint8 value * {DICOM_GREY_SCALE} (12-bit)"
    if fmt == "nifti":
        record["nifti_label_slice"] = NIFTI_MID
    atomic_write_json(out / "phantom.json", record)
    return result
