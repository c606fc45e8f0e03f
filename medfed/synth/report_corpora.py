"""Synthetic report corpora in the real files' formats: an IU (Open-i) ``NLMCXR_reports.tgz`` of XML reports and a
PadChest label CSV (gzip), deterministic from a seed, with findings of ``tasks/report_taxonomy_chest.yaml`` written
as present or negated sentences in English and Spanish; the text readers (:mod:`medfed.text.corpora`) read them
like the real corpora."""

from __future__ import annotations

import gzip
import io
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

#: every column of the real PadChest table, in order (after the unnamed index column)
PADCHEST_COLUMNS = (
    "ImageID", "ImageDir", "StudyDate_DICOM", "StudyID", "PatientID", "PatientBirth", "PatientSex_DICOM",
    "ViewPosition_DICOM", "Projection", "MethodProjection", "Pediatric", "Modality_DICOM", "Manufacturer_DICOM",
    "PhotometricInterpretation_DICOM", "PixelRepresentation_DICOM", "PixelAspectRatio_DICOM",
    "SpatialResolution_DICOM", "BitsStored_DICOM", "WindowCenter_DICOM", "WindowWidth_DICOM", "Rows_DICOM",
    "Columns_DICOM", "XRayTubeCurrent_DICOM", "Exposure_DICOM", "ExposureInuAs_DICOM", "ExposureTime",
    "RelativeXRayExposure_DICOM", "ReportID", "Report", "MethodLabel", "Labels", "Localizations",
    "LabelsLocalizationsBySentence", "labelCUIS", "LocalizationsCUIS",
)


# ------------------------------------------------------------------------------------------ synthetic corpora
@dataclass(frozen=True)
class _Finding:
    label: str
    iu_major: str
    iu_automatic: str
    padchest: str
    en: tuple[str, str]  # (present sentence, negated sentence)
    es: tuple[str, str]


#: one synthetic finding per label of tasks/report_taxonomy_chest.yaml; corpus terms match its mapping
SYNTHETIC_FINDINGS: tuple[_Finding, ...] = (
    _Finding("Cardiomegaly", "Cardiomegaly/mild", "cardiomegaly", "cardiomegaly",
             ("The heart is enlarged, consistent with cardiomegaly.", "No cardiomegaly."),
             ("Cardiomegalia.", "Sin cardiomegalia.")),
    _Finding("Pleural effusion", "Pleural Effusion/right/small", "pleural effusion", "pleural effusion",
             ("Small right pleural effusion.", "No pleural effusion."),
             ("Derrame pleural derecho.", "Sin derrame pleural.")),
    _Finding("Atelectasis", "Pulmonary Atelectasis/base/left", "atelectasis", "laminar atelectasis",
             ("Left basilar atelectasis.", "No atelectasis."),
             ("Atelectasia laminar basal izquierda.", "Sin atelectasias.")),
    _Finding("Consolidation", "Consolidation/lung/lower lobe/right", "consolidation", "consolidation",
             ("Right lower lobe consolidation.", "No focal consolidation."),
             ("Condensación en lóbulo inferior derecho.", "No se observan condensaciones.")),
    _Finding("Pulmonary edema", "Pulmonary Edema/interstitial", "pulmonary edema", "pulmonary edema",
             ("Interstitial pulmonary edema.", "No pulmonary edema."),
             ("Edema pulmonar intersticial.", "Sin edema pulmonar.")),
    _Finding("Pneumothorax", "Pneumothorax/apex/left/small", "pneumothorax", "pneumothorax",
             ("Small left apical pneumothorax.", "No pneumothorax."),
             ("Neumotórax apical izquierdo.", "No se observa neumotórax.")),
    _Finding("Nodule or mass", "Nodule/lung/upper lobe/right", "nodule", "nodule",
             ("A 1 cm nodule in the right upper lobe.", "No pulmonary nodule or mass."),
             ("Nódulo pulmonar en lóbulo superior derecho.", "Sin nódulos ni masas pulmonares.")),
    _Finding("Emphysema", "Pulmonary Emphysema", "pulmonary emphysema", "emphysema",
             ("Hyperinflated lungs with emphysema.", "No emphysema."),
             ("Enfisema pulmonar.", "Sin signos de enfisema.")),
    _Finding("Fracture", "Fractures, Bone/ribs/right/healed", "rib fracture", "callus rib fracture",
             ("Healed right rib fracture.", "No fracture."),
             ("Fractura costal derecha consolidada.", "Sin fracturas.")),
    _Finding("Hiatal hernia", "Hernia, Hiatal", "hiatal hernia", "hiatal hernia",
             ("Hiatal hernia.", "No hiatal hernia."),
             ("Hernia de hiato.", "Sin hernia de hiato.")),
)


def _synthetic_case(rng: np.random.Generator, language: str) -> tuple[str, list[_Finding]]:
    """A template report (one sentence per present finding, a few negated ones) and its present findings."""
    present = [f for f in SYNTHETIC_FINDINGS if rng.random() < 0.15]
    others = [f for f in SYNTHETIC_FINDINGS if f not in present]
    negated = [others[i] for i in sorted(rng.choice(len(others), size=min(3, len(others)), replace=False))]
    sentences = [getattr(f, language)[0] for f in present] + [getattr(f, language)[1] for f in negated]
    order = rng.permutation(len(sentences))
    text = " ".join(sentences[i] for i in order)
    return text, present


