"""Synthetic glioma federation in the BraTS / FeTS layout, built on real MNI152 anatomy.

Anatomy: the ICBM 2009a symmetric MNI152 grey- and white-matter probability maps that ship inside
nilearn's wheel (what ``nilearn.datasets.load_mni152_gm_template`` / ``..._wm_template`` read;
offline), block-averaged to 2 mm. The brain mask is ``smooth(GM + WM) > 0.2`` with holes filled
(as nilearn's ``load_mni152_brain_mask`` thresholds the template), CSF = mask - GM - WM, so the
ventricles and sulci are CSF. Volumes are skull-stripped, as BraTS distributes them (background 0).

Per subject: a random similarity transform (head size, +-4 degree rotation, shift) plus a smooth
random deformation moves the anatomy; a glioma is placed in white matter away from the brain edge:
a randomly rotated ellipsoid of normalised radius ``rho``, made irregular by a smooth random field
``rho' = rho (1 + a n(x))``, with necrotic / non-enhancing core (label 1) at ``rho' < f_n``,
enhancing rim (label 4) at ``f_n <= rho' < 1`` and oedema (label 2) out to ``f_o`` (own shape and
irregularity), kept out of CSF and, like the whole lesion, in one hemisphere. Labels follow BraTS
(1 NCR/NET, 2 ED, 4 ET; 3 for ET with ``enhancing_label=3``, the BraTS 2023 convention).

Contrasts (relative intensities, :data:`TISSUE` and :data:`LESION`): T1 WM > GM > CSF; T2 CSF > GM >
WM; FLAIR like T2 with CSF suppressed and oedema brightest; T1ce like T1 with a bright
(gadolinium-enhancing) rim around a dark necrotic core.

Institutions differ (each draws from ``rng_for(seed, "brain_mri", "institution", k)``): overall
intensity scale and per-contrast gain, tissue contrast, smooth multiplicative bias field, Rician noise,
acquisition blur (isotropic or thick-slice point-spread function), voxel spacing (``small``/``demo``;
``full`` is the BraTS 1 mm grid), tumour size, head size (institution 3 scans children: heads x0.85)
and number of subjects (FeTS-like skew: few large institutions, many small, :data:`SCALE_SPECS`).

Per scale (:data:`SCALE_SPECS`): ``small`` 32x32x32 at 6 mm, 5 / 3 / 2 subjects (split val 0.15 / test
0.25); ``demo`` 32x40x32 at 5.5 mm, 52 / 36 / 28 / 24 / 24 subjects split val 0.15 / test 0.4, so every
institution has at least 10 test subjects (21 / 14 / 11 / 10 / 10; train 23 / 17 / 13 / 10 / 10) and the
report tests every institution; ``full`` the BraTS 240x240x155 1 mm grid, 96 ... 4 subjects in 12
institutions (val 0.15 / test 0.25).

Written under ``out/brain_mri/``: ``<ID>/<ID>_<t1|t1ce|t2|flair|seg>.nii.gz`` (``naming="brats"``,
ids ``BraTS2021_NNNNN``) or ``<ID>/<ID>_brain_<contrast>.nii.gz`` + ``<ID>_final_seg.nii.gz``
(``naming="fets2"``, ids ``FeTS_NNNNNN``); images int16, segmentation uint8, RAS+ affines with the
brain centred on the grid at its MNI position. ``partitioning_1.csv`` (by institution) and
``partitioning_2.csv`` (the largest institutions split in two). nibabel writes gzip streams with
``mtime=0`` and the headers carry a fixed ``descrip``, so the same seed writes identical bytes.
Cost on one CPU core: ``demo`` under 0.1 s per subject (all 164 subjects about 13 s, start-up included),
``small`` (10 subjects) a few seconds in all, ``full`` about 6 s per subject.
"""

from __future__ import annotations

import functools
import importlib.util
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from scipy import ndimage as ndi

from medfed.io import atomic_write_text
from medfed.seeding import rng_for
from medfed.synth.common import (
    check_scale,
    staged_directory,
    write_federation_config,
)

MODALITY = "brain_mri"
CONTRASTS: tuple[str, ...] = ("t1", "t1ce", "t2", "flair")

