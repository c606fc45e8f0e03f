"""Endoscopy-specific image corruptions: the 16 corruptions x 5 severities of the FedAgain robustness benchmark.

The suite follows Reyes-Amezcua et al., "Robust Federated Anomaly Detection Using Dual-Signal Autoencoders:
Application to Kidney Stone Identification in Ureteroscopy" (arXiv:2510.06230, 2025) and "FedAgain"
(arXiv:2603.19512, 2026), whose code (package ``endoscopycorruptions``) extends the ImageNet-C corruptions
of Hendrycks & Dietterich with endoscopy-specific ones. This is an independent, vectorised numpy/scipy
implementation of the published facts, not a copy of that code: pixel values differ from the reference
(other random streams, other interpolation); the kinds and per-severity parameters follow it (deviations ``*``).

A neutral module below the data and training layers (``docs/design.md``): the site adapters' simulated
conditions, the anomaly task's corrupted test targets and the sweeps over corruptions all use it.

Images are float arrays ``(C, H, W)`` in [0, 1] with C = 1 or 3 (channel-first, as the site adapters load
them); every corruption returns the same shape as float32, clipped to [0, 1]. Parameters per severity 1 -> 5
(lengths in pixels at the papers' 256-pixel input, see the scaling rule below):

=====================  ==============================================================  ======================
corruption             parameters, severity 1 .. 5                                     C = 1
=====================  ==============================================================  ======================
brightness             HSV value + c, c = .1 .2 .3 .4 .5                               adds c
darkness               HSV value - c, c = .1 .2 .3 .4 .5                               subtracts c
contrast               (x - channel mean) * c + mean, c = .4 .3 .2 .1 .05              same
fog                    + c0 * plasma fractal (wibble decay c1), * max / (max + c0);    same
                       (c0, c1) = (1.5, 2) (2, 2) (2.5, 1.7) (3*, 1.5) (3.5*, 1.4)
defocus_blur           anti-aliased disk kernel (radius, alias sigma) =                same
                       (3, .1) (4, .5) (6, .5) (8, .5) (10, .5)
glass_blur             blur sigma, local pixel shuffle within max_delta, `iterations`  same
                       passes, blur again; (sigma, delta, iterations) =
                       (.7, 1, 2) (.9, 2, 2*) (1, 2, 3) (1.1, 3, 3*) (1.5, 4, 3*)
motion_blur            one-sided Gaussian-weighted line kernel, angle U[-45, 45] deg;  same
                       (radius, sigma) = (10, 3) (15, 5) (15, 8) (15, 12) (20, 15)
zoom_blur              mean of the image and centre zooms 1 .. z_max step dz; (z_max,  same
                       dz) = (1.10, .01) (1.15, .01) (1.20, .02) (1.25, .02) (1.30, .03)
gaussian_noise         x + N(0, c), c = .08 .12 .18 .26 .38                            same
impulse_noise          salt & pepper, amount c = .03 .06 .09 .17 .27                   same
shot_noise             Poisson(x * c) / c, c = 60 25 12 5 3                            same
iso_noise              x + N(0, var v), then salt & pepper amount v; v = .01 .. .05    same
lens_distortion        barrel: source at r (1 + k r^2), r normalised to the half-size; same
                       k = .01 .02 .03 .04 .05; source mirrored at the borders
resolution_change      anti-aliased downscale by f = .5 .4 .3 .2 .1, bilinear upscale  same
specular_reflection    N(loc, scale) layer, centre zoom, kept above threshold, added   same
                       with its 180-degree rotation at half strength (white);
                       (loc, scale, zoom, threshold) = (.05, .3, 1.5, .5)
                       (.05, .35, 1.5, .5) (.05, .4, 1.2, .5) (.05, .45, 1.2, .5)
                       (.05, .5, 1, .5)
color_changes          per-channel shift * (u - .5), u ~ U(0, 1) per channel,          one intensity shift
                       shift = .1 .2 .3 .4 .5
=====================  ==============================================================  ======================

``*`` deviations from the reference, so that every corruption grows with severity: glass_blur's reference
iterations are 2, 1, 3, 2, 2; here they are their running maximum 2, 2, 3, 3, 3 (at 64-128 px the scaled
deltas are 1, 1, 1, 2, 2, and fewer passes at a higher severity would shuffle less). fog's reference
thickness c0 is 1.5, 2, 2.5, 2.5, 3: severities 3 and 4 differ only in roughness, which does not make the
fog consistently stronger (on a textured image, the clean-vs-fogged correlation rose from 3 to 4 for about a
third of the seeds); c0 is made strictly increasing (3 and 3.5 at severities 4 and 5). Brightness and darkness
change only HSV's value: with hue and saturation kept, the round trip RGB -> HSV -> RGB is exactly
``rgb * V' / V`` (``V = max(R, G, B)``, grey ``V'`` where ``V = 0``), which is what is computed.

Resolution scaling: the spatial lengths above (kernel radii and sigmas, shuffle deltas) are defined at 256
pixels and are multiplied by ``s = max(min(H, W), 128) / 256``, i.e. images below 128 pixels are treated as
128-pixel images so that 32-128 px inputs are still visibly changed; integer lengths are rounded, at least 1.
Relative parameters (zoom factors, downscale factors, lens k, fog map, noise levels) need no scaling; the
specular layer's zoom is in pixels, as in the reference.

Determinism: a corruption's output depends only on the image, the severity and the state of the
``numpy.random.Generator`` it is given, from which it draws in a fixed order (the same at every severity), so
the same seed gives the same pixels. :class:`Corrupt` seeds each case
from ``(seed, name, severity, case_id)`` (:func:`medfed.seeding.rng_for`), so a case is corrupted the same way
on every epoch, in every worker and in every run, and whether it is corrupted at all is a hash of
``(seed, name, case_id)`` (:func:`medfed.seeding.derive_seed`), independent of the order of the data set.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np
import torch
from monai.transforms import Transform
from scipy.ndimage import gaussian_filter, map_coordinates
from scipy.signal import fftconvolve

from medfed.seeding import derive_seed, rng_for

CorruptionFn = Callable[[np.ndarray, int, np.random.Generator], np.ndarray]
ImageT = TypeVar("ImageT", np.ndarray, torch.Tensor)

SEVERITIES: tuple[int, ...] = (1, 2, 3, 4, 5)
#: side (pixels) at which the papers' spatial parameters are defined, and the smallest side they are scaled to
REFERENCE_SIDE = 256
MIN_SCALED_SIDE = 128


# ---------------------------------------------------------------------------- helpers
def _float(x: np.ndarray) -> np.ndarray:
    return np.asarray(x, dtype=np.float64)


def _finish(x: np.ndarray) -> np.ndarray:
    return np.clip(x, 0.0, 1.0).astype(np.float32)


def _scale(x: np.ndarray) -> float:
    """Factor for lengths defined at 256 px: ``max(min(H, W), 128) / 256``."""
    return max(min(x.shape[-2:]), MIN_SCALED_SIDE) / REFERENCE_SIDE


def _pixels(length: float, scale: float) -> int:
    """A length at 256 px, scaled and rounded to whole pixels (at least 1)."""
    return max(1, round(length * scale))


def _convolve(x: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Convolve every channel of ``x`` (C, H, W) with a 2-D kernel of odd sides, reflecting at the borders."""
    ph, pw = kernel.shape[0] // 2, kernel.shape[1] // 2
    padded = np.pad(x, ((0, 0), (ph, ph), (pw, pw)), mode="reflect")
    return fftconvolve(padded, kernel[None], mode="valid", axes=(1, 2))


