"""Synthetic chest X-ray federation: DICOM and PNG sites with CheXpert-style tables, and a Kermany-style pediatric site.

Sites (images per scale ``small``/``demo``/``full``; patients with seed 0 in brackets):

- ``adult-a``: DX DICOM "FOR PRESENTATION" with a window (centre/width over the 1st-99th percentile of the
  image, as a modality sets it), MONOCHROME2, PA-heavy, well exposed; label CSV with metadata and a
  ``Patient`` column (``patient00012``), stored as ``images/cxrNNNNN.dcm``
  (10/240/3000 images [6/121/1613 patients]).
- ``adult-b``: CR DICOM without a window (raw, so ``intensity: voi`` falls back to percentiles),
  MONOCHROME1 (inverted storage), RescaleSlope 2 / RescaleIntercept -1024, portable AP-heavy, under-exposed and noisy, non-square; its CSV holds labels only, so age, sex,
  view and the patient (PatientID) come from the DICOM headers (10/144/1500 [6/75/792]).
- ``adult-c``: 8-bit PNG with a label CSV (integer codes), soft and bright; CheXpert paths
  ``images/patient00012/study2/view1_frontal.png`` (8/156/600 [6/85/317]).
- ``pediatric``: 8-bit PNG in ``NORMAL/`` and ``PNEUMONIA/`` folders (Kermany et al., Cell 2018),
  smaller anatomy, relatively larger heart, higher pneumonia prevalence; Kermany file names carry the
  patient: ``PNEUMONIA/person12_bacteria_2.png``, ``NORMAL/IM-0012-0001.png`` (10/144/1200 [7/82/637]).

Patients: each has 1-4 images (first study and follow-ups; probabilities 0.45/0.30/0.15/0.10, the
last patient of a label quota cut short), 2-120 days apart, with one sex, birth date, PatientID and
cardiomegaly status, ages advancing across follow-ups, and one anatomy (body habitus, lung shape,
heart size, ribs, the lung zones a pneumonia involves) from a per-patient stream; positioning,
opacity texture and detector noise vary per image. Labels: a pneumonia patient's first study is
positive and a follow-up turns uncertain (resolving) with probability 0.3 (``SiteSpec.resolving``;
0 at ``pediatric``, where a patient keeps one class folder); uncertain and negative patients keep
their state. Image label counts follow fixed quotas (so even ``small`` sites hold every label
state; see :func:`draw_patients`). The config names where the adapter finds the patient: ``group_column: Patient``
(``adult-a``), ``group_pattern: (patient\\d+)/`` (``adult-c``); ``adult-b`` (DICOM PatientID) and
``pediatric`` (Kermany names) rely on the adapter's defaults.

Difficulty (so that the demo's AUROCs stay off the ceiling): positives' opacity strength varies from clear to
faint (:data:`PNEUMONIA_STRENGTH`), uncertain images carry a faint one, and a share of negatives a faint
mimic (:data:`MIMIC_RATE`), so the classes overlap (:func:`opacity_strength`).

Finding columns follow CheXpert (Irvin et al. 2019): ``1`` positive, ``0`` negative, ``-1``
uncertain, blank unmentioned. Pneumonia is rendered as patchy opacities: clearly for positives,
faintly for uncertain cases; Cardiomegaly as an enlarged heart. DICOM headers carry fake patient
identifiers containing :data:`FAKE_MARKER` so tests can prove that none of them leaves an adapter;
each image is its own study (StudyInstanceUID, accession number, date).

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

from medfed.io import atomic_write_text
from medfed.seeding import rng_for
from medfed.synth.chest_render import (
    MIMIC_STRENGTH,  # noqa: F401 - re-exported
    Anatomy,
    acquire,
    draw_anatomy,
    opacity_strength,
    render_chest,
)
from medfed.synth.common import (
    check_scale,
    write_site_federation,
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
#: images per patient (first study plus up to three follow-ups) and their probabilities
IMAGES_PER_PATIENT = (1, 2, 3, 4)
IMAGES_PER_PATIENT_P = (0.45, 0.30, 0.15, 0.10)
#: patient column of the ``adult-a`` label table (source option ``group_column``)
PATIENT_COLUMN = "Patient"
#: regex finding the patient in ``adult-c`` image paths (source option ``group_pattern``)
PATIENT_PATTERN = r"(patient\d+)/"


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
    # where the adapter finds the patient: "column" (CSV column), "dicom" (PatientID), "path" (the
    # patientNNNNN folder), "file_name" (Kermany names: person12_..., IM-0012-...)
    grouping: str = "column"
    resolving: float = 0.3  # chance that a positive patient's follow-up reads uncertain (resolving), and stays so
    opacity_scale: float = 1.0  # multiplies every image's opacity strength: below 1, a subtler finding


SITES: tuple[SiteSpec, ...] = (
    SiteSpec("adult-a", "dicom", {"small": 10, "demo": 240, "full": 3000}, prevalence=0.2, uncertain_rate=0.1,
             blank_rate=0.6, gain=0.9, gamma=1.0, noise=0.008, ap_fraction=0.2, grouping="column"),
    SiteSpec("adult-b", "dicom", {"small": 10, "demo": 144, "full": 1500}, prevalence=0.3, uncertain_rate=0.15,
             blank_rate=0.7, gain=0.62, gamma=1.35, offset=0.08, noise=0.03, blur=0.8, aspect=0.875,
             ap_fraction=0.8, modality="CR", photometric="MONOCHROME1", slope=2.0, intercept=-1024.0,
             csv_metadata=False, grouping="dicom"),
    SiteSpec("adult-c", "png", {"small": 8, "demo": 156, "full": 600}, prevalence=0.22, uncertain_rate=0.1,
             blank_rate=0.5, gain=0.95, gamma=0.75, offset=0.02, noise=0.015, blur=1.4, ap_fraction=0.5,
             label_format="int", grouping="path"),
    SiteSpec("pediatric", "class_folders", {"small": 10, "demo": 144, "full": 1200}, prevalence=0.6,
             uncertain_rate=0.0, blank_rate=0.0, pediatric=True, gain=0.85, gamma=1.1, noise=0.012, blur=0.7,
             ap_fraction=0.9, grouping="file_name", resolving=0.0),
)


# ---------------------------------------------------------------------------- patients, cases and labels
@dataclass(frozen=True)
class Patient:
    """One patient of a site: what all of their images share."""

    number: int  # 1-based, as in ``patient00012``
    states: tuple[int, ...]  # pneumonia label of each image in study order: 1 positive, -1 uncertain, 0 negative
    sex: str
    age_days: int  # age at the first study, in days (365 a year)
    cardiomegaly: int
    kind: str  # pediatric pneumonia: ``bacteria`` or ``virus`` (Kermany file names)
    mrn: int  # fake medical record number, unique in the site (DICOM PatientID)


@dataclass(frozen=True)
class Case:
    index: int  # image number in the site
    patient: int  # Patient.number
    visit: int  # 0 first study, 1, 2, ... follow-ups
    day: int  # days since the patient's first study
    pneumonia: int  # 1 positive, -1 uncertain, 0 negative
    blank: bool  # negative left blank in the table
    cardiomegaly: int
    sex: str
    age: int
    view: str


def _quotas(spec: SiteSpec, n: int) -> tuple[int, int, int]:
    """Images labelled positive, uncertain, negative (so even ``small`` sites hold every state)."""
    n_pos = max(2, round(spec.prevalence * n))
    n_unc = max(1, round(spec.uncertain_rate * n)) if spec.uncertain_rate > 0 else 0
    return n_pos, n_unc, n - n_pos - n_unc


def draw_patients(spec: SiteSpec, n: int, seed: int) -> list[Patient]:
    """The patients of one site, ``n`` images in all, filling the image label quotas of :func:`_quotas` exactly.

    Each patient's image count is drawn from :data:`IMAGES_PER_PATIENT` with :data:`IMAGES_PER_PATIENT_P`
    and cut where a quota runs out. Pneumonia patients come first: their first study is positive, and
    each follow-up turns uncertain (resolving, and stays so) with probability ``spec.resolving`` while
    the uncertain quota lasts; then patients uncertain throughout, then negative patients. Finally the
    patients are shuffled and numbered.
    """
    rng = rng_for(seed, MODALITY, spec.name, "patients")
    draw = lambda: int(rng.choice(IMAGES_PER_PATIENT, p=IMAGES_PER_PATIENT_P))
    pos_left, unc_left, neg_left = _quotas(spec, n)
    sequences: list[tuple[int, ...]] = []
    while pos_left > 0:
        states: list[int] = []
        state = 1
        for visit in range(draw()):
            if visit and state == 1 and unc_left > 0 and rng.random() < spec.resolving:
                state = -1
            if (state == 1 and pos_left == 0) or (state == -1 and unc_left == 0):
                break
            states.append(state)
            pos_left, unc_left = pos_left - (state == 1), unc_left - (state == -1)
        sequences.append(tuple(states))
    for state, left in ((-1, unc_left), (0, neg_left)):
        while left > 0:
            size = min(draw(), left)
            sequences.append((state,) * size)
            left -= size
    sequences = [sequences[i] for i in rng.permutation(len(sequences))]
    m = len(sequences)
    sexes = rng.choice(["F", "M"], size=m)
    ages = rng.integers(1, 6, m) if spec.pediatric else np.clip(rng.normal(60, 16, m), 18, 95).astype(int)
    since_birthday = rng.integers(0, 365, m)
    cardio = rng.random(m) < 0.15
    kinds = np.where(rng.random(m) < 0.65, "bacteria", "virus")
    mrns = rng.choice(9 * 10**7, size=m, replace=False) + 10**7
    return [Patient(i + 1, states, str(sexes[i]), int(ages[i] * 365 + since_birthday[i]), int(cardio[i]),
                    str(kinds[i]), int(mrns[i])) for i, states in enumerate(sequences)]


def draw_cases(spec: SiteSpec, n: int, seed: int, patients: list[Patient] | None = None) -> list[Case]:
    """The ``n`` images of one site, patient by patient (a patient's images are consecutive).

    Follow-ups come 2-120 days apart and ages advance with them; sex and cardiomegaly are the
    patient's, labels as drawn by :func:`draw_patients`. Negatives are left blank by quota over the
    site's negative images (at least one blank, at least one explicit ``0``); the view is drawn per image.
    """
    patients = draw_patients(spec, n, seed) if patients is None else patients
    rng = rng_for(seed, MODALITY, spec.name, "labels")
    drafts = []
    for patient in patients:
        day = 0
        for visit, state in enumerate(patient.states):
            day += int(rng.integers(2, 121)) if visit else 0
            view = "AP" if rng.random() < spec.ap_fraction else "PA"
            drafts.append((patient, visit, day, state, view))
    negatives = [i for i, draft in enumerate(drafts) if draft[3] == 0]
    n_blank = min(len(negatives) - 1, max(1, round(spec.blank_rate * len(negatives)))) if spec.blank_rate > 0 else 0
    blanks = {negatives[i] for i in rng.permutation(len(negatives))[:n_blank]}
    return [Case(i, p.number, visit, day, state, i in blanks, p.cardiomegaly, p.sex, (p.age_days + day) // 365, view)
            for i, (p, visit, day, state, view) in enumerate(drafts)]


def _label_text(value: int | None, style: str) -> str:
    if value is None:
        return ""
    return f"{value:.1f}" if style == "float" else str(value)


def patient_key(number: int) -> str:
    """The patient's name in CSV columns and CheXpert-style paths: ``patient00012``."""
    return f"patient{number:05d}"


def table_row(case: Case, rel: str, spec: SiteSpec) -> dict[str, str]:
    """One CheXpert-style CSV row (with a ``Patient`` column where the site groups by column)."""
    pneumonia = None if case.pneumonia == 0 and case.blank else case.pneumonia
    cardio = case.cardiomegaly if case.cardiomegaly else (None if case.blank else 0)
    no_finding = 1 if case.pneumonia == 0 and not case.cardiomegaly else None
    row = {"Path": rel}
    if spec.grouping == "column":
        row[PATIENT_COLUMN] = patient_key(case.patient)
    if spec.csv_metadata:
        row.update({"Sex": {"F": "Female", "M": "Male"}[case.sex], "Age": str(case.age)})
    row["Frontal/Lateral"] = "Frontal"
    if spec.csv_metadata:
        row["AP/PA"] = case.view
    for name, value in zip(FINDINGS, (no_finding, cardio, pneumonia), strict=True):
        row[name] = _label_text(value, spec.label_format)
    return row


def image_path(case: Case, spec: SiteSpec, kind: str = "bacteria") -> str:
    """Where one image is stored, relative to the site folder."""
    if spec.storage == "dicom":
        return f"images/cxr{case.index:05d}.dcm"
    if spec.storage == "png":  # CheXpert: patient/study/view
        return f"images/{patient_key(case.patient)}/study{case.visit + 1}/view1_frontal.png"
    if case.pneumonia == 1:  # Kermany: PNEUMONIA/person12_bacteria_3.jpeg, NORMAL/IM-0115-0001.jpeg
        return f"PNEUMONIA/person{case.patient}_{kind}_{case.visit + 1}.png"
    return f"NORMAL/IM-{case.patient:04d}-{case.visit + 1:04d}.png"


# ---------------------------------------------------------------------------- writers
def _dicom(stored: np.ndarray, case: Case, patient: Patient, spec: SiteSpec, seed: int, field_mm: float) -> Dataset:
    """A DICOM dataset with realistic headers, fake identifiers and deterministic UIDs.

    Name, PatientID and birth date are the patient's (one per patient, from a per-patient stream);
    each image is its own study (new StudyInstanceUID, accession number and date).
    """
    person = rng_for(seed, MODALITY, spec.name, "patient", patient.number, "header")
    first_study = dt.date(2019, 1, 1) + dt.timedelta(days=int(person.integers(0, 730)))
    first_name = person.choice(_FIRST_NAMES[patient.sex])
    rng = rng_for(seed, MODALITY, spec.name, case.index, "header")
    uid = lambda kind: generate_uid(entropy_srcs=[MODALITY, str(seed), spec.name, str(case.index), kind])
    study_date = first_study + dt.timedelta(days=case.day)
    birth = first_study - dt.timedelta(days=round(patient.age_days * 365.25 / 365))
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
    ds.PatientName = f"DOE^{first_name}^{FAKE_MARKER}{spec.name.upper()}{patient.number:05d}"
    ds.PatientID = f"{FAKE_MARKER}-PID-{patient.mrn}"
    ds.PatientBirthDate = birth.strftime("%Y%m%d")
    ds.PatientSex = case.sex
    ds.PatientAge = f"{case.age:03d}Y"
    ds.BodyPartExamined = "CHEST"
    ds.ViewPosition = case.view
    ds.StudyInstanceUID = uid("study")
    ds.SeriesInstanceUID = uid("series")
    ds.StudyID = str(case.visit + 1)
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    if spec.modality == "DX":  # a processed image for display carries the window the modality chose
        ds.PresentationIntentType = "FOR PRESENTATION"
        low, high = np.percentile(stored * spec.slope + spec.intercept, [1.0, 99.0])
        ds.WindowCenter, ds.WindowWidth = f"{(low + high) / 2:.1f}", f"{max(high - low, 1.0):.1f}"
        ds.VOILUTFunction = "LINEAR"
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
    """Render and store every case of one site under ``site_dir``.

    Anatomy comes from a per-patient stream (:func:`draw_anatomy`), positioning, opacity texture and
    detector noise from a per-image stream, so one patient's images look alike without being equal.
    """
    height = SIZES[scale]
    shape = (height, round(height * spec.aspect / 8) * 8)
    n = spec.cases[scale]
    patients = draw_patients(spec, n, seed)
    by_number = {p.number: p for p in patients}
    anatomies: dict[int, Anatomy] = {}
    rows = []
    for case in draw_cases(spec, n, seed, patients):
        patient = by_number[case.patient]
        if case.patient not in anatomies:
            anatomies[case.patient] = draw_anatomy(rng_for(seed, MODALITY, spec.name, "patient", case.patient,
                                                           "anatomy"), spec.pediatric)
        rng = rng_for(seed, MODALITY, spec.name, case.index, "pixels")
        strength = spec.opacity_scale * opacity_strength(rng, case.pneumonia)
        density = render_chest(rng, shape, pediatric=spec.pediatric, pneumonia=strength,
                               cardiomegaly=bool(case.cardiomegaly), anatomy=anatomies[case.patient])
        signal = acquire(rng, density, spec)
        rel = image_path(case, spec, patient.kind)
        if spec.storage == "dicom":
            stored = np.round(signal * 4095).astype(np.uint16)
            if spec.photometric == "MONOCHROME1":
                stored = 4095 - stored  # MONOCHROME1: low values display white
            (site_dir / rel).parent.mkdir(parents=True, exist_ok=True)
            _dicom(stored, case, patient, spec, seed, field_mm=430.0).save_as(site_dir / rel, enforce_file_format=True)
        else:
            _write_png(site_dir / rel, signal)
        if spec.storage != "class_folders":
            rows.append(table_row(case, rel, spec))
    if rows:
        atomic_write_text(site_dir / "labels.csv", pd.DataFrame(rows).to_csv(index=False, lineterminator="\n"))


def site_source(spec: SiteSpec, image_size: int, uncertain: str, folder: str = MODALITY) -> dict[str, object]:
    """The ``sources`` entry of one site (paths relative to ``out/sites/``; its images under ``out/<folder>/``)."""
    source: dict[str, object] = {"name": spec.name, "root": f"../{folder}/{spec.name}"}
    if spec.storage == "class_folders":
        source.update({"layout": "class_folders", "population": "pediatric"})
    else:
        source.update({"layout": "table", "labels": "labels.csv", "findings": ["Pneumonia"], "uncertain": uncertain,
                       "blank": "negative"})
    if spec.grouping == "column":
        source["group_column"] = PATIENT_COLUMN
    elif spec.grouping == "path":
        source["group_pattern"] = PATIENT_PATTERN
    # "dicom" and "file_name": the adapter's defaults (DICOM PatientID; Kermany file names)
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
    size = image_size or IMAGE_SIZES[scale]
    return write_site_federation(out, MODALITY, f"chest-xray-{scale}", seed, SITES,
                                 lambda folder, spec: write_site(folder, spec, scale, seed),
                                 lambda spec: site_source(spec, size, uncertain))