#: relative tissue intensities (CSF, GM, WM) per contrast; WM on T1 = 1
TISSUE: dict[str, tuple[float, float, float]] = {
    "t1": (0.25, 0.62, 1.00),
    "t1ce": (0.28, 0.64, 1.00),
    "t2": (1.00, 0.62, 0.45),
    "flair": (0.12, 0.70, 0.52),  # CSF suppressed by the inversion pulse
}
#: relative lesion intensities per contrast: BraTS label -> value (1 NCR/NET, 2 oedema, 4 enhancing)
LESION: dict[str, dict[int, float]] = {
    "t1": {1: 0.35, 2: 0.55, 4: 0.70},
    "t1ce": {1: 0.35, 2: 0.58, 4: 1.50},  # gadolinium: bright rim, dark necrosis
    "t2": {1: 1.05, 2: 0.90, 4: 0.75},
    "flair": {1: 0.55, 2: 1.10, 4: 0.85},  # oedema hyperintense
}
#: acquisition point-spread functions (FWHM in mm): 3-D isotropic, 2-D axial with thick slices
PSF_PROFILES: tuple[tuple[float, float, float], ...] = ((1.0, 1.0, 1.0), (1.0, 1.0, 3.0), (1.0, 1.0, 5.0),
                                                        (2.0, 2.0, 2.0))
PAEDIATRIC_INSTITUTION = 2  # zero-based: the third institution scans children
PAEDIATRIC_HEAD_SCALE = 0.85


@dataclass(frozen=True)
class ScaleSpec:
    """Grid and federation size of one scale."""

    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]  # mm; institutions enlarge it by up to ``spacing_jitter`` per axis
    spacing_jitter: float
    counts: tuple[int, ...]  # subjects per institution (FeTS-like skew)
    split_largest: int  # institutions partitioning_2 splits in two
    val: float = 0.15  # split fractions written into the config (the split unit is the subject)
    test: float = 0.25


SCALE_SPECS: dict[str, ScaleSpec] = {
    "small": ScaleSpec((32, 32, 32), (6.0, 6.0, 6.0), 0.1, (5, 3, 2), 1),
    # >= 10 test subjects in every institution (round(24 * 0.4) = 10): per-site CIs and tests in the report
    "demo": ScaleSpec((32, 40, 32), (5.5, 5.5, 5.5), 0.1, (52, 36, 28, 24, 24), 2, val=0.15, test=0.4),
    "full": ScaleSpec((240, 240, 155), (1.0, 1.0, 1.0), 0.0, (96, 52, 34, 24, 18, 14, 11, 9, 7, 6, 5, 4), 3),
}


@dataclass(frozen=True)
class Institution:
    """Scanner, protocol and population of one institution."""

    index: int
    spacing: tuple[float, float, float]
    gain: float  # int16 value of T1 white matter
    contrast_gain: dict[str, float]
    tissue: dict[str, tuple[float, float, float]]
    bias: float  # standard deviation of the log bias field
    noise: float  # Rician sigma relative to T1 white matter
    psf_mm: tuple[float, float, float]
    tumour_mm: float  # median radius of the enhancing tumour
    head_scale: float


@dataclass(frozen=True)
class Template:
    """MNI152 tissue maps on a 2 mm grid (float32 in [0, 1]) and that grid's affine."""

    gm: np.ndarray
    wm: np.ndarray
    brain: np.ndarray
    affine: np.ndarray

    @property
    def centre(self) -> np.ndarray:
        """World (MNI, mm) centre of the brain's bounding box."""
        idx = np.argwhere(self.brain > 0.5)
        middle = (idx.min(0) + idx.max(0)) / 2
        return self.affine[:3, :3] @ middle + self.affine[:3, 3]


# ---------------------------------------------------------------------------- anatomy
_MNI_FILES = {"gm": "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz",
              "wm": "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz"}


def _mni_map(kind: str) -> nib.Nifti1Image:
    """A 1 mm MNI152 tissue map from nilearn's package data (read directly: importing nilearn is slow)."""
    spec = importlib.util.find_spec("nilearn")
    path = Path(spec.origin).parent / "datasets" / "data" / _MNI_FILES[kind] if spec and spec.origin else None
    if path is not None and path.is_file():
        return nib.load(path)
    from nilearn import datasets  # same files, through the public API

    loader = datasets.load_mni152_gm_template if kind == "gm" else datasets.load_mni152_wm_template
    return loader(resolution=1)


