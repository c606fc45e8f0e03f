"""Duplicate images within and across sites: exact (decoded pixels) and near (perceptual hash).

Every image is reduced once to an :class:`ImageFingerprint`: a digest of its decoded pixel array
(:func:`pixel_digest`) and a 64-bit perceptual hash (:func:`perceptual_hash`, imagehash's pHash). The
checks then work on fingerprints alone, by hashing and sorting, never by comparing pixels pair by pair:

* :func:`exact_duplicates` groups equal digests (one sort, O(n log n));
* :func:`near_duplicates` finds pairs of perceptual hashes at Hamming distance <= k with the pigeonhole
  trick: split the 64 bits into k + 1 bands; two hashes within distance k agree exactly on at least one
  band, so only hashes sharing a band value (one sort per band) are compared.

:func:`splits_of` names the splits a cluster or pair falls in; the caller decides what is an error (a
duplicate in both ``train`` and ``test``) and what is a warning.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import imagehash
import numpy as np
from PIL import Image

from medfed.errors import MedfedError

DIGEST_CHARS = 32  # hex characters kept of the SHA-256 (128 bits)
HASH_BITS = 64  # perceptual hash size (imagehash.phash, hash_size 8)
_CHUNK = 1 << 20  # elements cast to float64 at a time by pixel_digest (8 MiB)
FINE_HASH_SIZE = 16  # the confirming perceptual hash: imagehash.phash with hash_size 16 (256 bits)
#: integer types pixel_digest stores integral values as, smallest first (the first that holds min and max)
_INTEGER_TYPES = ("<u1", "<i1", "<u2", "<i2", "<u4", "<i4", "<i8")
_BYTE_BITS = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)


@dataclass(frozen=True)
class ImageFingerprint:
    """One image of one case: where it is (site, hashed case id, file, split) and its two hashes."""

    site: str
    case: str
    file: str
    split: str
    digest: str  # pixel_digest of the decoded array
    phash: int  # perceptual_hash, 0 <= phash < 2**64
    fine_phash: int = 0  # perceptual_hash(..., hash_size=16), 0 <= fine_phash < 2**256 (0: not computed)


class TooManyNearDuplicates(MedfedError):
    """:func:`near_duplicates` would report more than ``max_pairs`` pairs (``count`` of them)."""

    def __init__(self, count: int, max_pairs: int) -> None:
        self.count = count
        self.max_pairs = max_pairs
        super().__init__(f"{count:,} near-duplicate pairs found, more than max_pairs={max_pairs:,}; many "
                         "images share one perceptual hash (e.g. blank images or video frames)")


# --------------------------------------------------------------------------------------------- hashing
def pixel_digest(pixels: np.ndarray) -> str:
    """SHA-256 (first 32 hex characters) of a decoded array's shape and values.

    Contract: the digest depends only on the shape and the values, not on dtype, byte order or memory
    layout, so the same image decoded as uint16, int16 or float gives the same digest, while one changed
    pixel or a transposed array gives another. Values that are all finite integers are hashed as the
    smallest integer type of :data:`_INTEGER_TYPES` holding their minimum and maximum (most images: one or
    two bytes a pixel, so hashing costs about what reading does); other arrays as little-endian float64,
    ``-0.0`` counting as ``0.0`` and every NaN alike. The type chosen is part of the hashed header. Integers
    above 2**53 in magnitude lose precision in the float path (no imaging format stores such pixels).
    Complex and non-numeric arrays raise ``TypeError``.
    """
    array = np.asarray(pixels)
    if array.dtype.kind not in "buif":  # bool, unsigned, signed, float
        raise TypeError(f"pixel_digest needs a real numeric array, got dtype {array.dtype}")
    flat = array.ravel(order="C")
    compact = _as_compact_integers(flat)
    sha = hashlib.sha256()
    sha.update(np.asarray([array.ndim, *array.shape], dtype="<i8").tobytes())
    if compact is not None:
        sha.update(f"<{compact.dtype.kind}{compact.dtype.itemsize}".encode())  # e.g. "<u1", "<i2"
        sha.update(np.ascontiguousarray(compact).data)
        return sha.hexdigest()[:DIGEST_CHARS]
    sha.update(b"<f8")
    for start in range(0, flat.size, _CHUNK):
        chunk = flat[start:start + _CHUNK].astype("<f8")
        chunk += 0.0  # -0.0 -> 0.0
        chunk[np.isnan(chunk)] = np.nan  # one NaN bit pattern
        sha.update(chunk.tobytes())
    return sha.hexdigest()[:DIGEST_CHARS]


def _as_compact_integers(flat: np.ndarray) -> np.ndarray | None:
    """``flat`` as the smallest of :data:`_INTEGER_TYPES` holding its minimum and maximum (little-endian), or
    ``None`` when a value is not a finite integer (or the array is empty). No copy when ``flat`` already has
    that type."""
    if flat.size == 0:
        return None
    if flat.dtype == np.uint8:  # the commonest case: every uint8 array is stored as uint8 (no min/max needed)
        return flat
    low, high = flat.min(), flat.max()
    if flat.dtype.kind == "f" and not (np.isfinite(low) and np.isfinite(high) and -(2**53) <= low and high <= 2**53):
        return None  # NaN and +-inf show in the minimum or maximum
    name = next((n for n in _INTEGER_TYPES if np.iinfo(np.dtype(n)).min <= int(low)
                 and int(high) <= np.iinfo(np.dtype(n)).max), None)
    if name is None:
        return None
    compact = flat.astype(name, copy=False)
    if flat.dtype.kind == "f" and not np.array_equal(compact, flat):
        return None  # a fraction somewhere (-0.0 compares equal to 0, as the contract wants)
    return compact


def _as_image(pixels: np.ndarray) -> np.ndarray:
    """(H, W) or (H, W, 3) view of a 2-D, (H, W, 1 | 3) or (1 | 3, H, W) array; channel-first wins when
    both readings fit (e.g. (3, H, 3))."""
    array = np.asarray(pixels)
    if array.size == 0:
        raise ValueError("perceptual_hash needs a non-empty image")
    if array.ndim == 2:
        return array
    if array.ndim == 3 and array.shape[0] in (1, 3):
        array = np.moveaxis(array, 0, -1)
    if array.ndim == 3 and array.shape[-1] in (1, 3):
        return array[..., 0] if array.shape[-1] == 1 else array
    raise ValueError(f"perceptual_hash needs a 2-D image, (H, W, 3) or (C, H, W) with C in (1, 3); got shape "
                     f"{array.shape} (for a volume, pass one 2-D view of it)")


def _to_uint8(image: np.ndarray) -> np.ndarray:
    """Scale to 0..255 by the array's own finite min/max (NaN -> min, +-inf clipped; constant -> zeros)."""
    values = image.astype(np.float64)
    finite = np.isfinite(values)
    if not finite.all():
        if not finite.any():
            return np.zeros(values.shape, np.uint8)
        low, high = values[finite].min(), values[finite].max()
        values[np.isnan(values)] = low
        np.minimum(np.maximum(values, low, out=values), high, out=values)
    low, high = values.min(), values.max()
    if high <= low:
        return np.zeros(values.shape, np.uint8)
    values -= low
    values *= 255.0 / (high - low)
    return np.rint(values, out=values).astype(np.uint8)