def _deterministic_gzip(data: bytes) -> bytes:
    buffer = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buffer, mtime=0) as gz:
        gz.write(data)
    return buffer.getvalue()


def _iu_xml(n: int, findings: str, impression: str, majors: list[str], automatics: list[str]) -> str:
    def esc(s: str) -> str:
        return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")

    mesh = "".join(f"\n      <major>{esc(m)}</major>" for m in majors)
    mesh += "".join(f"\n      <automatic>{esc(a)}</automatic>" for a in automatics)
    return f"""<?xml version="1.0" encoding="utf-8"?>
<eCitation>
   <meta type="rr"/>
   <uId id="CXR{n}"/>
   <pmcId id="{n}"/>
   <docSource>CXR</docSource>
   <IUXRId id="{n}"/>
   <licenseType>open-access</licenseType>
   <licenseURL>http://creativecommons.org/licenses/by-nc-nd/4.0/</licenseURL>
   <ccLicense>byncnd</ccLicense>
   <publisher>Synthetic (medfed)</publisher>
   <title>Synthetic chest X-ray report collection</title>
   <MedlineCitation Owner="medfed" Status="synthetic">
      <Article PubModel="Electronic">
         <ArticleTitle>Synthetic chest X-ray report collection</ArticleTitle>
         <Abstract>
            <AbstractText Label="COMPARISON">None.</AbstractText>
            <AbstractText Label="INDICATION">XXXX-year-old with cough.</AbstractText>
            <AbstractText Label="FINDINGS">{esc(findings)}</AbstractText>
            <AbstractText Label="IMPRESSION">{esc(impression)}</AbstractText>
         </Abstract>
         <Language>eng</Language>
      </Article>
   </MedlineCitation>
   <MeSH>{mesh}
   </MeSH>
   <parentImage id="CXR{n}_1_IM-{n:04d}-1001">
      <figureId>F1</figureId>
      <caption>Xray Chest PA and Lateral</caption>
   </parentImage>
</eCitation>
"""


def write_synthetic_iu(path: Path | str, n: int, seed: int = 0) -> Path:
    """A ``.tgz`` laid out like ``NLMCXR_reports.tgz`` (``ecgen-radiology/<k>.xml``, ``uId`` ``CXR<k>``) with ``n``
    template English reports whose MeSH major terms (``normal`` when nothing is present) match their text."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    tar_buffer = io.BytesIO()
    with tarfile.open(fileobj=tar_buffer, mode="w", format=tarfile.USTAR_FORMAT) as archive:
        folder = tarfile.TarInfo("ecgen-radiology")
        folder.type, folder.mode, folder.mtime = tarfile.DIRTYPE, 0o755, 0
        archive.addfile(folder)
        for k in range(1, n + 1):
            text, present = _synthetic_case(rng, "en")
            impression = ("Findings as above." if present else "No acute cardiopulmonary abnormality.")
            majors = [f.iu_major for f in present] or ["normal"]
            data = _iu_xml(k, text, impression, majors, [f.iu_automatic for f in present]).encode()
            info = tarfile.TarInfo(f"ecgen-radiology/{k}.xml")
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            archive.addfile(info, io.BytesIO(data))
    path.write_bytes(_deterministic_gzip(tar_buffer.getvalue()))
    return path


def write_synthetic_padchest(path: Path | str, n: int, seed: int = 0) -> Path:
    """A PadChest-style label table (gzip CSV for ``.gz`` names, else plain CSV) with the real file's columns and
    ``n`` template Spanish reports (natural, not stemmed); some reports span two image rows, some labels carry
    the real file's leading space. ``Labels`` match the text (``['normal']`` when nothing is present)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    report_ids = sorted(rng.choice(np.arange(1_000_000, 9_999_999), size=n, replace=False).tolist())
    rows = []
    for rid in report_ids:
        text, present = _synthetic_case(rng, "es")
        if not present:
            text = f"Sin hallazgos patológicos. {text}"
        labels = [("" if i == 0 else " ") + f.padchest for i, f in enumerate(present)] or ["normal"]
        method = "Physician" if rng.random() < 0.25 else "RNN_model"
        patient = str(rng.integers(0, 2**62))
        for image in range(1 + int(rng.random() < 0.2)):
            study = f"{rid}{image}"
            row = dict.fromkeys(PADCHEST_COLUMNS, "None")
            row.update({
                "ImageID": f"{rid}_{image:02d}.png", "ImageDir": 0, "StudyDate_DICOM": 20140101 + int(rid % 28),
                "StudyID": study, "PatientID": patient, "PatientBirth": float(1930 + rid % 60),
                "PatientSex_DICOM": "F" if rid % 2 else "M", "ViewPosition_DICOM": "POSTEROANTERIOR",
                "Projection": ("PA", "L")[image % 2], "MethodProjection": "Manual review of DICOM fields",
                "Pediatric": "No", "Modality_DICOM": "CR", "ReportID": rid, "Report": f" {text}",
                "MethodLabel": method, "Labels": repr(labels), "Localizations": "[]",
                "LabelsLocalizationsBySentence": repr([[label.strip()] for label in labels]),
                "labelCUIS": "[]", "LocalizationsCUIS": "[]",
            })
            rows.append(row)
    frame = pd.DataFrame(rows, columns=list(PADCHEST_COLUMNS))
    csv = frame.to_csv(index=True).encode()
    path.write_bytes(_deterministic_gzip(csv) if path.suffix == ".gz" else csv)
    return path
