"""Rendering a synthetic chest radiograph: a patient's anatomy (lungs, heart, ribs, adult or paediatric
proportions), pneumonia or cardiomegaly drawn into it as tissue density, then a site's acquisition (exposure,
noise, blur, bit depth) turning density into the stored signal. Used by :mod:`medfed.synth.chest_xray`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from scipy.ndimage import gaussian_filter

if TYPE_CHECKING:
    from medfed.synth.chest_xray import SiteSpec

#: share of negative images with a faint pneumonia-like opacity (atelectasis, scarring: a mimic), and its strength
MIMIC_RATE, MIMIC_STRENGTH = 0.15, (0.1, 0.35)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))


def _ellipse(
    x: np.ndarray, y: np.ndarray, cx: float, cy: float, rx: float, ry: float, edge: float = 0.04
) -> np.ndarray:
    """Soft ellipse mask: ``sigmoid((1 - r) / edge)``, ``r`` the normalised elliptic radius."""
    r = np.sqrt(((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2)
    return _sigmoid((1.0 - r) / edge)


@dataclass(frozen=True)
class Anatomy:
    """What every radiograph of one patient shares: body habitus, lung shape, heart size, ribs, and
    the lung zones a pneumonia involves (so a follow-up shows its opacity where the first study did)."""

    scale: float  # thorax scale in the field
    habitus: float  # width of trunk and shoulders (1 = average)
    lung_dx: tuple[float, float]  # offsets of the two lung centres
    lung_rx: tuple[float, float]
    lung_ry: tuple[float, float]
    heart: float  # heart width (1 = average for the population)
    ribs: tuple[float, ...]  # level offsets of the ten posterior ribs
    zones: tuple[tuple[int, float], ...]  # pneumonia: (side, height) of each involved lung zone


def draw_anatomy(rng: np.random.Generator, pediatric: bool = False) -> Anatomy:
    """One patient's :class:`Anatomy` (draw it from a per-patient stream)."""
    sides = rng.choice([-1, 1], size=rng.integers(1, 3), replace=False)
    return Anatomy(
        scale=float(rng.uniform(0.74, 0.82) if pediatric else rng.uniform(0.86, 0.96)),
        habitus=float(rng.uniform(0.92, 1.08)),
        lung_dx=tuple(float(v) for v in rng.normal(0, 0.01, 2)),
        lung_rx=tuple(float(v) for v in rng.uniform(0.95, 1.05, 2)),
        lung_ry=tuple(float(v) for v in rng.uniform(0.97, 1.03, 2)),
        heart=float(rng.uniform(0.94, 1.06)),
        ribs=tuple(float(v) for v in rng.normal(0, 0.008, 10)),
        zones=tuple((int(side), float(rng.uniform(0.0, 0.3))) for side in sides),
    )


