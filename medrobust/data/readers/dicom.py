"""A MONAI ``ImageReader`` for DICOM built on pydicom, with the pixel handling radiology expects.

Order of operations for a greyscale image (PS3.4 grayscale pipeline):

1. decode (any transfer syntax pydicom + pylibjpeg handle: JPEG baseline/lossless,
   JPEG 2000, JPEG-LS, RLE, deflate, uncompressed);
2. modality LUT: RescaleSlope/RescaleIntercept or a Modality LUT Sequence
   (``pydicom.pixels.apply_modality_lut``), so CT comes out in Hounsfield units;
3. VOI LUT or window centre/width (``pydicom.pixels.apply_voi_lut``) only with
   ``window="auto"``; the default ``"none"`` keeps native units;
4. MONOCHROME1 inverted so that higher means brighter: ``out = lo + hi - x`` where
   ``[lo, hi]`` is the range the pipeline above can produce for the stored bit depth
   (a fixed, header-defined range, not the image's own min/max).

Colour images (RGB, YBR_* converted to RGB by pydicom, PALETTE COLOR through its LUT)
come out channel-last and are made channel-first by MONAI's ``EnsureChannelFirst``.

Before decoding, the header is checked (:func:`check_pixel_data`): Rows x Columns x the
frames to decode must not exceed :data:`~medrobust.limits.MAX_IMAGE_PIXELS`, and for
uncompressed transfer syntaxes the pixel data must be exactly as long as the header says.
What pydicom and its decoder plugins log or warn while a file is read is captured
(:func:`decoder_output`) into the reason of the :class:`DataError`, never printed.

Privacy: the meta dict this reader returns is built from a whitelist; no patient,
study or institution element is ever copied, and error messages are scrubbed of
identifying values of the file being read.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
from monai.data.image_reader import ImageReader
from monai.utils import ensure_tuple

from medrobust.data.readers.pil import check_decoded_size
from medrobust.errors import ConfigError, DataError
from medrobust.limits import MAX_IMAGE_PIXELS
from medrobust.utils.logging import get_logger

log = get_logger("data")

#: Loggers of the DICOM decoders whose records are captured while a file is read.
DECODER_LOGGERS: tuple[str, ...] = ("pydicom", "pylibjpeg", "libjpeg", "openjpeg", "rle", "gdcm")

#: Elements whose values must never appear in any output (PS3.15 basic profile, abridged).
PHI_KEYWORDS: tuple[str, ...] = (
    "PatientName",
    "PatientID",
    "OtherPatientIDs",
    "OtherPatientNames",
    "PatientBirthDate",
    "PatientBirthTime",
    "PatientAddress",
    "PatientTelephoneNumbers",
    "PatientMotherBirthName",
    "IssuerOfPatientID",
    "AccessionNumber",
    "InstitutionName",
    "InstitutionAddress",
    "InstitutionalDepartmentName",
    "ReferringPhysicianName",
    "PerformingPhysicianName",
    "OperatorsName",
    "PhysiciansOfRecord",
    "NameOfPhysiciansReadingStudy",
    "StudyID",
    "StudyDate",
    "StudyTime",
    "SeriesDate",
    "AcquisitionDate",
    "ContentDate",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "SOPInstanceUID",
    "FrameOfReferenceUID",
    "DeviceSerialNumber",
    "StationName",
    "RequestingPhysician",
)

WINDOW_CHOICES: tuple[str, ...] = ("none", "auto")


def check_frame(frame: Any, owner: str = "DicomReader") -> str | int:
    """Validate a frame choice: ``"middle"``, ``"volume"`` or a non-negative int."""
    if isinstance(frame, str) and frame in ("middle", "volume"):
        return frame
    if isinstance(frame, int) and not isinstance(frame, bool) and frame >= 0:
        return frame
    raise ConfigError(
        f"The 'frame' parameter of {owner} must be 'middle', 'volume' or a frame index >= 0. Got {frame!r}."
    )


def redact(text: str, ds: Any) -> str:
    """Replace values of identifying elements of ``ds`` found in ``text`` by ``<redacted>``."""
    if ds is None:
        return text
    for keyword in PHI_KEYWORDS:
        try:
            value = ds.get(keyword)
        except Exception:  # a malformed element must not break error reporting
            continue
        if value is None:
            continue
        multi = isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue"
        values = value if multi else [value]
        for v in values:
            s = str(v).strip()
            if len(s) >= 2 and s in text:
                text = text.replace(s, "<redacted>")
            alt = s.replace("^", " ").strip()
            if len(alt) >= 2 and alt in text:
                text = text.replace(alt, "<redacted>")
    return text


class _ListHandler(logging.Handler):
    def __init__(self, sink: list[str]) -> None:
        super().__init__(logging.DEBUG)
        self.sink = sink

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.WARNING:
            self.sink.append(" ".join(record.getMessage().split()))


@contextmanager
def decoder_output() -> Iterator[list[str]]:
    """Capture what pydicom and its decoder plugins log or warn while a file is read.

    Records of :data:`DECODER_LOGGERS` (warning and above, message only: never a traceback)
    and Python warnings are collected into the yielded list instead of reaching stderr, so
    an unreadable file is reported once, as the reason of its :class:`DataError`.
    """
    notes: list[str] = []
    handler = _ListHandler(notes)
    loggers = [logging.getLogger(name) for name in DECODER_LOGGERS]
    saved = [(lg, lg.propagate) for lg in loggers]
    for lg in loggers:
        lg.addHandler(handler)
        lg.propagate = False
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                yield notes
            finally:
                notes.extend(" ".join(str(w.message).split()) for w in caught)
    finally:
        for lg, propagate in saved:
            lg.removeHandler(handler)
            lg.propagate = propagate


def _with_notes(reason: str, notes: list[str], limit: int = 300) -> str:
    """``reason`` on one line plus the first captured decoder message (shortened), if any."""
    reason = " ".join(reason.split())
    extra = next((n for n in notes if n and n not in reason), None)
    if extra is None:
        return reason
    if len(extra) > limit:
        extra = extra[: limit - 3] + "..."
    return f"{reason}; decoder said: {extra}"


def decoded_frames(ds: Any, frame: str | int) -> int:
    """How many frames reading ``ds`` with the frame choice ``frame`` decodes."""
    n_frames = int(ds.get("NumberOfFrames", 1) or 1)
    return n_frames if frame == "volume" else 1


def check_pixel_data(ds: Any, name: object, frame: str | int = "middle") -> int:
    """Check a DICOM header against :data:`MAX_IMAGE_PIXELS` and its pixel data, before decoding.

    The decoded size, Rows x Columns x decoded frames, is checked against
    ``MAX_IMAGE_PIXELS`` (a few bytes of header can declare 65535 x 65535 x 1000). For
    uncompressed transfer syntaxes the length of the pixel data must equal Rows x Columns x
    SamplesPerPixel x BitsAllocated/8 x NumberOfFrames (plus one padding byte): a file
    whose header mislabels its pixels (16-bit values with BitsAllocated 8 read as two
    frames) is refused instead of being decoded as something else.

    Args:
        ds: The ``pydicom.Dataset``.
        name: The file, for messages.
        frame: The frame choice (``"volume"`` decodes every frame).

    Returns:
        The number of pixels decoding will produce.

    Raises:
        DataError: naming the file, the sizes and what the header says.
    """
    from pydicom.pixels.utils import get_expected_length

    try:
        rows, cols = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
        n_frames = int(ds.get("NumberOfFrames", 1) or 1)
        spp = int(ds.get("SamplesPerPixel", 1) or 1)
        bits = int(ds.get("BitsAllocated", 0) or 0)
    except (TypeError, ValueError) as exc:
        raise DataError(name, f"unusable image header ({type(exc).__name__}: {exc})") from None
    if rows <= 0 or cols <= 0 or n_frames <= 0:
        raise DataError(
            name, f"header gives Rows {rows}, Columns {cols}, NumberOfFrames {n_frames}; all must be >= 1"
        )
    frames = n_frames if frame == "volume" else 1
    check_decoded_size(name, (rows, cols, frames) if frames > 1 else (rows, cols))
    if "PixelData" not in ds:
        return rows * cols * frames
    syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if syntax is None or syntax.is_encapsulated:
        return rows * cols * frames
    try:
        expected = int(get_expected_length(ds, "bytes"))
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        raise DataError(name, f"unusable image header ({type(exc).__name__}: {exc})") from None
    actual = len(ds.PixelData)
    if actual not in (expected, expected + 1):
        raise DataError(
            name,
            f"pixel data holds {actual} bytes, but Rows x Columns x SamplesPerPixel x BitsAllocated/8 x "
            f"NumberOfFrames = {rows} x {cols} x {spp} x {bits}/8 x {n_frames} = {expected}: the header "
            "does not describe the pixels (mislabelled or truncated file)",
        )
    return rows * cols * frames


def _stored_range(ds: Any) -> tuple[float, float]:
    bits = int(ds.get("BitsStored", ds.get("BitsAllocated", 16)) or 16)
    if int(ds.get("PixelRepresentation", 0) or 0) == 1:
        return float(-(2 ** (bits - 1))), float(2 ** (bits - 1) - 1)
    return 0.0, float(2**bits - 1)


def dicom_pixels(
    ds: Any, window: str = "none", frame: str | int = "middle"
) -> tuple[np.ndarray, dict[str, Any]]:
    """Decode ``ds`` to a float32 array with modality LUT, optional VOI LUT and MONOCHROME1 inversion.

    Args:
        ds: A ``pydicom.Dataset`` with pixel data.
        window: ``"none"`` keeps native units (HU for CT); ``"auto"`` applies the file's
            VOI LUT or first window centre/width when present.
        frame: ``"middle"`` (default), a frame index, or ``"volume"`` for all frames.

    Returns:
        ``(array, info)``: array (H, W), (H, W, 3), (F, H, W) or (F, H, W, 3); ``info`` holds
        whitelisted descriptive keys only.
    """
    from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi_lut, pixel_array

    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        raise ValueError("the file has no pixel data")
    n_frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frame == "volume" or n_frames == 1:
        arr = ds.pixel_array
        frame_index = None if n_frames > 1 else 0
    else:
        frame_index = n_frames // 2 if frame == "middle" else int(frame)
        if frame_index >= n_frames:
            raise ValueError(f"frame {frame_index} asked for, but the file has {n_frames} frame(s)")
        arr = pixel_array(ds, index=frame_index)
    stored_dtype = str(arr.dtype)
    pi = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper()
    spp = int(ds.get("SamplesPerPixel", 1) or 1)
    rescale = window_applied = inverted = False
    if pi == "PALETTE COLOR":
        arr = apply_color_lut(arr, ds)
    elif spp == 1:
        lohi = np.asarray(_stored_range(ds))
        if "ModalityLUTSequence" in ds or "RescaleSlope" in ds or "RescaleIntercept" in ds:
            arr = apply_modality_lut(arr, ds)
            lohi = np.asarray(apply_modality_lut(lohi, ds), dtype=np.float64)
            rescale = True
        if window == "auto" and ("VOILUTSequence" in ds or "WindowCenter" in ds):
            arr = apply_voi_lut(np.asarray(arr, dtype=np.float64), ds, index=0)
            lohi = np.asarray(apply_voi_lut(np.sort(lohi).astype(np.float64), ds, index=0), dtype=np.float64)
            window_applied = True
        if pi == "MONOCHROME1":
            lo, hi = float(np.min(lohi)), float(np.max(lohi))
            arr = (lo + hi) - np.asarray(arr, dtype=np.float64)
            inverted = True
    arr = np.asarray(arr, dtype=np.float32)
    spacing = ds.get("PixelSpacing") or ds.get("ImagerPixelSpacing")
    info: dict[str, Any] = {
        "format": "dicom",
        "dtype": stored_dtype,
        "modality": str(ds.get("Modality", "")) or None,
        "photometric_interpretation": pi,
        "rows": int(ds.get("Rows", 0) or 0),
        "columns": int(ds.get("Columns", 0) or 0),
        "samples_per_pixel": spp,
        "bits_stored": int(ds.get("BitsStored", 0) or 0),
        "pixel_spacing": [float(v) for v in spacing] if spacing else None,
        "rescale_applied": rescale,
        "rescale_slope": float(ds.RescaleSlope) if rescale and "RescaleSlope" in ds else None,
        "rescale_intercept": float(ds.RescaleIntercept) if rescale and "RescaleIntercept" in ds else None,
        "window_applied": window_applied,
        "inverted": inverted,
        "n_frames": n_frames,
        "frame_index": frame_index,
    }
    try:
        info["transfer_syntax"] = ds.file_meta.TransferSyntaxUID.name
    except AttributeError:
        info["transfer_syntax"] = None
    return arr, info


def slice_position(ds: Any) -> float:
    """Position of a slice along its normal (falls back to InstanceNumber)."""
    pos, ori = ds.get("ImagePositionPatient"), ds.get("ImageOrientationPatient")
    if pos is not None and ori is not None and len(ori) == 6:
        normal = np.cross(np.asarray(ori[:3], float), np.asarray(ori[3:], float))
        return float(np.dot(normal, np.asarray(pos, float)))
    return float(ds.get("InstanceNumber", 0) or 0)


class DicomReader(ImageReader):
    """MONAI reader for DICOM files (see the module docstring for the pixel pipeline).

    Given several files (one series), the slices are sorted along their normal and stacked
    as depth: (D, H, W).

    Args:
        window: ``"none"`` (native units, default) or ``"auto"`` (apply the file's VOI LUT/window).
        frame: For multi-frame files: ``"middle"`` (default), a frame index, or ``"volume"``.
    """

    def __init__(self, window: str = "none", frame: str | int = "middle") -> None:
        super().__init__()
        if window not in WINDOW_CHOICES:
            from medrobust.validation import check_choice

            check_choice(window, "window", WINDOW_CHOICES, "DicomReader")
        self.window = window
        self.frame = check_frame(frame)
        self.filenames: tuple[str, ...] = ()

    def verify_suffix(self, filename: Sequence[os.PathLike[str] | str] | os.PathLike[str] | str) -> bool:
        """True for ``.dcm``/``.dicom`` names."""
        return all(str(f).lower().endswith((".dcm", ".dicom")) for f in ensure_tuple(filename))

    def read(self, data: Sequence[os.PathLike[str] | str] | os.PathLike[str] | str, **kwargs: Any) -> Any:
        """Parse the file(s) with pydicom (``force=False``: a non-DICOM file is an error)."""
        import pydicom
        from pydicom.errors import InvalidDicomError

        self.filenames = tuple(str(f) for f in ensure_tuple(data))
        out = []
        for name in self.filenames:
            with decoder_output() as notes:
                try:
                    out.append(pydicom.dcmread(name, force=False))
                except InvalidDicomError as exc:
                    raise DataError(name, f"not a DICOM file ({exc})") from None
                except (OSError, EOFError, ValueError, KeyError, TypeError) as exc:
                    reason = f"unreadable DICOM file ({type(exc).__name__}: {exc})"
                    raise DataError(name, _with_notes(reason, notes)) from None
            for note in notes:
                log.debug("%s: %s", name, note)
        return out if len(out) > 1 else out[0]

    def get_data(self, img: Any) -> tuple[np.ndarray, dict[str, Any]]:
        """Return the pixel array and whitelisted meta (plus MONAI's spatial keys)."""
        datasets = list(img) if isinstance(img, (list, tuple)) else [img]
        names = self.filenames if len(self.filenames) == len(datasets) else ("<dataset>",) * len(datasets)
        if len(datasets) > 1:
            order = sorted(range(len(datasets)), key=lambda i: (slice_position(datasets[i]), names[i]))
            datasets = [datasets[i] for i in order]
            names = tuple(names[i] for i in order)
        total = 0
        for ds, name in zip(datasets, names, strict=False):
            total += check_pixel_data(ds, name, self.frame)
        if total > MAX_IMAGE_PIXELS:
            raise DataError(
                names[0],
                f"the series of {len(datasets)} files decodes to {total} pixels, more than "
                f"MAX_IMAGE_PIXELS={MAX_IMAGE_PIXELS} (8192 x 8192); refused before decoding",
            )
        arrays, info = [], {}
        for ds, name in zip(datasets, names, strict=False):
            with decoder_output() as notes:
                try:
                    arr, info_i = dicom_pixels(ds, window=self.window, frame=self.frame)
                except DataError:
                    raise
                except Exception as exc:  # decoder plugins raise many types; report, never traceback
                    reason = _with_notes(f"cannot decode pixel data ({type(exc).__name__}: {exc})", notes)
                    raise DataError(name, redact(reason, ds)) from None
            if notes:  # a decoder failed and another one succeeded: decoded, but say so
                log.warning("%s: %s", name, redact(_with_notes("decoded by a fallback decoder", notes), ds))
            if arrays and arr.shape != arrays[0].shape:
                raise DataError(name, f"slice shape {arr.shape} differs from {arrays[0].shape} in the series")
            arrays.append(arr)
            info = info or info_i
        data = arrays[0] if len(arrays) == 1 else np.stack(arrays, axis=0)
        colour = data.ndim >= 3 and data.shape[-1] in (3, 4) and int(info.get("samples_per_pixel", 1)) > 1
        colour = colour or (info.get("photometric_interpretation") == "PALETTE COLOR")
        spatial = data.shape[:-1] if colour else data.shape
        meta = dict(info)
        if len(arrays) > 1:
            meta["n_slices"] = len(arrays)
        meta["spatial_shape"] = np.asarray(spatial)
        meta["original_channel_dim"] = -1 if colour else float("nan")
        return data, meta
