"""DICOM/PNG intensity modes (voi, percentile, bits, minmax), header grouping fields, error-message privacy."""

from __future__ import annotations

import random
import struct
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.pixels import apply_voi_lut
from pydicom.uid import generate_uid

from medfed.sites.dicom_io import (
    INTENSITY_MODES,
    PERCENTILE_HIGH,
    PERCENTILE_LOW,
    DicomImage,
    DicomMetadata,
    DicomReadError,
    read_dicom_image,
    read_dicom_metadata,
)
from medfed.sites.raster_io import raster_unit

import dicom_support

BITS = 15
TOP = 2**BITS - 1
SECRET_ID = "QZ7XK4WJ9PVB"


def write_dicom(path: Path, stored: np.ndarray, *, photometric: str = "MONOCHROME1", bits: int = BITS,
                **options) -> Path:
    """A CR file: 16 bits allocated, ``bits`` stored, unsigned, explicit VR little endian."""
    options.setdefault("Modality", "CR")
    return dicom_support.write_dicom(path, stored, photometric=photometric, bits=bits, **options)


def ramp(shape: tuple[int, int] = (16, 32), top: int = TOP, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, top + 1, size=shape).astype(np.uint16)


def lut_item(table: np.ndarray, first: int, *, vr: str = "US", depth: int = 16) -> Dataset:
    item = Dataset()
    item.LUTDescriptor = [len(table), first, depth]
    if vr == "OW":
        item.add_new("LUTData", "OW", table.astype("<u2").tobytes())
    else:
        item.add_new("LUTData", "US", [int(v) for v in table])
    return item


# ---------------------------------------------------------------------------- voi: window centre/width
def test_linear_window_is_pydicoms_voi_scaled_by_hand(tmp_path):
    """Centre 2048, width 1024 (LINEAR): 0 up to 1536, 1 above 2559, MONOCHROME1 inverted after."""
    stored = np.array([[0, 1000, 1535, 1536, 1537, 2048], [2300, 2558, 2559, 2560, 9000, TOP]], np.uint16)
    path = write_dicom(tmp_path / "cr.dcm", stored, WindowCenter="2048", WindowWidth="1024")
    image = read_dicom_image(path)
    assert image.has_voi and image.monochrome1 and image.value_range == (0.0, float(TOP))

    ds = pydicom.dcmread(path)
    by_pydicom = apply_voi_lut(stored.astype(np.float64), ds) / TOP  # output range [0, 2**15 - 1]
    x = stored.astype(np.float64)
    by_hand = np.clip((x - 2047.5) / 1023 + 0.5, 0, 1)  # PS3.3 C.11.2.1.2.1
    np.testing.assert_allclose(by_pydicom, by_hand, atol=1e-12)
    unit = image.to_unit("voi")
    assert unit.dtype == np.float32 and unit.shape == stored.shape
    np.testing.assert_allclose(unit, 1 - by_hand, atol=1e-6)
    assert (unit[x <= 1536] == 1).all() and (unit[x > 2559] == 0).all()  # white below, black above (MONO1)
    assert image.to_unit() is not None and np.array_equal(image.to_unit(), unit)  # voi is the default


@pytest.mark.parametrize(("function", "expected"), [
    ("LINEAR_EXACT", lambda x, c, w: np.clip((x - c) / w + 0.5, 0, 1)),
    ("SIGMOID", lambda x, c, w: 1 / (1 + np.exp(-4 * (x - c) / w))),
])
def test_window_functions_and_rescale_use_modality_values(tmp_path, function, expected):
    stored = ramp()
    centre, width = 12000.0, 9000.0  # in modality units: stored * 2 - 1024
    path = write_dicom(tmp_path / "f.dcm", stored, photometric="MONOCHROME2", slope=2, intercept=-1024,
                       WindowCenter=[f"{centre:g}", "40"], WindowWidth=[f"{width:g}", "400"],
                       VOILUTFunction=function)
    image = read_dicom_image(path)
    modality = stored * 2.0 - 1024
    np.testing.assert_allclose(image.to_unit("voi"), expected(modality, centre, width), atol=1e-6)  # 1st window


