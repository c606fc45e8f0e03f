"""What patient grouping and duplicate detection add to `medfed validate`, and duplicate checks at 100,000 images.

1. On the demo federations (written to a temporary folder, seed 0): ``load_federation`` + ``Federation.validate``
   as shipped (group keys hashed, grouped splits, pixel digests and perceptual hashes recorded for every image,
   duplicate and near-duplicate search), beside the same with grouping and duplicate hashing switched off in
   this process (no group hashing, per-case splits, no fingerprints, no duplicate search): the reference is
   medfed's validation before this feature. Median of --repeat runs, alternating. Wall-time differences of
   runs this short are noisy, so the share of a shipped run spent inside the new parts is also timed directly.
2. ``exact_duplicates`` + ``near_duplicates`` (k = 4) on 100,000 fingerprints with planted copies (the data of
   ``benchmarks/duplicate_hashing.py``, which also compares them with imagehash's pairwise way).

Times are printed, never asserted.

    python benchmarks/validate_grouping.py [--scale demo] [--repeat 3] [--n 100000]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from unittest import mock

import torch

from medfed.sites import load_federation
from medfed.sites import base, leakage
from medfed.sites.duplicates import exact_duplicates, near_duplicates
from medfed.synth import MODALITIES, write_federation

sys.path.insert(0, str(Path(__file__).parent))
from duplicate_hashing import fingerprints  # noqa: E402 - the benchmark beside this one


@contextmanager
def without_grouping_and_hashing():
    """Validation as it was before groups: no group keys, per-case splits, no fingerprints, no duplicate search."""
    plain_split = base.assign_splits

    def per_case(case_ids, val, test, seed, strata=None, groups=None):
        return plain_split(case_ids, val, test, seed, strata=strata)

    with mock.patch.object(base.Site, "hash_group", lambda self, key: None), \
            mock.patch.object(base, "assign_splits", per_case), \
            mock.patch.object(base.Site, "record_pixels", lambda self, case, pixels, preview=None: None), \
            mock.patch.object(leakage, "duplicate_problems", lambda prints, allow_duplicates=False, groups=None: []):
        yield


def validate_seconds(config: Path) -> float:
    start = time.perf_counter()
    load_federation(config).validate()
    return time.perf_counter() - start


@contextmanager
def timed_new_parts(spent: list[float]):
    """Add to ``spent[0]`` the seconds spent in the parts this feature added (group hashing, the grouped splitter,
    pixel fingerprints, the duplicate search) while validation runs as shipped."""
    def timed(function):
        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                spent[0] += time.perf_counter() - start
        return wrapper

    with mock.patch.object(base.Site, "hash_group", timed(base.Site.hash_group)), \
            mock.patch.object(base, "assign_splits", timed(base.assign_splits)), \
            mock.patch.object(base.Site, "record_pixels", timed(base.Site.record_pixels)), \
            mock.patch.object(leakage, "duplicate_problems", timed(leakage.duplicate_problems)):
        yield


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", default="demo", choices=("small", "demo", "full"))
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--n", type=int, default=100_000)
    args = parser.parse_args()
    print(f"scale {args.scale}, seed 0, torch threads {torch.get_num_threads()}, median of {args.repeat}")
    print(f"{'federation':<13} {'cases':>6} {'validate, shipped':>18} {'without (reference)':>20} {'added':>8} "
          f"{'in the new parts':>17}")
    total_with = total_without = total_new = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        for modality in MODALITIES:
            config = write_federation(modality, Path(tmp), args.scale, seed=0)
            cases = sum(len(s) for s in load_federation(config))
            with_times, without_times, new_parts = [], [], []
            for _ in range(args.repeat):
                with_times.append(validate_seconds(config))
                with without_grouping_and_hashing():
                    without_times.append(validate_seconds(config))
                spent = [0.0]
                with timed_new_parts(spent):
                    total = validate_seconds(config)
                new_parts.append(spent[0] / total)
            shipped, reference = statistics.median(with_times), statistics.median(without_times)
            share = statistics.median(new_parts)
            total_with, total_without = total_with + shipped, total_without + reference
            total_new += share * shipped
            print(f"{modality:<13} {cases:6d} {shipped:17.2f}s {reference:19.2f}s {shipped / reference - 1:+8.1%} "
                  f"{share:16.1%}")
    print(f"{'all three':<13} {'':>6} {total_with:17.2f}s {total_without:19.2f}s {total_with / total_without - 1:+8.1%} "
          f"{total_new / total_with:16.1%}")
    print("(added: shipped vs reference wall time, noisy on a shared 2-core machine; in the new parts: the share of "
          "the shipped run spent inside them, timed directly)")
    prints = fingerprints(args.n, 1_000, 1_000, 4, seed=0)
    start = time.perf_counter()
    clusters = exact_duplicates(prints)
    pairs = near_duplicates(prints, max_distance=4)
    seconds = time.perf_counter() - start
    print(f"\n{args.n:,} fingerprints: exact + near duplicates (k = 4) in {seconds:.2f} s "
          f"({len(clusters):,} exact clusters, {len(pairs):,} near pairs; goal under 5 s)")


if __name__ == "__main__":
    main()
