"""Synthetic ureteroscopy federation: RGB kidney-stone images of six types, two views, two cameras.

Stone types follow the Daudon morpho-constitutional classes used by El Beze et al. / Lopez et al.
(names as :data:`medfed.sites.ureteroscopy.DEFAULT_CLASSES`); each is rendered in a ``surface`` view
(dome-shaded stone with its surface texture and specular highlights) and a ``section`` view (flat cut
face showing the inner structure). Appearance cues, after Daudon's morphological descriptions:

- ``Ia_COM`` whewellite: dark brown, smooth/mammillated surface; section: concentric layers, radial
  striations, dark central nucleus.
- ``IIa_COD`` weddellite: pale yellow, spiky bipyramidal crystals with bright facets; section: loose
  crystalline facets.
- ``IIIa_UricAcid``: orange-amber, homogeneous, smooth; section: fine concentric layers.
- ``IVc_Struvite``: whitish-beige, rough and heterogeneous; section: disordered, porous.
- ``IVd_Brushite``: whitish, fairly smooth; section: radiating lines from the centre.
- ``Va_Cystine``: yellow, waxy and glossy; section: fine radial crystals, homogeneous.

Sites (two source "data sets" with different cameras and class balance):

- ``dataset-a`` (ex-vivo digital camera): square PNG, full frame, neutral white balance, mild
  vignetting, low noise; stored as ``<class>/<view>/img_NNN.png`` (34/92/456 images for
  ``small``/``demo``/``full``).
- ``dataset-b`` (endoscope): 4:3 JPEG (quality 85) at lower resolution, circular field of view
  with black surround, warm white balance, strong vignetting, blur and sensor noise; stored flat as
  ``frames/frame_NNNNN.jpg`` plus ``labels.csv`` (``file,stone_type,view``) (32/76/432 images).

Every random draw comes from ``rng_for(seed, "ureteroscopy", site, ...)`` and the files carry no
timestamps, so the same seed writes identical bytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from scipy.ndimage import gaussian_filter

from medfed.seeding import rng_for
from medfed.synth.common import (
    check_scale,
    staged_directory,
    write_federation_config,
)

MODALITY = "ureteroscopy"
VIEWS: tuple[str, ...] = ("surface", "section")
#: default ``image_size`` written into the config (what the adapter resizes to)
IMAGE_SIZES = {"small": 32, "demo": 64, "full": 128}


@dataclass(frozen=True)
class StoneLook:
    """How one stone type looks: colours (RGB in [0, 1]), surface texture and section pattern."""

    colour: tuple[float, float, float]
    colour2: tuple[float, float, float]  # secondary colour: layers, facets, patches
    bumps: float  # low-frequency surface relief amplitude (mammillations)
    rough: float  # high-frequency surface roughness amplitude
    spikes: float  # crystal tips on the outline (0 = smooth outline)
    facets: float  # contrast of flat crystal facets on the surface
    gloss: float  # expected number of specular highlights / 8 (surface view)
    waxy: float  # broad soft highlight (cystine)
    rings: float  # contrast of concentric layers in the section
    radial: float  # contrast of radiating lines in the section
    nucleus: float  # darkness of the central nucleus in the section
    disorder: float  # patchy, porous section (struvite)


STONES: dict[str, StoneLook] = {
    "Ia_COM": StoneLook((0.30, 0.18, 0.09), (0.50, 0.34, 0.18), bumps=0.10, rough=0.04, spikes=0.0, facets=0.0,
                        gloss=0.6, waxy=0.0, rings=0.55, radial=0.25, nucleus=0.6, disorder=0.0),
    "IIa_COD": StoneLook((0.84, 0.78, 0.55), (0.98, 0.96, 0.84), bumps=0.04, rough=0.05, spikes=0.22, facets=0.45,
                         gloss=1.2, waxy=0.0, rings=0.0, radial=0.0, nucleus=0.0, disorder=0.2),
    "IIIa_UricAcid": StoneLook((0.85, 0.50, 0.16), (0.95, 0.66, 0.30), bumps=0.03, rough=0.015, spikes=0.0,
                               facets=0.0, gloss=0.6, waxy=0.0, rings=0.3, radial=0.0, nucleus=0.15, disorder=0.0),
    "IVc_Struvite": StoneLook((0.88, 0.82, 0.70), (0.70, 0.64, 0.52), bumps=0.12, rough=0.09, spikes=0.03,
                              facets=0.0, gloss=0.2, waxy=0.0, rings=0.0, radial=0.0, nucleus=0.0, disorder=0.6),
    "IVd_Brushite": StoneLook((0.91, 0.89, 0.81), (0.72, 0.69, 0.60), bumps=0.05, rough=0.05, spikes=0.0,
                              facets=0.0, gloss=0.4, waxy=0.0, rings=0.0, radial=0.55, nucleus=0.1, disorder=0.0),
    "Va_Cystine": StoneLook((0.86, 0.74, 0.36), (0.93, 0.84, 0.52), bumps=0.03, rough=0.008, spikes=0.0, facets=0.0,
                            gloss=0.3, waxy=0.45, rings=0.0, radial=0.2, nucleus=0.0, disorder=0.0),
}
CLASSES: tuple[str, ...] = tuple(STONES)


@dataclass(frozen=True)
class SiteSpec:
    """One source data set: its camera, storage layout and class balance."""

    name: str
    source_name: str
    layout: str  # "class_view_folders" (PNG) | "flat_csv" (JPEG + labels.csv)
    shapes: dict[str, tuple[int, int]]  # scale -> (height, width)
    per_class_view: dict[str, int]  # scale -> base number of images per class and view
    class_weights: tuple[float, ...]  # multiplies per_class_view, one per class of CLASSES
    white_balance: tuple[float, float, float] = (1.0, 1.0, 1.0)
    exposure: float = 1.0
    vignetting: float = 0.15  # brightness loss at the frame edge: 1 - v * r^2
    fov: float | None = None  # radius of the circular field of view (frame half-height = 1); None: full frame
    blur: float = 0.4  # Gaussian sigma in pixels at 128 px
    noise: float = 0.01
    jpeg_quality: int = 85

    def count(self, scale: str, cls: str) -> int:
        """Images of one class in one view."""
        return max(1, round(self.per_class_view[scale] * self.class_weights[CLASSES.index(cls)]))


SITES: tuple[SiteSpec, ...] = (
    SiteSpec("dataset-a", "A-exvivo-camera", "class_view_folders",
             shapes={"small": (64, 64), "demo": (128, 128), "full": (384, 384)},
             per_class_view={"small": 3, "demo": 8, "full": 40},
             class_weights=(1.3, 1.0, 1.0, 0.7, 1.0, 0.7),
             white_balance=(1.0, 1.0, 1.0), exposure=1.05, vignetting=0.15, fov=None, blur=0.3, noise=0.008),
    SiteSpec("dataset-b", "B-ureteroscope", "flat_csv",
             shapes={"small": (48, 64), "demo": (96, 128), "full": (288, 384)},
             per_class_view={"small": 3, "demo": 7, "full": 40},
             class_weights=(1.6, 1.0, 1.3, 0.4, 0.7, 0.4),
             white_balance=(1.10, 0.95, 0.78), exposure=1.0, vignetting=0.55, fov=0.98, blur=0.9, noise=0.025),
)


# ---------------------------------------------------------------------------- rendering helpers
def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))


def _noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """White noise smoothed by a Gaussian of ``sigma`` pixels (periodic), rescaled to unit standard deviation.

    Filtered in the Fourier domain (transfer function ``exp(-2 pi^2 sigma^2 |f|^2)``), so the cost does
    not grow with ``sigma``.
    """
    fy = np.fft.fftfreq(shape[0])[:, None]
    fx = np.fft.rfftfreq(shape[1])[None, :]
    transfer = np.exp(-2 * np.pi**2 * max(sigma, 0.3) ** 2 * (fy**2 + fx**2))
    field = np.fft.irfft2(np.fft.rfft2(rng.standard_normal(shape)) * transfer, s=shape).astype(np.float32)
    return field / np.float32(field.std() + 1e-6)


def _spots(x: np.ndarray, y: np.ndarray, centres: np.ndarray, sigmas: np.ndarray, amps: np.ndarray) -> np.ndarray:
    """Sum of isotropic Gaussians ``amp * exp(-d^2 / 2 sigma^2)``, vectorised over the spots."""
    if len(centres) == 0:
        return np.zeros_like(x)
    d2 = (x[None] - centres[:, 0, None, None]) ** 2 + (y[None] - centres[:, 1, None, None]) ** 2
    return np.einsum("k,khw->hw", amps, np.exp(-d2 / (2 * sigmas[:, None, None] ** 2))).astype(np.float32)


def _facets(rng: np.random.Generator, dx: np.ndarray, dy: np.ndarray, n: int, radius: float) -> tuple[np.ndarray, ...]:
    """Voronoi facets of ``n`` random seeds in the stone: per-pixel facet brightness and facet-edge strength."""
    seeds = rng.uniform(-radius, radius, size=(n, 2)).astype(np.float32)
    d = np.sqrt((dx[None] - seeds[:, 0, None, None]) ** 2 + (dy[None] - seeds[:, 1, None, None]) ** 2)
    nearest = np.partition(d, 1, axis=0)
    brightness = rng.uniform(-1, 1, n).astype(np.float32)[np.argmin(d, axis=0)]
    edges = np.exp(-(((nearest[1] - nearest[0]) / (0.03 * radius)) ** 2))
    return brightness, edges


def _mix(a: np.ndarray, b: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Per-pixel blend of two colours: ``a + (b - a) * t``; ``t`` is ``(H, W)``."""
    return a + (b - a) * t[..., None]