def _interpolate(x: np.ndarray, coords: np.ndarray, axis: int) -> np.ndarray:
    """Linear interpolation of ``x`` along ``axis`` at fractional indices ``coords`` (clamped to the edges)."""
    n = x.shape[axis]
    coords = np.clip(coords, 0.0, n - 1)
    low = np.floor(coords).astype(np.intp)
    high = np.minimum(low + 1, n - 1)
    shape = [1] * x.ndim
    shape[axis] = -1
    frac = (coords - low).reshape(shape)
    return np.take(x, low, axis=axis) * (1.0 - frac) + np.take(x, high, axis=axis) * frac


def _zoom_centre(x: np.ndarray, factor: float) -> np.ndarray:
    """Magnify ``x`` (..., H, W) by ``factor`` >= 1 about its centre, keeping its size (bilinear)."""
    for axis in (-2, -1):
        n = x.shape[axis]
        centre = (n - 1) / 2
        x = _interpolate(x, centre + (np.arange(n) - centre) / factor, axis % x.ndim)
    return x


def _resize(x: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear resize of ``x`` (C, H, W) with pixel-centre alignment (no anti-aliasing)."""
    for axis, size in ((1, height), (2, width)):
        n = x.shape[axis]
        x = _interpolate(x, (np.arange(size) + 0.5) * n / size - 0.5, axis)
    return x


def _salt_and_pepper(x: np.ndarray, amount: float, rng: np.random.Generator) -> np.ndarray:
    """Replace each value with probability ``amount`` by 1 or 0 (even odds), independently per channel."""
    flipped = rng.random(x.shape) < amount
    salt = rng.random(x.shape) < 0.5
    return np.where(flipped, salt.astype(np.float64), x)


def _shift_value(x: np.ndarray, delta: float) -> np.ndarray:
    """Add ``delta`` to HSV's value (clipped) keeping hue and saturation; for C = 1, add it to the intensity."""
    if x.shape[0] == 1:
        return x + delta
    value = x.max(axis=0, keepdims=True)
    new_value = np.clip(value + delta, 0.0, 1.0)
    ratio = np.divide(new_value, value, out=np.zeros_like(value), where=value > 0)
    return np.where(value > 0, x * ratio, new_value)


def _plasma_fractal(size: int, decay: float, rng: np.random.Generator) -> np.ndarray:
    """Periodic diamond-square plasma fractal, ``size`` x ``size`` (a power of 2), normalised to [0, 1].

    Each level's midpoints are the mean of their four neighbours plus uniform noise of amplitude ``wibble**2``;
    ``wibble`` is divided by ``decay`` after each level (smaller decay: rougher fog).
    """
    grid = np.zeros((size, size))
    step, wibble = size, 100.0
    while step >= 2:
        half = step // 2
        corners = grid[::step, ::step]
        # square step: centres of the squares
        around = corners + np.roll(corners, -1, axis=0)
        around = around + np.roll(around, -1, axis=1)
        grid[half::step, half::step] = around / 4 + wibble * rng.uniform(-wibble, wibble, around.shape)
        # diamond step: edge midpoints, from the edge's two corners and the two centres beside it
        centres = grid[half::step, half::step]
        across = corners + np.roll(corners, -1, axis=1) + centres + np.roll(centres, 1, axis=0)
        grid[::step, half::step] = across / 4 + wibble * rng.uniform(-wibble, wibble, across.shape)
        down = corners + np.roll(corners, -1, axis=0) + centres + np.roll(centres, 1, axis=1)
        grid[half::step, ::step] = down / 4 + wibble * rng.uniform(-wibble, wibble, down.shape)
        step, wibble = half, wibble / decay
    grid -= grid.min()
    return grid / grid.max()


# ---------------------------------------------------------------------------- the 16 corruptions
def brightness(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """Raise HSV value by .1 .. .5 (hue and saturation kept); C = 1: add it to the intensity."""
    return _finish(_shift_value(_float(x), (0.1, 0.2, 0.3, 0.4, 0.5)[severity - 1]))


def darkness(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """Lower HSV value by .1 .. .5 (hue and saturation kept); C = 1: subtract it from the intensity."""
    return _finish(_shift_value(_float(x), -(0.1, 0.2, 0.3, 0.4, 0.5)[severity - 1]))


def contrast(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """Shrink each channel towards its mean: ``(x - mean) * c + mean``, c = .4 .. .05."""
    c = (0.4, 0.3, 0.2, 0.1, 0.05)[severity - 1]
    x = _float(x)
    mean = x.mean(axis=(1, 2), keepdims=True)
    return _finish((x - mean) * c + mean)


def fog(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """Add a plasma-fractal haze (same for every channel) and rescale: ``(x + c0 * p) * max / (max + c0)``.

    ``p`` is cropped from a square plasma map whose side is the next power of 2 of the larger image side.

    Thickness c0 = 1.5, 2, 2.5, 3, 3.5 (reference: 1.5, 2, 2.5, 2.5, 3), roughness decay c1 = 2, 2, 1.7, 1.5, 1.4.
    """
    c0, c1 = ((1.5, 2.0), (2.0, 2.0), (2.5, 1.7), (3.0, 1.5), (3.5, 1.4))[severity - 1]
    x = _float(x)
    height, width = x.shape[1:]
    size = 1 << max(1, math.ceil(math.log2(max(height, width))))
    haze = _plasma_fractal(size, c1, rng)[:height, :width]
    peak = x.max()
    return _finish((x + c0 * haze) * peak / (peak + c0))


def defocus_blur(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """Convolve with an anti-aliased disk (radius 3 .. 10 px at 256 px, edge blur sigma .1 / .5)."""
    radius, alias = ((3, 0.1), (4, 0.5), (6, 0.5), (8, 0.5), (10, 0.5))[severity - 1]
    s = _scale(x)
    radius, alias = radius * s, alias * s
    half = math.ceil(radius + 3 * alias) + 1
    grid = np.arange(-half, half + 1)
    disk = (grid[:, None] ** 2 + grid[None, :] ** 2 <= radius**2).astype(np.float64)
    kernel = gaussian_filter(disk, alias, mode="constant")
    return _finish(_convolve(_float(x), kernel / kernel.sum()))


def glass_blur(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """Gaussian blur, move every pixel by a random offset within ``max_delta`` (``iterations`` passes), blur again.

    Each pass gathers ``x[i + dy, j + dx]`` with ``dy, dx`` uniform integers in [-max_delta, max_delta] (clamped
    at the borders), a vectorised stand-in for the reference's sequential swaps. Iterations are the running
    maximum of the reference's (2, 1, 3, 2, 2), so the corruption grows with severity.
    """
    sigma, delta, iterations = ((0.7, 1, 2), (0.9, 2, 2), (1.0, 2, 3), (1.1, 3, 3), (1.5, 4, 3))[severity - 1]
    s = _scale(x)
    sigma, delta = sigma * s, _pixels(delta, s)
    x = gaussian_filter(_float(x), (0, sigma, sigma), mode="reflect")
    _, height, width = x.shape
    rows, cols = np.arange(height)[:, None], np.arange(width)[None, :]
    for _ in range(iterations):
        dy, dx = rng.integers(-delta, delta + 1, size=(2, height, width))
        x = x[:, np.clip(rows + dy, 0, height - 1), np.clip(cols + dx, 0, width - 1)]
    return _finish(gaussian_filter(x, (0, sigma, sigma), mode="reflect"))


def motion_blur(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """Smear along a random direction in [-45, 45] degrees: a one-sided line of ``2 * radius + 1`` taps with
    Gaussian weights ``exp(-i^2 / 2 sigma^2)`` (radius 10 .. 20, sigma 3 .. 15 at 256 px)."""
    radius, sigma = ((10, 3), (15, 5), (15, 8), (15, 12), (20, 15))[severity - 1]
    s = _scale(x)
    angle = np.deg2rad(rng.uniform(-45.0, 45.0))
    taps = np.arange(2 * _pixels(radius, s) + 1)
    weights = np.exp(-(taps**2) / (2 * (sigma * s) ** 2))
    half = taps[-1]
    kernel = np.zeros((2 * half + 1, 2 * half + 1))
    rows = half + np.rint(taps * np.sin(angle)).astype(int)
    cols = half + np.rint(taps * np.cos(angle)).astype(int)
    np.add.at(kernel, (rows, cols), weights)
    return _finish(_convolve(_float(x), kernel / kernel.sum()))


def zoom_blur(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """Mean of the image and its centre zooms by 1 .. z_max (step dz), like a fast push of the scope."""
    stop, step = ((1.11, 0.01), (1.16, 0.01), (1.21, 0.02), (1.26, 0.02), (1.31, 0.03))[severity - 1]
    x = _float(x)
    total = x.copy()
    zooms = np.arange(1.0, stop, step)
    for zoom in zooms:
        total += _zoom_centre(x, zoom)
    return _finish(total / (len(zooms) + 1))


def gaussian_noise(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """``clip(x + c * rng.standard_normal(x.shape))``, c = .08 .. .38 (computed in float64)."""
    c = (0.08, 0.12, 0.18, 0.26, 0.38)[severity - 1]
    x = _float(x)
    return _finish(x + c * rng.standard_normal(x.shape))


def impulse_noise(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """Salt and pepper: a fraction .03 .. .27 of the values (per channel) set to 0 or 1."""
    return _finish(_salt_and_pepper(_float(x), (0.03, 0.06, 0.09, 0.17, 0.27)[severity - 1], rng))


def shot_noise(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """Photon noise: ``Poisson(x * c) / c``, c = 60 .. 3 photons at full scale."""
    c = (60, 25, 12, 5, 3)[severity - 1]
    return _finish(rng.poisson(_float(x) * c) / c)


def iso_noise(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """High-ISO sensor noise: Gaussian of variance v, then salt and pepper of amount v (v = .01 .. .05)."""
    v = (0.01, 0.02, 0.03, 0.04, 0.05)[severity - 1]
    x = _float(x)
    noisy = np.clip(x + math.sqrt(v) * rng.standard_normal(x.shape), 0.0, 1.0)
    return _finish(_salt_and_pepper(noisy, v, rng))


def lens_distortion(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """Barrel distortion: output at normalised radius r shows the source at ``r (1 + k r^2)``, k = .01 .. .05.

    Coordinates are normalised by the half-height / half-width about the centre; the source is sampled
    bilinearly and mirrored at the borders (the field of view stays filled: a purely geometric change).
    """
    k = (0.01, 0.02, 0.03, 0.04, 0.05)[severity - 1]
    x = _float(x)
    height, width = x.shape[1:]
    cy, cx = (height - 1) / 2, (width - 1) / 2
    v = (np.arange(height)[:, None] - cy) / max(cy, 0.5)
    u = (np.arange(width)[None, :] - cx) / max(cx, 0.5)
    factor = 1 + k * (u**2 + v**2)
    coords = np.stack([cy + v * factor * max(cy, 0.5), cx + u * factor * max(cx, 0.5)])
    out = np.stack([map_coordinates(channel, coords, order=1, mode="reflect") for channel in x])
    return _finish(out)


def resolution_change(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """Downscale by .5 .. .1 (Gaussian anti-aliasing, sigma ``(1 / f - 1) / 2``), upscale back (bilinear)."""
    f = (0.5, 0.4, 0.3, 0.2, 0.1)[severity - 1]
    x = _float(x)
    height, width = x.shape[1:]
    small_h, small_w = max(1, round(height * f)), max(1, round(width * f))
    sigma = (0, max(0.0, (height / small_h - 1) / 2), max(0.0, (width / small_w - 1) / 2))
    small = _resize(gaussian_filter(x, sigma, mode="reflect"), small_h, small_w)
    return _finish(_resize(small, height, width))


def specular_reflection(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """White highlights: a ``N(loc, scale)`` layer, zoomed about the centre, kept where >= threshold, added to
    every channel together with its 180-degree rotation, at half strength. Scale .3 .. .5 grows the area."""
    loc, scale, zoom, threshold = (
        (0.05, 0.3, 1.5, 0.5), (0.05, 0.35, 1.5, 0.5), (0.05, 0.4, 1.2, 0.5), (0.05, 0.45, 1.2, 0.5),
        (0.05, 0.5, 1.0, 0.5),
    )[severity - 1]
    x = _float(x)
    layer = _zoom_centre(rng.normal(loc, scale, size=x.shape[1:]), zoom)
    layer = np.where(layer >= threshold, layer, 0.0)
    return _finish(x + 0.5 * (layer + layer[::-1, ::-1])[None])


def color_changes(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """Shift each channel by ``shift * (u - .5)``, u ~ U(0, 1) per channel, shift = .1 .. .5 (C = 1: one shift)."""
    shift = (0.1, 0.2, 0.3, 0.4, 0.5)[severity - 1]
    x = _float(x)
    return _finish(x + shift * (rng.random(x.shape[0]) - 0.5)[:, None, None])


CORRUPTIONS: dict[str, CorruptionFn] = {
    "brightness": brightness,
    "darkness": darkness,
    "contrast": contrast,
    "fog": fog,
    "defocus_blur": defocus_blur,
    "glass_blur": glass_blur,
    "motion_blur": motion_blur,
    "zoom_blur": zoom_blur,
    "gaussian_noise": gaussian_noise,
    "impulse_noise": impulse_noise,
    "shot_noise": shot_noise,
    "iso_noise": iso_noise,
    "lens_distortion": lens_distortion,
    "resolution_change": resolution_change,
    "specular_reflection": specular_reflection,
    "color_changes": color_changes,
}
CORRUPTION_NAMES: tuple[str, ...] = tuple(CORRUPTIONS)


# ---------------------------------------------------------------------------- public entry points
def check_name(name: str) -> str:
    if not isinstance(name, str) or name not in CORRUPTIONS:
        raise ValueError(f"unknown corruption {name!r}; choose from {', '.join(CORRUPTION_NAMES)}")
    return name


def _check_severity(severity: int) -> int:
    if isinstance(severity, bool) or not isinstance(severity, int | np.integer) or severity not in SEVERITIES:
        raise ValueError(f"severity must be an integer from 1 to 5, got {severity!r}")
    return int(severity)


def corrupt(image: ImageT, name: str, severity: int, rng: np.random.Generator) -> ImageT:
    """Apply corruption ``name`` at ``severity`` (1 .. 5) to ``image`` (C, H, W), C = 1 or 3, values in [0, 1].

    numpy in: float32 out. torch in: a tensor of the same type, dtype and device (MONAI meta kept).
    """
    check_name(name)
    severity = _check_severity(severity)
    is_tensor = isinstance(image, torch.Tensor)
    if is_tensor:
        shape, dtype, floating = tuple(image.shape), image.dtype, image.is_floating_point()
    else:
        image = np.asarray(image)
        shape, dtype, floating = image.shape, image.dtype, np.issubdtype(image.dtype, np.floating)
    if len(shape) != 3 or shape[0] not in (1, 3):
        raise ValueError(f"image must have shape (C, H, W) with C = 1 or 3, got shape {shape}")
    if not floating:
        raise ValueError(f"image must be floating point with values in [0, 1], got dtype {dtype}")
    array = image.detach().cpu().to(torch.float64).numpy() if is_tensor else image
    out = CORRUPTIONS[name](array, severity, rng)
    if not is_tensor:
        return out
    result = image.detach().clone()
    result.copy_(torch.from_numpy(out))
    return result


class Corrupt(Transform):
    """Dict transform: corrupt ``item[key]`` of a deterministic ``fraction`` of the cases, chosen by ``case_id``.

    A case is corrupted when ``derive_seed(seed, "corruption-pick", name, case_id) / 2**63 < fraction``, with
    the generator ``rng_for(seed, "corruption", name, severity, case_id)``: the same case gets the same pixels
    on every call. Sets ``item["corrupted"]`` to 1 or 0; returns a new dict.
    """

    def __init__(self, name: str, severity: int, fraction: float = 1.0, seed: int = 0, key: str = "image") -> None:
        self.name = check_name(name)
        self.severity = _check_severity(severity)
        if isinstance(fraction, bool) or not isinstance(fraction, int | float) or not 0.0 <= fraction <= 1.0:
            raise ValueError(f"fraction must be a number in [0, 1], got {fraction!r}")
        self.fraction = float(fraction)
        self.seed = int(seed)
        self.key = key

    def picks(self, case_id: str) -> bool:
        """Whether case ``case_id`` is corrupted."""
        return derive_seed(self.seed, "corruption-pick", self.name, case_id) / 2.0**63 < self.fraction

    def __call__(self, item: dict[str, Any]) -> dict[str, Any]:
        if "case_id" not in item:
            raise KeyError(f"{self!r} needs item['case_id'] to choose the cases to corrupt")
        if self.key not in item:
            raise KeyError(f"{self!r}: item has no {self.key!r} (keys: {', '.join(map(str, item))})")
        out = dict(item)
        case_id = str(item["case_id"])
        picked = self.picks(case_id)
        if picked:
            rng = rng_for(self.seed, "corruption", self.name, self.severity, case_id)
            out[self.key] = corrupt(item[self.key], self.name, self.severity, rng)
        out["corrupted"] = int(picked)
        return out

    def __repr__(self) -> str:
        return (f"Corrupt(name={self.name!r}, severity={self.severity}, fraction={self.fraction}, seed={self.seed}, "
                f"key={self.key!r})")


__all__ = ["CORRUPTIONS", "CORRUPTION_NAMES", "SEVERITIES", "Corrupt", "CorruptionFn", "corrupt"]
