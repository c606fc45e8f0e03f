"""Random-effects meta-analyses at scale: 100 sites x 10 methods x 10 metrics (1,000 analyses of 100 sites each).

medfed.stats.meta.meta_analysis (fixed, DerSimonian-Laird, Paule-Mandel; HKSJ CIs, I^2 CI, prediction interval)
beside statsmodels' combine_effects on the same data (DerSimonian-Laird ``chi2`` plus Paule-Mandel ``iterated``,
two calls per analysis). Seeded synthetic effects; times are printed, never asserted.

    python benchmarks/meta_analysis.py [--sites 100] [--methods 10] [--metrics 10] [--repeat 3]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from statsmodels.stats.meta_analysis import combine_effects

from medfed.stats.meta import meta_analysis


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sites", type=int, default=100)
    parser.add_argument("--methods", type=int, default=10)
    parser.add_argument("--metrics", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    n = args.methods * args.metrics
    ses = rng.uniform(0.01, 0.05, (n, args.sites))
    effects = 0.03 + rng.normal(0, 0.02, (n, args.sites)) + rng.normal(0, ses)

    def ours() -> list:
        return [meta_analysis(e, s) for e, s in zip(effects, ses)]

    def reference() -> list:
        return [(combine_effects(e, s**2, method_re="chi2", use_t=True),
                 combine_effects(e, s**2, method_re="iterated", use_t=True)) for e, s in zip(effects, ses)]

    times = {}
    for name, function in (("medfed.stats.meta", ours), ("statsmodels combine_effects", reference)):
        best = float("inf")
        for _ in range(args.repeat):
            start = time.perf_counter()
            results = function()
            best = min(best, time.perf_counter() - start)
        times[name] = (best, results)
    (_, mine), (_, theirs) = times["medfed.stats.meta"], times["statsmodels combine_effects"]
    worst = max(max(abs(m[1].estimate - t[0].mean_effect_re), abs(m[2].estimate - t[1].mean_effect_re))
                for m, t in zip(mine, theirs))
    print(f"{n} meta-analyses of {args.sites} sites ({args.methods} methods x {args.metrics} metrics), best of "
          f"{args.repeat}, seed 0:")
    for name, (seconds, _) in times.items():
        print(f"  {name:<28} {seconds:7.3f} s")
    print(f"  largest difference of random-effects estimates (DL and PM): {worst:.1e} (goal: medfed under 1 s)")


if __name__ == "__main__":
    main()