def test_voi_separates_lung_and_mediastinum_better_than_bits(tmp_path):
    """The issue's washed-out CR: under bits the lungs sit near 0.6 and the mediastinum near 0.88."""
    rng = np.random.default_rng(1)
    stored = np.empty((64, 64))
    stored[:, :32] = 0.40 * TOP  # lungs: MONOCHROME1, high stored value = dark
    stored[:, 32:] = 0.12 * TOP  # mediastinum: dense, low stored value = bright
    stored = np.clip(stored + rng.normal(0, 300, stored.shape), 0, TOP).astype(np.uint16)
    path = write_dicom(tmp_path / "cr.dcm", stored, WindowCenter="8500", WindowWidth="12000")
    image = read_dicom_image(path)
    contrast = {}
    for mode in ("voi", "bits"):
        unit = image.to_unit(mode)
        lung, mediastinum = float(unit[:, :32].mean()), float(unit[:, 32:].mean())
        assert mediastinum > lung  # denser = brighter
        contrast[mode] = mediastinum - lung
    bits = image.to_unit("bits")
    assert bits[:, :32].mean() == pytest.approx(0.6, abs=0.02) and bits[:, 32:].mean() == pytest.approx(0.88, abs=0.02)
    assert contrast["voi"] > 2 * contrast["bits"]


def test_a_window_that_cannot_be_applied_is_a_read_error_for_voi_only(tmp_path):
    path = write_dicom(tmp_path / "w0.dcm", ramp(), WindowCenter="100", WindowWidth="0")  # LINEAR needs >= 1
    image = read_dicom_image(path)
    with pytest.raises(DicomReadError, match="VOI LUT or window cannot be applied"):
        image.to_unit("voi")
    assert image.to_unit("bits").shape == (16, 32)


# ---------------------------------------------------------------------------- voi: VOI LUT Sequence
@pytest.mark.parametrize("vr", ["US", "OW"])
def test_voi_lut_sequence_is_preferred_and_scaled_over_its_entries(tmp_path, vr):
    """4096 entries from stored value 100, declared 16 bits but holding 0..4095: scaled over 0..4095."""
    first, entries = 100, 4096
    table = np.round(np.sqrt(np.arange(entries) / (entries - 1)) * 4095).astype(np.uint16)
    stored = ramp(top=6000)
    stored[0, :3] = [0, 100, 6000]  # below the first mapped value, the first one, past the last entry
    path = write_dicom(tmp_path / f"lut-{vr}.dcm", stored, voi_lut=lut_item(table, first, vr=vr),
                       WindowCenter="3000", WindowWidth="10")  # ignored: the LUT comes first
    image = read_dicom_image(path)
    expected = table[np.clip(stored.astype(np.int64) - first, 0, entries - 1)] / 4095
    np.testing.assert_allclose(image.to_unit("voi"), 1 - expected, atol=1e-6)
    assert image.to_unit("voi")[0, :3].tolist() == [1.0, 1.0, 0.0]
    by_pydicom = apply_voi_lut(stored.astype(np.int64), pydicom.dcmread(path))
    np.testing.assert_allclose(image.to_unit("voi"), 1 - by_pydicom / 4095, atol=1e-6)


