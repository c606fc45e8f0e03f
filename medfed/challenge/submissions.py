"""Challenge submissions: where a team's predictions are and how one prediction is read and checked.

A segmentation submission is a folder of predicted label maps named after the subject:
``<ID>_seg.nii.gz`` or ``<ID>.nii.gz`` (``.nii`` accepted; BraTS/FeTS convention), in the folder itself or in
``<ID>/`` below it. A classification submission is a CSV file: an id column (``case_id``, ``id`` or ``image``:
the image's path as the site lists it, its file name, its stem, or the hashed case id), one probability
column per finding (per class for multi-class sites), and optionally a ``site`` column when ids repeat
across sites. Every defect of a prediction is a :class:`PredictionDefect` with its kind (``missing``,
``unreadable``, ``invalid``) so that scoring can give that case the worst score and list it; one bad file
never stops scoring. Problems name the *hashed* case id only: the subject id stays at the site.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from medfed.errors import MedfedError
from medfed.sites.base import ReferenceCase
from medfed.sites.nifti_io import AFFINE_ATOL_MM, UnreadableNifti, read_volume

#: prediction file names tried for subject ``{id}``, in this order
PREDICTION_NAMES: tuple[str, ...] = ("{id}_seg.nii.gz", "{id}.nii.gz", "{id}_seg.nii", "{id}.nii")
#: label values a BraTS prediction may hold (ET = 4; ``enhancing_label: 3`` submissions are remapped)
BRATS_LABELS: tuple[int, ...] = (0, 1, 2, 4)
_TEAM = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}$")


@dataclass(frozen=True)
class Submission:
    """One team's predictions: ``team`` (a short name, letters/digits/``_.+-``) and the folder ``path``;
    ``enhancing_label`` 3 for BraTS-2023-style label maps (remapped to 4 on reading)."""

    team: str
    path: Path
    enhancing_label: int = 4

    def __post_init__(self) -> None:
        if not _TEAM.match(self.team):
            raise MedfedError(f"team name {self.team!r}: use 1-64 letters, digits or _ . + - (starting with a "
                              f"letter or digit)")
        if self.enhancing_label not in (3, 4):
            raise MedfedError(f"team {self.team}: enhancing_label must be 4 or 3, got {self.enhancing_label}")

    @property
    def kind(self) -> str:
        """``"scores"`` for a CSV file of probabilities, ``"label_maps"`` for a folder."""
        return "scores" if self.path.suffix.lower() == ".csv" else "label_maps"

    def prediction_path(self, source_id: str) -> Path | None:
        """The first existing file of :data:`PREDICTION_NAMES` for ``source_id``, flat or in ``<ID>/``."""
        for folder in (self.path, self.path / source_id):
            for pattern in PREDICTION_NAMES:
                candidate = folder / pattern.format(id=source_id)
                if candidate.is_file():
                    return candidate
        return None


def parse_submissions(specs: Sequence[str]) -> list[Submission]:
    """``TEAM=PATH`` or ``PATH`` (team = folder name or CSV stem) strings from the command line -> submissions.

    Raises :class:`MedfedError` naming every folder or CSV that does not exist and every repeated team name.
    """
    submissions, errors = [], []
    for spec in specs:
        team, sep, folder = spec.partition("=")
        path = Path(folder if sep else spec).expanduser()
        name = team if sep else (path.stem if path.suffix.lower() == ".csv" else path.resolve().name)
        if not (path.is_dir() or (path.is_file() and path.suffix.lower() == ".csv")):
            errors.append(f"submission {spec!r}: {path} is neither a folder of label maps nor a CSV file")
            continue
        submissions.append(Submission(name, path.resolve()))
    teams = [s.team for s in submissions]
    errors += [f"team name {t!r} is used by more than one submission" for t in sorted({t for t in teams
                                                                                     if teams.count(t) > 1})]
    if errors:
        raise MedfedError("\n".join(errors))
    if not submissions:
        raise MedfedError("no submission given")
    return submissions


@dataclass(frozen=True)
class PredictionDefect:
    """Why a prediction cannot be scored (``kind``: missing, unreadable, invalid) or, with ``fatal=False``,
    a defect it is scored despite (an affine that differs from the reference's)."""

    kind: str
    reason: str
    fatal: bool = True


def read_prediction(
    submission: Submission, reference: ReferenceCase, labels: Sequence[int] = BRATS_LABELS
) -> tuple[np.ndarray | None, list[PredictionDefect]]:
    """The team's label map for ``reference`` (``uint8``, ET = 4) and its defects; ``None`` when unscorable.

    Unscorable: no file, an unreadable file, a shape other than the reference's (trailing singleton axes
    are dropped first), NaN/inf voxels, non-integer values, or values outside ``labels``. An affine more
    than :data:`AFFINE_ATOL_MM` from the reference's is reported but scored on the voxel grid.
    """
    path = submission.prediction_path(reference.source_id)
    if path is None:
        return None, [PredictionDefect("missing", "no prediction file (expected <ID>_seg.nii.gz or <ID>.nii.gz)")]
    try:
        data, geometry = read_volume(path)
    except UnreadableNifti as err:
        reason = str(err).replace(str(path), "<file>").replace(reference.source_id, "<ID>")  # no subject id
        return None, [PredictionDefect("unreadable", f"unreadable prediction: {reason}")]
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.shape != reference.label.shape:
        shape = "x".join(map(str, data.shape))
        expected = "x".join(map(str, reference.label.shape))
        return None, [PredictionDefect("invalid", f"prediction shape {shape} differs from the reference {expected}")]
    finite = np.isfinite(data)
    if not finite.all():
        return None, [PredictionDefect("invalid", f"{int((~finite).sum())} NaN/inf voxel(s) in the prediction")]
    values = np.unique(data)
    if (values != np.round(values)).any():
        return None, [PredictionDefect("invalid", "prediction holds non-integer label values")]
    allowed = set(labels) if submission.enhancing_label == 4 else {*(v for v in labels if v != 4), 3}
    unknown = sorted(int(v) for v in values if int(v) not in allowed)
    if unknown:
        return None, [PredictionDefect("invalid", f"unknown label value(s) {', '.join(map(str, unknown))} "
                                                  f"(allowed {', '.join(map(str, sorted(allowed)))})")]
    label = data.astype(np.uint8)
    if submission.enhancing_label == 3:
        label[label == 3] = 4
    defects = []
    if reference.affine is not None and not np.allclose(geometry.affine, reference.affine, rtol=0,
                                                        atol=AFFINE_ATOL_MM):
        offset = float(np.abs(geometry.affine - reference.affine).max())
        defects.append(PredictionDefect("invalid", f"affine differs from the reference by up to {offset:.4g} mm; "
                                                   f"scored on the voxel grid", fatal=False))
    return label, defects


#: accepted names of the id column of a classification submission, in order of preference
ID_COLUMNS: tuple[str, ...] = ("case_id", "id", "image")


@dataclass
class ScoreTable:
    """A classification submission as read: probabilities by id, and the defects of the file as a whole."""

    rows: dict[str, dict[str, float]]
    columns: list[str]
    defects: list[PredictionDefect]

    def lookup(self, source_id: str, case_id: str) -> dict[str, float] | None:
        """The row of a case, found by its source path, file name, stem, or hashed id."""
        path = Path(source_id)
        for key in (source_id, path.name, path.stem, case_id):
            if key in self.rows:
                return self.rows[key]
        return None


def read_score_table(submission: Submission, findings: Sequence[str], site: str | None = None) -> ScoreTable:
    """Read a classification CSV for one site. With a ``site`` column only that site's rows are used (ids need
    only be unique within a site). File-level defects: unreadable, no id column, missing finding columns
    (those findings score worst for every case), repeated ids (every copy ignored; counted, never named)."""
    try:
        table = pd.read_csv(submission.path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError) as err:
        return ScoreTable({}, [], [PredictionDefect("unreadable", f"unreadable CSV: {type(err).__name__}")])
    table.columns = [str(c).strip() for c in table.columns]
    id_column = next((c for c in ID_COLUMNS if c in table.columns), None)
    if id_column is None:
        return ScoreTable({}, [], [PredictionDefect("invalid", f"CSV has no id column ({', '.join(ID_COLUMNS)}); "
                                                               f"columns found: {', '.join(table.columns)}")])
    if site is not None and "site" in table.columns:
        table = table[table["site"].str.strip() == site]
    defects = []
    absent = [f for f in findings if f not in table.columns]
    if absent:
        defects.append(PredictionDefect("invalid", f"CSV lacks probability column(s) {', '.join(absent)}; those "
                                                   f"findings are scored worst for every case", fatal=False))
    present = [f for f in findings if f in table.columns]
    ids = table[id_column].str.strip()
    repeated = ids.duplicated(keep=False)
    if repeated.any():
        defects.append(PredictionDefect("invalid", f"{int(ids[repeated].nunique())} id(s) appear more than once; "
                                                   f"their rows are ignored", fatal=False))
    values = table.loc[~repeated, present].apply(pd.to_numeric, errors="coerce")
    rows = {key: {f: float(v) for f, v in zip(present, row, strict=True)}
            for key, row in zip(ids[~repeated], values.itertuples(index=False), strict=True)}
    return ScoreTable(rows, present, defects)
