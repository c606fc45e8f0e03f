"""Duplicate detection on fingerprints: medfed's sorting and banding vs imagehash compared pair by pair.

Generates --n fingerprints (seeded): random 64-bit perceptual hashes and random digests, of which --exact
are exact copies (same digest and hash, another site) and --near are near copies (1 to --max-distance bits
flipped, new digest). Times ``exact_duplicates`` and ``near_duplicates`` on all of them (median of --repeat)
and checks that every planted copy is found. The reference is the naive way with imagehash: every pair of
``ImageHash`` objects compared (``h1 - h2 <= k``) and every pair of digests compared (``==``), timed on a
subsample of --sample fingerprints (1% of them members of duplicates found above, the rest random) and
extrapolated to --n by the number of pairs (quadratic). medfed runs on the same subsample and must give the
same pairs (exit 1 otherwise). Then the per-image cost of ``pixel_digest`` and ``perceptual_hash`` on one
512 x 512 uint16 image, beside decoding it from a 16-bit PNG, SHA-256 of its raw bytes, and
``imagehash.phash`` on a ready PIL image. Times are never asserted.

    python benchmarks/duplicate_hashing.py [--n 100000] [--sample 2000] [--seed 0] [--repeat 3]
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import statistics
import sys
import time
from collections.abc import Callable

import imagehash
import numpy as np
from PIL import Image

from medfed.sites.duplicates import (
    ImageFingerprint,
    exact_duplicates,
    near_duplicates,
    perceptual_hash,
    pixel_digest,
)

GOAL_SECONDS = 5.0  # the goal for 100,000 hashes


def fingerprints(n: int, exact: int, near: int, max_distance: int, seed: int) -> list[ImageFingerprint]:
    """n fingerprints: n - exact - near random ones, then the planted exact and near copies of random ones."""
    rng = np.random.default_rng(seed)
    base = n - exact - near
    hashes = rng.integers(0, 2**64, base, dtype=np.uint64).tolist()
    digests = [f"{d:032x}" for d in rng.integers(0, 2**63, base).tolist()]  # stand-ins for pixel digests
    splits = rng.choice(["train", "val", "test"], base, p=[0.7, 0.1, 0.2]).tolist()
    prints = [ImageFingerprint(f"site{i % 5}", f"case{i:06d}", f"case{i:06d}.dcm", s, d, h)
              for i, (h, d, s) in enumerate(zip(hashes, digests, splits))]
    for i, j in enumerate(rng.integers(0, base, exact).tolist()):
        src = prints[j]
        prints.append(ImageFingerprint("site9", f"exact{i:05d}", f"exact{i:05d}.dcm", "test", src.digest, src.phash))
    for i, j in enumerate(rng.integers(0, base, near).tolist()):
        h = prints[j].phash
        for bit in rng.choice(64, int(rng.integers(1, max_distance + 1)), replace=False).tolist():
            h ^= 1 << bit
        prints.append(ImageFingerprint("site8", f"near{i:05d}", f"near{i:05d}.dcm", "test", f"near{i:028d}", h))
    return prints


def median_time(work: Callable[[], object], repeat: int) -> tuple[float, object]:
    """(median seconds, last result)."""
    times, result = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        result = work()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def as_imagehash(h: int) -> imagehash.ImageHash:
    bits = np.unpackbits(np.frombuffer(h.to_bytes(8, "big"), np.uint8)).astype(bool).reshape(8, 8)
    return imagehash.ImageHash(bits)


def naive(prints: list[ImageFingerprint], k: int) -> tuple[float, float, set, set]:
    """(near seconds, exact seconds, near pairs, exact pairs): every pair compared, imagehash's way."""
    objects = [as_imagehash(p.phash) for p in prints]
    digests = [p.digest for p in prints]
    start = time.perf_counter()
    near = set()
    for i, a in enumerate(objects):
        for j in range(i + 1, len(objects)):
            if a - objects[j] <= k and digests[i] != digests[j]:
                near.add(frozenset((i, j)))
    near_s = time.perf_counter() - start
    start = time.perf_counter()
    exact = set()
    for i, a in enumerate(digests):
        for j in range(i + 1, len(digests)):
            if a == digests[j]:
                exact.add(frozenset((i, j)))
    return near_s, time.perf_counter() - start, near, exact