def perceptual_hash(pixels: np.ndarray, hash_size: int = 8) -> int:
    """pHash (``imagehash.phash``) of a decoded image as an int of ``hash_size ** 2`` bits (64 by default).

    Accepts (H, W) greyscale, (H, W, 3) RGB and channel-first (C, H, W) with C in (1, 3) (channel-first wins
    when both readings fit); any other shape raises ``ValueError``. The array is first scaled to uint8 by its
    own min/max, so the hash ignores dtype and linear intensity rescaling; a constant image hashes to 0.
    Bit order is imagehash's: ``perceptual_hash(x) == int(str(imagehash.phash(...)), 16)``, and the Hamming
    distance of two ints equals imagehash's ``h1 - h2``.
    """
    return perceptual_hashes(pixels, (hash_size,))[0]


def perceptual_hashes(pixels: np.ndarray, sizes: Sequence[int] = (8, FINE_HASH_SIZE)) -> tuple[int, ...]:
    """:func:`perceptual_hash` for each of ``sizes``, scaling the image to uint8 once."""
    image = Image.fromarray(np.ascontiguousarray(_to_uint8(_as_image(pixels))))
    return tuple(int.from_bytes(np.packbits(imagehash.phash(image, hash_size=size).hash.ravel()).tobytes(), "big")
                 for size in sizes)


