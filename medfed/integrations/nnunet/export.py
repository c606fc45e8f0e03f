"""A segmentation federation in nnU-Net v2's raw format (``medfed nnunet export``), written at the site.

Layout (nnU-Net v2 ``documentation/dataset_format.md``), one dataset for all sites pooled or one per site::

    Dataset<ID>_<NAME>/
        dataset.json                 channel_names, BraTS region labels, regions_class_order, numTraining
        imagesTr/<case>_0000.nii.gz  T1   (_0001 T1ce, _0002 T2, _0003 FLAIR: the order of channel_names)
        labelsTr/<case>.nii.gz       0 background, 1 edema, 2 necrosis / non-enhancing core, 3 enhancing
        imagesTs/<case>_000X.nii.gz  the sites' test cases (to predict, then score with ``medfed score``)
        splits_final.json            fold 0 = medfed's train / val split (nnU-Net copies it when planning)

``<case>`` is the site's hashed case id (never a subject id or file name). Labels follow nnU-Net's BraTS
conversion (Isensee et al., "nnU-Net for Brain Tumor Segmentation", BrainLes 2020; nnU-Net's
Dataset137_BraTS2021 script): BraTS 2 (edema) -> 1, 1 (necrosis) -> 2, 4 (enhancing) -> 3, so that the
regions are nested label sets: whole tumour [1, 2, 3], tumour core [2, 3], enhancing tumour [3], and
``regions_class_order`` [1, 2, 3] turns predicted regions back into one label map. Images are written as
the site reads them (float32, the case's own affine): nnU-Net normalises them itself.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from tqdm.auto import tqdm

from medfed.io import atomic_write_text
from medfed.errors import ConfigError, DataProblems, MedfedError, errors_only
from medfed.sites.base import Site

#: nnU-Net channel names in medfed's BraTS channel order (``medfed.sites.brats.MODALITIES``)
CHANNEL_NAMES = {"0": "T1", "1": "T1ce", "2": "T2", "3": "FLAIR"}
#: nested BraTS regions as nnU-Net label sets (region-based training, sigmoid outputs)
REGION_LABELS: dict[str, int | list[int]] = {
    "background": 0, "whole tumor": [1, 2, 3], "tumor core": [2, 3], "enhancing tumor": [3],
}
REGIONS_CLASS_ORDER = [1, 2, 3]
#: BraTS label (ET = 4) -> nnU-Net label, and back
BRATS_TO_NNUNET = {0: 0, 1: 2, 2: 1, 4: 3}
NNUNET_TO_BRATS = {v: k for k, v in BRATS_TO_NNUNET.items()}
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")


def brats_to_nnunet(label: np.ndarray) -> np.ndarray:
    """BraTS labels (0, 1 necrosis, 2 edema, 4 enhancing) -> nnU-Net's (0, 1 edema, 2 necrosis, 3 enhancing)."""
    return _relabel(label, BRATS_TO_NNUNET, "BraTS")


def nnunet_to_brats(label: np.ndarray) -> np.ndarray:
    """The inverse of :func:`brats_to_nnunet` (a predicted nnU-Net label map -> a BraTS submission)."""
    return _relabel(label, NNUNET_TO_BRATS, "nnU-Net")


def _relabel(label: np.ndarray, mapping: dict[int, int], convention: str) -> np.ndarray:
    values = np.unique(label)
    unknown = sorted(int(v) for v in values if int(v) not in mapping or v != int(v))
    if unknown:
        raise ValueError(f"labels {unknown} are not {convention} labels {sorted(mapping)}")
    lookup = np.zeros(max(mapping) + 1, dtype=np.uint8)
    for source, target in mapping.items():
        lookup[source] = target
    return lookup[np.asarray(label, dtype=np.int64)]


def dataset_folder_name(dataset_id: int, name: str) -> str:
    """``Dataset<ID:03d>_<NAME>`` (nnU-Net's naming; ids 1-999)."""
    return f"Dataset{dataset_id:03d}_{name}"


def check_request(dataset_id: int, name: str, sites: Sequence[Site], per_site: bool) -> None:
    """Every problem with an export request at once (a :class:`ConfigError`)."""
    problems = []
    last = dataset_id + (len(sites) - 1 if per_site else 0)
    if dataset_id < 1 or last > 999:
        problems.append(f"dataset ids {dataset_id}..{last} are outside nnU-Net's 1-999")
    if not _NAME.fullmatch(name):
        problems.append(f"dataset name {name!r}: use letters, digits, '_' and '-'")
    for site in sites:
        if site.label_kind != "segmentation":
            problems.append(f"site {site.name}: {site.modality} site with image labels; nnU-Net export needs "
                            "segmentation sites (BraTS/FeTS layout)")
        elif len(site.split(["train", "val"])) == 0:
            problems.append(f"site {site.name}: no training case")
    if problems:
        raise ConfigError("nnunet export: " + "; ".join(problems))


def raw_cases(site: Site, split: str | Sequence[str]) -> Iterable[dict[str, Any]]:
    """The site's cases of ``split`` as read from disk (``image`` (4, X, Y, Z) float32, ``label`` (1, X, Y, Z)
    with ET = 4, ``spacing``, ``case_id``) with each case's ``affine``; nothing is normalised or resized."""
    affines = {ref.case_id: ref.affine for ref in site.reference_cases(split)}
    for item in site.dataset(split, transform=_as_read):
        yield {**item, "affine": affines[item["case_id"]]}


