"""Reading PNG/JPEG images with Pillow: fully decoded, checked, returned as numpy arrays.

A file is read twice: ``Image.verify()`` checks the container (PNG chunk CRCs up to ``IEND``,
which ``load()`` alone does not), then ``load()`` decodes every pixel (a truncated JPEG or PNG
stream raises there). Any failure becomes :class:`RasterReadError` with the reason.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image, UnidentifiedImageError

from medfed.errors import MedfedError

#: file suffix (lower case) -> format name
RASTER_FORMATS: dict[str, str] = {".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg"}
#: Pillow modes that hold a single high-depth greyscale channel (kept at full depth by ``mode="L"``)
_DEEP_GREY = ("I;16", "I;16B", "I;16L", "I", "F")


class RasterReadError(MedfedError):
    """A PNG/JPEG file cannot be opened or fully decoded."""


def raster_format(path: Path | str) -> str | None:
    """``"png"`` or ``"jpeg"`` from the file suffix, ``None`` for anything else."""
    return RASTER_FORMATS.get(Path(path).suffix.lower())


def read_raster(path: Path | str, mode: Literal["L", "RGB"] = "L") -> np.ndarray:
    """Decode an image fully.

    ``mode="L"``: 2-D ``(H, W)`` greyscale; 8-bit images (and colour images, via Pillow's ITU-R 601
    luma conversion) give ``uint8``, 16-bit PNGs keep their depth (``uint16``/``int32``/``float32``).
    ``mode="RGB"``: ``(H, W, 3)`` ``uint8``. Raises :class:`RasterReadError` naming the reason.
    """
    if mode not in ("L", "RGB"):
        raise ValueError(f"mode must be 'L' or 'RGB', got {mode!r}")
    path = Path(path)
    try:
        with Image.open(path) as image:
            image.verify()
        with Image.open(path) as image:
            image.load()
            if mode == "L" and image.mode in _DEEP_GREY:
                array = np.asarray(image)
                if array.dtype.byteorder == ">":
                    array = array.astype(array.dtype.newbyteorder("="))
            else:
                array = np.asarray(image.convert(mode))
    except FileNotFoundError:
        raise RasterReadError("file not found") from None
    except UnidentifiedImageError:
        raise RasterReadError("not a recognised image file") from None
    except (OSError, SyntaxError, ValueError, EOFError, struct.error, zlib.error, Image.DecompressionBombError) as err:
        raise RasterReadError(f"{type(err).__name__}: {err}") from None
    if array.size == 0:
        raise RasterReadError(f"image has no pixels (shape {array.shape})")
    return array


def to_unit(array: np.ndarray) -> np.ndarray:
    """float32 in ``[0, 1]``: ``uint8``/``uint16`` divided by 255/65535; other types min-max scaled."""
    if array.dtype in (np.uint8, np.uint16):
        return array.astype(np.float32) / np.float32(np.iinfo(array.dtype).max)
    array = array.astype(np.float32)
    lo, hi = float(array.min()), float(array.max())
    return (array - lo) / (hi - lo) if hi > lo else np.zeros_like(array)