# ---------------------------------------------------------------------------- scene
def render_tissue(rng: np.random.Generator, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Pink-red ureter wall ``(H, W, 3)``: mottled mucosa, dark-red vessels (noise level lines), a dark lumen."""
    h = x.shape[0]
    base = np.array([0.80, 0.38, 0.34], np.float32) * np.float32(rng.uniform(0.9, 1.05))
    mottle = 0.10 * _noise(rng, x.shape, 0.08 * h) + 0.04 * _noise(rng, x.shape, 0.015 * h)
    # vessels: thin bands along the zero level set of smooth noise fields (two calibres)
    vessels = np.maximum(np.exp(-(_noise(rng, x.shape, 0.07 * h) / 0.07) ** 2),
                         0.6 * np.exp(-(_noise(rng, x.shape, 0.035 * h) / 0.05) ** 2))
    tissue = base * (1 + mottle)[..., None]
    tissue = tissue * (1 - vessels[..., None] * np.array([0.35, 0.75, 0.7], np.float32))
    angle = rng.uniform(0, 2 * np.pi)
    lx, ly = 0.85 * np.cos(angle), 0.85 * np.sin(angle)
    lumen = np.exp(-((x - lx) ** 2 + (y - ly) ** 2) / (2 * rng.uniform(0.2, 0.35) ** 2))
    return tissue * (1 - 0.75 * lumen)[..., None]


def render_stone(
    rng: np.random.Generator, shape: tuple[int, int], stone_type: str, view: str
) -> np.ndarray:
    """The scene ``(H, W, 3)`` float32 (values may exceed 1 at highlights): a stone on the ureter wall.

    The outline is ``r(theta) = r0 (1 + sum_k a_k cos(k theta + phi_k))`` plus crystal tips; the
    surface view shades it as a dome (``sqrt(1 - u^2)``, ``u`` the normalised radius) with relief,
    roughness, facets and Gaussian specular highlights; the section view is a flat cut face with the
    type's layers, radial lines, facets or pores (see :data:`STONES`).
    """
    if stone_type not in STONES:
        raise ValueError(f"unknown stone type {stone_type!r}; choose from {', '.join(CLASSES)}")
    if view not in VIEWS:
        raise ValueError(f"unknown view {view!r}; choose from {', '.join(VIEWS)}")
    look = STONES[stone_type]
    h, w = shape
    y, x = np.meshgrid(np.linspace(-1, 1, h, dtype=np.float32),
                       np.linspace(-w / h, w / h, w, dtype=np.float32), indexing="ij")
    tissue = render_tissue(rng, x, y)

    cx, cy = rng.normal(0, 0.08, 2)
    r0 = rng.uniform(0.5, 0.64) if view == "section" else rng.uniform(0.42, 0.58)
    dx, dy = x - np.float32(cx), y - np.float32(cy)
    rho, theta = np.hypot(dx, dy), np.arctan2(dy, dx)
    k = np.arange(2, 7)
    amps = rng.normal(0, 0.07, k.size) / k
    phases = rng.uniform(0, 2 * np.pi, k.size)
    outline = 1 + np.einsum("k,khw->hw", amps, np.cos(k[:, None, None] * theta[None] + phases[:, None, None]))
    if look.spikes:
        tips = rng.integers(7, 13)
        outline = outline + look.spikes * np.abs(np.cos(0.5 * tips * theta + rng.uniform(0, np.pi))) ** 12
    radius = np.float32(r0) * outline.astype(np.float32)
    mask = _sigmoid((radius - rho) / (0.012 * r0 * 64 / h + 0.004))
    u = np.clip(rho / radius, 0, 1)
    dome = np.sqrt(1 - u**2)

    colour, colour2 = np.array(look.colour, np.float32), np.array(look.colour2, np.float32)
    blotch = np.clip(0.5 + 0.5 * _noise(rng, shape, 0.1 * h), 0, 1)
    stone = _mix(colour, colour2, 0.35 * blotch)
    relief = look.bumps * _noise(rng, shape, 0.05 * h) + look.rough * _noise(rng, shape, 0.008 * h + 0.3)
    highlights = np.zeros(shape, np.float32)
    if view == "surface":
        shade = (0.3 + 0.7 * dome**0.7) * (1 + relief)
        if look.facets:
            bright, edges = _facets(rng, dx, dy, 28, r0)
            shade = shade * (1 + look.facets * 0.5 * bright) + look.facets * 0.6 * edges * dome
        n = rng.poisson(8 * look.gloss)
        ang, rad = rng.uniform(0, 2 * np.pi, n), r0 * np.sqrt(rng.uniform(0, 0.6, n))
        centres = np.stack([cx + rad * np.cos(ang), cy + rad * np.sin(ang)], axis=1)
        highlights = _spots(x, y, centres, rng.uniform(0.008, 0.03, n), rng.uniform(0.8, 2.0, n))
        if look.waxy:
            glow = np.array([[cx - 0.3 * r0, cy - 0.3 * r0]])
            highlights = highlights + _spots(x, y, glow, np.array([0.35 * r0]), np.array([look.waxy]))
    else:
        shade = (0.85 + 0.15 * dome**0.3) * (1 + 0.3 * relief)
        warp = 0.6 * _noise(rng, shape, 0.06 * h)
        layers = 0.5 + 0.5 * np.sin(2 * np.pi * (u * rng.uniform(5, 9) + 0.25 * warp))
        lines = np.abs(np.cos(0.5 * rng.integers(24, 40) * theta + 0.8 * warp)) ** 6
        pattern = look.rings * layers + look.radial * lines
        if look.facets or look.disorder:
            bright, edges = _facets(rng, dx, dy, 40, r0)
            pores = _sigmoid((_noise(rng, shape, 0.02 * h) - 1.0) / 0.15)
            pattern = pattern + 0.5 * look.facets * (bright + 1) + look.disorder * (0.5 + 0.5 * bright) * (1 - edges)
            shade = shade * (1 - 0.6 * look.disorder * pores)
        stone = _mix(stone, colour2, np.clip(pattern, 0, 1))
        shade = shade * (1 - look.nucleus * np.exp(-((u / 0.18) ** 2)))
        highlights = _spots(x, y, np.array([[cx, cy]]) + rng.normal(0, 0.2 * r0, (1, 2)),
                            np.array([0.02]), np.array([rng.uniform(0.0, 0.8)]))
    stone = stone * shade[..., None]
    # contact shadow around the stone, moist highlights on the wall
    shadow = 0.45 * _sigmoid((radius + 0.1 - rho) / 0.03) * (1 - mask)
    wall = tissue * (1 - shadow)[..., None]
    n = rng.integers(1, 4)
    wet = _spots(x, y, rng.uniform(-1, 1, (n, 2)), rng.uniform(0.01, 0.02, n), rng.uniform(0.6, 1.4, n))
    scene = wall * (1 - mask)[..., None] + stone * mask[..., None]
    return scene + (highlights * mask + wet * (1 - mask))[..., None]


def acquire(rng: np.random.Generator, scene: np.ndarray, spec: SiteSpec) -> np.ndarray:
    """Camera model: light fall-off/vignetting ``1 - v r^2``, circular field of view, white balance,
    optical blur, sensor noise, clipping (saturated highlights) and 8-bit quantisation -> ``uint8 (H, W, 3)``."""
    h, w = scene.shape[:2]
    y, x = np.meshgrid(np.linspace(-1, 1, h, dtype=np.float32),
                       np.linspace(-w / h, w / h, w, dtype=np.float32), indexing="ij")
    r2 = (x - rng.normal(0, 0.05)) ** 2 + (y - rng.normal(0, 0.05)) ** 2
    light = spec.exposure * rng.uniform(0.92, 1.08) * np.clip(1 - spec.vignetting * r2, 0.05, None)
    image = scene * light[..., None] * np.array(spec.white_balance, np.float32)
    if spec.fov is not None:
        image = image * _sigmoid((spec.fov - np.sqrt(x**2 + y**2)) / (1.5 / h))[..., None]
    sigma = spec.blur * h / 128
    image = gaussian_filter(image, (sigma, sigma, 0))
    image = image + rng.normal(0, spec.noise, image.shape).astype(np.float32)
    return np.round(np.clip(image, 0, 1) * 255).astype(np.uint8)


# ---------------------------------------------------------------------------- writing
def site_cases(spec: SiteSpec, scale: str) -> list[tuple[str, str, int]]:
    """``(class, view, index)`` of every image of a site, in class/view order."""
    return [(cls, view, i) for cls in CLASSES for view in VIEWS for i in range(spec.count(scale, cls))]


def write_site(site_dir: Path, spec: SiteSpec, scale: str, seed: int) -> None:
    """Render and store every image of one site under ``site_dir``."""
    shape = spec.shapes[scale]
    cases = site_cases(spec, scale)
    order = rng_for(seed, MODALITY, spec.name, "order").permutation(len(cases))  # flat names hide the class
    rows = []
    for position, (cls, view, i) in zip(order, cases, strict=True):
        rng = rng_for(seed, MODALITY, spec.name, cls, view, i)
        pixels = Image.fromarray(acquire(rng, render_stone(rng, shape, cls, view), spec))
        if spec.layout == "class_view_folders":
            path = site_dir / cls / view / f"img_{i:03d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            pixels.save(path, format="PNG")
        else:
            rel = f"frames/frame_{position:05d}.jpg"
            (site_dir / rel).parent.mkdir(parents=True, exist_ok=True)
            pixels.save(site_dir / rel, format="JPEG", quality=spec.jpeg_quality)
            rows.append({"file": rel, "stone_type": cls, "view": view})
    if rows:
        table = pd.DataFrame(rows).sort_values("file")
        table.to_csv(site_dir / "labels.csv", index=False, lineterminator="\n")


def site_source(spec: SiteSpec, image_size: int) -> dict[str, object]:
    """The ``sources`` entry of one site (paths relative to ``out/sites/``)."""
    source: dict[str, object] = {"name": spec.name, "root": f"../{MODALITY}/{spec.name}", "layout": spec.layout,
                                 "source_name": spec.source_name, "classes": list(CLASSES), "views": list(VIEWS)}
    if spec.layout == "flat_csv":
        source.update({"labels": "labels.csv", "path_column": "file", "class_column": "stone_type",
                       "view_column": "view"})
    source["image_size"] = image_size
    return source


def write_ureteroscopy(out: Path, scale: str = "demo", seed: int = 0, *, image_size: int | None = None) -> Path:
    """Write the synthetic ureteroscopy federation under ``out/ureteroscopy/``; return ``out/sites/ureteroscopy.yaml``.

    ``image_size`` is the size the adapter resizes to (default per scale: :data:`IMAGE_SIZES`). Any
    previous ``out/ureteroscopy`` is replaced (written beside it first, then swapped in).
    """
    check_scale(scale)
    out = Path(out)
    with staged_directory(out, MODALITY) as staging:
        for spec in SITES:
            write_site(staging / spec.name, spec, scale, seed)
    size = image_size or IMAGE_SIZES[scale]
    config = {
        "name": f"ureteroscopy-{scale}",
        "adapter": MODALITY,
        "split": {"seed": seed, "val": 0.15, "test": 0.25},
        "sources": [site_source(spec, size) for spec in SITES],
    }
    return write_federation_config(out, MODALITY, config)
