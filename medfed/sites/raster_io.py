"""Reading PNG/JPEG images with Pillow: fully decoded, checked, returned as numpy arrays.

A file is read twice: ``Image.verify()`` checks the container (PNG chunk CRCs up to ``IEND``,
which ``load()`` alone does not), then ``load()`` decodes every pixel (a truncated JPEG or PNG
stream raises there). Any failure becomes :class:`RasterReadError` with the reason, which never holds
the file's path or name (it may leave the site in a load error; :mod:`medfed.sites.redact`).

Intensity modes (:data:`INTENSITY_MODES`, shared with :mod:`medfed.sites.dicom_io`) map pixels to
float32 ``[0, 1]``, higher = brighter on a display. A PNG/JPEG is already rendered for display (the
window was applied when it was exported), so ``voi`` and ``bits`` are the same here: divide by the
type's maximum (:func:`to_unit`). ``percentile`` and ``minmax`` are per image (:func:`raster_unit`).
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image, UnidentifiedImageError

from medfed.errors import MedfedError
from medfed.sites.redact import error_text, path_variants

#: file suffix (lower case) -> format name
RASTER_FORMATS: dict[str, str] = {".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg"}
#: accepted ``intensity`` modes; ``voi`` (the display window) is the one a radiologist reads
INTENSITY_MODES = ("voi", "percentile", "bits", "minmax")
#: ``percentile`` mode clips to these percentiles of the image (robust to collimator edges and markers)
PERCENTILE_LOW = 0.5
PERCENTILE_HIGH = 99.5
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
    except IsADirectoryError:
        raise RasterReadError("a folder, not a file") from None
    except PermissionError:
        raise RasterReadError("permission denied") from None
    except UnidentifiedImageError:
        empty = path.is_file() and path.stat().st_size == 0
        raise RasterReadError("file is empty (0 bytes)" if empty else "not a recognised image file") from None
    except (OSError, SyntaxError, ValueError, EOFError, struct.error, zlib.error, Image.DecompressionBombError) as err:
        raise RasterReadError(error_text(err, path_variants(path))) from None
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


def minmax_unit(values: np.ndarray) -> np.ndarray:
    """float32 ``(v - min) / (max - min)`` over the array's own extremes; a constant array maps to 0."""
    array = np.asarray(values, dtype=np.float64)
    lo, hi = float(array.min()), float(array.max())
    unit = (array - lo) / (hi - lo) if hi > lo else np.zeros_like(array)
    return unit.astype(np.float32)


def percentile_unit(values: np.ndarray) -> np.ndarray:
    """float32 ``clip((v - p_lo) / (p_hi - p_lo), 0, 1)``.

    ``p_lo``, ``p_hi`` are the :data:`PERCENTILE_LOW`-th and :data:`PERCENTILE_HIGH`-th percentiles of the
    array (linear interpolation). When they coincide (over 99 % of pixels equal) it is
    :func:`minmax_unit`, so a constant array maps to 0.
    """
    array = np.asarray(values, dtype=np.float64)
    lo, hi = (float(v) for v in np.percentile(array, [PERCENTILE_LOW, PERCENTILE_HIGH]))
    if not hi > lo:
        return minmax_unit(array)
    return np.clip((array - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)


def check_mode(mode: str) -> None:
    """Raise ``ValueError`` naming :data:`INTENSITY_MODES` unless ``mode`` is one of them."""
    if mode not in INTENSITY_MODES:
        raise ValueError(f"unknown intensity mode {mode!r}; choose one of {', '.join(INTENSITY_MODES)}")


def raster_unit(pixels: np.ndarray, mode: str) -> np.ndarray:
    """Decoded PNG/JPEG pixels -> float32 in ``[0, 1]`` (same shape), for ``intensity: mode``.

    ``voi`` and ``bits``: :func:`to_unit` (``uint8``/``uint16`` divided by 255/65535: the file is already
    rendered for display); ``percentile``: :func:`percentile_unit`; ``minmax``: :func:`minmax_unit`.
    Raises ``ValueError`` for any other mode.
    """
    check_mode(mode)
    if mode in ("voi", "bits"):
        return to_unit(pixels)
    return percentile_unit(pixels) if mode == "percentile" else minmax_unit(pixels)