# ---------------------------------------------------------------------------- percentile, bits, minmax
def test_without_voi_the_voi_mode_is_percentile(tmp_path):
    stored = ramp(seed=4)
    stored[0, 0], stored[0, 1] = 0, TOP  # outliers the percentiles clip
    image = read_dicom_image(write_dicom(tmp_path / "raw.dcm", stored))
    assert not image.has_voi
    x = stored.astype(np.float64)
    lo, hi = np.percentile(x, [PERCENTILE_LOW, PERCENTILE_HIGH])
    expected = 1 - np.clip((x - lo) / (hi - lo), 0, 1)
    np.testing.assert_allclose(image.to_unit("percentile"), expected, atol=1e-6)
    np.testing.assert_array_equal(image.to_unit("voi"), image.to_unit("percentile"))
    assert (PERCENTILE_LOW, PERCENTILE_HIGH) == (0.5, 99.5)
    # a DicomImage built by hand (no VOI dataset) also falls back
    hand = DicomImage(pixels=x, value_range=(0.0, float(TOP)), monochrome1=True, bits_stored=BITS)
    np.testing.assert_array_equal(hand.to_unit("voi"), image.to_unit("percentile"))


@pytest.mark.parametrize("mode", INTENSITY_MODES)
def test_monochrome1_is_the_inverse_of_monochrome2_in_every_mode(tmp_path, mode):
    stored = ramp(seed=5)
    header = {"WindowCenter": "16000", "WindowWidth": "20000"}
    mono1 = read_dicom_image(write_dicom(tmp_path / "m1.dcm", stored, photometric="MONOCHROME1", **header))
    mono2 = read_dicom_image(write_dicom(tmp_path / "m2.dcm", stored, photometric="MONOCHROME2", **header))
    u1, u2 = mono1.to_unit(mode), mono2.to_unit(mode)
    assert u1.dtype == u2.dtype == np.float32 and 0 <= u1.min() and u1.max() <= 1
    np.testing.assert_allclose(u1, 1 - u2, atol=1e-6)


def test_bits_and_minmax_are_unchanged(tmp_path):
    stored = ramp(seed=6, top=20000)
    image = read_dicom_image(write_dicom(tmp_path / "b.dcm", stored, photometric="MONOCHROME2"))
    np.testing.assert_allclose(image.to_unit("bits"), stored / TOP, atol=1e-6)
    x = stored.astype(np.float64)
    np.testing.assert_allclose(image.to_unit("minmax"), (x - x.min()) / (x.max() - x.min()), atol=1e-6)


def test_unknown_mode_names_the_allowed_ones(tmp_path):
    image = read_dicom_image(write_dicom(tmp_path / "u.dcm", ramp()))
    for call in (lambda: image.to_unit("window"), lambda: raster_unit(np.zeros((2, 2), np.uint8), "window")):
        with pytest.raises(ValueError, match="voi, percentile, bits, minmax"):
            call()


def test_raster_unit_modes():
    rng = np.random.default_rng(7)
    grey = rng.integers(0, 256, (20, 30)).astype(np.uint8)
    deep = rng.integers(0, 65536, (20, 30)).astype(np.uint16)
    for mode in ("voi", "bits"):  # PNG/JPEG are already rendered for display
        np.testing.assert_allclose(raster_unit(grey, mode), grey / 255, atol=1e-7)
        np.testing.assert_allclose(raster_unit(deep, mode), deep / 65535, atol=1e-7)
    x = grey.astype(np.float64)
    lo, hi = np.percentile(x, [0.5, 99.5])
    np.testing.assert_allclose(raster_unit(grey, "percentile"), np.clip((x - lo) / (hi - lo), 0, 1), atol=1e-6)
    np.testing.assert_allclose(raster_unit(grey, "minmax"), (x - x.min()) / (x.max() - x.min()), atol=1e-6)
    for mode in INTENSITY_MODES:
        unit = raster_unit(grey, mode)
        assert unit.dtype == np.float32 and unit.shape == grey.shape and 0 <= unit.min() and unit.max() <= 1
    constant = np.full((4, 4), 77, np.uint8)
    assert not raster_unit(constant, "minmax").any() and not raster_unit(constant, "percentile").any()


