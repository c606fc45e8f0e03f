"""NIfTI reading for site adapters: headers (cheap, lazy) and full volumes, with errors as messages.

nibabel reads a NIfTI header without touching the voxel data (for ``.nii.gz`` it decompresses only
the first bytes), so shape, voxel size and affine are cheap enough to check while indexing. Reading
the voxels (``np.asanyarray(img.dataobj)``) decompresses the whole stream, which is where a
truncated or corrupt ``.nii.gz`` fails.

nibabel's messages quote the file's absolute path (which holds the subject id); :class:`UnreadableNifti`
carries a fixed reason for the known failures (:func:`read_error_reason`) and, for any other, the
exception type with the path and file name hidden (:mod:`medfed.sites.redact`).
"""

from __future__ import annotations

import gzip
import struct
import zlib
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.filebasedimages import ImageFileError
from nibabel.spatialimages import HeaderDataError

from medfed.errors import MedfedError
from medfed.sites.redact import error_text, path_variants

#: voxel-to-world affines are the same when they agree to this many millimetres (``np.allclose`` atol)
AFFINE_ATOL_MM = 1e-3

#: what nibabel (and gzip/zlib below it) raise for missing, truncated or malformed files
_READ_ERRORS = (OSError, EOFError, ValueError, zlib.error, struct.error, ImageFileError, HeaderDataError)


class UnreadableNifti(MedfedError):
    """A NIfTI file cannot be opened or its voxel data cannot be read in full."""


@dataclass(frozen=True)
class NiftiGeometry:
    """Grid of one NIfTI image: array shape, voxel size (mm) and voxel-to-world (RAS+ mm) affine."""

    shape: tuple[int, ...]
    zooms: tuple[float, ...]
    affine: np.ndarray

    @property
    def shape_text(self) -> str:
        """e.g. ``"48x56x48"``."""
        return "x".join(str(n) for n in self.shape)

    @property
    def spacing_text(self) -> str:
        """Spatial voxel size in mm, one decimal, e.g. ``"4.0x4.0x4.0"``."""
        return "x".join(f"{z:.1f}" for z in self.zooms[:3])


def read_error_reason(err: BaseException, path: Path | str) -> str:
    """Why reading ``path`` failed, with no path, file name or subject id in it."""
    text = str(err)
    if isinstance(err, FileNotFoundError):
        return "file not found"
    if isinstance(err, IsADirectoryError):
        return "a folder, not a file"
    if isinstance(err, PermissionError):
        return "permission denied"
    if isinstance(err, ImageFileError):
        if text.startswith("Empty file"):
            return "file is empty (0 bytes)"
        return "not a NIfTI file (unknown format, or the header is truncated)"
    if isinstance(err, EOFError):
        return "file is empty or truncated (the compressed stream ends early)"
    if isinstance(err, gzip.BadGzipFile | zlib.error):
        return "corrupt gzip stream"
    if isinstance(err, OSError) and text.startswith("Expected") and "bytes, got" in text:
        return "file is truncated (fewer voxel bytes than the header declares)"
    return error_text(err, [*path_variants(path), Path(path).parent.name])  # the folder: a subject id


def _load(path: Path | str) -> nib.Nifti1Image:
    try:
        img = nib.load(str(path))
    except _READ_ERRORS as err:
        raise UnreadableNifti(read_error_reason(err, path)) from None
    if not isinstance(img, nib.Nifti1Image | nib.Nifti2Image):
        raise UnreadableNifti(f"not a NIfTI image ({type(img).__name__})")
    return img


def _geometry(img: nib.Nifti1Image, path: Path | str) -> NiftiGeometry:
    try:
        return NiftiGeometry(tuple(int(n) for n in img.shape), tuple(float(z) for z in img.header.get_zooms()),
                             np.asarray(img.affine, dtype=np.float64))
    except _READ_ERRORS as err:  # a header whose pixdim/affine fields are garbage
        raise UnreadableNifti(f"invalid header: {read_error_reason(err, path)}") from None


def read_geometry(path: Path | str) -> NiftiGeometry:
    """Shape, voxel size and affine from the header alone; :class:`UnreadableNifti` when it cannot be parsed."""
    return _geometry(_load(path), path)


def read_volume(path: Path | str) -> tuple[np.ndarray, NiftiGeometry]:
    """Every voxel of the image as float32 (``scl_slope``/``scl_inter`` applied) and its geometry.

    Raises :class:`UnreadableNifti` for a missing, truncated or otherwise unreadable file.
    """
    img = _load(path)
    geometry = _geometry(img, path)
    try:
        data = img.get_fdata(dtype=np.float32)
    except _READ_ERRORS as err:
        raise UnreadableNifti(read_error_reason(err, path)) from None
    return data, geometry


def geometry_mismatch(geometry: NiftiGeometry, reference: NiftiGeometry, reference_name: str) -> str | None:
    """Why ``geometry`` is not on the voxel grid of ``reference`` (shape, then affine); ``None`` if it is."""
    if geometry.shape != reference.shape:
        return f"shape {geometry.shape_text} differs from {reference_name} ({reference.shape_text})"
    if not np.allclose(geometry.affine, reference.affine, rtol=0, atol=AFFINE_ATOL_MM):
        offset = np.abs(geometry.affine - reference.affine).max()
        return f"affine differs from {reference_name} by up to {offset:.4g} mm (tolerance {AFFINE_ATOL_MM} mm)"
    return None


def grid_sizes_text(shapes: Mapping[str, str], noun: str = "case", limit: int = 10) -> str | None:
    """``None`` when every case (id -> shape text) has one shape; else each shape with its number of cases, most
    common first, and for the other shapes the case ids (up to ``limit`` each), e.g.
    ``"2 grid sizes: 32x32x32 (4 subjects), 40x40x40 (1 subject: 1f0c...)"``."""
    counts = Counter(shapes.values())
    if len(counts) < 2:
        return None
    order = sorted(counts, key=lambda shape: (-counts[shape], shape))
    parts = []
    for shape in order:
        n = counts[shape]
        text = f"{shape} ({n} {noun}{'' if n == 1 else 's'}"
        if shape != order[0]:
            ids = [case for case, s in shapes.items() if s == shape]
            text += ": " + ", ".join(ids[:limit]) + (", ..." if len(ids) > limit else "")
        parts.append(text + ")")
    return f"{len(counts)} grid sizes: {', '.join(parts)}"
