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
  vignetting, low noise; stored as ``<class>/<view>/stone_NNN/img_NNN.png`` (34/148/456 images for
  ``small``/``demo``/``full``; 12/47/127 stones with seed 0); the config names the stone folder
  (``group_level: 2``: folder 0 is the class, 1 the view, 2 the stone).
- ``dataset-b`` (endoscope): 4:3 JPEG (quality 85) at lower resolution, circular field of view
  with black surround, warm white balance, strong vignetting, blur and sensor noise; stored flat as
  ``frames/frame_NNNNN.jpg`` (shuffled: names tell neither type nor stone) plus ``labels.csv``
  (``file,stone_type,view,stone``, stone ``b-stone-017``; config ``group_column: stone``)
  (32/152/432 images; 11/44/123 stones).

Stones: each class's frames (the same number per view, :meth:`SiteSpec.count`) are split into
stones of 2-5 frames (uniform draws, adjusted so none is left alone), the views dealt at random, so
most stones are seen in both views (section after surface) and some in one. A stone has one type and
one body (:class:`Stone`: size, outline, colour patches, relief, facets, layering, its own tone and a
mixed composition that shifts its colour toward another type's, :data:`TONE`, :data:`ADMIX`) from a per-stone
stream; each frame draws its own pose (position, rotation, zoom), ureter wall, specular highlights,
lighting and camera noise, so the frames of one stone look alike without being equal.

Every random draw comes from ``rng_for(seed, "ureteroscopy", site, ...)`` and the files carry no
timestamps, so the same seed writes identical bytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from scipy.ndimage import gaussian_filter, map_coordinates

from medfed.io import atomic_write_text
from medfed.seeding import rng_for
from medfed.synth.common import (
    check_scale,
    write_site_federation,
)

MODALITY = "ureteroscopy"
VIEWS: tuple[str, ...] = ("surface", "section")
#: default ``image_size`` written into the config (what the adapter resizes to)
IMAGE_SIZES = {"small": 32, "demo": 64, "full": 128}
#: frames per stone (fewest, most)
FRAMES_PER_STONE = (2, 5)
#: stone column of the ``dataset-b`` label table (source option ``group_column``)
STONE_COLUMN = "stone"
#: folder level of the stone in ``dataset-a`` paths ``<class>/<view>/stone_NNN/img_NNN.png`` (``group_level``)
STONE_LEVEL = 2


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
             per_class_view={"small": 3, "demo": 13, "full": 40},
             class_weights=(1.3, 1.0, 1.0, 0.7, 1.0, 0.7),
             white_balance=(1.0, 1.0, 1.0), exposure=1.05, vignetting=0.15, fov=None, blur=0.3, noise=0.008),
    SiteSpec("dataset-b", "B-ureteroscope", "flat_csv",
             shapes={"small": (48, 64), "demo": (96, 128), "full": (288, 384)},
             per_class_view={"small": 3, "demo": 14, "full": 40},
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


def _sample(field: np.ndarray, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """A periodic square ``field`` covering stone coordinates ``[-1, 1)^2``, read at ``(xs, ys)`` (bilinear)."""
    n = field.shape[0]
    coords = np.stack([(ys + 1) * (n / 2), (xs + 1) * (n / 2)])
    return map_coordinates(field, coords, order=1, mode="grid-wrap").astype(np.float32)


def _facets(seeds: np.ndarray, brightness: np.ndarray, xs: np.ndarray, ys: np.ndarray,
            radius: float) -> tuple[np.ndarray, ...]:
    """Voronoi facets of ``seeds`` (stone coordinates): per-pixel facet brightness and facet-edge strength."""
    d = np.sqrt((xs[None] - seeds[:, 0, None, None]) ** 2 + (ys[None] - seeds[:, 1, None, None]) ** 2)
    nearest = np.partition(d, 1, axis=0)
    edges = np.exp(-(((nearest[1] - nearest[0]) / (0.03 * radius)) ** 2))
    return brightness[np.argmin(d, axis=0)], edges


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


@dataclass(frozen=True, eq=False)
class Stone:
    """One physical stone: what every frame of it shares (both views), in stone coordinates.

    Stone coordinates put the stone's centre at the origin with the image's length unit (frame
    half-height = 1) at zoom 1; ``radius`` is the surface view's mean radius (a section cut face is
    1.12 times larger). The texture fields are periodic ``size x size`` grids over ``[-1, 1)^2``.
    """

    stone_type: str
    radius: float
    amps: np.ndarray  # outline harmonics k = 2..6: r(theta) = radius (1 + sum a_k cos(k theta + phi_k))
    phases: np.ndarray
    tips: int  # crystal tips on the outline (used where the type has spikes)
    tip_phase: float
    rings: float  # concentric layers per radius (section)
    lines: int  # radiating lines (section)
    blotch: np.ndarray  # colour patches
    bumps: np.ndarray  # low-frequency relief
    rough: np.ndarray  # high-frequency roughness
    warp: np.ndarray  # irregularity of layers and lines (section)
    pores: np.ndarray  # pores (section)
    facet_seeds: np.ndarray  # (40, 2) Voronoi seeds of crystal facets
    facet_brightness: np.ndarray  # (40,)
    tone: float = 1.0  # brightness of this stone's colours (1 = the type's)
    admix: tuple[float, float, float] = (0.0, 0.0, 0.0)  # colour shift toward another type (mixed composition)


def draw_stone(rng: np.random.Generator, stone_type: str, size: int = 64) -> Stone:
    """One stone of ``stone_type`` (draw it from a per-stone stream); ``size``: texture grid side (the
    frame height in pixels keeps the textures' grain as fine as the pixels)."""
    if stone_type not in STONES:
        raise ValueError(f"unknown stone type {stone_type!r}; choose from {', '.join(CLASSES)}")
    radius = rng.uniform(0.42, 0.58)
    k = np.arange(2, 7)
    amps = (rng.normal(0, 0.07, k.size) / k).astype(np.float32)
    phases = rng.uniform(0, 2 * np.pi, k.size).astype(np.float32)
    field = lambda sigma: _noise(rng, (size, size), sigma * size)  # sigma in frame heights
    return Stone(
        stone_type=stone_type, radius=float(radius), amps=amps, phases=phases, tips=int(rng.integers(7, 13)),
        tip_phase=float(rng.uniform(0, np.pi)), rings=float(rng.uniform(5, 9)), lines=int(rng.integers(24, 40)),
        blotch=field(0.1), bumps=field(0.05), rough=_noise(rng, (size, size), 0.008 * size + 0.3),
        warp=field(0.06), pores=field(0.02),
        facet_seeds=rng.uniform(-radius, radius, size=(40, 2)).astype(np.float32),
        facet_brightness=rng.uniform(-1, 1, 40).astype(np.float32), **_composition(rng, stone_type),
    )


#: per-stone colour variation: brightness range, and the largest share of another type's colour (mixed stones)
TONE, ADMIX = (0.85, 1.15), 0.5


def _composition(rng: np.random.Generator, stone_type: str) -> dict[str, object]:
    """A stone's own tone and mixed composition: real stones are seldom pure, and their colour varies, so the
    types overlap in colour: a share up to :data:`ADMIX` of another type's colour (``Ia_COM``'s for the other
    types, COM being the usual second component; a random other type's for ``Ia_COM``), tone in :data:`TONE`."""
    tone = float(rng.uniform(*TONE))
    other = STONES[CLASSES[(CLASSES.index(stone_type) + int(rng.integers(1, len(CLASSES)))) % len(CLASSES)]]
    if stone_type != CLASSES[0]:  # calcium oxalate monohydrate is the usual second component of a mixed stone
        other = STONES[CLASSES[0]]
    share = float(rng.uniform(0, ADMIX))
    shift = share * (np.array(other.colour) - np.array(STONES[stone_type].colour))
    return {"tone": tone, "admix": tuple(float(v) for v in shift)}


def render_stone(
    rng: np.random.Generator, shape: tuple[int, int], stone_type: str, view: str, *, stone: Stone | None = None
) -> np.ndarray:
    """The scene ``(H, W, 3)`` float32 (values may exceed 1 at highlights): a stone on the ureter wall.

    ``stone`` is the physical stone (drawn from ``rng`` when ``None``); ``rng`` draws what differs
    between frames of one stone: pose (position in the frame, rotation, zoom), the wall behind it and
    the lighting (specular highlights). The outline is ``r(theta) = r0 (1 + sum_k a_k cos(k theta +
    phi_k))`` plus crystal tips; the surface view shades it as a dome (``sqrt(1 - u^2)``, ``u`` the
    normalised radius) with relief, roughness, facets and Gaussian specular highlights; the section
    view is a flat cut face with the type's layers, radial lines, facets or pores (see :data:`STONES`).
    """
    if stone_type not in STONES:
        raise ValueError(f"unknown stone type {stone_type!r}; choose from {', '.join(CLASSES)}")
    if view not in VIEWS:
        raise ValueError(f"unknown view {view!r}; choose from {', '.join(VIEWS)}")
    if stone is None:
        stone = draw_stone(rng, stone_type, shape[0])
    elif stone.stone_type != stone_type:
        raise ValueError(f"stone is of type {stone.stone_type!r}, not {stone_type!r}")
    look = STONES[stone_type]
    h, w = shape
    y, x = np.meshgrid(np.linspace(-1, 1, h, dtype=np.float32),
                       np.linspace(-w / h, w / h, w, dtype=np.float32), indexing="ij")
    tissue = render_tissue(rng, x, y)

    # pose: image = centre + zoom * rotate(angle) * stone coordinates
    cx, cy = rng.normal(0, 0.08, 2)
    zoom = np.float32(rng.uniform(0.92, 1.08) * (1.12 if view == "section" else 1.0))
    angle = rng.normal(0, 0.35)
    dx, dy = x - np.float32(cx), y - np.float32(cy)
    cos, sin = np.float32(np.cos(angle)), np.float32(np.sin(angle))
    xs, ys = (cos * dx + sin * dy) / zoom, (cos * dy - sin * dx) / zoom
    rho, theta = np.hypot(xs, ys), np.arctan2(ys, xs)
    k = np.arange(2, 7)
    outline = 1 + np.einsum("k,khw->hw", stone.amps,
                            np.cos(k[:, None, None] * theta[None] + stone.phases[:, None, None]))
    if look.spikes:
        outline = outline + look.spikes * np.abs(np.cos(0.5 * stone.tips * theta + stone.tip_phase)) ** 12
    radius = np.float32(stone.radius) * outline.astype(np.float32)  # stone coordinates
    r0 = stone.radius * zoom  # mean radius in the frame
    mask = _sigmoid((radius - rho) * zoom / (0.012 * r0 * 64 / h + 0.004))
    u = np.clip(rho / radius, 0, 1)
    dome = np.sqrt(1 - u**2)

    admix, tone = np.array(stone.admix, np.float32), np.float32(stone.tone)
    colour = np.clip((np.array(look.colour, np.float32) + admix) * tone, 0, 1)
    colour2 = np.clip((np.array(look.colour2, np.float32) + admix) * tone, 0, 1)
    blotch = np.clip(0.5 + 0.5 * _sample(stone.blotch, xs, ys), 0, 1)
    stone_rgb = _mix(colour, colour2, 0.35 * blotch)
    relief = look.bumps * _sample(stone.bumps, xs, ys) + look.rough * _sample(stone.rough, xs, ys)
    highlights = np.zeros(shape, np.float32)
    if view == "surface":
        shade = (0.3 + 0.7 * dome**0.7) * (1 + relief)
        if look.facets:
            bright, edges = _facets(stone.facet_seeds[:28], stone.facet_brightness[:28], xs, ys, stone.radius)
            shade = shade * (1 + look.facets * 0.5 * bright) + look.facets * 0.6 * edges * dome
        n = rng.poisson(8 * look.gloss)
        ang, rad = rng.uniform(0, 2 * np.pi, n), r0 * np.sqrt(rng.uniform(0, 0.6, n))
        centres = np.stack([cx + rad * np.cos(ang), cy + rad * np.sin(ang)], axis=1)
        highlights = _spots(x, y, centres, rng.uniform(0.008, 0.03, n), rng.uniform(0.8, 2.0, n))
        if look.waxy:  # the light comes from the upper left, whatever the stone's pose
            glow = np.array([[cx - 0.3 * r0, cy - 0.3 * r0]])
            highlights = highlights + _spots(x, y, glow, np.array([0.35 * r0]), np.array([look.waxy]))
    else:
        shade = (0.85 + 0.15 * dome**0.3) * (1 + 0.3 * relief)
        warp = 0.6 * _sample(stone.warp, xs, ys)
        layers = 0.5 + 0.5 * np.sin(2 * np.pi * (u * stone.rings + 0.25 * warp))
        lines = np.abs(np.cos(0.5 * stone.lines * theta + 0.8 * warp)) ** 6
        pattern = look.rings * layers + look.radial * lines
        if look.facets or look.disorder:
            bright, edges = _facets(stone.facet_seeds, stone.facet_brightness, xs, ys, stone.radius)
            pores = _sigmoid((_sample(stone.pores, xs, ys) - 1.0) / 0.15)
            pattern = pattern + 0.5 * look.facets * (bright + 1) + look.disorder * (0.5 + 0.5 * bright) * (1 - edges)
            shade = shade * (1 - 0.6 * look.disorder * pores)
        stone_rgb = _mix(stone_rgb, colour2, np.clip(pattern, 0, 1))
        shade = shade * (1 - look.nucleus * np.exp(-((u / 0.18) ** 2)))
        highlights = _spots(x, y, np.array([[cx, cy]]) + rng.normal(0, 0.2 * r0, (1, 2)),
                            np.array([0.02]), np.array([rng.uniform(0.0, 0.8)]))
    stone_rgb = stone_rgb * shade[..., None]
    # contact shadow around the stone, moist highlights on the wall
    shadow = 0.45 * _sigmoid(((radius - rho) * zoom + 0.1) / 0.03) * (1 - mask)
    wall = tissue * (1 - shadow)[..., None]
    n = rng.integers(1, 4)
    wet = _spots(x, y, rng.uniform(-1, 1, (n, 2)), rng.uniform(0.01, 0.02, n), rng.uniform(0.6, 1.4, n))
    scene = wall * (1 - mask)[..., None] + stone_rgb * mask[..., None]
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
@dataclass(frozen=True)
class Frame:
    """One image of a site: a frame of one stone in one view."""

    stone_type: str
    view: str
    stone: int  # stone number in the site
    frame: int  # frame number of the stone (its surface frames first)


def stone_sizes(rng: np.random.Generator, total: int) -> list[int]:
    """Split ``total`` (at least 2) frames into stones of 2-5 frames each (uniform draws, adjusted at the end)."""
    sizes, left = [], total
    while left > 0:
        k = min(int(rng.integers(FRAMES_PER_STONE[0], FRAMES_PER_STONE[1] + 1)), left)
        if left - k == 1:  # never leave a single frame
            k = k + 1 if k < FRAMES_PER_STONE[1] else k - 1
        sizes.append(k)
        left -= k
    return sizes


def site_cases(spec: SiteSpec, scale: str, seed: int = 0) -> list[Frame]:
    """Every frame of a site, stone by stone.

    Per class the ``2 * count`` frames (``count`` per view, :meth:`SiteSpec.count`) are split into stones
    of 2-5 frames (:func:`stone_sizes`); the views are dealt to the frames at random, so a stone may
    show both views (its section after its surface) or one. Stones are numbered in a shuffled order,
    so a stone's number does not give its type away.
    """
    rng = rng_for(seed, MODALITY, spec.name, "stones")
    stones: list[tuple[str, list[str]]] = []
    for cls in CLASSES:
        count = spec.count(scale, cls)
        views = rng.permutation(np.repeat(np.array(VIEWS), count))
        start = 0
        for size in stone_sizes(rng, 2 * count):
            stones.append((cls, sorted(map(str, views[start:start + size]), key=VIEWS.index)))
            start += size
    numbers = rng.permutation(len(stones))
    frames = [Frame(cls, view, int(number), i) for (cls, views), number in zip(stones, numbers, strict=True)
              for i, view in enumerate(views)]
    return sorted(frames, key=lambda f: (f.stone, f.frame))


def frame_path(spec: SiteSpec, frame: Frame, position: int) -> str:
    """Where a frame is stored, relative to the site folder (``position``: its slot in the flat layout)."""
    if spec.layout == "class_view_folders":
        return f"{frame.stone_type}/{frame.view}/stone_{frame.stone:03d}/img_{frame.frame:03d}.png"
    return f"frames/frame_{position:05d}.jpg"


def stone_key(frame: Frame) -> str:
    """The stone's name in the ``stone`` column of the flat layout: ``b-stone-017``."""
    return f"b-stone-{frame.stone:03d}"


def write_site(site_dir: Path, spec: SiteSpec, scale: str, seed: int) -> None:
    """Render and store every frame of one site under ``site_dir``.

    A stone (:class:`Stone`) comes from a per-stone stream, each frame's pose, wall, lighting and
    camera noise from a per-frame stream, so the frames of one stone look alike without being equal.
    """
    shape = spec.shapes[scale]
    frames = site_cases(spec, scale, seed)
    order = rng_for(seed, MODALITY, spec.name, "order").permutation(len(frames))  # flat names hide the class
    stones: dict[int, Stone] = {}
    rows = []
    for position, frame in zip(order, frames, strict=True):
        if frame.stone not in stones:
            stones[frame.stone] = draw_stone(rng_for(seed, MODALITY, spec.name, "stone", frame.stone),
                                             frame.stone_type, shape[0])
        rng = rng_for(seed, MODALITY, spec.name, "stone", frame.stone, "frame", frame.frame)
        scene = render_stone(rng, shape, frame.stone_type, frame.view, stone=stones[frame.stone])
        pixels = Image.fromarray(acquire(rng, scene, spec))
        rel = frame_path(spec, frame, int(position))
        (site_dir / rel).parent.mkdir(parents=True, exist_ok=True)
        if spec.layout == "class_view_folders":
            pixels.save(site_dir / rel, format="PNG")
        else:
            pixels.save(site_dir / rel, format="JPEG", quality=spec.jpeg_quality)
            rows.append({"file": rel, "stone_type": frame.stone_type, "view": frame.view,
                         STONE_COLUMN: stone_key(frame)})
    if rows:
        table = pd.DataFrame(rows).sort_values("file")
        atomic_write_text(site_dir / "labels.csv", table.to_csv(index=False, lineterminator="\n"))


def site_source(spec: SiteSpec, image_size: int) -> dict[str, object]:
    """The ``sources`` entry of one site (paths relative to ``out/sites/``), naming where the stone is."""
    source: dict[str, object] = {"name": spec.name, "root": f"../{MODALITY}/{spec.name}", "layout": spec.layout,
                                 "source_name": spec.source_name, "classes": list(CLASSES), "views": list(VIEWS)}
    if spec.layout == "flat_csv":
        source.update({"labels": "labels.csv", "path_column": "file", "class_column": "stone_type",
                       "view_column": "view", "group_column": STONE_COLUMN})
    else:
        source["group_level"] = STONE_LEVEL
    source["image_size"] = image_size
    return source


def write_ureteroscopy(out: Path, scale: str = "demo", seed: int = 0, *, image_size: int | None = None) -> Path:
    """Write the synthetic ureteroscopy federation under ``out/ureteroscopy/``; return ``out/sites/ureteroscopy.yaml``.

    ``image_size`` is the size the adapter resizes to (default per scale: :data:`IMAGE_SIZES`). Any
    previous ``out/ureteroscopy`` is replaced (written beside it first, then swapped in).
    """
    check_scale(scale)
    size = image_size or IMAGE_SIZES[scale]
    return write_site_federation(out, MODALITY, f"ureteroscopy-{scale}", seed, SITES,
                                 lambda folder, spec: write_site(folder, spec, scale, seed),
                                 lambda spec: site_source(spec, size))