@functools.lru_cache(maxsize=1)
def mni_template() -> Template:
    """GM/WM maps block-averaged 2x2x2 to 2 mm; brain mask = filled ``smooth(GM + WM) > 0.2``."""
    maps = {}
    affine = None
    for kind in _MNI_FILES:
        img = _mni_map(kind)
        data = np.asarray(img.get_fdata(dtype=np.float32))
        data = data / max(float(data.max()), 1e-6)
        nx, ny, nz = (n // 2 * 2 for n in data.shape)
        maps[kind] = data[:nx, :ny, :nz].reshape(nx // 2, 2, ny // 2, 2, nz // 2, 2).mean(axis=(1, 3, 5))
        affine = img.affine @ np.array([[2, 0, 0, 0.5], [0, 2, 0, 0.5], [0, 0, 2, 0.5], [0, 0, 0, 1]])
    gm, wm = (np.clip(maps[k], 0, 1).astype(np.float32) for k in ("gm", "wm"))
    brain = ndi.binary_fill_holes(ndi.gaussian_filter(gm + wm, 0.5) > 0.2).astype(np.float32)
    return Template(gm * brain, wm * brain, brain, np.asarray(affine, dtype=np.float64))


@functools.lru_cache(maxsize=32)
def smoothed_template(spacing: tuple[float, float, float]) -> Template:
    """The template low-pass filtered for sampling at ``spacing`` mm (anti-aliasing, sigma = 0.4 spacing)."""
    template = mni_template()
    sigma = [0.4 * s / abs(template.affine[i, i]) for i, s in enumerate(spacing)]
    gm, wm, brain = (ndi.gaussian_filter(m, sigma) for m in (template.gm, template.wm, template.brain))
    return Template(gm, wm, brain, template.affine)


def smooth_field(rng: np.random.Generator, shape: tuple[int, ...], cells: int) -> np.ndarray:
    """A smooth random field on ``shape``, zero mean and unit standard deviation (float32).

    Gaussian radial basis functions (width 0.7 knots) on a ``(cells + 2)^3`` lattice of normal
    weights spanning the volume, evaluated separably: ``f = sum_ijk c_ijk w_i(x) w_j(y) w_k(z)``.
    """
    knots = cells + 2
    coarse = rng.standard_normal((knots,) * 3)
    weights = []
    for n in shape:
        x = np.linspace(0.5, knots - 1.5, n)[:, None]
        w = np.exp(-((x - np.arange(knots)[None]) ** 2) / (2 * 0.7**2))
        weights.append(w / w.sum(axis=1, keepdims=True))
    field = np.tensordot(weights[0], coarse, axes=(1, 0))
    field = np.tensordot(field, weights[1], axes=(1, 1))
    field = np.tensordot(field, weights[2], axes=(1, 1)).astype(np.float32)
    field -= field.mean()
    return field / np.float32(field.std() + 1e-6)


def _rotation(rng: np.random.Generator, max_degrees: float | None = None) -> np.ndarray:
    """A random rotation: uniform (QR of a normal matrix) or small Euler angles up to ``max_degrees``."""
    if max_degrees is None:
        q, r = np.linalg.qr(rng.standard_normal((3, 3)))
        q = q * np.sign(np.diag(r))
        return q if np.linalg.det(q) > 0 else -q
    ax, ay, az = np.deg2rad(rng.uniform(-max_degrees, max_degrees, 3))
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def grid_affine(shape: tuple[int, int, int], spacing: tuple[float, float, float], centre: np.ndarray) -> np.ndarray:
    """RAS+ voxel-to-world affine: diagonal ``spacing``, grid centre at ``centre`` (mm)."""
    affine = np.diag([*spacing, 1.0])
    affine[:3, 3] = np.asarray(centre) - np.asarray(spacing) * (np.asarray(shape) - 1) / 2
    return affine


def world_coordinates(shape: tuple[int, int, int], affine: np.ndarray) -> np.ndarray:
    """World coordinates (mm) of every voxel, ``(3, X, Y, Z)`` float32 (axis-aligned affine)."""
    axes = [affine[i, 3] + affine[i, i] * np.arange(n, dtype=np.float32) for i, n in enumerate(shape)]
    return np.stack(np.meshgrid(*axes, indexing="ij")).astype(np.float32)


def subject_anatomy(
    rng: np.random.Generator, world: np.ndarray, inst: Institution, template: Template
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Tissue fractions ``(csf, gm, wm)``, the binary brain mask and the left/right MNI coordinate
    (``x_t``, mm; the midline is 0) of one subject on the output grid.

    Template coordinates: ``x_t = R^T (x - c - t) / s + c + d(x)`` with ``R`` a small rotation, ``s``
    the head scale, ``t`` a shift and ``d`` a smooth deformation (4 mm standard deviation).
    """
    shape = world.shape[1:]
    centre = template.centre.astype(np.float32)
    rotation = _rotation(rng, 4.0).astype(np.float32)
    scale = (inst.head_scale * rng.uniform(0.95, 1.05) * np.exp(rng.normal(0, 0.03, 3))).astype(np.float32)
    shift = rng.normal(0, 3.0, 3).astype(np.float32)
    moved = np.tensordot(rotation.T, world - (centre + shift)[:, None, None, None], axes=(1, 0))
    moved = moved / scale[:, None, None, None] + centre[:, None, None, None]
    moved += np.stack([4.0 * smooth_field(rng, shape, 4) for _ in range(3)])
    inverse = np.linalg.inv(template.affine).astype(np.float32)
    voxels = np.tensordot(inverse[:3, :3], moved, axes=(1, 0)) + inverse[:3, 3, None, None, None]
    sample = functools.partial(ndi.map_coordinates, coordinates=voxels, order=1, mode="constant", cval=0.0,
                               prefilter=False, output=np.float32)
    brain = sample(template.brain) > 0.5
    gm = np.clip(sample(template.gm), 0, 1) * brain
    wm = np.clip(sample(template.wm), 0, 1) * brain
    total = np.maximum(gm + wm, 1.0)
    gm, wm = gm / total, wm / total
    csf = np.clip(1.0 - gm - wm, 0, 1) * brain
    return csf, gm, wm, brain, moved[0]


def glioma(
    rng: np.random.Generator, world: np.ndarray, spacing: tuple[float, float, float],
    brain: np.ndarray, wm: np.ndarray, csf: np.ndarray, mni_x: np.ndarray, median_mm: float,
) -> np.ndarray:
    """BraTS label map (uint8: 0, 1 core, 2 oedema, 4 enhancing) of one glioma holding all three labels.

    Radius ``r`` (enhancing boundary) ~ lognormal(median, 0.3), at least 2.5 voxels; the centre lies
    in white matter at least ``0.8 r`` from the brain edge (or as deep as the brain allows); the
    lesion stays in the hemisphere of its centre (``mni_x`` sign: the falx stops it).
    """
    shape = brain.shape
    depth = ndi.distance_transform_edt(brain, sampling=spacing)
    floor = 2.5 * max(spacing)
    radius = float(np.clip(median_mm * np.exp(rng.normal(0, 0.3)), floor, max(floor, 0.25 * depth.max() * 2)))
    irregular = (smooth_field(rng, shape, 8), smooth_field(rng, shape, 6))
    for attempt in range(8):
        candidates = np.flatnonzero((brain & (wm > 0.4) & (depth > 0.8 * radius)).ravel())
        if candidates.size == 0:
            candidates = np.flatnonzero((depth >= depth.max() * 0.8).ravel())
        chosen = rng.choice(candidates)
        centre = world.reshape(3, -1)[:, chosen] + rng.uniform(-0.5, 0.5, 3) * np.asarray(spacing)
        inside = brain & ((mni_x >= 0) == (mni_x.ravel()[chosen] >= 0))
        core_rho = _ellipsoid_radius(rng, world, centre, radius) * (1 + 0.22 * irregular[0])
        oedema_rho = _ellipsoid_radius(rng, world, centre, radius) * (1 + 0.30 * irregular[1])
        seg = np.zeros(shape, np.uint8)
        seg[(oedema_rho < rng.uniform(1.3, 2.1)) & inside & (csf < 0.5)] = 2
        seg[(core_rho < 1.0) & inside] = 4
        seg[(core_rho < rng.uniform(0.35, 0.65)) & inside] = 1
        if all((seg == label).any() for label in (1, 2, 4)):
            return seg
        radius *= 1.25  # too small for the grid: grow and draw again
    raise RuntimeError(f"could not place a glioma with all three labels after {attempt + 1} attempts")


def _ellipsoid_radius(rng: np.random.Generator, world: np.ndarray, centre: np.ndarray, radius: float) -> np.ndarray:
    """Normalised radius ``|Q^T (x - c) / a|`` of a random ellipsoid (semi-axes ``a = r exp(N(0, 0.15))``)."""
    rotation = _rotation(rng).astype(np.float32)
    axes = (radius * np.exp(rng.normal(0, 0.15, 3))).astype(np.float32)
    local = np.tensordot(rotation.T, world - centre.astype(np.float32)[:, None, None, None], axes=(1, 0))
    return np.sqrt(np.sum((local / axes[:, None, None, None]) ** 2, axis=0))


def acquire(
    rng: np.random.Generator, inst: Institution, fractions: tuple[np.ndarray, np.ndarray, np.ndarray],
    brain: np.ndarray, seg: np.ndarray,
) -> dict[str, np.ndarray]:
    """The four contrasts (int16): tissue and lesion intensities, PSF blur, bias field, Rician noise,
    skull-stripped (0 outside the brain), scaled to the institution's gain."""
    shape = brain.shape
    bias = smooth_field(rng, shape, 2)
    texture = smooth_field(rng, shape, 10)
    sigma = [p / 2.355 / s for p, s in zip(inst.psf_mm, inst.spacing, strict=True)]
    lesions = {label: (seg == label).astype(np.float32) for label in (1, 2, 4)}
    tumour = sum(lesions.values())
    out = {}
    for contrast in CONTRASTS:
        tissue = sum(f * v for f, v in zip(fractions, inst.tissue[contrast], strict=True))
        lesion = sum(m * LESION[contrast][label] for label, m in lesions.items()) * (1 + 0.08 * texture)
        image = ndi.gaussian_filter(tissue * (1 - tumour) + lesion, sigma, mode="constant")
        image *= np.exp(inst.bias * rng.uniform(0.7, 1.3) * bias)
        noise = inst.noise * rng.standard_normal((2, *shape), dtype=np.float32)
        image = np.sqrt((image + noise[0]) ** 2 + noise[1] ** 2) * brain  # Rician magnitude, skull-stripped
        image *= inst.gain * inst.contrast_gain[contrast]
        out[contrast] = np.clip(np.rint(image), 0, np.iinfo(np.int16).max).astype(np.int16)
    return out


# ---------------------------------------------------------------------------- federation
def institution(seed: int, k: int, spec: ScaleSpec) -> Institution:
    """Draw the scanner/protocol/population parameters of institution ``k``."""
    rng = rng_for(seed, MODALITY, "institution", k)
    jitter = 1 + rng.uniform(0, spec.spacing_jitter, 3)
    sx, sy, sz = (float(np.round(s * j, 1)) for s, j in zip(spec.spacing, jitter, strict=True))
    tissue = {c: (float(csf), float(gm), float(wm))
              for c in CONTRASTS for csf, gm, wm in [np.asarray(TISSUE[c]) * rng.normal(1, 0.06, 3)]}
    return Institution(
        index=k,
        spacing=(sx, sy, sz),
        gain=float(np.exp(rng.normal(np.log(900), 0.5))),
        contrast_gain={c: float(rng.uniform(0.7, 1.4)) for c in CONTRASTS},
        tissue=tissue,
        bias=float(rng.uniform(0.05, 0.35)),
        noise=float(rng.uniform(0.01, 0.06)),
        psf_mm=PSF_PROFILES[int(rng.integers(len(PSF_PROFILES)))],
        tumour_mm=float(rng.uniform(10, 22)),
        head_scale=PAEDIATRIC_HEAD_SCALE if k == PAEDIATRIC_INSTITUTION else float(rng.uniform(0.97, 1.03)),
    )


def subject_ids(seed: int, total: int, naming: str) -> list[str]:
    """``total`` distinct ids (``BraTS2021_NNNNN`` or ``FeTS_NNNNNN``), numbered in a seeded random order."""
    numbers = rng_for(seed, MODALITY, "ids").permutation(total) + 1
    return [f"BraTS2021_{n:05d}" if naming == "brats" else f"FeTS_{n:06d}" for n in numbers]


def file_names(subject: str, naming: str) -> dict[str, str]:
    """File key (contrast or ``seg``) -> file name under the subject folder."""
    if naming == "brats":
        return {**{c: f"{subject}_{c}.nii.gz" for c in CONTRASTS}, "seg": f"{subject}_seg.nii.gz"}
    return {**{c: f"{subject}_brain_{c}.nii.gz" for c in CONTRASTS}, "seg": f"{subject}_final_seg.nii.gz"}


def save_nifti(path: Path, data: np.ndarray, affine: np.ndarray) -> None:
    """Write a NIfTI-1 with q/sform = ``affine`` (code 1), mm units and a fixed ``descrip`` (no timestamps)."""
    img = nib.Nifti1Image(data, affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    img.header.set_xyzt_units("mm", "sec")
    img.header["descrip"] = b"medfed synthetic brain MRI"
    img.to_filename(str(path))


def write_subject(
    folder: Path, subject: str, naming: str, enhancing_label: int, inst: Institution, shape: tuple[int, int, int],
    rng: np.random.Generator,
) -> None:
    """Simulate one subject and write its five files into ``folder``."""
    template = smoothed_template(inst.spacing)
    affine = grid_affine(shape, inst.spacing, template.centre)
    world = world_coordinates(shape, affine)
    csf, gm, wm, brain, mni_x = subject_anatomy(rng, world, inst, template)
    seg = glioma(rng, world, inst.spacing, brain, wm, csf, mni_x, inst.tumour_mm)
    images = acquire(rng, inst, (csf, gm, wm), brain, seg)
    if enhancing_label != 4:
        seg[seg == 4] = enhancing_label
    folder.mkdir(parents=True, exist_ok=True)
    names = file_names(subject, naming)
    for contrast, image in images.items():
        save_nifti(folder / names[contrast], image, affine)
    save_nifti(folder / names["seg"], seg, affine)


def partition_tables(members: list[list[str]], split_largest: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``partitioning_1`` (one partition per institution) and ``partitioning_2`` (the ``split_largest``
    largest institutions each split in two, alternately by sorted subject id), FeTS columns."""
    first = [(k + 1, s) for k, subjects in enumerate(members) for s in subjects]
    largest = set(sorted(range(len(members)), key=lambda k: (-len(members[k]), k))[:split_largest])
    second, pid = [], 0
    for k, subjects in enumerate(members):
        ordered = sorted(subjects)
        halves = [ordered[0::2], ordered[1::2]] if k in largest and len(ordered) > 1 else [ordered]
        for half in halves:
            pid += 1
            second += [(pid, s) for s in half]
    tables = [pd.DataFrame(rows, columns=["Partition_ID", "Subject_ID"]).sort_values(["Partition_ID", "Subject_ID"])
              for rows in (first, second)]
    return tables[0], tables[1]


def write_brain_mri(
    out: Path, scale: str = "demo", seed: int = 0, *, naming: str = "brats", enhancing_label: int = 4,
    partitioning: int = 1,
) -> Path:
    """Write the synthetic BraTS/FeTS federation under ``out/brain_mri/``; return ``out/sites/brain_mri.yaml``.

    ``naming``: ``"brats"`` or ``"fets2"`` file names; ``enhancing_label``: 4 (BraTS 2018-2022) or 3
    (BraTS 2023) for the enhancing tumour in the segmentation files; ``partitioning``: which partition
    CSV (1 or 2) the config uses. Any previous ``out/brain_mri`` is replaced (written beside it first).
    """
    check_scale(scale)
    if naming not in ("brats", "fets2"):
        raise ValueError(f"naming must be 'brats' or 'fets2', got {naming!r}")
    if enhancing_label not in (3, 4):
        raise ValueError(f"enhancing_label must be 4 or 3, got {enhancing_label!r}")
    if partitioning not in (1, 2):
        raise ValueError(f"partitioning must be 1 or 2, got {partitioning!r}")
    spec = SCALE_SPECS[scale]
    out = Path(out)
    ids = iter(subject_ids(seed, sum(spec.counts), naming))
    members = [[next(ids) for _ in range(n)] for n in spec.counts]
    with staged_directory(out, MODALITY) as staging:
        for k, subjects in enumerate(members):
            inst = institution(seed, k, spec)
            for i, subject in enumerate(subjects):
                write_subject(staging / subject, subject, naming, enhancing_label, inst, spec.shape,
                              rng_for(seed, MODALITY, "institution", k, "subject", i))
        for number, table in enumerate(partition_tables(members, spec.split_largest), start=1):
            atomic_write_text(staging / f"partitioning_{number}.csv", table.to_csv(index=False, lineterminator="\n"))
    config = {
        "name": f"{MODALITY}-{scale}",
        "adapter": "brats",
        "split": {"seed": seed, "val": spec.val, "test": spec.test},
        # synthetic subjects, no patient to protect: per-site metrics are shown from 2 test cases so the
        # tiny small-scale institutions have a row; real federations keep the default of 5
        "min_count": 5 if scale == "full" else 2,
        "sources": [{
            "root": f"../{MODALITY}", "partition_csv": f"partitioning_{partitioning}.csv", "name": "inst",
            "naming": naming, "enhancing_label": enhancing_label,
        }],
    }
    return write_federation_config(out, MODALITY, config)
