"""PNG/JPEG/BMP/TIFF through MONAI's ``PILReader`` with row-major (H, W) arrays.

Pillow modes are normalised first: palette and 1-bit images become ``L`` or ``RGB``,
alpha channels are dropped (``LA`` -> ``L``, ``RGBA`` -> ``RGB``), 16-bit greyscale
stays 16-bit (``I;16`` -> ``I``), so values remain the file's own (0..255 for 8-bit).

Orientation: an EXIF ``Orientation`` tag (phones and dermatoscopes store the camera's
rotation there instead of rotating the pixels) is applied, as ``PIL.ImageOps.exif_transpose``
does, so a photo tagged 6 ("rotate 90° clockwise to view") loads upright with its height and
width as seen; the tag's value is recorded in ``meta["exif_orientation"]``.

Decompression bombs: the decoded size is read from the header (Pillow opens lazily) and
an image of more than :data:`~medrobust.limits.MAX_IMAGE_PIXELS` pixels is refused,
naming the file and the size, before any pixel is decoded.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
from monai.data.image_reader import PILReader

from medrobust.data.orientation import apply_exif_orientation, exif_orientation
from medrobust.errors import DataError
from medrobust.limits import MAX_IMAGE_PIXELS
from medrobust.utils.logging import get_logger

log = get_logger("data")


def _bomb_reason(size: str) -> str:
    return (
        f"decodes to {size}, more than MAX_IMAGE_PIXELS={MAX_IMAGE_PIXELS} (8192 x 8192); "
        "refused before decoding"
    )


def check_decoded_size(name: object, shape: Sequence[int]) -> None:
    """Refuse an image whose decoded ``shape`` (from its header) exceeds ``MAX_IMAGE_PIXELS``.

    Args:
        name: The file, for the message.
        shape: Its decoded dimensions (width and height, or rows, columns and frames/slices).

    Raises:
        DataError: naming the file and the size, before anything is decoded.
    """
    dims = [int(d) for d in shape]
    total = 1
    for d in dims:
        total *= max(d, 0)
    if total > MAX_IMAGE_PIXELS:
        raise DataError(name, _bomb_reason(f"{' x '.join(str(d) for d in dims)} = {total} pixels"))


def normalise_mode(img: Any) -> Any:
    """Convert a PIL image to ``L``, ``I``, ``F`` or ``RGB``."""
    mode = img.mode
    if mode in ("L", "I", "F", "RGB"):
        return img
    if mode == "P":
        return img.convert("RGBA").convert("RGB") if "transparency" in img.info else img.convert("RGB")
    if mode in ("1", "LA", "La"):
        return img.convert("L")
    if mode.startswith("I;16") or mode == "I;32":
        return img.convert("I")
    return img.convert("RGB")  # RGBA, CMYK, YCbCr, LAB, HSV ...


class ImageFileReader(PILReader):
    """``PILReader`` that keeps (H, W[, C]) order and reports the stored dtype.

    A zero-byte, truncated or non-image file raises :class:`DataError` naming it.
    """

    def __init__(self) -> None:
        super().__init__(converter=None, reverse_indexing=False)
        self.filenames: tuple[str, ...] = ()
        self._exif_orientation: int | None = None

    def read(self, data: Any, **kwargs: Any) -> Any:
        """Open the image, check its decoded size from the header, then fully decode it.

        Decoding happens here, so truncation is found here, not later. Pillow opens lazily:
        ``.size`` comes from the header, and an image of more than ``MAX_IMAGE_PIXELS``
        pixels (a small PNG can declare 12000 x 12000) is refused before any pixel is
        decoded. Only the first frame of a multi-frame file is decoded, so the check is
        per frame. Pillow's own ``DecompressionBombWarning`` is silenced and its
        ``DecompressionBombError`` reported with this limit.
        """
        names = tuple(str(d) for d in (data if isinstance(data, (list, tuple)) else [data]))
        self.filenames = names
        out = [self._read_one(name) for name in names]
        return out if len(out) > 1 else out[0]

    def _read_one(self, name: str) -> Any:
        from PIL import Image

        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")  # e.g. "Corrupt EXIF data": logged below, naming the file
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                img = Image.open(name)
                check_decoded_size(name, img.size)
                img.load()
            for w in caught:
                log.warning("%s: %s", name, " ".join(str(w.message).split()))
            self._stored = str(np.asarray(img).dtype) if img.mode != "P" else "uint8"
            self._exif_orientation = exif_orientation(img, name)
            return normalise_mode(apply_exif_orientation(img, self._exif_orientation))
        except DataError:
            raise
        except Image.DecompressionBombError as exc:
            found = re.search(r"\((\d+) pixels\)", str(exc))
            size = f"{int(found.group(1))} pixels" if found else "more pixels than Pillow allows"
            raise DataError(name, f"{_bomb_reason(size)}") from None
        except Exception as exc:  # Pillow's decoders raise many types on malformed files
            raise DataError(name, f"unreadable image file ({type(exc).__name__}: {exc})") from None

    def get_data(self, img: Any) -> tuple[np.ndarray, dict[str, Any]]:
        """Array (H, W) or (H, W, 3) and meta with MONAI's spatial keys."""
        data, meta = super().get_data(img)
        if not data.flags.writeable:  # Pillow's buffer is read-only; torch warns on such arrays
            data = data.copy()
        meta = {
            "format": str(meta.get("format") or "").lower() or None,
            "mode": meta.get("mode"),
            "dtype": getattr(self, "_stored", str(data.dtype)),
            "exif_orientation": getattr(self, "_exif_orientation", None),
            "spatial_shape": np.asarray(data.shape[:2]),
            "original_channel_dim": -1 if data.ndim == 3 else float("nan"),
        }
        return data, meta