def _dct_matrix(n: int) -> np.ndarray:
    """Unnormalised DCT-II matrix: ``C[k, i] = 2 cos(pi k (2 i + 1) / (2 n))`` (scipy's ``dct(type=2)``)."""
    k, i = np.arange(n)[:, None], np.arange(n)[None, :]
    return 2.0 * np.cos(np.pi * k * (2 * i + 1) / (2 * n))


_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R 601-2, as PIL's convert("L")


def _area_matrix(n: int, size: int) -> np.ndarray:
    """``(size, n)`` weights of area resampling: output cell ``j`` averages input ``[j n / size, (j + 1) n / size)``,
    each input pixel weighted by its overlap (exact for down- and upsampling)."""
    edges = np.arange(size + 1) * (n / size)
    start, stop = edges[:-1, None], edges[1:, None]
    pixel = np.arange(n)[None, :]
    overlap = np.clip(np.minimum(stop, pixel + 1) - np.maximum(start, pixel), 0, None)
    return overlap / (n / size)


@functools.lru_cache(maxsize=64)
def _low_frequency_rows(n: int) -> np.ndarray:
    """``(24, n)``: rows 0-15 map a length-``n`` axis to the 16 lowest DCT-II frequencies of its area resize to 64
    (the 256-bit hash), rows 16-23 to the 8 lowest of its resize to 64 then 32 (the 64-bit hash). Resizing and
    the DCT are linear, so ``rows_H @ image @ rows_W.T`` equals DCT(resize(image)) in one pass over the image."""
    to_64 = _area_matrix(n, 64)
    fine = _dct_matrix(64)[:16] @ to_64
    coarse = _dct_matrix(32)[:8] @ _area_matrix(64, 32) @ to_64
    return np.vstack([fine, coarse]).astype(np.float32)


def _median_bits(low_freq: np.ndarray) -> int:
    """pHash bits: each coefficient above the median of all of them, packed big-endian into an int."""
    flat = low_freq.ravel()
    half = flat.size // 2
    middle = flat.copy()
    middle.partition((half - 1, half))
    return int.from_bytes(np.packbits(flat > (middle[half - 1] + middle[half]) / 2).tobytes(), "big")


def fast_perceptual_hashes(pixels: np.ndarray) -> tuple[int, int]:
    """The 64-bit and 256-bit pHash of :func:`perceptual_hashes`, computed in numpy at a fraction of the cost.

    Same recipe as imagehash's pHash (Zauner 2010): greyscale, resize to ``4 h`` x ``4 h``, 2-D DCT-II, keep the
    ``h`` x ``h`` lowest frequencies, bit = coefficient above their median; here with area resampling instead
    of Lanczos (64 x 64, then 32 x 32 from it), folded with the DCT into one matrix per axis, and without the
    uint8 rounding (the hash is invariant to positive linear rescaling anyway). The bits therefore differ
    slightly from imagehash's (a few of 64 on typical radiographs; tested), so the two kinds of hash must not be
    mixed. NaN counts as the image minimum, infinities are clipped.
    """
    source = _as_image(pixels)
    image = np.asarray(source, dtype=np.float32)
    if image.ndim == 3:
        image = (image.reshape(-1, 3) @ _LUMA).reshape(image.shape[:2])  # one matrix-vector product
    if source.dtype.kind in "fc":  # integer and boolean pixels are finite
        finite = np.isfinite(image)
        if not finite.all():
            if not finite.any():
                return 0, 0
            low, high = image[finite].min(), image[finite].max()
            image = np.clip(np.where(np.isnan(image), low, image), low, high)
    if image.min() == image.max():
        return 0, 0  # a constant image, as perceptual_hash gives
    rows, columns = _low_frequency_rows(image.shape[0]), _low_frequency_rows(image.shape[1])
    left = rows @ image  # (24, W)
    return _median_bits(left[16:] @ columns[16:].T), _median_bits(left[:16] @ columns[:16].T)


def hamming(a: int, b: int) -> int:
    """Number of differing bits of two hashes."""
    return (a ^ b).bit_count()


# -------------------------------------------------------------------------------------------- grouping
def _key(p: ImageFingerprint) -> tuple[str, str, str, str, str, int]:
    """Total order on fingerprints (site, case, file, split, then the hashes): output order never depends on
    input order."""
    return (p.site, p.case, p.file, p.split, p.digest, p.phash)