def radiograph(size: int = 512, seed: int = 0) -> np.ndarray:
    """A 12-bit uint16 image: smooth blobs plus noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    image = sum(rng.uniform(-1, 1) * np.exp(-((yy - rng.uniform()) ** 2 + (xx - rng.uniform()) ** 2)
                                            / (2 * rng.uniform(0.05, 0.3) ** 2)) for _ in range(8))
    image = image + rng.normal(0, 0.02, image.shape)
    return np.rint((image - image.min()) / np.ptp(image) * 4095).astype(np.uint16)


def thread_report() -> str:
    parts = [f"cpus {os.cpu_count()}"]
    try:
        from threadpoolctl import threadpool_info
        parts += [f"{i['internal_api']} {i['num_threads']}" for i in threadpool_info()]
    except ImportError:
        parts.append("threadpoolctl not installed")
    try:
        import torch
        parts.append(f"torch {torch.get_num_threads()}")
    except ImportError:
        parts.append("torch not installed")
    return ", ".join(parts) + " (the hashing here runs on one thread)"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--exact", type=int, default=1_000)
    parser.add_argument("--near", type=int, default=1_000)
    parser.add_argument("--max-distance", type=int, default=4)
    parser.add_argument("--sample", type=int, default=2_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    k = args.max_distance
    print(f"seed {args.seed}; numpy {np.__version__}, imagehash {imagehash.__version__}, "
          f"popcount {'np.bitwise_count' if hasattr(np, 'bitwise_count') else 'byte table'}; "
          f"threads: {thread_report()}")
    prints = fingerprints(args.n, args.exact, args.near, k, args.seed)
    pairs = args.n * (args.n - 1) // 2
    print(f"\n{args.n:,} fingerprints ({args.exact:,} planted exact copies, {args.near:,} planted near copies with "
          f"1-{k} bits flipped), k = {k}, median of {args.repeat}")
    exact_s, clusters = median_time(lambda: exact_duplicates(prints), args.repeat)
    near_s, found = median_time(lambda: near_duplicates(prints, max_distance=k), args.repeat)
    copies = {c.case for cluster in clusters for c in cluster if c.case.startswith("exact")}
    near_found = {x.case for a, b, _ in found for x in (a, b) if x.case.startswith("near")}
    print(f"  exact_duplicates: {exact_s:8.3f} s, {len(clusters):,} clusters, planted copies found "
          f"{len(copies):,}/{args.exact:,}")
    print(f"  near_duplicates:  {near_s:8.3f} s, {len(found):,} pairs, planted copies found "
          f"{len(near_found):,}/{args.near:,}")
    print(f"  both:             {exact_s + near_s:8.3f} s (goal: under {GOAL_SECONDS:.0f} s for 100,000: "
          f"{'met' if exact_s + near_s < GOAL_SECONDS else 'NOT met'})")

    rng = np.random.default_rng(args.seed + 1)  # the subsample: 1% of it the members of found duplicates
    enriched = {id(p) for c in clusters[:args.sample // 200] for p in c[:2]}
    enriched |= {id(x) for a, b, _ in found[:args.sample // 200] for x in (a, b)}
    rest = [i for i in rng.permutation(len(prints)).tolist() if id(prints[i]) not in enriched]
    sample = [p for p in prints if id(p) in enriched] + [prints[i] for i in rest[:args.sample - len(enriched)]]
    sample_pairs = args.sample * (args.sample - 1) // 2
    scale = pairs / sample_pairs
    naive_near_s, naive_exact_s, naive_near, naive_exact = naive(sample, k)
    index = {id(p): i for i, p in enumerate(sample)}
    ours_near = {frozenset((index[id(a)], index[id(b)])) for a, b, _ in near_duplicates(sample, max_distance=k)}
    ours_exact = {frozenset((index[id(a)], index[id(b)])) for c in exact_duplicates(sample)
                  for a in c for b in c if a is not b}
    small_exact_s, _ = median_time(lambda: exact_duplicates(sample), args.repeat)
    small_near_s, _ = median_time(lambda: near_duplicates(sample, max_distance=k), args.repeat)
    same = ours_near == naive_near and ours_exact == naive_exact
    print(f"\nreference: every pair compared, on a subsample of {args.sample:,} ({sample_pairs:,} pairs); "
          f"extrapolated to {args.n:,} by pairs (x{scale:,.0f}, quadratic)")
    print(f"  {'':<38} {'medfed':>10} {'naive':>10} {'naive, extrapolated':>22}")
    print(f"  {'near (imagehash h1 - h2 <= k)':<38} {small_near_s:>9.4f}s {naive_near_s:>9.2f}s "
          f"{naive_near_s * scale:>20,.0f} s")
    print(f"  {'exact (digest ==)':<38} {small_exact_s:>9.4f}s {naive_exact_s:>9.2f}s "
          f"{naive_exact_s * scale:>20,.0f} s")
    print(f"  same pairs as naive on the subsample: {'yes' if same else 'NO'} "
          f"({len(naive_near)} near, {len(naive_exact)} exact)")
    naive_hours = (naive_near_s + naive_exact_s) * scale / 3600
    print(f"  at {args.n:,}: medfed {exact_s + near_s:.2f} s vs naive ~{naive_hours:,.1f} h"
          f" (extrapolated)")

    pixels = radiograph(seed=args.seed)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")  # 16-bit greyscale PNG
    encoded = buffer.getvalue()
    ready = Image.fromarray((pixels >> 4).astype(np.uint8))
    reps = max(20, 10 * args.repeat)

    def decode() -> np.ndarray:
        return np.asarray(Image.open(io.BytesIO(encoded)))

    assert np.array_equal(decode(), pixels)
    rows = [
        ("decode 16-bit PNG (PIL, to numpy)", decode),
        ("pixel_digest", lambda: pixel_digest(pixels)),
        ("  ref: hashlib.sha256 of raw bytes", lambda: hashlib.sha256(pixels.tobytes()).hexdigest()),
        ("perceptual_hash (scale to uint8 + pHash)", lambda: perceptual_hash(pixels)),
        ("  ref: imagehash.phash on a ready PIL image", lambda: imagehash.phash(ready)),
    ]
    print(f"\nper image, 512 x 512 uint16 ({len(encoded) / 1024:.0f} KiB as PNG), median of {reps}:")
    for label, work in rows:
        seconds, _ = median_time(work, reps)
        print(f"  {label:<44} {seconds * 1e3:8.2f} ms")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
