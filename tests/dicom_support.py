"""One writer of small single-frame DICOM files for the tests (greyscale, 16 bits allocated, unsigned)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid


def write_dicom(path: Path, stored: np.ndarray, *, photometric: str = "MONOCHROME2", bits: int = 12,
                slope: float = 1.0, intercept: float = 0.0, pixels: bool = True, voi_lut: Dataset | None = None,
                syntax: str = ExplicitVRLittleEndian, **header: str) -> Path:
    """Write ``stored`` (H, W) as a CR/DX-like file with ``bits`` stored; ``header`` sets any other element (the
    SOP instance UID derives from the path, so the same call writes the same file)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1"
    meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=[str(path)])
    meta.TransferSyntaxUID = syntax
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    for key, value in header.items():
        setattr(ds, key, value)
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    ds.Rows, ds.Columns = stored.shape
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, bits, bits - 1, 0
    ds.RescaleSlope, ds.RescaleIntercept = f"{slope:g}", f"{intercept:g}"
    if voi_lut is not None:
        ds.VOILUTSequence = Sequence([voi_lut])
    if pixels:
        ds.PixelData = stored.astype("<u2").tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, implicit_vr=syntax == ImplicitVRLittleEndian, little_endian=True, enforce_file_format=True)
    return path
