"""Synthetic chest X-ray federation: DICOM and PNG sites with CheXpert-style tables, and a Kermany-style pediatric site.

Sites (cases per scale ``small``/``demo``/``full``):

- ``adult-a``: DX DICOM, MONOCHROME2, PA-heavy, well exposed; label CSV with metadata (10/240/3000).
- ``adult-b``: CR DICOM, MONOCHROME1 (inverted storage), RescaleSlope 2 / RescaleIntercept -1024,
  portable AP-heavy, under-exposed and noisy, non-square; its CSV holds labels only, so age, sex and
  view come from the DICOM headers (10/120/1500).
- ``adult-c``: 8-bit PNG with a label CSV (integer codes), soft and bright (8/48/600).
- ``pediatric``: 8-bit PNG in ``NORMAL/`` and ``PNEUMONIA/`` folders (Kermany et al., Cell 2018),
  smaller anatomy, relatively larger heart, higher pneumonia prevalence (10/96/1200).

Finding columns follow CheXpert (Irvin et al. 2019): ``1`` positive, ``0`` negative, ``-1``
uncertain, blank unmentioned. Pneumonia is rendered as patchy opacities: clearly for positives,
faintly for uncertain cases; Cardiomegaly as an enlarged heart. DICOM headers carry fake patient
identifiers containing :data:`FAKE_MARKER` so tests can prove that none of them leaves an adapter.

Every random draw comes from ``rng_for(seed, "chest_xray", site, ...)``; files carry no timestamps
and UIDs are hashes of ``(seed, site, case)``, so the same seed writes identical bytes.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from scipy.ndimage import gaussian_filter

from medfed.seeding import rng_for
from medfed.synth.common import (
    check_scale,
    staged_directory,
    write_federation_config,
)

MODALITY = "chest_xray"
#: appears in every fake identifier written into DICOM headers (grep outputs for it)
FAKE_MARKER = "MEDFEDFAKEID"
SIZES = {"small": 64, "demo": 128, "full": 512}
#: default ``image_size`` written into the config (what the adapter resizes to)
IMAGE_SIZES = {"small": 32, "demo": 64, "full": 256}
SOP_CLASS = {"DX": "1.2.840.10008.5.1.4.1.1.1.1", "CR": "1.2.840.10008.5.1.4.1.1.1"}
FINDINGS = ("No Finding", "Cardiomegaly", "Pneumonia")
_FIRST_NAMES = {"F": ("JANE", "MARIA", "FATIMA", "INGRID"), "M": ("JOHN", "KENJI", "OMAR", "PIOTR")}


@dataclass(frozen=True)
class SiteSpec:
    """How one synthetic site acquires, stores and labels its images."""

    name: str
    storage: str  # "dicom" | "png" | "class_folders"
    cases: dict[str, int]
    prevalence: float  # pneumonia, confirmed (label 1)
    uncertain_rate: float  # pneumonia label -1 (faint opacity)
    blank_rate: float  # share of negatives left blank
    pediatric: bool = False
    gain: float = 0.9  # exposure: stored = gain * density ** gamma + offset
    gamma: float = 1.0
    offset: float = 0.04
    noise: float = 0.01
    blur: float = 0.5  # in pixels at 128 px
    aspect: float = 1.0  # width / height
    ap_fraction: float = 0.3
    modality: str = "DX"
    photometric: str = "MONOCHROME2"
    slope: float = 1.0
    intercept: float = 0.0
    csv_metadata: bool = True
    label_format: str = "float"  # CheXpert writes "1.0"; "int" writes "1"


SITES: tuple[SiteSpec, ...] = (
    SiteSpec("adult-a", "dicom", {"small": 10, "demo": 240, "full": 3000}, prevalence=0.2, uncertain_rate=0.1,
             blank_rate=0.6, gain=0.9, gamma=1.0, noise=0.008, ap_fraction=0.2),
    SiteSpec("adult-b", "dicom", {"small": 10, "demo": 120, "full": 1500}, prevalence=0.3, uncertain_rate=0.15,
             blank_rate=0.7, gain=0.62, gamma=1.35, offset=0.08, noise=0.03, blur=0.8, aspect=0.875,
             ap_fraction=0.8, modality="CR", photometric="MONOCHROME1", slope=2.0, intercept=-1024.0,
             csv_metadata=False),
    SiteSpec("adult-c", "png", {"small": 8, "demo": 48, "full": 600}, prevalence=0.15, uncertain_rate=0.1,
             blank_rate=0.5, gain=0.95, gamma=0.75, offset=0.02, noise=0.015, blur=1.4, ap_fraction=0.5,
             label_format="int"),
    SiteSpec("pediatric", "class_folders", {"small": 10, "demo": 96, "full": 1200}, prevalence=0.6,
             uncertain_rate=0.0, blank_rate=0.0, pediatric=True, gain=0.85, gamma=1.1, noise=0.012, blur=0.7,
             ap_fraction=0.9),
)


# ---------------------------------------------------------------------------- rendering
def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))


def _ellipse(
    x: np.ndarray, y: np.ndarray, cx: float, cy: float, rx: float, ry: float, edge: float = 0.04
) -> np.ndarray:
    """Soft ellipse mask: ``sigmoid((1 - r) / edge)``, ``r`` the normalised elliptic radius."""
    r = np.sqrt(((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2)
    return _sigmoid((1.0 - r) / edge)


def render_chest(
    rng: np.random.Generator, shape: tuple[int, int], *, pediatric: bool = False, pneumonia: float = 0.0,
    cardiomegaly: bool = False,
) -> np.ndarray:
    """Tissue density in ``[0, 1]`` (higher = denser = brighter) of a frontal chest radiograph.

    Body and shoulders as soft ellipses, air-filled lungs, mediastinum and spine, heart, domed
    diaphragm, posterior ribs as sinusoid-curved bands, clavicles; ``pneumonia`` (0..1) scales patchy
    opacities (smoothed random blobs, ``gaussian_filter``) in one or both lower/mid lung zones.
    """
    h, w = shape
    axes = np.linspace(-1, 1, h, dtype=np.float32), np.linspace(-w / h, w / h, w, dtype=np.float32)
    y, x = np.meshgrid(*axes, indexing="ij")  # float32 throughout: half the memory traffic of float64
    s = rng.uniform(0.74, 0.82) if pediatric else rng.uniform(0.86, 0.96)  # thorax scale in the field
    x = x - rng.normal(0, 0.03)
    y = y - rng.normal(0, 0.03) + (0.05 if pediatric else 0.0)
    tilt = rng.normal(0, 0.03)
    x, y = x * np.cos(tilt) - y * np.sin(tilt), x * np.sin(tilt) + y * np.cos(tilt)

    trunk = _ellipse(x, y, 0, 0.55 * s, 0.9 * s, 1.35 * s, 0.03)
    shoulders = _ellipse(x, y, 0, -0.7 * s, 1.08 * s, 0.26 * s, 0.08)
    body = np.maximum(trunk, shoulders)
    density = 0.06 + 0.42 * body * (0.85 + 0.15 * np.clip(np.abs(x) / s, 0, 1))  # oblique skin edge
    # domed hemidiaphragms: highest under each lung's centre, the right (image left) one higher
    dome = 0.40 * s + 0.22 * s * ((np.abs(x) - 0.38 * s) / (0.4 * s)) ** 2 + np.where(x > 0, 0.04 * s, 0)
    below = _sigmoid((y - dome) / 0.015)
    lung_ry = (0.55 if pediatric else 0.62) * s
    lungs = []
    for side in (-1, 1):
        cx = side * (0.38 * s + rng.normal(0, 0.01))
        lung = _ellipse(x, y, cx, 0.05 * s, 0.30 * s * rng.uniform(0.95, 1.05), lung_ry * rng.uniform(0.97, 1.03), 0.05)
        lungs.append(lung * _sigmoid((np.abs(x) - 0.1 * s) / 0.02))  # medial edge at the mediastinum
    heart_rx = (0.47 if cardiomegaly else 0.35) * s * (1.12 if pediatric else 1.0)  # cardiothoracic ratio ~0.45
    heart = _ellipse(x, y, 0.1 * s, 0.36 * s, heart_rx, 0.24 * s, 0.06)
    lung = np.clip(lungs[0] + lungs[1], 0, 1) * (1 - below) * (1 - heart)
    apex_gradient = 1.0 + 0.2 * (0.05 * s - y) / lung_ry  # more air at the apices
    density -= 0.32 * lung * apex_gradient
    spine = _sigmoid((0.07 * s - np.abs(x)) / 0.01) * body
    vertebrae = 0.5 + 0.5 * np.cos(2 * np.pi * y / (0.11 * s))
    density += spine * (0.05 + 0.02 * vertebrae)
    density += body * np.maximum(0.16 * below, 0.12 * heart)  # liver/spleen and heart: soft tissue

    # posterior ribs: y_k(t) = y0_k - a sin(pi t) + b t^2, t the lateral distance from the spine
    n_ribs = 10
    t = np.clip(np.abs(x) / (0.8 * s), 0, 1.2)
    y0 = np.linspace(-0.78, 0.2, n_ribs)[:, None, None] * s + rng.normal(0, 0.008, (n_ribs, 1, 1))
    bend = (0.06 if pediatric else 0.12) * s
    centre = y0 - bend * np.sin(np.pi * np.clip(t, 0, 1)) + (0.2 if pediatric else 0.38) * s * t**2
    thickness = (0.022 + 0.004 * np.arange(n_ribs)[:, None, None] / n_ribs) * s
    ribs = np.exp(-(((y - centre) / thickness) ** 4)).max(axis=0)  # flat-topped bands with cortical edges
    ribs *= _sigmoid((np.abs(x) - 0.07 * s) / 0.02) * trunk * (1 - below)
    density += 0.07 * ribs
    for side in (-1, 1):  # clavicles: slanted bands from the sternum to the shoulder
        x0, y0c, x1, y1 = side * 0.08 * s, -0.62 * s, side * 0.66 * s, -0.76 * s
        u = np.clip(((x - x0) * (x1 - x0) + (y - y0c) * (y1 - y0c)) / ((x1 - x0) ** 2 + (y1 - y0c) ** 2), 0, 1)
        dist = np.hypot(x - (x0 + u * (x1 - x0)), y - (y0c + u * (y1 - y0c)))
        density += 0.10 * np.exp(-((dist / (0.03 * s)) ** 2))

    if pneumonia > 0:
        blobs = gaussian_filter(rng.normal(size=shape), sigma=0.03 * h)
        blobs = np.clip((blobs - np.quantile(blobs, 0.4)) / (blobs.std() + 1e-9), 0, None)
        blobs = gaussian_filter(blobs, sigma=0.01 * h)
        zones = np.zeros(shape)
        for side in rng.choice([-1, 1], size=rng.integers(1, 3), replace=False):
            zones += _ellipse(x, y, side * 0.4 * s, rng.uniform(0.0, 0.3) * s, 0.3 * s, 0.32 * s, 0.3)
        opacity = np.clip(blobs, 0, 1.5) * np.clip(zones, 0, 1) * lung
        density += 0.25 * pneumonia * opacity
    return np.clip(density, 0, 1)


def acquire(rng: np.random.Generator, density: np.ndarray, spec: SiteSpec) -> np.ndarray:
    """Detector signal in ``[0, 1]``: blur, exposure curve ``gain * d ** gamma + offset``, signal-dependent noise."""
    blurred = gaussian_filter(density, sigma=spec.blur * density.shape[0] / 128)
    signal = spec.gain * blurred**spec.gamma + spec.offset
    signal = signal + rng.normal(0, spec.noise, density.shape) * np.sqrt(np.clip(signal, 0.05, None))
    return np.clip(signal, 0, 1)


# ---------------------------------------------------------------------------- cases and labels
@dataclass(frozen=True)
class Case:
    index: int
    pneumonia: int  # 1 positive, -1 uncertain, 0 negative
    blank: bool  # negative left blank in the table
    cardiomegaly: int
    sex: str
    age: int
    view: str


def draw_cases(spec: SiteSpec, n: int, seed: int) -> list[Case]:
    """Cases of one site; label states by quota (so even ``small`` sites hold every label state)."""
    rng = rng_for(seed, MODALITY, spec.name, "labels")
    n_pos = max(2, round(spec.prevalence * n))
    n_unc = max(1, round(spec.uncertain_rate * n)) if spec.uncertain_rate > 0 else 0
    n_neg = n - n_pos - n_unc
    n_blank = min(n_neg - 1, max(1, round(spec.blank_rate * n_neg))) if spec.blank_rate > 0 else 0
    states = np.array([1] * n_pos + [-1] * n_unc + [0] * n_neg)
    blanks = np.array([False] * (n_pos + n_unc) + [True] * n_blank + [False] * (n_neg - n_blank))
    order = rng.permutation(n)
    states, blanks = states[order], blanks[order]
    cardio = rng.random(n) < 0.15
    sexes = rng.choice(["F", "M"], size=n)
    ages = rng.integers(1, 6, n) if spec.pediatric else np.clip(rng.normal(60, 16, n), 18, 95).astype(int)
    views = np.where(rng.random(n) < spec.ap_fraction, "AP", "PA")
    return [Case(i, int(states[i]), bool(blanks[i]), int(cardio[i]), str(sexes[i]), int(ages[i]), str(views[i]))
            for i in range(n)]


def _label_text(value: int | None, style: str) -> str:
    if value is None:
        return ""
    return f"{value:.1f}" if style == "float" else str(value)


def table_row(case: Case, rel: str, spec: SiteSpec) -> dict[str, str]:
    """One CheXpert-style CSV row."""
    pneumonia = None if case.pneumonia == 0 and case.blank else case.pneumonia
    cardio = case.cardiomegaly if case.cardiomegaly else (None if case.blank else 0)
    no_finding = 1 if case.pneumonia == 0 and not case.cardiomegaly else None
    row = {"Path": rel}
    if spec.csv_metadata:
        row.update({"Sex": {"F": "Female", "M": "Male"}[case.sex], "Age": str(case.age)})
    row["Frontal/Lateral"] = "Frontal"
    if spec.csv_metadata:
        row["AP/PA"] = case.view
    for name, value in zip(FINDINGS, (no_finding, cardio, pneumonia), strict=True):
        row[name] = _label_text(value, spec.label_format)
    return row


# ---------------------------------------------------------------------------- writers
def _dicom(stored: np.ndarray, case: Case, spec: SiteSpec, seed: int, field_mm: float) -> Dataset:
    """A DICOM dataset with realistic headers, fake identifiers and deterministic UIDs."""
    rng = rng_for(seed, MODALITY, spec.name, case.index, "header")
    uid = lambda kind: generate_uid(entropy_srcs=[MODALITY, str(seed), spec.name, str(case.index), kind])
    study_date = dt.date(2019, 1, 1) + dt.timedelta(days=int(rng.integers(0, 730)))
    birth = study_date - dt.timedelta(days=int(case.age * 365.25 + rng.integers(1, 365)))
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SOP_CLASS[spec.modality]
    meta.MediaStorageSOPInstanceUID = uid("sop")
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyDate = ds.SeriesDate = study_date.strftime("%Y%m%d")
    ds.AccessionNumber = f"FKA{rng.integers(10**9, 10**10)}"
    ds.Modality = spec.modality
    ds.Manufacturer = "MEDFED SYNTH"
    ds.InstitutionName = f"{FAKE_MARKER} GENERAL HOSPITAL {spec.name.upper()}"
    ds.PatientName = f"DOE^{rng.choice(_FIRST_NAMES[case.sex])}^{FAKE_MARKER}{spec.name.upper()}{case.index:05d}"
    ds.PatientID = f"{FAKE_MARKER}-PID-{rng.integers(10**7, 10**8)}"
    ds.PatientBirthDate = birth.strftime("%Y%m%d")
    ds.PatientSex = case.sex
    ds.PatientAge = f"{case.age:03d}Y"
    ds.BodyPartExamined = "CHEST"
    ds.ViewPosition = case.view
    ds.StudyInstanceUID = uid("study")
    ds.SeriesInstanceUID = uid("series")
    ds.StudyID = "1"
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    if spec.modality == "DX":
        ds.PresentationIntentType = "FOR PRESENTATION"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = spec.photometric
    ds.Rows, ds.Columns = stored.shape
    spacing = f"{field_mm / stored.shape[0]:.4f}"
    ds.PixelSpacing = ds.ImagerPixelSpacing = [spacing, spacing]
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.RescaleIntercept = f"{spec.intercept:g}"
    ds.RescaleSlope = f"{spec.slope:g}"
    ds.RescaleType = "US"
    ds.PixelData = stored.astype("<u2").tobytes()
    return ds


def _write_png(path: Path, signal: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.round(signal * 255).astype(np.uint8)).save(path, format="PNG")


def write_site(site_dir: Path, spec: SiteSpec, scale: str, seed: int) -> None:
    """Render and store every case of one site under ``site_dir``."""
    height = SIZES[scale]
    shape = (height, round(height * spec.aspect / 8) * 8)
    rows = []
    for case in draw_cases(spec, spec.cases[scale], seed):
        rng = rng_for(seed, MODALITY, spec.name, case.index, "pixels")
        strength = {1: rng.uniform(0.8, 1.2), -1: rng.uniform(0.3, 0.5), 0: 0.0}[case.pneumonia]
        density = render_chest(rng, shape, pediatric=spec.pediatric, pneumonia=strength,
                               cardiomegaly=bool(case.cardiomegaly))
        signal = acquire(rng, density, spec)
        if spec.storage == "dicom":
            stored = np.round(signal * 4095).astype(np.uint16)
            if spec.photometric == "MONOCHROME1":
                stored = 4095 - stored  # MONOCHROME1: low values display white
            rel = f"images/cxr{case.index:05d}.dcm"
            (site_dir / rel).parent.mkdir(parents=True, exist_ok=True)
            _dicom(stored, case, spec, seed, field_mm=430.0).save_as(site_dir / rel, enforce_file_format=True)
        elif spec.storage == "png":
            rel = f"images/cxr{case.index:05d}.png"
            _write_png(site_dir / rel, signal)
        else:
            folder = "PNEUMONIA" if case.pneumonia == 1 else "NORMAL"
            kind = "bacteria" if rng.random() < 0.65 else "virus"  # Kermany file names: person12_bacteria_3.jpeg
            name = f"person{case.index}_{kind}_{case.index}.png" if case.pneumonia == 1 else f"IM-{case.index:04d}.png"
            _write_png(site_dir / folder / name, signal)
            continue
        rows.append(table_row(case, rel, spec))
    if rows:
        pd.DataFrame(rows).to_csv(site_dir / "labels.csv", index=False, lineterminator="\n")


def site_source(spec: SiteSpec, image_size: int, uncertain: str) -> dict[str, object]:
    """The ``sources`` entry of one site (paths relative to ``out/sites/``)."""
    source: dict[str, object] = {"name": spec.name, "root": f"../{MODALITY}/{spec.name}"}
    if spec.storage == "class_folders":
        source.update({"layout": "class_folders", "population": "pediatric"})
    else:
        source.update({"layout": "table", "labels": "labels.csv", "findings": ["Pneumonia"], "uncertain": uncertain,
                       "blank": "negative"})
    source["image_size"] = image_size
    return source


def write_chest_xray(
    out: Path, scale: str = "demo", seed: int = 0, *, uncertain: str = "zeros", image_size: int | None = None
) -> Path:
    """Write the synthetic chest X-ray federation under ``out/chest_xray/``; return ``out/sites/chest_xray.yaml``.

    ``uncertain`` is the label policy written into the config (``zeros``, ``ones`` or ``ignore``);
    ``image_size`` the size the adapter resizes to (default per scale: :data:`IMAGE_SIZES`). Any
    previous ``out/chest_xray`` is replaced (written beside it first, then swapped in).
    """
    check_scale(scale)
    if uncertain not in ("zeros", "ones", "ignore"):
        raise ValueError(f"uncertain must be zeros, ones or ignore, got {uncertain!r}")
    out = Path(out)
    with staged_directory(out, MODALITY) as staging:
        for spec in SITES:
            write_site(staging / spec.name, spec, scale, seed)
    size = image_size or IMAGE_SIZES[scale]
    config = {
        "name": f"chest-xray-{scale}",
        "adapter": MODALITY,
        "split": {"seed": seed, "val": 0.15, "test": 0.25},
        "sources": [site_source(spec, size, uncertain) for spec in SITES],
    }
    return write_federation_config(out, MODALITY, config)