def render_chest(
    rng: np.random.Generator, shape: tuple[int, int], *, pediatric: bool = False, pneumonia: float = 0.0,
    cardiomegaly: bool = False, anatomy: Anatomy | None = None,
) -> np.ndarray:
    """Tissue density in ``[0, 1]`` (higher = denser = brighter) of a frontal chest radiograph.

    Body and shoulders as soft ellipses, air-filled lungs, mediastinum and spine, heart, domed
    diaphragm, posterior ribs as sinusoid-curved bands, clavicles; ``pneumonia`` (0..1) scales patchy
    opacities (smoothed random blobs, ``gaussian_filter``) in the patient's involved lung zones.
    ``anatomy`` is the patient's (drawn from ``rng`` when ``None``); ``rng`` then draws what differs
    between two radiographs of one patient: positioning (shift, tilt, inspiration) and the opacity texture.
    """
    if anatomy is None:
        anatomy = draw_anatomy(rng, pediatric)
    h, w = shape
    axes = np.linspace(-1, 1, h, dtype=np.float32), np.linspace(-w / h, w / h, w, dtype=np.float32)
    y, x = np.meshgrid(*axes, indexing="ij")  # float32 throughout: half the memory traffic of float64
    s = anatomy.scale * rng.uniform(0.985, 1.015)  # thorax scale in the field; inspiration and distance vary a little
    x = x - rng.normal(0, 0.03)
    y = y - rng.normal(0, 0.03) + (0.05 if pediatric else 0.0)
    tilt = rng.normal(0, 0.03)
    x, y = x * np.cos(tilt) - y * np.sin(tilt), x * np.sin(tilt) + y * np.cos(tilt)

    trunk = _ellipse(x, y, 0, 0.55 * s, 0.9 * s * anatomy.habitus, 1.35 * s, 0.03)
    shoulders = _ellipse(x, y, 0, -0.7 * s, 1.08 * s * anatomy.habitus, 0.26 * s, 0.08)
    body = np.maximum(trunk, shoulders)
    density = 0.06 + 0.42 * body * (0.85 + 0.15 * np.clip(np.abs(x) / s, 0, 1))  # oblique skin edge
    # domed hemidiaphragms: highest under each lung's centre, the right (image left) one higher
    dome = 0.40 * s + 0.22 * s * ((np.abs(x) - 0.38 * s) / (0.4 * s)) ** 2 + np.where(x > 0, 0.04 * s, 0)
    below = _sigmoid((y - dome) / 0.015)
    lung_ry = (0.55 if pediatric else 0.62) * s
    lungs = []
    for i, side in enumerate((-1, 1)):
        cx = side * (0.38 * s + anatomy.lung_dx[i])
        lung = _ellipse(x, y, cx, 0.05 * s, 0.30 * s * anatomy.lung_rx[i], lung_ry * anatomy.lung_ry[i], 0.05)
        lungs.append(lung * _sigmoid((np.abs(x) - 0.1 * s) / 0.02))  # medial edge at the mediastinum
    heart_rx = (0.47 if cardiomegaly else 0.35) * s * (1.12 if pediatric else 1.0) * anatomy.heart  # CTR ~0.45
    heart = _ellipse(x, y, 0.1 * s, 0.36 * s, heart_rx, 0.24 * s, 0.06)
    lung = np.clip(lungs[0] + lungs[1], 0, 1) * (1 - below) * (1 - heart)
    apex_gradient = 1.0 + 0.2 * (0.05 * s - y) / lung_ry  # more air at the apices
    density -= 0.32 * lung * apex_gradient
    spine = _sigmoid((0.07 * s - np.abs(x)) / 0.01) * body
    vertebrae = 0.5 + 0.5 * np.cos(2 * np.pi * y / (0.11 * s))
    density += spine * (0.05 + 0.02 * vertebrae)
    density += body * np.maximum(0.16 * below, 0.12 * heart)  # liver/spleen and heart: soft tissue

    # posterior ribs: y_k(t) = y0_k - a sin(pi t) + b t^2, t the lateral distance from the spine
    n_ribs = len(anatomy.ribs)
    t = np.clip(np.abs(x) / (0.8 * s), 0, 1.2)
    y0 = np.linspace(-0.78, 0.2, n_ribs)[:, None, None] * s + np.array(anatomy.ribs)[:, None, None]
    bend = (0.06 if pediatric else 0.12) * s
    centre = y0 - bend * np.sin(np.pi * np.clip(t, 0, 1)) + (0.2 if pediatric else 0.38) * s * t**2
    thickness = (0.022 + 0.004 * np.arange(n_ribs)[:, None, None] / n_ribs) * s
    ribs = np.exp(-(((y - centre) / thickness) ** 4)).max(axis=0)  # flat-topped bands with cortical edges
    ribs *= _sigmoid((np.abs(x) - 0.07 * s) / 0.02) * trunk * (1 - below)
    density += 0.07 * ribs
    for side in (-1, 1):  # clavicles: slanted bands from the sternum to the shoulder
        x0, y0c, x1, y1 = side * 0.08 * s, -0.62 * s, side * 0.66 * s, -0.76 * s
        u = np.clip(((x - x0) * (x1 - x0) + (y - y0c) * (y1 - y0c)) / ((x1 - x0) ** 2 + (y1 - y0c) ** 2), 0, 1)
        dist = np.hypot(x - (x0 + u * (x1 - x0)), y - (y0c + u * (y1 - y0c)))
        density += 0.10 * np.exp(-((dist / (0.03 * s)) ** 2))

    if pneumonia > 0:
        blobs = gaussian_filter(rng.normal(size=shape), sigma=0.03 * h)
        blobs = np.clip((blobs - np.quantile(blobs, 0.4)) / (blobs.std() + 1e-9), 0, None)
        blobs = gaussian_filter(blobs, sigma=0.01 * h)
        zones = np.zeros(shape)
        for side, height in anatomy.zones:
            zones += _ellipse(x, y, side * 0.4 * s, height * s, 0.3 * s, 0.32 * s, 0.3)
        opacity = np.clip(blobs, 0, 1.5) * np.clip(zones, 0, 1) * lung
        density += 0.25 * pneumonia * opacity
    return np.clip(density, 0, 1)


#: opacity strength (``render_chest``'s ``pneumonia``) of a positive and an uncertain image, drawn uniformly
PNEUMONIA_STRENGTH = {1: (0.25, 0.9), -1: (0.15, 0.4)}


def opacity_strength(rng: np.random.Generator, state: int) -> float:
    """Opacity strength of one image: positives from clear to faint (:data:`PNEUMONIA_STRENGTH`), uncertain ones
    faint, and a share of negatives (:data:`MIMIC_RATE`) with a faint mimic, so the classes overlap."""
    positive, uncertain = (rng.uniform(*PNEUMONIA_STRENGTH[k]) for k in (1, -1))
    mimic = rng.uniform(*MIMIC_STRENGTH) if rng.random() < MIMIC_RATE else 0.0
    return float({1: positive, -1: uncertain, 0: mimic}[state])


def acquire(rng: np.random.Generator, density: np.ndarray, spec: SiteSpec) -> np.ndarray:
    """Detector signal in ``[0, 1]``: blur, exposure curve ``gain * d ** gamma + offset``, signal-dependent noise."""
    blurred = gaussian_filter(density, sigma=spec.blur * density.shape[0] / 128)
    signal = spec.gain * blurred**spec.gamma + spec.offset
    signal = signal + rng.normal(0, spec.noise, density.shape) * np.sqrt(np.clip(signal, 0.05, None))
    return np.clip(signal, 0, 1)
