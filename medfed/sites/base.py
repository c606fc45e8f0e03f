"""The `Site`: one hospital's data behind one adapter.

A site indexes its source once (cheap: folder listings and tables), keeps a *private* case table
(file paths, source ids: columns whose names start with ``_``), and exposes only the *public* case
table (hashed ``case_id``, ``site``, ``group``, ``split``, labels, binned metadata). Pixels leave a site
only as tensors from :meth:`Site.dataset`, i.e. inside the site's own training.

``group`` is the split unit (patient, study, stone or subject; :attr:`Site.group_unit`) as a keyed hash
(:meth:`Site.hash_group`). Splits move whole groups (:func:`~medfed.sites.splits.assign_splits`). An
adapter leaves ``group`` empty where a case has no key; such a case is its own group, and
:attr:`Site.split_unit` then says ``"image"`` (no key at all) or counts the cases without one.

Subclasses implement three methods:

``_index()``
    scan the source; return ``(table, problems)``. One row per usable case with ``case_id`` (from
    :meth:`Site.hash_id`), ``group`` (from :meth:`Site.hash_group`, or empty/absent where the case has no
    group key), the label columns, metadata columns and private ``_``-columns. Defects
    found while indexing are returned as :class:`~medfed.errors.Problem` records, never raised.
``_check_case(case)``
    read every file of one case fully and return its problems (corrupt file, NaN, shape mismatch,
    unknown labels, ...). Used by :meth:`validate`.
``_load_case(case)``
    return the case as numpy arrays: ``{"image": float32 channel-first, "label": ...}``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from medfed.config import SplitConfig
from medfed.errors import ConfigError, MedfedError, Problem, warning
from medfed.sites.identity import hash_case_id
from medfed.sites.redact import error_text, path_variants
from medfed.sites.splits import SPLITS, assign_splits, straddling_groups
from medfed.stats import suppress_count
from medfed.stats.disclosure import protect_summary

if TYPE_CHECKING:
    from medfed.sites.datasets import SiteDataset

PUBLIC_FIXED_COLUMNS = ("case_id", "site", "group", "split")
#: the split unit of a site none of whose cases has a group key
IMAGE_UNIT = "image"


@dataclass(frozen=True)
class ReferenceCase:
    """One case's ground truth as a site holds it for scoring a submission *at the site*.

    ``source_id`` (the subject / file id a submission names its prediction after) and ``label`` never
    leave the site: scoring code turns them into per-case metric records under the hashed ``case_id``.
    ``label`` is the label map (``ET = 4`` for BraTS); ``spacing`` the voxel size in mm; ``affine`` the
    voxel-to-world matrix of the label file (``None`` where the format has none).
    """

    case_id: str
    source_id: str
    label: np.ndarray
    spacing: tuple[float, ...]
    affine: np.ndarray | None = None


class Site(ABC):
    """One hospital (or one partition of a data set): its cases, splits and datasets."""

    #: ``"brain_mri"``, ``"chest_xray"`` or ``"ureteroscopy"``.
    modality: ClassVar[str]
    #: ``"segmentation"`` or ``"classification"``: what the labels support.
    label_kind: ClassVar[str]
    #: what a ``group`` key names at this site (``"patient"``, ``"study"``, ``"stone"``, ``"subject"``)
    group_unit: str = "patient"
    #: the roles of a case's files in load errors (one file per case: ``("image",)``)
    file_roles: tuple[str, ...] = ("image",)

    def __init__(
        self,
        name: str,
        *,
        federation: str = "",
        split: SplitConfig | None = None,
        salt: str = "",
        min_count: int = 5,
    ) -> None:
        self.name = name
        self.federation = federation
        self.split_config = split or SplitConfig()
        self.min_count = min_count
        self._salt = salt
        self._item_cache: dict[tuple[str, str], dict[str, Any]] = {}  # (split, case id) -> default-transformed item
        self._item_cache_bytes = 0
        self._fingerprints: list[Any] = []  # pixel fingerprints of the last validate() (duplicate detection)
        self._pixel_hashes: list[tuple[str, str, int, int]] = []  # (case, digest, phash, fine) during validate()
        table, problems = self._index()
        self._problems: list[Problem] = list(problems)
        self._table = self._finalise(table)

    # ----------------------------------------------------------------- subclass contract
    #: label columns of the public table (set by subclasses, may depend on options)
    label_columns: list[str] = []
    #: metadata columns of the public table (binned, non-identifying)
    metadata_columns: list[str] = []

    @property
    def primary_label(self) -> str | None:
        """The label used for stratified splits (first label column by default)."""
        return self.label_columns[0] if self.label_columns else None

    @abstractmethod
    def _index(self) -> tuple[pd.DataFrame, list[Problem]]: ...

    @abstractmethod
    def _check_case(self, case: pd.Series) -> list[Problem]: ...

    @abstractmethod
    def _load_case(self, case: pd.Series) -> dict[str, Any]: ...

    def default_transform(self, split: str) -> Callable[[dict[str, Any]], dict[str, Any]] | None:
        """MONAI transforms applied after loading; ``None`` leaves numpy arrays as loaded."""
        return None

    # ----------------------------------------------------------------- helpers for subclasses
    def hash_id(self, source_id: str) -> str:
        """Hashed case id for a source id (see :func:`medfed.sites.identity.hash_case_id`)."""
        return hash_case_id(source_id, self.name, self._salt)

    def hash_group(self, key: str) -> str:
        """Keyed hash of a group key (patient id, study uid, stone id): the raw key never leaves the adapter."""
        return hash_case_id(f"group|{key}", self.name, self._salt)

    def problem(self, reason: str, case: str | None = None, file: str | None = None) -> Problem:
        """A :class:`Problem` located at this site."""
        return Problem(site=self.name, reason=reason, case=case, file=file)

    def warning(self, reason: str, case: str | None = None, file: str | None = None) -> Problem:
        """A warning (severity ``"warning"``) located at this site."""
        return warning(self.name, reason, case, file)

    def record_pixels(self, case: pd.Series, pixels: np.ndarray, preview: np.ndarray | None = None) -> None:
        """Keep a fingerprint of a case's decoded pixels during :meth:`validate` for the duplicate checks of
        :func:`medfed.sites.leakage.duplicate_problems`: the exact digest of ``pixels`` and the perceptual hash of
        ``preview`` (a 2-D view of a volume; default ``pixels``). Called by ``_check_case``; :meth:`validate`
        adds each case's file and split afterwards."""
        from medfed.sites.duplicates import fast_perceptual_hashes, pixel_digest

        coarse, fine = fast_perceptual_hashes(pixels if preview is None else preview)
        self._pixel_hashes.append((str(case["case_id"]), pixel_digest(pixels), coarse, fine))

    def private_texts(self, row: Mapping[str, Any] | None = None) -> list[str]:
        """What must never appear in a message leaving the site: the data folder(s) and, for ``row``, its
        source id and every path of its private columns (each as :func:`path_variants`)."""
        texts: list[str] = []
        for root in self._roots():
            texts += path_variants(root, name=False)
        for key, value in (row or {}).items():
            if not str(key).startswith("_") or not isinstance(value, str):
                continue
            if "/" in value or "\\" in value:
                texts += path_variants(value)
            if key == "_source_id":
                texts.append(value)
        return texts

    def _roots(self) -> list[Path]:
        """The data folder of this site (``root``) and of the sites it wraps (``source``, ``sources``)."""
        roots = [Path(root)] if isinstance(root := getattr(self, "root", None), str | Path) else []
        for other in [*getattr(self, "sources", []), getattr(self, "source", None)]:
            if isinstance(other, Site):
                roots += other._roots()
        return roots

    # ----------------------------------------------------------------- public API
    @property
    def cases(self) -> pd.DataFrame:
        """The public case table: no file paths, no source identifiers."""
        public = [c for c in self._table.columns if not str(c).startswith("_")]
        return self._table[public].copy()

    @property
    def index_problems(self) -> list[Problem]:
        """Problems found while indexing the source (cheap checks)."""
        return list(self._problems)

    def __len__(self) -> int:
        return len(self._table)

    @property
    def cases_without_group(self) -> int:
        """Cases whose source gave no group key (each is its own group)."""
        return int(self._table["_no_group"].sum()) if "_no_group" in self._table else 0

    @property
    def split_unit(self) -> str:
        """What one group is: :attr:`group_unit`, or ``"image"`` when no case has a group key."""
        if len(self._table) and self.cases_without_group == len(self._table):
            return IMAGE_UNIT
        return self.group_unit

    @property
    def fingerprints(self) -> list[Any]:
        """Pixel fingerprints recorded by the last :meth:`validate` (empty before)."""
        return list(self._fingerprints)

    def __repr__(self) -> str:
        counts = self._table["split"].value_counts().to_dict() if len(self._table) else {}
        return f"{type(self).__name__}(name={self.name!r}, cases={len(self)}, splits={counts})"

    def split(self, name: str | Sequence[str]) -> pd.DataFrame:
        """Public case rows of one split (``"train"``, ``"val"``, ``"test"``) or several."""
        names = [name] if isinstance(name, str) else list(name)
        for n in names:
            if n not in SPLITS:
                raise MedfedError(f"unknown split {n!r}; choose from {', '.join(SPLITS)}")
        return self.cases[self._table["split"].isin(names).to_numpy()]

    def dataset(
        self,
        split: str | Sequence[str] = "train",
        transform: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
        case_ids: Sequence[str] | None = None,
    ) -> SiteDataset:
        """A MONAI ``Dataset`` of the split's cases: dicts with ``image``, ``label``, ``case_id``.

        ``transform`` (default :meth:`default_transform`, whose results are cached in memory up to
        :data:`medfed.sites.datasets.CACHE_BYTES` per site, since it must be deterministic) runs after the case is
        loaded; ``case_ids`` keeps only those cases of the split (e.g. the normal cases an anomaly detector trains
        on). The data list behind the dataset holds file paths; it lives in this process, inside the site.
        """
        names = [split] if isinstance(split, str) else list(split)
        rows = self._table[self._table["split"].isin(names)]
        if case_ids is not None:
            rows = rows[rows["case_id"].isin(list(case_ids))]
        # MONAI is imported only where pixels are read, not for a site's tables and summary
        from medfed.sites.datasets import site_dataset

        return site_dataset(self, rows.to_dict("records"), names[0], transform)

    def reference_targets(self, split: str | Sequence[str] = "test") -> pd.DataFrame:
        """Ground truth of an image-label site for challenge scoring *at the site*: ``case_id``, ``source_id``
        (never leaves the site) and one column per finding, 1 positive, 0 negative, -1 unknown (uncertain)."""
        if self.label_kind != "classification":
            raise MedfedError(f"site {self.name}: {type(self).__name__} has label maps, not image labels")
        rows = self._split_rows(split)
        targets = self._finding_targets(rows).astype(np.float64)
        return pd.concat([rows[["case_id"]].reset_index(drop=True),
                          rows["_source_id"].astype(str).rename("source_id").reset_index(drop=True),
                          targets.reset_index(drop=True)], axis=1)

    def _finding_targets(self, rows: pd.DataFrame) -> pd.DataFrame:
        """One target column per finding (default: the label columns as they are)."""
        return rows[self.label_columns]

    def _split_rows(self, split: str | Sequence[str]) -> pd.DataFrame:
        """Private rows of one split, several, or ``"all"``."""
        names = list(SPLITS) if split == "all" else [split] if isinstance(split, str) else list(split)
        return self._table[self._table["split"].isin(names)]

    def reference_cases(self, split: str | Sequence[str] = "test") -> Iterator[ReferenceCase]:
        """The ground truth of the split's cases for challenge scoring at the site (label-map adapters)."""
        raise MedfedError(f"site {self.name}: {type(self).__name__} has no label maps to score segmentations against")

    def write_label_map(self, case_id: str, label: np.ndarray, folder: Path) -> Path:
        """Write a predicted label map of one of this site's cases under the name a challenge expects
        (label-map adapters); the source id stays inside the adapter."""
        raise MedfedError(f"site {self.name}: {type(self).__name__} does not write label maps")

    def validate(self, progress: bool = False) -> list[Problem]:
        """Every problem of this site: indexing problems plus a full read of every indexed case."""
        problems = list(self._problems)
        self._fingerprints, self._pixel_hashes = [], []
        records = self._table.to_dict("records")
        iterator: Any = records
        if progress:
            from tqdm.auto import tqdm

            iterator = tqdm(records, desc=f"validate {self.name}", unit="case", leave=False)
        # one BLAS thread: the per-image products of the fingerprints are tiny, and idle BLAS threads spinning
        # between them cost more than they save (measured in benchmarks/validate_grouping.py)
        with threadpool_limits(limits=1, user_api="blas"):
            for record in iterator:
                try:
                    problems.extend(self._check_case(pd.Series(record)))
                except Exception as err:  # noqa: BLE001 - a reader bug must not hide the other cases' problems
                    reason = error_text(err, self.private_texts(record))
                    problems.append(self.problem(f"could not be checked: {reason}", record["case_id"]))
        self._fingerprints = self._fingerprints_of(records)
        return problems + self._group_notes()

    def _fingerprints_of(self, records: list[dict[str, Any]]) -> list[Any]:
        """The hashes :meth:`record_pixels` kept, as fingerprints naming each case's file and split."""
        from medfed.sites.duplicates import ImageFingerprint

        where = {str(r["case_id"]): (str(r.get("_source_id", r["case_id"])), str(r["split"])) for r in records}
        return [ImageFingerprint(site=self.name, case=case, file=where[case][0], split=where[case][1], digest=digest,
                                 phash=coarse, fine_phash=fine)
                for case, digest, coarse, fine in self._pixel_hashes]

    def _group_notes(self) -> list[Problem]:
        """Once per site: the split unit when some or all cases have no group key."""
        without = self.cases_without_group
        if without == 0:
            return []
        if without == len(self._table):
            return [self.warning(f"split unit: image; no {self.group_unit} key (each image is its own group, so "
                                 f"one {self.group_unit}'s images may fall into different splits)")]
        return [self.warning(f"split unit: {self.group_unit}, but {suppress_count(without, self.min_count)} case(s) "
                             f"have no {self.group_unit} key; each of them is its own group")]

    def summary(self) -> dict[str, Any]:
        """Aggregated counts under disclosure control (:func:`medfed.stats.disclosure.protect_summary`): cases and
        groups per split, per label value and per metadata value; small counts suppressed, and the counts that
        add up to a suppressed one hidden too (secondary suppression), so no suppressed count can be derived."""
        table = self._table
        raw: dict[str, Any] = {
            "site": self.name,
            "modality": self.modality,
            "cases": len(table),
            "splits": {s: int((table["split"] == s).sum()) for s in SPLITS},
            "split_unit": self.split_unit,
            "groups": int(table["group"].nunique()) if len(table) else 0,
            "groups_per_split": {s: int(table.loc[table["split"] == s, "group"].nunique()) for s in SPLITS},
            "cases_without_group": suppress_count(self.cases_without_group, self.min_count),
            "max_cases_per_group": int(table["group"].value_counts().max()) if len(table) else 0,
        }
        prevalence = self._prevalence_per_split()
        if prevalence:
            raw["prevalence"] = prevalence
        for group, columns in (("labels", self.label_columns), ("metadata", self.metadata_columns)):
            raw[group] = {col: {str(k): int(v) for k, v in table[col].astype(str).value_counts().sort_index().items()}
                          for col in columns if col in table}
        return protect_summary(raw, self.min_count)

    def _prevalence_per_split(self) -> dict[str, str]:
        """Share of positives (value 1) of a binary primary label per split, e.g. ``{"train": "25%"}``; a split
        whose positives or other cases number below ``min_count`` shows ``<k`` instead (no small counts)."""
        label, table = self.primary_label, self._table
        if label is None or label not in table or not set(table[label].unique()) <= {0, 1, -1}:
            return {}
        out = {}
        for split in SPLITS:
            values = table.loc[table["split"] == split, label]
            positives = int((values == 1).sum())
            small = min(positives, len(values) - positives) < self.min_count
            out[split] = f"<{self.min_count}" if small else f"{100 * positives / len(values):.0f}%"
        return out

    # ----------------------------------------------------------------- internals
    def _finalise(self, table: pd.DataFrame) -> pd.DataFrame:
        """Add ``site`` and ``split``, drop duplicate ids (each reported), report an empty site."""
        table = table.reset_index(drop=True).copy()
        if "case_id" not in table:
            table["case_id"] = pd.Series(dtype=str)
        if "group" not in table:
            table["group"] = pd.Series([None] * len(table), dtype=object)
        missing = table["group"].isna() | (table["group"].astype(str) == "")
        if "_no_group" in table:  # rows taken from another site's table (re-partitioned federations)
            missing = missing | table["_no_group"].astype(bool)
        table["_no_group"] = missing.to_numpy()
        table["group"] = table["group"].where(~missing, table["case_id"]).astype(table["case_id"].dtype)
        duplicated = table["case_id"].duplicated(keep=False)
        for case_id in table.loc[duplicated, "case_id"].unique():
            sources = table.loc[table["case_id"] == case_id]
            where = ", ".join(str(s) for s in sources.get("_source_id", sources["case_id"]))
            self._problems.append(self.problem(f"duplicate case id (sources: {where}); all copies excluded", case_id))
        table = table.loc[~duplicated].reset_index(drop=True)
        table.insert(1, "site", self.name)
        table.insert(2, "group", table.pop("group"))
        if "split" in table:
            bad = ~table["split"].isin(SPLITS)
            for _, row in table[bad].iterrows():
                self._problems.append(
                    self.problem(f"split {row['split']!r} is not one of {', '.join(SPLITS)}", row["case_id"])
                )
            table = table.loc[~bad].reset_index(drop=True)
            self._report_straddling(table)
        else:
            table["split"] = assign_splits(
                table["case_id"], self.split_config.val, self.split_config.test, self.split_config.seed,
                strata=self._strata(table), groups=table["group"],
            ) if len(table) else pd.Series(dtype=object)
        if len(table) == 0:
            self._problems.append(self.problem("site is empty: no usable case was found"))
        return table

    def _report_straddling(self, table: pd.DataFrame) -> None:
        """A source's own split (kept as it is) that puts one group in several splits: one warning per group."""
        for group, splits in straddling_groups(table["group"], table["split"]).items():
            cases = table.loc[table["group"] == group, "case_id"].tolist()
            self._problems.append(self.warning(
                f"the source's own split puts one {self.group_unit} (group {group}) in {', '.join(splits)} "
                f"(cases {', '.join(cases[:6])}{', ...' if len(cases) > 6 else ''}); kept as given", cases[0]))

    def _strata(self, table: pd.DataFrame) -> pd.Series | None:
        column = self.split_config.stratify
        if column == "auto":
            column = self.primary_label
        if column is None:
            return None
        if column not in table:
            raise ConfigError(
                f"site {self.name}: split.stratify names column {column!r}, which this site does not have "
                f"(labels: {self.label_columns}, metadata: {self.metadata_columns})"
            )
        return table[column]


def finite_problems(site: Site, array: np.ndarray, case: str, file: str) -> list[Problem]:
    """Shared pixel checks: NaN/inf values and images that hold a single value (blank)."""
    problems = []
    finite = np.isfinite(array)
    if not finite.all():
        problems.append(site.problem(f"{int((~finite).sum())} NaN/inf value(s)", case, file))
    values = array[finite]
    if values.size == 0 or values.min() == values.max():
        problems.append(site.problem("image is empty (all pixels hold one value)", case, file))
    return problems
