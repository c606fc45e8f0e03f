"""Reading single-frame greyscale DICOM radiographs without letting identifiers out.

Only the tags in :data:`IMAGE_TAGS` and :data:`METADATA_TAGS` are ever converted and returned;
identifying elements (PatientName, PatientID, PatientBirthDate, AccessionNumber,
InstitutionName, ...) stay raw bytes inside :func:`_read` and are dropped when it returns. Error
messages name element tags and sizes, never element values.

Pixel convention (DICOM PS3.3 C.7.6.3 and C.11.1): *modality values* are
``stored * RescaleSlope + RescaleIntercept`` (or the Modality LUT Sequence where present), and
``MONOCHROME1`` means the lowest value is displayed white, so it is inverted to read
"higher = brighter = denser" like ``MONOCHROME2``.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.config import IGNORE, settings
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.pixels import apply_modality_lut

from medfed.errors import MedfedError

#: tags needed to decode the pixels; none of them identifies a patient
IMAGE_TAGS = (
    "SamplesPerPixel", "PhotometricInterpretation", "Rows", "Columns", "NumberOfFrames", "BitsAllocated",
    "BitsStored", "HighBit", "PixelRepresentation", "RescaleSlope", "RescaleIntercept", "RescaleType",
    "ModalityLUTSequence", "PixelData",
)
#: non-identifying header metadata an adapter may use (exact age is binned by the caller)
METADATA_TAGS = ("PatientAge", "PatientSex", "ViewPosition")
REQUIRED_IMAGE_TAGS = ("Rows", "Columns", "BitsAllocated", "PhotometricInterpretation")


class DicomReadError(MedfedError):
    """A DICOM file cannot be read or decoded; the message holds no header values."""


@dataclass(frozen=True)
class DicomMetadata:
    """Non-identifying header fields (raw strings; empty when absent)."""

    age: str
    sex: str
    view: str


@dataclass(frozen=True)
class DicomImage:
    """One decoded frame.

    ``pixels`` are modality values (float64, ``(H, W)``); ``value_range`` is the modality-value range
    of the storable pixels (from ``BitsStored`` and ``PixelRepresentation``), lowest first.
    """

    pixels: np.ndarray
    value_range: tuple[float, float]
    monochrome1: bool
    bits_stored: int

    def to_unit(self, method: str = "bits") -> np.ndarray:
        """float32 in ``[0, 1]``, higher = brighter = denser.

        ``method="bits"``: ``(v - lo) / (hi - lo)`` over :attr:`value_range` (keeps each site's
        exposure); ``"minmax"``: over the image's own min and max (a constant image maps to 0).
        MONOCHROME1 is then inverted: ``1 - u``.
        """
        if method == "bits":
            lo, hi = self.value_range
        elif method == "minmax":
            lo, hi = float(self.pixels.min()), float(self.pixels.max())
        else:
            raise ValueError(f"unknown intensity method {method!r}; choose 'bits' or 'minmax'")
        unit = np.clip((self.pixels - lo) / (hi - lo), 0.0, 1.0) if hi > lo else np.zeros_like(self.pixels)
        if self.monochrome1:
            unit = 1.0 - unit
        return unit.astype(np.float32)


@contextmanager
def _quiet_pydicom() -> Iterator[None]:
    """Silence pydicom's value-validation warnings/logs while reading (they quote element values)."""
    previous = settings.reading_validation_mode
    settings.reading_validation_mode = IGNORE
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        settings.reading_validation_mode = previous