def _as_read(item: dict[str, Any]) -> dict[str, Any]:
    return item


@dataclass(frozen=True)
class ExportedDataset:
    """One written nnU-Net raw dataset."""

    folder: Path
    dataset_id: int
    sites: tuple[str, ...]
    training: int
    test: int


def _save(array: np.ndarray, affine: np.ndarray, spacing: Sequence[float], path: Path) -> None:
    image = nib.Nifti1Image(array, affine)
    image.header.set_zooms(tuple(float(s) for s in spacing))
    nib.save(image, path)


def _write_case(item: dict[str, Any], folder: Path, images: str, labels: str | None) -> None:
    case, affine, spacing = item["case_id"], item["affine"], item["spacing"]
    image = np.asarray(item["image"], dtype=np.float32)
    for channel in range(image.shape[0]):
        _save(image[channel], affine, spacing, folder / images / f"{case}_{channel:04d}.nii.gz")
    if labels is not None:
        label = np.asarray(item["label"])[0]
        _save(brats_to_nnunet(label), affine, spacing, folder / labels / f"{case}.nii.gz")


def dataset_json(training: int, name: str) -> dict[str, Any]:
    """nnU-Net v2 ``dataset.json`` for BraTS regions."""
    return {
        "name": name,
        "description": "written by medfed nnunet export; case ids are medfed's hashed ids",
        "channel_names": dict(CHANNEL_NAMES),
        "labels": {k: (list(v) if isinstance(v, list) else v) for k, v in REGION_LABELS.items()},
        "regions_class_order": list(REGIONS_CLASS_ORDER),
        "numTraining": training,
        "file_ending": ".nii.gz",
    }


def write_dataset(sites: Sequence[Site], out: Path, dataset_id: int, name: str, progress: bool = True
                  ) -> ExportedDataset:
    """Write one nnU-Net raw dataset holding every case of ``sites`` (train + val -> imagesTr/labelsTr, test ->
    imagesTs); returns what was written. The sites must have been validated."""
    folder = out / dataset_folder_name(dataset_id, name)
    if folder.exists() and any(folder.iterdir()):
        raise ConfigError(f"nnunet export: {folder} exists and is not empty; choose another --out or dataset id")
    for sub in ("imagesTr", "labelsTr", "imagesTs"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    train_ids: list[str] = []
    val_ids: list[str] = []
    test = 0
    total = sum(len(s.cases) for s in sites)
    with tqdm(total=total, desc=f"nnU-Net export {folder.name}", unit="case", disable=None if progress else True,
              leave=False) as bar:
        for site in sites:
            split_of = dict(zip(site.cases["case_id"], site.cases["split"], strict=True))
            for item in raw_cases(site, ["train", "val"]):
                try:
                    _write_case(item, folder, "imagesTr", "labelsTr")
                except ValueError as err:  # a label value the site's validation let through
                    raise MedfedError(f"nnunet export: site {site.name}, case {item['case_id']}: {err}") from None
                (val_ids if split_of[item["case_id"]] == "val" else train_ids).append(item["case_id"])
                bar.update()
            for item in raw_cases(site, "test"):
                _write_case(item, folder, "imagesTs", None)
                test += 1
                bar.update()
    training = len(train_ids) + len(val_ids)
    atomic_write_text(folder / "dataset.json", json.dumps(dataset_json(training, name), indent=2) + "\n")
    if val_ids:  # fold 0 = medfed's split; nnU-Net's own 5-fold split is used when this file is absent
        splits = [{"train": sorted(train_ids), "val": sorted(val_ids)}]
        atomic_write_text(folder / "splits_final.json", json.dumps(splits, indent=2) + "\n")
    return ExportedDataset(folder, dataset_id, tuple(s.name for s in sites), training, test)


def export_federation(sites: Sequence[Site], out: Path | str, dataset_id: int, name: str, *, per_site: bool = False,
                      progress: bool = True) -> list[ExportedDataset]:
    """Validate every site (all problems at once), then write one pooled dataset, or with ``per_site`` one
    dataset per site (ids ``dataset_id``, ``dataset_id + 1``, ...; names ``<NAME>_<site>``)."""
    check_request(dataset_id, name, sites, per_site)
    problems = errors_only([p for site in sites for p in site.validate(progress=progress)])
    if problems:
        raise DataProblems(problems)
    out = Path(out)
    targets = ([(dataset_id + i, f"{name}_{_plain(site.name)}", [site]) for i, site in enumerate(sites)] if per_site
               else [(dataset_id, name, list(sites))])
    clashes = []
    for target_id, target_name, _ in targets:  # nnU-Net needs one folder per id in its raw folder
        wanted = dataset_folder_name(target_id, target_name)
        for existing in sorted(out.glob(f"Dataset{target_id:03d}_*")):
            if existing.name != wanted or any(existing.iterdir()):
                clashes.append(str(existing))
    if clashes:
        raise ConfigError(f"nnunet export: {', '.join(clashes)} already hold these dataset ids; choose other ids "
                          "(--dataset-id) or another --out. Nothing was written")
    return [write_dataset(target_sites, out, target_id, target_name, progress)
            for target_id, target_name, target_sites in targets]


def _plain(site_name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "-", site_name)
