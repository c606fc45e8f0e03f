"""Exact and near-duplicate images: pixel digests, perceptual hashes, grouping by sorting and banding."""

from __future__ import annotations

import imagehash
import numpy as np
import pytest
from PIL import Image

from medfed.sites.duplicates import (
    ImageFingerprint,
    TooManyNearDuplicates,
    exact_duplicates,
    near_duplicates,
    perceptual_hash,
    pixel_digest,
    popcount_table,
    splits_of,
)


def phantom(seed: int, size: int = 128) -> np.ndarray:
    """A smooth synthetic image: six Gaussian blobs of random sign, place and width."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    image = np.zeros((size, size))
    for _ in range(6):
        cy, cx = rng.uniform(0.1, 0.9, 2)
        width, amplitude = rng.uniform(0.05, 0.25), rng.uniform(-1, 1)
        image += amplitude * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * width**2))
    return image


def fp(phash: int, digest: str, site: str = "s0", case: str = "c", split: str = "train") -> ImageFingerprint:
    return ImageFingerprint(site=site, case=case, file=f"{case}.png", split=split, digest=digest, phash=phash)


def brute_force(prints: list[ImageFingerprint], k: int) -> set[tuple[ImageFingerprint, ImageFingerprint, int]]:
    """All pairs compared one by one (the reference)."""
    found = set()
    for i, a in enumerate(prints):
        for b in prints[i + 1:]:
            d = (a.phash ^ b.phash).bit_count()
            if d <= k and a.digest != b.digest:
                found.add((a, b, d) if (a.site, a.case) <= (b.site, b.case) else (b, a, d))
    return found


# ------------------------------------------------------------------------------------------ pixel_digest
def test_digest_ignores_dtype_and_layout() -> None:
    pixels = np.random.default_rng(0).integers(0, 4000, (40, 50)).astype(np.uint16)
    digests = {pixel_digest(pixels.astype(t)) for t in (np.uint16, np.int16, np.int32, np.float32, np.float64)}
    digests.add(pixel_digest(np.asfortranarray(pixels)))
    digests.add(pixel_digest(pixels.astype(">u2")))
    assert len(digests) == 1
    assert len(digests.pop()) == 32


def test_digest_sees_one_pixel_and_the_shape() -> None:
    pixels = np.random.default_rng(1).integers(0, 4000, (40, 50)).astype(np.uint16)
    changed = pixels.copy()
    changed[17, 3] += 1
    assert pixel_digest(changed) != pixel_digest(pixels)
    assert pixel_digest(pixels.reshape(50, 40)) != pixel_digest(pixels)
    assert pixel_digest(pixels.reshape(1, 40, 50)) != pixel_digest(pixels)


def test_digest_nan_and_signed_zero_are_canonical() -> None:
    a = np.array([[1.0, np.nan], [-0.0, 2.0]])
    b = a.astype(np.float32)
    b.view(np.uint32)[0, 1] = 0x7FC00001  # another NaN bit pattern
    b[1, 0] = 0.0
    assert np.isnan(b[0, 1])
    assert pixel_digest(a) == pixel_digest(b)
    assert pixel_digest(a) != pixel_digest(np.array([[1.0, 0.0], [0.0, 2.0]]))


def test_digest_rejects_complex() -> None:
    with pytest.raises(TypeError):
        pixel_digest(np.zeros((2, 2), complex))


def test_digest_chunked_equals_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    import medfed.sites.duplicates as module

    pixels = np.random.default_rng(2).normal(size=(33, 31))
    whole = pixel_digest(pixels)
    monkeypatch.setattr(module, "_CHUNK", 100)
    assert pixel_digest(pixels) == whole


# --------------------------------------------------------------------------------------- perceptual_hash
@pytest.mark.parametrize("seed", range(5))
def test_phash_survives_noise_and_rescaling(seed: int) -> None:
    image = phantom(seed)
    rng = np.random.default_rng(100 + seed)
    noisy = 3 * image + 5 + rng.normal(0, 0.01 * np.ptp(image), image.shape)
    smaller = np.asarray(Image.fromarray(image.astype(np.float32)).resize((96, 96), Image.BILINEAR))
    stored = np.rint((image - image.min()) / np.ptp(image) * 4095).astype(np.uint16)  # as a 12-bit file
    h = perceptual_hash(image)
    for copy in (noisy, smaller, stored):
        assert (h ^ perceptual_hash(copy)).bit_count() <= 4
    assert (h ^ perceptual_hash(phantom(seed + 50))).bit_count() > 16


def test_phash_matches_imagehash_bits() -> None:
    image = phantom(7)
    scaled = np.rint((image - image.min()) / np.ptp(image) * 255).astype(np.uint8)
    expected = imagehash.phash(Image.fromarray(scaled), hash_size=8)
    h = perceptual_hash(image)
    assert h == int(str(expected), 16)
    other = imagehash.phash(Image.fromarray(np.rot90(scaled).copy()), hash_size=8)
    assert (h ^ perceptual_hash(np.rot90(image))).bit_count() == expected - other


def test_phash_shapes() -> None:
    grey = phantom(3)
    h = perceptual_hash(grey)
    assert 0 <= h < 2**64
    assert perceptual_hash(grey[None]) == h
    assert perceptual_hash(grey[..., None]) == h
    rgb = np.stack([grey, grey, grey], axis=-1)
    assert (perceptual_hash(rgb) ^ h).bit_count() <= 2  # PIL's luma of equal channels
    assert perceptual_hash(np.moveaxis(rgb, -1, 0)) == perceptual_hash(rgb)
    colour = np.stack([phantom(4), grey, phantom(5)], axis=-1)
    assert perceptual_hash(np.moveaxis(colour, -1, 0)) == perceptual_hash(colour)
    for bad in (np.zeros((4, 8, 8)), np.zeros((2, 3, 8, 8)), np.zeros(8), np.zeros((0, 5))):
        with pytest.raises(ValueError):
            perceptual_hash(bad)


@pytest.mark.parametrize("shape", [(16, 16), (1, 16, 16), (3, 16, 16), (16, 16, 3), (1, 1)])
def test_phash_constant_and_nonfinite_images(shape: tuple[int, ...]) -> None:
    assert perceptual_hash(np.full(shape, 7.0)) == 0
    assert perceptual_hash(np.full(shape, np.nan)) == 0
    spiky = phantom(1)
    spiky[5, 5], spiky[6, 6] = np.nan, np.inf
    assert 0 <= perceptual_hash(spiky) < 2**64


# -------------------------------------------------------------------------------------- exact_duplicates
def test_exact_duplicates_across_sites_any_order() -> None:
    prints = [
        fp(1, "aa", "s1", "c1", "train"), fp(1, "aa", "s0", "c9", "test"), fp(2, "bb", "s0", "c2"),
        fp(3, "cc", "s2", "c3", "val"), fp(3, "cc", "s2", "c4", "train"), fp(3, "cc", "s0", "c5", "train"),
    ]
    clusters = exact_duplicates(prints)
    assert [[(p.site, p.case) for p in c] for c in clusters] == [
        [("s0", "c5"), ("s2", "c3"), ("s2", "c4")], [("s0", "c9"), ("s1", "c1")]]
    assert [splits_of(c) for c in clusters] == [{"train", "val"}, {"train", "test"}]
    for seed in range(5):
        shuffled = list(np.random.default_rng(seed).permutation(np.array(prints, dtype=object)))
        assert exact_duplicates(shuffled) == clusters
    assert exact_duplicates(prints[2:3]) == [] and exact_duplicates([]) == []


def test_same_pixels_in_two_files_share_a_digest() -> None:
    pixels = np.random.default_rng(5).integers(0, 4096, (64, 64)).astype(np.uint16)
    stored_twice = [pixels, pixels.astype(np.int32)]  # e.g. uncompressed and lossless JPEG 2000, decoded
    prints = [ImageFingerprint("s0", f"c{i}", f"f{i}.dcm", "train", pixel_digest(p), perceptual_hash(p))
              for i, p in enumerate(stored_twice)]
    assert len(exact_duplicates(prints)) == 1
    assert near_duplicates(prints) == []  # left to exact_duplicates


# --------------------------------------------------------------------------------------- near_duplicates
def planted(n: int, seed: int, free_bits: int = 64) -> list[ImageFingerprint]:
    """n random hashes (only ``free_bits`` of them random), plus planted near pairs and exact copies."""
    rng = np.random.default_rng(seed)
    mask = (1 << free_bits) - 1
    hashes = [int(h) & mask for h in rng.integers(0, 2**64, n, dtype=np.uint64)]
    prints = [fp(h, f"d{i}", f"s{i % 3}", f"c{i:05d}", ("train", "val", "test")[i % 3]) for i, h in enumerate(hashes)]
    for i in range(0, n // 10):  # near copies: 0-6 bits flipped, new pixels
        base = prints[int(rng.integers(n))]
        h = base.phash
        for bit in rng.choice(64, int(rng.integers(0, 7)), replace=False):
            h ^= 1 << int(bit)
        prints.append(fp(h, f"near{i}", "s9", f"n{i:05d}", "test"))
    for i in range(n // 50):  # exact copies: same hash and digest
        base = prints[int(rng.integers(len(prints)))]
        prints.append(fp(base.phash, base.digest, "s8", f"e{i:05d}", "train"))
    return prints


@pytest.mark.parametrize(("k", "free_bits"), [(4, 64), (0, 64), (1, 64), (8, 64), (4, 20), (3, 16)])
def test_near_duplicates_equal_brute_force(k: int, free_bits: int) -> None:
    prints = planted(2000, seed=k + free_bits, free_bits=free_bits)
    found = near_duplicates(prints, max_distance=k)
    assert len(found) == len(set(found))
    assert set(found) == brute_force(prints, k)
    assert all(a.digest != b.digest and d <= k for a, b, d in found)
    assert any(d > 0 for _, _, d in found) or k == 0
    shuffled = list(np.random.default_rng(1).permutation(np.array(prints, dtype=object)))
    assert near_duplicates(shuffled, max_distance=k) == found


def test_near_duplicates_blank_images_and_cap() -> None:
    blanks = [fp(0, f"blank{i}", "s0", f"c{i:03d}") for i in range(300)]
    blanks += [fp(0, "blank0", "s1", "copy")]  # an exact copy of blank0
    found = near_duplicates(blanks)
    assert len(found) == 300 * 299 // 2 + 299  # every different-pixel pair; the copy pairs with 299 others
    assert set(found) == brute_force(blanks, 4)
    with pytest.raises(TooManyNearDuplicates) as raised:
        near_duplicates(blanks, max_pairs=1000)
    assert raised.value.count == len(found)
    assert near_duplicates(blanks, max_pairs=len(found)) == found


def test_near_duplicates_arguments() -> None:
    assert near_duplicates([fp(1, "a")]) == []
    with pytest.raises(ValueError):
        near_duplicates([fp(1, "a"), fp(2, "b")], max_distance=64)
    with pytest.raises(ValueError):
        near_duplicates([fp(1, "a"), fp(2**64, "b")])


def test_popcount_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    import medfed.sites.duplicates as module

    values = np.random.default_rng(0).integers(0, 2**64, 1000, dtype=np.uint64)
    values[:3] = [0, 2**64 - 1, 1 << 63]
    assert popcount_table(values).tolist() == [int(v).bit_count() for v in values.tolist()]
    prints = planted(500, seed=3)
    monkeypatch.setattr(module, "_popcount", popcount_table)  # as on numpy < 2
    assert set(near_duplicates(prints)) == brute_force(prints, 4)


def test_integral_values_hash_compactly_whatever_the_dtype():
    values = np.arange(-3, 300, dtype=np.int64).reshape(3, 101)
    digests = {pixel_digest(values.astype(t)) for t in (np.int16, np.int32, np.int64, np.float32, np.float64)}
    assert len(digests) == 1
    fractional = values.astype(np.float64) + 0.5
    assert pixel_digest(fractional) != pixel_digest(values) == pixel_digest(np.floor(fractional))
    assert pixel_digest(np.array([[1.0, np.nan]])) == pixel_digest(np.array([[1, np.nan]], dtype=np.float32))


def test_perceptual_hashes_gives_the_coarse_and_the_fine_hash():
    from medfed.sites.duplicates import perceptual_hashes

    image = np.random.default_rng(3).integers(0, 4096, (48, 40)).astype(np.uint16)
    coarse, fine = perceptual_hashes(image)
    assert coarse == perceptual_hash(image) and fine == perceptual_hash(image, hash_size=16)
    assert fine.bit_length() <= 256 and coarse.bit_length() <= 64


def test_fast_hashes_follow_imagehash_and_tolerate_re_encoding():
    from medfed.sites.duplicates import fast_perceptual_hashes, hamming, perceptual_hashes

    rng = np.random.default_rng(11)
    y, x = np.mgrid[0:96, 0:80]
    image = (1000 + 800 * np.sin(x / 9.0) * np.cos(y / 13.0) + 300 * (x > 40) + rng.normal(0, 20, x.shape))
    fast, reference = fast_perceptual_hashes(image), perceptual_hashes(image)
    assert hamming(fast[0], reference[0]) <= 6 and hamming(fast[1], reference[1]) <= 24  # same recipe, area resampling
    noisy = image + rng.normal(0, 15, image.shape)
    rescaled = 0.5 * image + 100  # another window / bit depth
    rgb = np.repeat(image[:, :, None], 3, axis=2)
    for copy in (noisy, rescaled, rgb, image.astype(np.float32)):
        hashes = fast_perceptual_hashes(copy)
        assert hamming(hashes[0], fast[0]) <= 4 and hamming(hashes[1], fast[1]) <= 16
    other = fast_perceptual_hashes(rng.normal(0, 1, image.shape))
    assert hamming(other[1], fast[1]) > 64
    assert fast_perceptual_hashes(np.full((10, 10), 7.0)) == (0, 0) == perceptual_hashes(np.full((10, 10), 7.0))
    assert fast_perceptual_hashes(np.full((10, 10), np.nan)) == (0, 0)
