"""Federated evaluation: what one site runs to score submissions on its own cases.

:func:`score_site` is the whole site-side step, in-process now and unchanged behind a distributed engine:
it reads each reference label map and each team's prediction *at the site* and returns only per-case
metric records under hashed case ids, the number of cases, and problems naming hashed ids. Images, masks,
predictions and subject ids never leave it. A missing, unreadable or misshapen prediction gets
:func:`~medfed.challenge.case_metrics.worst_case` and a problem line; scoring never stops on one bad file.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from medfed.challenge.case_metrics import EmptyRules, score_case, worst_case
from medfed.challenge.class_metrics import case_scores, site_auroc, worst_probabilities
from medfed.challenge.submissions import Submission, read_prediction, read_score_table
from medfed.errors import MedfedError, Problem
from medfed.sites.base import Site

RECORD_COLUMNS = ("team", "site", "institution", "case_id", "metric", "value", "status")
SUMMARY_COLUMNS = ("team", "site", "institution", "metric", "value", "n_cases")


@dataclass
class SiteScores:
    """What leaves a site: per-case metric records (``RECORD_COLUMNS``), site-level metrics that need all cases
    at once (``SUMMARY_COLUMNS``: AUROC of classification submissions), its case count, its problems."""

    site: str
    institution: str
    n_cases: int
    records: pd.DataFrame
    problems: list[Problem] = field(default_factory=list)
    summaries: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=list(SUMMARY_COLUMNS)))

    def to_message(self) -> dict[str, Any]:
        """A JSON-able form, as a site would send it over the wire."""
        return {"site": self.site, "institution": self.institution, "n_cases": self.n_cases,
                "records": self.records.to_dict("records"), "summaries": self.summaries.to_dict("records"),
                "problems": [vars(p) for p in self.problems]}

    @classmethod
    def from_message(cls, message: dict[str, Any]) -> SiteScores:
        return cls(message["site"], message["institution"], int(message["n_cases"]),
                   pd.DataFrame(message["records"], columns=list(RECORD_COLUMNS)),
                   [Problem(**p) for p in message["problems"]],
                   pd.DataFrame(message.get("summaries", []), columns=list(SUMMARY_COLUMNS)))


def score_site(
    site: Site, submissions: Sequence[Submission], *, split: str = "test", rules: EmptyRules | None = None,
    progress: bool = False,
) -> SiteScores:
    """Score every submission on every case of ``split`` (``"all"``: every case) of ``site``.

    ``status`` of a record: ``ok``, or the defect (``missing``, ``unreadable``, ``invalid``) that made the case
    score :func:`worst_case`. The institution is the site's ``institution`` metadata (FeTS partition id).
    """
    rules = rules or EmptyRules()
    institution = str(getattr(site, "institution", site.name))
    if site.label_kind == "classification":
        return score_site_labels(site, submissions, split=split)
    wrong = [s.team for s in submissions if s.kind != "label_maps"]
    if wrong:
        raise MedfedError(f"site {site.name} holds label maps; submission(s) of {', '.join(wrong)} are CSV files "
                          f"(a segmentation submission is a folder of <ID>_seg.nii.gz)")
    rows: list[dict[str, Any]] = []
    problems: list[Problem] = []
    n_cases = 0
    cases = site.reference_cases(split)
    bar = tqdm(cases, desc=f"score {site.name}", unit="case", leave=False, disable=None if progress else True)
    for reference in bar:
        n_cases += 1
        for submission in submissions:
            prediction, defects = read_prediction(submission, reference)
            for defect in defects:
                scored = "scored worst" if defect.fatal else "scored"
                problems.append(Problem(site=site.name, case=reference.case_id, file=f"team {submission.team}",
                                        reason=f"{defect.kind}: {defect.reason} ({scored})"))
            fatal = next((d.kind for d in defects if d.fatal), None)
            if prediction is None or fatal:
                values, status = worst_case(rules), fatal or "invalid"
            else:
                values, status = score_case(prediction, reference.label, reference.spacing, rules), "ok"
            rows += [{"team": submission.team, "site": site.name, "institution": institution,
                      "case_id": reference.case_id, "metric": metric, "value": float(value), "status": status}
                     for metric, value in values.items()]
    if n_cases == 0:
        problems.append(site.problem(f"no case in split {split!r} to score"))
    return SiteScores(site.name, institution, n_cases, pd.DataFrame(rows, columns=list(RECORD_COLUMNS)), problems)


def score_site_labels(site: Site, submissions: Sequence[Submission], *, split: str = "test") -> SiteScores:
    """Classification: per-case Brier score and log loss per finding, and the site's AUROC per finding.

    A case missing from a team's CSV, or whose row has a non-numeric, NaN or out-of-[0, 1] probability, gets
    the worst probabilities (``status`` missing / invalid) and a problem line; a finding column the CSV lacks
    scores worst for every case (one problem line).
    """
    wrong = [s.team for s in submissions if s.kind != "scores"]
    if wrong:
        raise MedfedError(f"site {site.name} holds image labels; submission(s) of {', '.join(wrong)} are folders "
                          f"(a classification submission is a CSV of case ids and probabilities)")
    institution = str(site.name)
    reference = site.reference_targets(split)
    findings = [c for c in reference.columns if c not in ("case_id", "source_id")]
    targets = reference[findings].to_numpy(dtype=np.float64)
    rows: list[dict[str, Any]] = []
    summaries: list[dict[str, Any]] = []
    problems: list[Problem] = []
    for submission in submissions:
        table = read_score_table(submission, findings, site.name)
        problems += [site.problem(f"{d.kind}: {d.reason}", file=f"team {submission.team}") for d in table.defects]
        probabilities = worst_probabilities(targets)
        status = ["ok"] * len(reference)
        if not any(d.fatal for d in table.defects):
            for i, (case_id, source_id) in enumerate(zip(reference["case_id"], reference["source_id"], strict=True)):
                row = table.lookup(source_id, case_id)
                if row is None:
                    status[i] = "missing"
                    problems.append(Problem(site=site.name, case=case_id, file=f"team {submission.team}",
                                            reason="missing: no row for this case (scored worst)"))
                    continue
                values = np.array([row.get(f, np.nan) for f in table.columns], dtype=np.float64)
                if not (np.isfinite(values).all() and ((values >= 0) & (values <= 1)).all()):
                    status[i] = "invalid"
                    problems.append(Problem(site=site.name, case=case_id, file=f"team {submission.team}",
                                            reason="invalid: probabilities must be numbers in [0, 1] (scored worst)"))
                    continue
                for f, v in zip(table.columns, values, strict=True):
                    probabilities[i, findings.index(f)] = v
        else:
            status = [next(d.kind for d in table.defects if d.fatal)] * len(reference)
        for i, scores in enumerate(case_scores(probabilities, targets, findings)):
            rows += [{"team": submission.team, "site": site.name, "institution": institution,
                      "case_id": reference["case_id"].iat[i], "metric": metric, "value": value, "status": status[i]}
                     for metric, value in scores.items()]
        summaries += [{"team": submission.team, "site": site.name, "institution": institution, "metric": metric,
                       "value": value, "n_cases": len(reference)}
                      for metric, value in site_auroc(probabilities, targets, findings).items()]
    if len(reference) == 0:
        problems.append(site.problem(f"no case in split {split!r} to score"))
    return SiteScores(site.name, institution, len(reference), pd.DataFrame(rows, columns=list(RECORD_COLUMNS)),
                      problems, pd.DataFrame(summaries, columns=list(SUMMARY_COLUMNS)))
