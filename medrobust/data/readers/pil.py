"""PNG/JPEG/BMP/TIFF through MONAI's ``PILReader`` with row-major (H, W) arrays.

Pillow modes are normalised first: palette and 1-bit images become ``L`` or ``RGB``,
alpha channels are dropped (``LA`` -> ``L``, ``RGBA`` -> ``RGB``), 16-bit greyscale
stays 16-bit (``I;16`` -> ``I``), so values remain the file's own (0..255 for 8-bit).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from monai.data.image_reader import PILReader

from medrobust.errors import DataError


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

    def read(self, data: Any, **kwargs: Any) -> Any:
        """Open and fully decode the image (so truncation is found here, not later)."""
        from PIL import Image

        names = tuple(str(d) for d in (data if isinstance(data, (list, tuple)) else [data]))
        self.filenames = names
        out = []
        for name in names:
            try:
                img = Image.open(name)
                img.load()
                self._stored = str(np.asarray(img).dtype) if img.mode != "P" else "uint8"
                out.append(normalise_mode(img))
            except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
                raise DataError(name, f"unreadable image file ({type(exc).__name__}: {exc})") from None
        return out if len(out) > 1 else out[0]

    def get_data(self, img: Any) -> tuple[np.ndarray, dict[str, Any]]:
        """Array (H, W) or (H, W, 3) and meta with MONAI's spatial keys."""
        data, meta = super().get_data(img)
        meta = {
            "format": str(meta.get("format") or "").lower() or None,
            "mode": meta.get("mode"),
            "dtype": getattr(self, "_stored", str(data.dtype)),
            "spatial_shape": np.asarray(data.shape[:2]),
            "original_channel_dim": -1 if data.ndim == 3 else float("nan"),
        }
        return data, meta