def _truncation(ds: Dataset, file_size: int | None) -> str | None:
    """Why the file looks truncated, or ``None``.

    A raw element holding fewer bytes than its declared length, or (with ``file_size``, i.e. when the
    whole file was parsed) bytes after the last complete element that pydicom could not parse.
    """
    end = 0
    undefined_last = False
    datasets = (ds.file_meta, ds) if hasattr(ds, "file_meta") else (ds,)
    for dataset in datasets:
        for element in dataset.elements():
            if not isinstance(element, RawDataElement):
                continue
            if element.length == 0xFFFFFFFF:  # undefined length (sequence, encapsulated pixels)
                undefined_last = element.value_tell >= end
                continue
            held = len(element.value or b"")
            if held < element.length:
                return f"element {element.tag} holds {held} of {element.length} bytes"
            if element.value_tell + element.length >= end:
                end, undefined_last = element.value_tell + element.length, False
    if file_size is not None and end and not undefined_last and file_size > end:
        return f"{file_size - end} byte(s) after the last complete element cannot be parsed"
    return None


def _read(path: Path, stop_before_pixels: bool) -> Dataset:
    """``dcmread`` plus a truncation check; raises :class:`DicomReadError`. Caller keeps only allowed tags."""
    try:
        with _quiet_pydicom():
            ds = pydicom.dcmread(path, stop_before_pixels=stop_before_pixels)
    except FileNotFoundError:
        raise DicomReadError("file not found") from None
    except Exception as err:  # noqa: BLE001 - pydicom raises many types for corrupt input; no values quoted
        raise DicomReadError(f"{type(err).__name__}: {err}") from None
    truncated = _truncation(ds, None if stop_before_pixels else path.stat().st_size)
    if truncated:
        raise DicomReadError(f"file is truncated ({truncated})")
    return ds


def _text(ds: Dataset, keyword: str) -> str:
    with _quiet_pydicom():
        value = ds.get(keyword, "")
    return str(value or "").strip()


def read_dicom_metadata(path: Path | str) -> DicomMetadata:
    """PatientAge, PatientSex and ViewPosition from the header (pixels are not read)."""
    ds = _read(Path(path), stop_before_pixels=True)
    return DicomMetadata(age=_text(ds, "PatientAge"), sex=_text(ds, "PatientSex"), view=_text(ds, "ViewPosition"))


def read_dicom_image(path: Path | str) -> DicomImage:
    """Read and decode one single-frame greyscale image; raises :class:`DicomReadError` with the reason."""
    ds = _read(Path(path), stop_before_pixels=False)
    if len(ds) == 0:
        raise DicomReadError("no data elements after the file meta header (truncated or empty file)")
    if "PixelData" not in ds:
        raise DicomReadError("no pixel data (PixelData element missing)")
    missing = [t for t in REQUIRED_IMAGE_TAGS if t not in ds]
    if missing:
        raise DicomReadError(f"required image element(s) missing: {', '.join(missing)}")
    with _quiet_pydicom():
        photometric = str(ds.PhotometricInterpretation).strip().upper()
        samples = int(ds.get("SamplesPerPixel", 1) or 1)
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        if samples != 1 or photometric not in ("MONOCHROME1", "MONOCHROME2"):
            raise DicomReadError(f"not a greyscale image ({photometric}, {samples} sample(s) per pixel)")
        if frames != 1:
            raise DicomReadError(f"expected a single frame, found {frames}")
        try:
            stored = ds.pixel_array
            pixels = np.asarray(apply_modality_lut(stored, ds), dtype=np.float64)
        except Exception as err:  # noqa: BLE001 - pixel handlers raise many types for undecodable data
            raise DicomReadError(f"pixel data cannot be decoded: {type(err).__name__}: {err}") from None
        bits = int(ds.get("BitsStored") or ds.BitsAllocated)
        signed = int(ds.get("PixelRepresentation", 0) or 0) == 1
        limits = np.array([-(2 ** (bits - 1)), 2 ** (bits - 1) - 1] if signed else [0, 2**bits - 1])
        lo, hi = sorted(np.asarray(apply_modality_lut(limits, ds), dtype=np.float64).tolist())
    if pixels.ndim != 2:
        raise DicomReadError(f"expected a 2-D image, pixel array has shape {pixels.shape}")
    return DicomImage(pixels=pixels, value_range=(lo, hi), monochrome1=photometric == "MONOCHROME1", bits_stored=bits)