def _codes(values: Sequence[str]) -> np.ndarray:
    """Dense integer code of each value (equal values, equal codes)."""
    return np.unique(np.asarray(values, dtype=str), return_inverse=True)[1].ravel()


def _runs(sorted_keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(start, end) of each run of equal values in a sorted array."""
    n = len(sorted_keys)
    starts = np.concatenate(([0], np.flatnonzero(sorted_keys[1:] != sorted_keys[:-1]) + 1)) if n else np.zeros(0, int)
    ends = np.append(starts[1:], n)
    return starts, ends


def _pairs_within_runs(sorted_keys: np.ndarray) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Every pair of positions (i, i + d) that lie in one run of equal values, one offset d at a time.

    Work and memory are proportional to the pairs yielded (each step holds at most n of them), plus one
    numpy call per offset up to the longest run.
    """
    starts, ends = _runs(sorted_keys)
    end_of = np.repeat(ends, ends - starts)
    active = np.arange(len(sorted_keys))
    offset = 1
    while True:
        active = active[active + offset < end_of[active]]
        if not active.size:
            return
        yield active, active + offset
        offset += 1


def exact_duplicates(prints: Sequence[ImageFingerprint]) -> list[list[ImageFingerprint]]:
    """Clusters of two or more fingerprints with equal ``digest``, within or across sites.

    Found by one sort of the digests (O(n log n)). Each cluster is sorted by (site, case, file, split) and the
    clusters by their first member, so the result does not depend on input order.
    """
    prints = list(prints)
    if len(prints) < 2:
        return []
    codes = _codes([p.digest for p in prints])
    order = np.argsort(codes, kind="stable")
    starts, ends = _runs(codes[order])
    clusters = [sorted((prints[i] for i in order[s:e]), key=_key) for s, e in zip(starts, ends) if e - s > 1]
    return sorted(clusters, key=lambda c: _key(c[0]))


def popcount_table(values: np.ndarray) -> np.ndarray:
    """Set bits of each uint64, by a 256-entry byte table (the fallback for numpy < 2)."""
    values = np.ascontiguousarray(values, dtype=np.uint64)
    return _BYTE_BITS[values.view(np.uint8).reshape(-1, 8)].sum(axis=1, dtype=np.int64).reshape(values.shape)


_popcount = getattr(np, "bitwise_count", popcount_table)


def _band_edges(max_distance: int) -> list[tuple[int, int]]:
    """(shift, width) of max_distance + 1 bands covering the 64 bits, widths differing by at most one."""
    count = max_distance + 1
    widths = [HASH_BITS // count + (1 if i < HASH_BITS % count else 0) for i in range(count)]
    shifts = np.cumsum([0, *widths[:-1]])
    return [(int(s), w) for s, w in zip(shifts, widths)]


def _near_hash_pairs(hashes: np.ndarray, max_distance: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(i, j, distance) for distinct hashes ``hashes`` (uint64) with 0 < distance <= max_distance, each pair once.

    A pair is kept only in the first band where its two hashes agree, so no set of seen pairs is needed.
    """
    edges = _band_edges(max_distance)
    bands = np.stack([(hashes >> np.uint64(s)) & np.uint64((1 << w) - 1) for s, w in edges])
    found: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    for b in range(len(edges)):
        order = np.argsort(bands[b], kind="stable")
        for left, right in _pairs_within_runs(bands[b][order]):
            i, j = order[left], order[right]
            distance = _popcount(hashes[i] ^ hashes[j]).astype(np.int64)
            keep = distance <= max_distance
            if b and keep.any():
                keep &= ~(bands[:b, i] == bands[:b, j]).any(axis=0)  # already found in an earlier band
            if keep.any():
                found.append((i[keep], j[keep], distance[keep]))
    if not found:
        empty = np.zeros(0, np.int64)
        return empty, empty, empty
    return tuple(np.concatenate(parts) for parts in zip(*found))  # type: ignore[return-value]


def near_duplicates(
    prints: Sequence[ImageFingerprint], max_distance: int = 4, *, max_pairs: int | None = None,
) -> list[tuple[ImageFingerprint, ImageFingerprint, int]]:
    """Pairs (a, b, distance) whose perceptual hashes lie within ``max_distance`` bits and whose digests differ.

    Pairs with equal digests are left to :func:`exact_duplicates`. Each pair appears once, ``a`` before ``b`` in
    (site, case, file, split) order, the list sorted the same way, whatever the input order.

    Method (never all pairs): fingerprints with equal hashes are first collapsed to one hash each, so many
    blank images (one shared hash) cost only the pairs they produce. The distinct hashes are cut into
    ``max_distance + 1`` bands and sorted by each band; only hashes sharing a band value are compared
    (vectorised XOR + popcount). Cost: O(B n log n + C + P) time for B bands, n fingerprints, C candidate
    pairs (distinct hashes sharing a band value: about B u^2 / 2^(64/B + 1) for u random hashes, ~3 million for
    100,000 hashes at k = 4) and P pairs reported. Worst case: C is quadratic when most distinct hashes share
    one band value, and P is quadratic when most images share one hash with different pixels (blank images,
    video frames); ``max_pairs`` bounds the latter: above it, :class:`TooManyNearDuplicates` is raised with
    the count, before any pair is built (nothing is silently dropped). ``max_distance`` must lie in [0, 63]
    (at large k the bands shrink and the search tends to all pairs).
    """
    if not 0 <= max_distance < HASH_BITS:
        raise ValueError(f"max_distance must lie in [0, {HASH_BITS - 1}], got {max_distance}")
    prints = list(prints)
    if len(prints) < 2:
        return []
    raw = [p.phash for p in prints]
    if min(raw) < 0 or max(raw) >= 1 << HASH_BITS:
        raise ValueError("perceptual hashes must lie in [0, 2**64)")
    hashes = np.fromiter(raw, dtype=np.uint64, count=len(raw))
    digests = _codes([p.digest for p in prints])
    unique, group = np.unique(hashes, return_inverse=True)
    group = group.ravel()
    order = np.argsort(group, kind="stable")  # fingerprints grouped by hash
    sizes = np.bincount(group, minlength=len(unique))
    first = np.cumsum(sizes) - sizes
    u, v, distance = _near_hash_pairs(unique, max_distance)
    cross = sizes[u] * sizes[v]
    if max_pairs is not None:  # pairs to report, counted without building them (exact unless one digest comes
        # with two hashes, which pixel_digest and perceptual_hash never give)
        same_hash_digest = np.unique(np.stack([group, digests]), axis=1, return_counts=True)[1]
        count = int((sizes * (sizes - 1) // 2).sum() - (same_hash_digest * (same_hash_digest - 1) // 2).sum()
                    + cross.sum())
        if count > max_pairs:
            raise TooManyNearDuplicates(count, max_pairs)
    parts = []
    for left, right in _pairs_within_runs(group[order]):  # equal hashes: distance 0
        parts.append((order[left], order[right], np.zeros(len(left), np.int64)))
    if len(u):  # every member of one hash with every member of the other
        pair = np.repeat(np.arange(len(u)), cross)
        within = np.arange(int(cross.sum())) - np.repeat(np.cumsum(cross) - cross, cross)
        parts.append((order[first[u][pair] + within // sizes[v][pair]],
                      order[first[v][pair] + within % sizes[v][pair]], distance[pair]))
    if not parts:
        return []
    a_idx, b_idx, dist = (np.concatenate(x) for x in zip(*parts))
    keep = digests[a_idx] != digests[b_idx]
    a_idx, b_idx, dist = a_idx[keep], b_idx[keep], dist[keep]
    involved = sorted(set(a_idx.tolist()) | set(b_idx.tolist()), key=lambda i: _key(prints[i]))
    rank = np.empty(len(prints), np.int64)
    rank[involved] = np.arange(len(involved))  # position in (site, case, file, split) order
    low, high = np.minimum(rank[a_idx], rank[b_idx]), np.maximum(rank[a_idx], rank[b_idx])
    sequence = np.lexsort((high, low))
    by_rank = np.asarray(involved, dtype=np.int64)
    return [(prints[i], prints[j], d) for i, j, d in
            zip(by_rank[low[sequence]].tolist(), by_rank[high[sequence]].tolist(), dist[sequence].tolist())]


def splits_of(cluster: Iterable[ImageFingerprint]) -> set[str]:
    """The splits a cluster or pair of fingerprints falls in (pass ``pair[:2]`` for a near-duplicate pair).

    The caller decides: ``{"train", "test"} <= splits_of(c)`` is a leak (an error); other mixes are warnings.
    """
    return {p.split for p in cluster}
