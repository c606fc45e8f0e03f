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

import pandas as pd
from tqdm.auto import tqdm

from medfed.challenge.case_metrics import EmptyRules, score_case, worst_case
from medfed.challenge.submissions import Submission, read_prediction
from medfed.errors import Problem
from medfed.sites.base import Site

RECORD_COLUMNS = ("team", "site", "institution", "case_id", "metric", "value", "status")


@dataclass
class SiteScores:
    """What leaves a site: per-case metric records (``RECORD_COLUMNS``), its case count, its problems."""

    site: str
    institution: str
    n_cases: int
    records: pd.DataFrame
    problems: list[Problem] = field(default_factory=list)

    def to_message(self) -> dict[str, Any]:
        """A JSON-able form, as a site would send it over the wire."""
        return {"site": self.site, "institution": self.institution, "n_cases": self.n_cases,
                "records": self.records.to_dict("records"), "problems": [vars(p) for p in self.problems]}

    @classmethod
    def from_message(cls, message: dict[str, Any]) -> SiteScores:
        return cls(message["site"], message["institution"], int(message["n_cases"]),
                   pd.DataFrame(message["records"], columns=list(RECORD_COLUMNS)),
                   [Problem(**p) for p in message["problems"]])


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