# ---------------------------------------------------------------------------- header fields for grouping
@pytest.mark.filterwarnings("ignore:Invalid value for VR CS")  # real files hold lower case
def test_metadata_modality_body_part_and_group_key(tmp_path):
    study = generate_uid(entropy_srcs=["study"])
    stored = np.zeros((2, 2), np.uint16)
    patient = read_dicom_metadata(write_dicom(tmp_path / "p.dcm", stored, PatientID=SECRET_ID, StudyInstanceUID=study,
                                              BodyPartExamined=" chest ", PatientName="DOE^JANE", PatientAge="045Y"))
    assert (patient.modality, patient.body_part, patient.age) == ("CR", "CHEST", "045Y")
    assert (patient.group_key, patient.group_unit) == (SECRET_ID, "patient")
    assert SECRET_ID not in repr(patient) and "DOE" not in repr(patient) and "DOE" not in str(vars(patient))

    for name, header in (("absent", {}), ("empty", {"PatientID": ""})):
        by_study = read_dicom_metadata(write_dicom(tmp_path / f"{name}.dcm", stored, StudyInstanceUID=study, **header))
        assert (by_study.group_key, by_study.group_unit) == (study, "study")

    neither = read_dicom_metadata(write_dicom(tmp_path / "n.dcm", stored, Modality="DX"))
    assert (neither.modality, neither.body_part, neither.group_key, neither.group_unit) == ("DX", "", "", "")
    assert DicomMetadata("045Y", "F", "PA").group_unit == ""  # old three-field constructor still works


# ---------------------------------------------------------------------------- error messages hold no PatientID
def _leak_forms(secret: str) -> set[str]:
    """The secret, its 4-character pieces, and each 4 bytes of it as a number or a (gggg,eeee) tag."""
    raw = secret.encode()
    forms = {secret} | {secret[i:i + 4] for i in range(len(secret) - 3)}
    for i in range(len(raw) - 3):
        chunk = raw[i:i + 4]
        for order in "<>":
            forms.add(str(struct.unpack(f"{order}I", chunk)[0]))
            group, element = struct.unpack(f"{order}HH", chunk)
            forms |= {f"({group:04X},{element:04X})", f"({group:04x},{element:04x})"}
    return forms


def test_read_errors_of_broken_files_never_hold_the_patient_id(tmp_path):
    good = write_dicom(tmp_path / "good.dcm", ramp((8, 8)), PatientID=SECRET_ID, PatientName="DOE^JANE",
                       WindowCenter="100", WindowWidth="50").read_bytes()
    at = good.index(SECRET_ID.encode())
    head = at - 8  # tag (4), VR (2), length (2)
    damaged = [good[:cut] for cut in range(head, at + len(SECRET_ID) + 1)]
    damaged += [good[:head + 4] + vr + good[head + 6:] for vr in (b"OB", b"SQ", b"UN", b"FD", b"AT", b"ZQ")]
    damaged += [good[:head + 6] + struct.pack("<H", n) + good[head + 8:] for n in (3, 2, 255, 0xFFFF)]
    damaged += [good[:head - k] + good[head:] for k in (1, 2, 3)]  # parser lands inside the value
    rng = random.Random(0)
    for _ in range(200):
        blob = bytearray(good)
        for _ in range(rng.randint(1, 3)):
            blob[rng.randint(128, at + len(SECRET_ID) + 8)] = rng.randint(0, 255)
        damaged.append(bytes(blob))
    forms = _leak_forms(SECRET_ID)
    messages = []
    for i, blob in enumerate(damaged):
        path = tmp_path / f"broken-{i}.dcm"
        path.write_bytes(blob)
        for read in (read_dicom_metadata, read_dicom_image):
            try:
                result = read(path)
            except DicomReadError as err:  # any other exception type fails the test
                messages.append(str(err))
                continue
            if isinstance(result, DicomImage):
                try:
                    result.to_unit("voi")
                except DicomReadError as err:
                    messages.append(str(err))
    assert len(messages) > 100 and any("truncated" in m for m in messages)
    leaks = [(m, f) for m in messages for f in forms if f in m]
    assert not leaks, leaks[:3]
