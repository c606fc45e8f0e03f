r"""Brain-MRI glioma sites in the BraTS / FeTS layout: one folder per subject, one NIfTI per contrast.

Layout below ``root`` (source option ``naming``; ``auto`` detects it per subject folder):

``brats``  (BraTS 2018-2021, FeTS 2021/2022 task 1)
    ``<ID>/<ID>_t1.nii.gz``, ``<ID>_t1ce.nii.gz``, ``<ID>_t2.nii.gz``, ``<ID>_flair.nii.gz``, ``<ID>_seg.nii.gz``
``fets2``  (FeTS task-2 naming)
    ``<ID>/<ID>_brain_t1.nii.gz``, ``<ID>_brain_t1ce.nii.gz``, ``<ID>_brain_t2.nii.gz``,
    ``<ID>_brain_flair.nii.gz``, ``<ID>_final_seg.nii.gz``

Uncompressed ``.nii`` is accepted where ``.nii.gz`` is absent. Nothing assumes the BraTS grid
(240x240x155 at 1 mm): every file of a subject must share one shape and one affine, and the subjects of
one site one shape (training batches them), unless ``spatial_size`` pads/crops them to one size.

Partitions (FeTS): a CSV with columns ``Partition_ID,Subject_ID`` (FeTS ships ``partitioning_1.csv``,
by institution, and ``partitioning_2.csv``, large institutions split further) maps subjects to
institutions; each partition becomes one site named ``<name>-<Partition_ID>`` (or ``site_names``).
Without a partition CSV the whole ``root`` is one site called ``name``.

Labels (BraTS convention; Menze et al., IEEE TMI 2015; Bakas et al., arXiv:1811.02629):
0 background, 1 necrotic / non-enhancing tumour core (NCR/NET), 2 peritumoural oedema (ED),
4 GD-enhancing tumour (ET). BraTS 2023 renumbered ET to 3: with ``enhancing_label: 3`` the files
must use {0, 1, 2, 3} and 3 is remapped to 4 on loading, so **inside medfed ET is always 4**.
The evaluation regions are TC = 1 + 4 (tumour core), WT = 1 + 2 + 4 (whole tumour), ET = 4.

Groups (the split unit): the subject. Longitudinal data sets hold several timepoints of one patient as
separate subject folders; ``group_pattern`` (a regular expression searched in the subject id, first
non-empty capture group = the key, e.g. ``^(.*)_tp\d+$`` for ``UCSF_0012_tp1``/``UCSF_0012_tp2``) keeps
them in one split and one site; a subject id it does not match is its own group.

Case table: ``case_id`` (hash of the subject id), ``group`` (keyed hash of the group key), no label columns (``label_kind = "segmentation"``,
so splits are unstratified), metadata ``institution`` (partition id, or ``name`` without a CSV),
``shape`` (e.g. ``"48x56x48"``) and ``spacing_mm`` (e.g. ``"4.0x4.0x4.0"``), both from the headers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import nibabel as nib
import numpy as np
import pandas as pd
import torch
from monai.transforms import (
    Compose,
    ConvertToMultiChannelBasedOnBratsClassesd,
    EnsureTyped,
    NormalizeIntensityd,
    ResizeWithPadOrCropd,
)
from pydantic import BaseModel, ConfigDict, Field, field_validator

from medfed.config import FederationConfig, resolve_path, validate_model
from medfed.errors import ConfigError, MedfedError, Problem, describe_path, warning
from medfed.sites.base import ReferenceCase, Site, finite_problems
from medfed.sites.brats_partitions import PARTITION_COLUMNS  # noqa: F401 - re-exported (tests, callers)
from medfed.sites.brats_partitions import find_partition_csv, partition_order, read_partitions, whole_groups
from medfed.sites.common import compile_group_pattern, group_key_from_path
from medfed.sites.nifti_io import (
    NiftiGeometry,
    UnreadableNifti,
    geometry_mismatch,
    grid_sizes_text,
    read_geometry,
    read_volume,
)
from medfed.sites.redact import CaseLoadError, error_text, path_variants

#: image channels, in the order of ``image`` returned by :meth:`BratsSite._load_case`
MODALITIES: tuple[str, ...] = ("t1", "t1ce", "t2", "flair")
#: every file of a subject: the four contrasts, then the segmentation
FILES: tuple[str, ...] = (*MODALITIES, "seg")
#: naming -> file key -> file name stem (``{id}`` is the subject folder name)
NAMINGS: dict[str, dict[str, str]] = {
    "brats": {**{m: f"{{id}}_{m}" for m in MODALITIES}, "seg": "{id}_seg"},
    "fets2": {**{m: f"{{id}}_brain_{m}" for m in MODALITIES}, "seg": "{id}_final_seg"},
}
SUFFIXES: tuple[str, ...] = (".nii.gz", ".nii")
#: the label medfed uses for the enhancing tumour (BraTS 2018-2022)
ET_LABEL = 4
#: regions of ``default_transform``'s label channels, in MONAI's order
REGIONS: tuple[str, ...] = ("TC", "WT", "ET")


class BratsSource(BaseModel):
    """One ``sources`` entry of a ``brats`` federation config: one site, or one site per partition."""

    model_config = ConfigDict(extra="forbid")
    root: str = Field(description="folder of subject folders; relative paths are relative to the config file")
    partition_csv: str | None = Field(
        None, description="FeTS partition CSV (Partition_ID,Subject_ID), relative to root or to the config folder"
    )
    name: str = Field("brats", min_length=1, description="site name without a partition CSV; site prefix with one")
    naming: Literal["auto", "brats", "fets2"] = "auto"
    enhancing_label: Literal[4, 3] = Field(4, description="ET label in the files: 4 (BraTS 2018-2022) or 3 (2023)")
    site_names: dict[str, str] = Field(default_factory=dict, description="Partition_ID -> site name")
    group_pattern: str | None = Field(
        None, description="regex with a capture group: subjects with the same key (timepoints) form one group"
    )
    spatial_size: list[int] | None = Field(
        None, min_length=3, max_length=3, description="default_transform pads/crops (centred) to this size"
    )

    @field_validator("site_names", mode="before")
    @classmethod
    def _keys_as_text(cls, value: Any) -> Any:
        """YAML reads ``1: upenn`` with an integer key; partition ids are compared as text."""
        return {str(k): v for k, v in value.items()} if isinstance(value, dict) else value

    @field_validator("name")
    @classmethod
    def _plain_name(cls, value: str) -> str:
        if "/" in value or "\\" in value or not value.strip():
            raise ValueError(f"must be non-empty and contain no path separator, got {value!r}")
        return value

    @field_validator("group_pattern")
    @classmethod
    def _pattern(cls, value: str | None) -> str | None:
        return compile_group_pattern(value)

    @field_validator("spatial_size")
    @classmethod
    def _positive(cls, value: list[int] | None) -> list[int] | None:
        if value is not None and min(value) < 1:
            raise ValueError(f"sizes must be positive, got {value}")
        return value

    def allowed_labels(self) -> tuple[int, ...]:
        """Label values the segmentation files may hold."""
        return (0, 1, 2, self.enhancing_label)


class BratsSite(Site):
    """One institution (partition) of a BraTS/FeTS data set; see the module docstring."""

    modality = "brain_mri"
    label_kind = "segmentation"
    label_columns: list[str] = []
    metadata_columns = ["institution", "shape", "spacing_mm"]
    group_unit = "subject"
    file_roles = FILES

    def __init__(
        self, name: str, root: Path, subjects: Sequence[str], options: BratsSource, institution: str, **kwargs: Any
    ) -> None:
        self.root = Path(root).resolve()
        self.subjects = list(subjects)
        self.options = options
        self.institution = institution
        super().__init__(name, **kwargs)

    # ------------------------------------------------------------------ indexing
    def _index(self) -> tuple[pd.DataFrame, list[Problem]]:
        problems: list[Problem] = []
        rows = [row for s in self.subjects if (row := self._subject_row(s, problems)) is not None]
        sizes = grid_sizes_text({r["case_id"]: r["shape"] for r in rows}, "subject")
        if sizes is not None and self.options.spatial_size is None:  # default_transform cannot batch them
            problems.append(self.problem(f"subjects come in {sizes}; training batches need one size: resample the "
                                         "volumes to one grid, or set spatial_size in this source to pad/crop them"))
        columns = ["case_id", "group", *self.metadata_columns, "_source_id", "_naming", *(f"_{k}" for k in FILES)]
        return pd.DataFrame(rows, columns=columns), problems

    def _subject_row(self, subject: str, problems: list[Problem]) -> dict[str, Any] | None:
        """One case row from a subject folder's headers, or ``None`` (problems appended) when it is unusable."""
        case_id = self.hash_id(subject)
        folder = self.root / subject
        if not folder.is_dir():
            problems.append(self.problem("subject folder not found; excluded", case_id, subject))
            return None
        naming = self.options.naming if self.options.naming != "auto" else detect_naming(folder, subject)
        paths = subject_files(folder, subject, naming)
        found = True
        for key, path in paths.items():
            if not path.is_file():
                problems.append(self.problem(
                    f"missing {key} file (naming {naming!r}); case excluded", case_id, self._rel(path)))
                found = False
        if not found:
            return None
        geometries: dict[str, NiftiGeometry] = {}
        for key, path in paths.items():
            try:
                geometries[key] = read_geometry(path)
            except UnreadableNifti as err:
                problems.append(self.problem(f"unreadable NIfTI header: {err}; case excluded", case_id,
                                             self._rel(path)))
        geometry_problems = self._geometry_problems(geometries, paths, case_id)
        problems.extend(self.problem(f"{p.reason}; case excluded", p.case, p.file) for p in geometry_problems)
        if len(geometries) < len(paths) or geometry_problems:
            return None
        reference = geometries["t1"]
        return {
            "case_id": case_id, "group": self.hash_group(subject_group(subject, self.options.group_pattern)),
            "institution": self.institution, "shape": reference.shape_text,
            "spacing_mm": reference.spacing_text, "_source_id": subject, "_naming": naming,
            **{f"_{k}": str(p) for k, p in paths.items()},
        }

    def _geometry_problems(
        self, geometries: dict[str, NiftiGeometry], paths: dict[str, Path], case_id: str
    ) -> list[Problem]:
        """3-D check of every file, then shape/affine of every file against the first readable 3-D one."""
        problems = []
        three_d = {}
        for key, geometry in geometries.items():
            if len(geometry.shape) != 3:
                problems.append(self.problem(f"expected a 3-D volume, got shape {geometry.shape_text}", case_id,
                                             self._rel(paths[key])))
            else:
                three_d[key] = geometry
        if three_d:
            ref_key, reference = next(iter(three_d.items()))
            for key, geometry in three_d.items():
                reason = geometry_mismatch(geometry, reference, f"the {ref_key} file")
                if reason is not None:
                    problems.append(self.problem(reason, case_id, self._rel(paths[key])))
        return problems

    # ------------------------------------------------------------------ full check
    def _check_case(self, case: pd.Series) -> list[Problem]:
        """Read all five files fully: readable, 3-D, one grid, finite, non-blank images, valid label values."""
        case_id = case["case_id"]
        problems: list[Problem] = []
        geometries: dict[str, NiftiGeometry] = {}
        paths = {k: Path(case[f"_{k}"]) for k in FILES}
        for key, path in paths.items():
            rel = self._rel(path)
            try:
                data, geometries[key] = read_volume(path)
            except UnreadableNifti as err:
                problems.append(self.problem(f"unreadable NIfTI: {err}", case_id, rel))
                continue
            if data.ndim != 3:
                continue  # reported by _geometry_problems
            if key == "seg":
                problems.extend(self._label_problems(data, case_id, rel))
            else:
                problems.extend(finite_problems(self, data, case_id, rel))
            if key == "t1":  # duplicate detection: digest of the volume, perceptual hash of its middle slice
                self.record_pixels(case, data, preview=data[:, :, data.shape[2] // 2])
        problems.extend(self._geometry_problems(geometries, paths, case_id))
        return problems

    def _label_problems(self, seg: np.ndarray, case_id: str, rel: str) -> list[Problem]:
        """NaN/inf, non-integer values and values outside :meth:`BratsSource.allowed_labels`, each listed."""
        problems = []
        finite = np.isfinite(seg)
        if not finite.all():
            problems.append(self.problem(f"{int((~finite).sum())} NaN/inf label value(s)", case_id, rel))
        values = np.unique(seg[finite])
        fractional = values[values != np.round(values)]
        if fractional.size:
            problems.append(self.problem(f"non-integer label value(s) {_listing(fractional)}", case_id, rel))
        allowed = self.options.allowed_labels()
        unexpected = np.setdiff1d(values[values == np.round(values)], allowed)
        if unexpected.size:
            problems.append(self.problem(
                f"unexpected label value(s) {_listing(unexpected)} (allowed {', '.join(map(str, allowed))}: "
                f"BraTS convention with enhancing_label {self.options.enhancing_label})", case_id, rel))
        return problems

    # ------------------------------------------------------------------ loading
    def _load_case(self, case: pd.Series) -> dict[str, Any]:
        """``image`` float32 ``(4, X, Y, Z)`` (t1, t1ce, t2, flair); ``label`` uint8 ``(1, X, Y, Z)``, ET = 4;
        ``spacing`` voxel size in mm (three floats)."""
        volumes = {}
        for key in FILES:  # an error names the file's role, never its path (it may leave the site)
            try:
                volumes[key] = read_volume(case[f"_{key}"])
            except UnreadableNifti as err:
                raise CaseLoadError(key, str(err)) from None
            except Exception as err:  # noqa: BLE001 - any other reader failure is this file's load error too
                raise CaseLoadError(key, error_text(err, path_variants(case[f"_{key}"]))) from None
        seg, geometry = volumes["seg"]
        return {
            "image": np.stack([volumes[m][0] for m in MODALITIES]).astype(np.float32, copy=False),
            "label": self._label_map(seg)[None],
            "spacing": tuple(round(z, 6) for z in geometry.zooms[:3]),  # header zooms are float32
        }

    def reference_cases(self, split: str | Sequence[str] = "test") -> Iterator[ReferenceCase]:
        """Each case's segmentation (``ET = 4``), voxel size and affine, read one at a time (see
        :class:`~medfed.sites.base.ReferenceCase`); ``split="all"`` gives every case."""
        for _, case in self._split_rows(split).iterrows():
            try:
                seg, geometry = read_volume(case["_seg"])
            except UnreadableNifti as err:
                raise MedfedError(f"site {self.name}, case {case['case_id']}: unreadable segmentation ({err}); "
                                  f"run `medfed validate`") from None
            yield ReferenceCase(case["case_id"], str(case["_source_id"]), self._label_map(seg),
                                tuple(round(z, 6) for z in geometry.zooms[:3]), geometry.affine)

    def _label_map(self, seg: np.ndarray) -> np.ndarray:
        """uint8 labels with ET = 4 whatever the source's ``enhancing_label``."""
        label = np.rint(np.nan_to_num(seg)).astype(np.uint8)
        if self.options.enhancing_label != ET_LABEL:
            label[label == self.options.enhancing_label] = ET_LABEL
        return label

    def write_label_map(self, case_id: str, label: np.ndarray, folder: Path) -> Path:
        """``<folder>/<ID>_seg.nii.gz`` (uint8, ET = 4, on the case's grid and affine): a BraTS submission file."""
        rows = self._table[self._table["case_id"] == case_id]
        if rows.empty:
            raise MedfedError(f"site {self.name}: no case {case_id}")
        case = rows.iloc[0]
        geometry = read_geometry(case["_seg"])
        if tuple(label.shape) != geometry.shape:
            raise MedfedError(f"site {self.name}, case {case_id}: label map shape {label.shape} differs from the "
                              f"case's {geometry.shape_text}")
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{case['_source_id']}_seg.nii.gz"
        image = nib.Nifti1Image(np.asarray(label, dtype=np.uint8), geometry.affine)
        image.header.set_zooms(geometry.zooms[:3])
        nib.save(image, path)
        return path

    def default_transform(self, split: str) -> Callable[[dict[str, Any]], dict[str, Any]]:
        """Same for every split: optional centred pad/crop to ``spatial_size``; the label as BraTS regions
        ``[TC, WT, ET]`` (MONAI ``ConvertToMultiChannelBasedOnBratsClassesd``: TC = 1|4, WT = 1|2|4,
        ET = 4, in that channel order); z-score of each channel over its nonzero (brain) voxels; float32
        tensors."""
        steps: list[Callable[..., Any]] = []
        if self.options.spatial_size is not None:
            steps.append(ResizeWithPadOrCropd(keys=("image", "label"), spatial_size=self.options.spatial_size))
        steps += [
            ConvertToMultiChannelBasedOnBratsClassesd(keys="label", et_label=ET_LABEL),
            NormalizeIntensityd(keys="image", nonzero=True, channel_wise=True),
            EnsureTyped(keys=("image", "label"), dtype=torch.float32, track_meta=False),
        ]
        return Compose(steps)

    def _rel(self, path: Path | str) -> str:
        return describe_path(path, self.root).replace("\\", "/")


# ---------------------------------------------------------------------------- layout helpers
def subject_group(subject: str, pattern: str | None) -> str:
    """The group key of a subject id: ``pattern``'s first capture group, or the subject itself."""
    return (group_key_from_path(subject, pattern) if pattern else None) or subject


def detect_naming(folder: Path, subject: str) -> str:
    """``"fets2"`` when the folder holds any FeTS task-2 file of ``subject``, else ``"brats"``."""
    for stem in NAMINGS["fets2"].values():
        if any((folder / (stem.format(id=subject) + s)).is_file() for s in SUFFIXES):
            return "fets2"
    return "brats"


def subject_files(folder: Path, subject: str, naming: str) -> dict[str, Path]:
    """File key -> path (``.nii.gz`` unless only ``.nii`` exists; the ``.nii.gz`` path when neither does)."""
    paths = {}
    for key, stem in NAMINGS[naming].items():
        candidates = [folder / (stem.format(id=subject) + s) for s in SUFFIXES]
        paths[key] = next((p for p in candidates if p.is_file()), candidates[0])
    return paths


def subject_folders(root: Path) -> list[str]:
    """Names of the sub-folders of ``root`` (one per subject), hidden ones skipped, sorted."""
    return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def _listing(values: np.ndarray, limit: int = 10) -> str:
    shown = ", ".join(f"{v:g}" for v in values[:limit])
    return shown + (f", ... ({values.size} values)" if values.size > limit else "")


# ---------------------------------------------------------------------------- federation
def source_sites(
    options: BratsSource, config: FederationConfig, config_dir: Path
) -> tuple[list[Site], list[Problem]]:
    """The sites of one source: one per partition, or one for the whole root without a partition CSV."""
    root = resolve_path(options.root, config_dir)
    kwargs: dict[str, Any] = {"federation": config.name, "split": config.split, "salt": config.id_salt,
                              "min_count": config.min_count}
    if not root.is_dir():
        return [], [Problem(site=options.name, reason="data folder (root) not found; no site formed", file=str(root))]
    folders = subject_folders(root)
    if options.partition_csv is None:
        return [BratsSite(options.name, root, folders, options, institution=options.name, **kwargs)], []

    def site_of(pid: str) -> str:
        return options.site_names.get(pid, f"{options.name}-{pid}")

    csv_path = find_partition_csv(options.partition_csv, root, config_dir)
    partitions, problems = read_partitions(csv_path, folders, root, options.name, site_of)
    if options.group_pattern is not None:
        partitions = whole_groups(partitions, problems, lambda s: subject_group(s, options.group_pattern), site_of)
    unknown = sorted(set(options.site_names) - set(partitions), key=partition_order)
    if unknown and partitions:
        problems.append(Problem(site=options.name, file=describe_path(csv_path, root), reason=(
            f"site_names names partition(s) {', '.join(unknown)}, which the partition CSV does not list")))
    sites: list[Site] = [
        BratsSite(site_of(pid), root, members, options, institution=pid, **kwargs)
        for pid, members in partitions.items()
    ]
    return sites, problems


def build_sites(config: FederationConfig, config_dir: Path, source: str) -> tuple[list[Site], list[Problem]]:
    """Every site of every ``sources`` entry (options: :class:`BratsSource`) and the partition problems."""
    options = [validate_model(BratsSource, raw, source, prefix=f"sources.{i}.") for i, raw in enumerate(config.sources)]
    sites: list[Site] = []
    problems: list[Problem] = []
    for option in options:
        found, trouble = source_sites(option, config, config_dir)
        sites += found
        problems += trouble
    names = [s.name for s in sites]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigError(f"{source}: sources.*.name / site_names: site name(s) {', '.join(duplicates)} "
                          f"used more than once")
    return sites, problems + _pooled_grid_problems(sites)


def _pooled_grid_problems(sites: Sequence[Site]) -> list[Problem]:
    """A warning when the sites, each of one grid size, differ from one another without ``spatial_size``:
    federated methods train site by site and are fine, but a pooled method (``centralised``) batches cases of
    all sites together and would fail in every round."""
    grids = {}
    for site in sites:
        if not isinstance(site, BratsSite) or site.options.spatial_size is not None or not len(site.cases):
            continue
        shapes = set(site.cases["shape"])
        if len(shapes) == 1:  # a site with several is already an error of its own
            grids[site.name] = shapes.pop()
    if len(set(grids.values())) < 2:
        return []
    listing = ", ".join(f"{name} {shape}" for name, shape in grids.items())
    return [warning("federation", f"sites come in {len(set(grids.values()))} grid sizes ({listing}); a pooled "
                                  "method (centralised) batches all sites' cases together and needs one size: set "
                                  "spatial_size in the sources, or resample the volumes to one grid")]
