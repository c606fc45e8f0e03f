"""Leakage checks across the cases of a federation: the same image twice, or nearly the same.

Contract: from the pixel fingerprints that :meth:`medfed.sites.base.Site.validate` records (exact digest of
the decoded pixels, 64-bit perceptual hash; :mod:`medfed.sites.duplicates`), every exact duplicate is one
problem naming every copy with its site, case, file and split. A copy in train and another in test is an
error (the test score would include an image the model trained on) unless ``allow_duplicates`` makes it a
warning; other exact duplicates and near-duplicates are warnings. A near-duplicate pair is within
:data:`NEAR_DISTANCE` bits on the 64-bit pHash (found by banding) *and* within :data:`FINE_DISTANCE` bits on
the 256-bit pHash: the fine hash confirms what the coarse one finds, since radiographs of different patients
often share a 64-bit pHash (on the demo chest federation 703 pairs of different patients did, 6 pass both).
Both tolerate re-encoding (JPEG quality 80), resizing, mild noise and brightness changes; crops of a few
per cent are not caught. Near-duplicates within one group (follow-up images of one patient, frames
of one stone) are expected and not reported: they share a split by construction. Found by hashing and sorting,
never by comparing all pairs of images.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from medfed.errors import Problem
from medfed.sites.duplicates import (
    ImageFingerprint,
    TooManyNearDuplicates,
    exact_duplicates,
    hamming,
    near_duplicates,
    splits_of,
)

#: largest Hamming distance between 64-bit perceptual hashes reported as a near-duplicate
NEAR_DISTANCE = 4
#: and between their 256-bit perceptual hashes (the same share of the bits, 1/16)
FINE_DISTANCE = 16
#: more near-duplicate pairs than this (e.g. thousands of blank frames) become one summary warning
MAX_NEAR_PAIRS = 20_000


def _where(fp: ImageFingerprint) -> str:
    return f"site {fp.site} case {fp.case} file {fp.file} ({fp.split})"


def duplicate_problems(
    prints: Sequence[ImageFingerprint],
    allow_duplicates: bool = False,
    groups: Mapping[tuple[str, str], str] | None = None,
) -> list[Problem]:
    """Problems for exact and near-duplicate images among ``prints`` (see the module docstring); ``groups`` maps
    ``(site, case)`` to the case's group, so that near-duplicates inside one group are left out."""
    group_of = groups or {}
    problems = []
    for cluster in exact_duplicates(prints):
        first, others = cluster[0], cluster[1:]
        splits = splits_of(cluster)
        leaks = {"train", "test"} <= splits
        sites = sorted({fp.site for fp in cluster})
        scope = f"across sites {', '.join(sites)}" if len(sites) > 1 else "within the site"
        verdict = ("in train and in test: the test score would include an image the model trained on"
                   if leaks else f"in {', '.join(sorted(splits))}")
        advice = "; remove the copies (or pass --allow-duplicates)" if leaks and not allow_duplicates else ""
        reason = (f"identical pixels {scope}, {verdict}; copies: {_where(first)}; "
                  + "; ".join(_where(fp) for fp in others) + advice)
        severity = "error" if leaks and not allow_duplicates else "warning"
        problems.append(Problem(site=first.site, reason=reason, case=first.case, file=first.file, severity=severity))
    try:
        pairs = near_duplicates(prints, max_distance=NEAR_DISTANCE, max_pairs=MAX_NEAR_PAIRS)
    except TooManyNearDuplicates as err:
        sites = sorted({fp.site for fp in prints})
        return problems + [Problem(site=", ".join(sites), severity="warning", reason=(
            f"{err.count:,} near-duplicate image pairs (perceptual-hash distance <= {NEAR_DISTANCE}), too many to "
            "list: many images look alike (blank images or consecutive video frames?); check the data"))]
    for a, b, distance in pairs:
        same_group = a.site == b.site and group_of.get((a.site, a.case), a.case) == group_of.get((b.site, b.case), b.case)
        if same_group or hamming(a.fine_phash, b.fine_phash) > FINE_DISTANCE:
            continue
        problems.append(Problem(
            site=a.site, case=a.case, file=a.file, severity="warning",
            reason=f"near-duplicate image (perceptual-hash distance {distance}) of {_where(b)}; this one is in "
                   f"{a.split}"))
    return problems
