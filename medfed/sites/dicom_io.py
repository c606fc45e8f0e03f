"""Reading single-frame greyscale DICOM radiographs without letting identifiers out.

Only the tags in :data:`IMAGE_TAGS` and :data:`METADATA_TAGS` are converted and returned as values,
plus :data:`GROUP_TAGS` (PatientID, else StudyInstanceUID), which leave :func:`read_dicom_metadata`
only as :attr:`DicomMetadata.group_key` (hidden from ``repr``): the caller must turn it into a keyed
hash at once and never store, log or print it. Every other identifying element (PatientName,
PatientBirthDate, AccessionNumber, InstitutionName, ...) stays raw bytes inside :func:`_read` and is
dropped when it returns. Error messages name dictionary tags, byte offsets and sizes; in pydicom's
own messages, quoted text other than element names, tags outside the data dictionary and 9+ digit
numbers (any of which may be value bytes read out of place in a damaged file) are redacted.

Pixel convention (DICOM PS3.3 C.7.6.3 and C.11.1): *modality values* are
``stored * RescaleSlope + RescaleIntercept`` (or the Modality LUT Sequence where present), and
``MONOCHROME1`` means the lowest value is displayed white, so it is inverted to read
"higher = brighter = denser" like ``MONOCHROME2``.

Intensity modes (:meth:`DicomImage.to_unit`), each giving float32 ``[0, 1]``:

- ``voi`` (default; what a radiologist sees): the file's VOI LUT Sequence, else its first Window
  Centre/Width under VOILUTFunction (LINEAR, LINEAR_EXACT, SIGMOID), via pydicom's ``apply_voi_lut``,
  scaled over the VOI output range. For DICOM with a display window (most CR/DX "FOR PRESENTATION").
  Without either it falls back to ``percentile``.
- ``percentile``: clip to the 0.5th/99.5th percentiles of the image, scale. For raw "FOR PROCESSING"
  images without a window.
- ``bits``: scale over the stored bit depth (keeps exposure differences between sites).
- ``minmax``: scale over the image's own min and max.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Literal

import numpy as np
import pydicom
from pydicom.config import IGNORE, settings
from pydicom.dataelem import RawDataElement
from pydicom.datadict import DicomDictionary, keyword_for_tag
from pydicom.dataset import Dataset
from pydicom.pixels import apply_modality_lut, apply_voi_lut

from medfed.errors import MedfedError
from medfed.sites.raster_io import (
    INTENSITY_MODES,
    PERCENTILE_HIGH,
    PERCENTILE_LOW,
    check_mode,
    minmax_unit,
    percentile_unit,
)

__all__ = [
    "GROUP_TAGS", "IMAGE_TAGS", "INTENSITY_MODES", "METADATA_TAGS", "PERCENTILE_HIGH", "PERCENTILE_LOW", "VOI_TAGS",
    "DicomImage", "DicomMetadata", "DicomReadError", "read_dicom_image", "read_dicom_metadata",
]

#: tags needed to decode the pixels; none of them identifies a patient
IMAGE_TAGS = (
    "SamplesPerPixel", "PhotometricInterpretation", "Rows", "Columns", "NumberOfFrames", "BitsAllocated",
    "BitsStored", "HighBit", "PixelRepresentation", "RescaleSlope", "RescaleIntercept", "RescaleType",
    "ModalityLUTSequence", "PixelData", "WindowCenter", "WindowWidth", "VOILUTFunction", "VOILUTSequence",
)
#: what :meth:`DicomImage.to_unit` hands to pydicom's ``apply_voi_lut`` (a subset of :data:`IMAGE_TAGS`)
VOI_TAGS = (
    "PhotometricInterpretation", "BitsStored", "PixelRepresentation", "RescaleSlope", "RescaleIntercept",
    "ModalityLUTSequence", "WindowCenter", "WindowWidth", "VOILUTFunction", "VOILUTSequence",
)
#: non-identifying header metadata an adapter may use (exact age is binned by the caller)
METADATA_TAGS = ("PatientAge", "PatientSex", "ViewPosition", "Modality", "BodyPartExamined")
#: identifying: returned only as :attr:`DicomMetadata.group_key` (first present, non-empty one wins)
GROUP_TAGS = (("PatientID", "patient"), ("StudyInstanceUID", "study"))
REQUIRED_IMAGE_TAGS = ("Rows", "Columns", "BitsAllocated", "PhotometricInterpretation")


class DicomReadError(MedfedError):
    """A DICOM file cannot be read or decoded; the message holds no header values."""


@dataclass(frozen=True)
class DicomMetadata:
    """Header fields (stripped strings; empty when absent).

    ``modality`` is Modality as written (``"CR"``, ``"DX"``), ``body_part`` BodyPartExamined upper-cased.
    ``group_key`` is the raw PatientID when non-empty (``group_unit="patient"``), else StudyInstanceUID
    (``"study"``), else ``""`` (``""``). It identifies a person: hash it with a secret key at once, never
    store or print it (it is left out of ``repr``).
    """

    age: str
    sex: str
    view: str
    modality: str = ""
    body_part: str = ""
    group_key: str = field(default="", repr=False)
    group_unit: Literal["patient", "study", ""] = ""


@dataclass(frozen=True)
class DicomImage:
    """One decoded frame.

    ``pixels`` are modality values (float64, ``(H, W)``); ``value_range`` is the modality-value range
    of the storable pixels (from ``BitsStored`` and ``PixelRepresentation``), lowest first. ``voi`` holds
    only the :data:`VOI_TAGS` present in the file (empty when built by hand), for ``to_unit("voi")``.
    """

    pixels: np.ndarray
    value_range: tuple[float, float]
    monochrome1: bool
    bits_stored: int
    voi: Dataset = field(default_factory=Dataset, repr=False, compare=False)

    @property
    def has_voi(self) -> bool:
        """Whether the file has a usable VOI LUT Sequence item or Window Centre and Width."""
        return _voi_lut_item(self.voi) is not None or _has_window(self.voi)

    def to_unit(self, mode: str = "voi") -> np.ndarray:
        """float32 ``(H, W)`` in ``[0, 1]``, higher = brighter on a radiologist's display = denser.

        ``voi``: ``u = (voi_lut(v) - y_lo) / (y_hi - y_lo)`` with pydicom's ``apply_voi_lut`` (VOI LUT
        Sequence first, else the first Window Centre/Width and VOILUTFunction) and ``[y_lo, y_hi]`` its
        output range (windowing: pydicom's ``[y_min, y_max]``; LUT: the lowest and highest LUT entry);
        ``percentile`` when the file has neither. ``percentile``: clip ``v`` to its
        :data:`PERCENTILE_LOW`/:data:`PERCENTILE_HIGH` percentiles, scale. ``bits``:
        ``(v - lo) / (hi - lo)`` over :attr:`value_range`. ``minmax``: over the image's own min and max
        (a constant image maps to 0). MONOCHROME1 is then inverted: ``1 - u``. Raises ``ValueError``
        for an unknown mode, :class:`DicomReadError` when the VOI elements cannot be applied.
        """
        check_mode(mode)
        if mode == "voi" and self.has_voi:
            unit = self._voi_unit()
        elif mode in ("voi", "percentile"):
            unit = percentile_unit(self.pixels)
        elif mode == "minmax":
            unit = minmax_unit(self.pixels)
        else:
            lo, hi = self.value_range
            unit = np.clip((self.pixels - lo) / (hi - lo), 0.0, 1.0) if hi > lo else np.zeros_like(self.pixels)
        if self.monochrome1:
            unit = 1.0 - unit
        return unit.astype(np.float32)

    def _voi_unit(self) -> np.ndarray:
        """pydicom's VOI LUT or windowing of the modality values, scaled over its output range."""
        try:
            with _quiet_pydicom():
                item = _voi_lut_item(self.voi)
                if item is None:  # windowing; -inf/+inf land on pydicom's y_min/y_max for every function
                    values = self.pixels
                    lo, hi = apply_voi_lut(np.array([-np.inf, np.inf]), self.voi).tolist()
                else:  # a LUT maps integers: below the first mapped value -> first entry, above -> last
                    entries, first = int(item.LUTDescriptor[0]) or 2**16, int(item.LUTDescriptor[1])
                    values = np.clip(np.rint(self.pixels), first, first + entries - 1).astype(np.int64)
                    table = apply_voi_lut(np.arange(first, first + entries, dtype=np.int64), self.voi)
                    lo, hi = float(table.min()), float(table.max())
                out = np.asarray(apply_voi_lut(values, self.voi), dtype=np.float64)
        except Exception as err:  # noqa: BLE001 - bad window width, unsupported function or LUT depth
            raise DicomReadError(f"the VOI LUT or window cannot be applied: {_error_text(err)}") from None
        if hi == lo:
            return np.zeros_like(out)
        return np.clip((out - lo) / (hi - lo), 0.0, 1.0)


def _voi_lut_item(voi: Dataset) -> Dataset | None:
    """The first VOI LUT Sequence item when it has LUT Descriptor and LUT Data (as pydicom requires)."""
    sequence = voi.get("VOILUTSequence")
    if not sequence:
        return None
    item = sequence[0]
    return item if item.get("LUTDescriptor") is not None and item.get("LUTData") is not None else None


def _has_window(voi: Dataset) -> bool:
    return voi.get("WindowCenter") not in (None, "") and voi.get("WindowWidth") not in (None, "")


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


_QUOTED = re.compile(r"'([^']*)'|\"([^\"]*)\"")
_TAG = re.compile(r"\(([0-9A-Fa-f]{4}), ?([0-9A-Fa-f]{4})\)")
_HUGE = re.compile(r"\d{9,}")


def _tag_text(group: int, element: int) -> str:
    """``(gggg,eeee) Keyword`` for a data-dictionary tag; other tags may be value bytes read out of place."""
    keyword = keyword_for_tag((group << 16) | element)
    return f"({group:04X},{element:04X}) {keyword}" if keyword else "an element with a tag outside the dictionary"


@cache
def _element_names() -> frozenset[str]:
    """Names and keywords of the data dictionary ('Samples per Pixel', 'SamplesPerPixel'), and 'DICM'."""
    entries = DicomDictionary.values()
    return frozenset([e[2] for e in entries] + [e[4] for e in entries] + ["DICM"])


def _error_text(err: BaseException) -> str:
    """``Type: message`` with quoted text (but element names), non-dictionary tags and 9+ digit numbers redacted."""
    text = _QUOTED.sub(lambda m: m[0] if (m[1] or m[2] or "") in _element_names() else "'…'", str(err))
    text = _TAG.sub(lambda m: m[0] if keyword_for_tag((int(m[1], 16) << 16) | int(m[2], 16)) else "(…)", text)
    return f"{type(err).__name__}: {_HUGE.sub('…', text)}"


def _truncation(ds: Dataset, file_size: int | None) -> str | None:
    """Why the file looks truncated, or ``None``.

    A raw element holding fewer bytes than its declared length, or (with ``file_size``, i.e. when the
    whole file was parsed) bytes after the last complete element that pydicom could not parse. The
    declared length is not quoted: in a damaged file it may be value bytes read out of place.
    """
    end = 0
    undefined_last = False
    datasets = (ds.file_meta, ds) if hasattr(ds, "file_meta") else (ds,)
    for dataset in datasets:
        for tag in sorted(dataset.keys()):
            element = dataset.get_item(tag, keep_deferred=True)  # raw, unconverted (converting may fail)
            if not isinstance(element, RawDataElement):
                continue
            if element.length == 0xFFFFFFFF:  # undefined length (sequence, encapsulated pixels)
                undefined_last = element.value_tell >= end
                continue
            held = len(element.value or b"")
            if held < element.length:
                where = _tag_text(element.tag.group, element.tag.element)
                return f"{where} at byte {element.value_tell} is cut short: {held} byte(s) of its value remain"
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
        raise DicomReadError(_error_text(err)) from None
    try:
        truncated = _truncation(ds, None if stop_before_pixels else path.stat().st_size)
    except Exception as err:  # noqa: BLE001 - a damaged element can fail even unconverted
        raise DicomReadError(_error_text(err)) from None
    if truncated:
        raise DicomReadError(f"file is truncated ({truncated})")
    return ds


def _text(ds: Dataset, keyword: str) -> str:
    """The element's value as a stripped string (``""`` when absent); the message never holds the value."""
    try:
        with _quiet_pydicom():
            value = ds.get(keyword, "")
            return str(value or "").strip()
    except Exception as err:  # noqa: BLE001 - a damaged element can fail to decode in many ways
        raise DicomReadError(f"element {keyword} cannot be decoded ({type(err).__name__})") from None


def read_dicom_metadata(path: Path | str) -> DicomMetadata:
    """Age, sex, view, modality, body part and the grouping key from the header (pixels are not read)."""
    ds = _read(Path(path), stop_before_pixels=True)
    group_key, group_unit = "", ""
    for keyword, unit in GROUP_TAGS:
        group_key = _text(ds, keyword)
        if group_key:
            group_unit = unit
            break
    return DicomMetadata(
        age=_text(ds, "PatientAge"), sex=_text(ds, "PatientSex"), view=_text(ds, "ViewPosition"),
        modality=_text(ds, "Modality"), body_part=_text(ds, "BodyPartExamined").upper(),
        group_key=group_key, group_unit=group_unit,  # type: ignore[arg-type]
    )


def _voi_dataset(ds: Dataset, bits: int) -> Dataset:
    """A new Dataset with only the :data:`VOI_TAGS` present and non-empty, and the file's byte order.

    BitsStored (``bits``) and PixelRepresentation (0) are filled in when absent: pydicom's windowing needs them.
    """
    voi = Dataset()
    for keyword in VOI_TAGS:
        if keyword in ds and ds[keyword].value not in (None, "", b""):
            voi[keyword] = ds[keyword]
    voi.BitsStored = int(voi.get("BitsStored") or bits)
    voi.PixelRepresentation = int(voi.get("PixelRepresentation") or 0)
    implicit_vr, little_endian = ds.original_encoding
    voi.set_original_encoding(implicit_vr, little_endian)  # VOI LUT Data as OW is unpacked with it
    return voi


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
    try:
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
                raise DicomReadError(f"pixel data cannot be decoded: {_error_text(err)}") from None
            bits = int(ds.get("BitsStored") or ds.BitsAllocated)
            signed = int(ds.get("PixelRepresentation", 0) or 0) == 1
            limits = np.array([-(2 ** (bits - 1)), 2 ** (bits - 1) - 1] if signed else [0, 2**bits - 1])
            lo, hi = sorted(np.asarray(apply_modality_lut(limits, ds), dtype=np.float64).tolist())
            voi = _voi_dataset(ds, bits)
    except DicomReadError:
        raise
    except Exception as err:  # noqa: BLE001 - a damaged image element can fail to decode in many ways
        raise DicomReadError(f"image header cannot be decoded: {_error_text(err)}") from None
    if pixels.ndim != 2:
        raise DicomReadError(f"expected a 2-D image, pixel array has shape {pixels.shape}")
    return DicomImage(pixels=pixels, value_range=(lo, hi), monochrome1=photometric == "MONOCHROME1",
                      bits_stored=bits, voi=voi)
