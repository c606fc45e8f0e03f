"""Report corpora as sites of a report federation: each site's reports with labels mapped onto a taxonomy, split
by patient-free report ids, from a federation config (``sites/reports/*.yaml``; format in :mod:`medfed.text.corpora`)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from medfed.config import SplitConfig, read_yaml, resolve_path, validate_model
from medfed.errors import ConfigError, DataProblems, Problem
from medfed.sites.identity import hash_case_id
from medfed.sites.splits import SPLITS, assign_splits
from medfed.stats.disclosure import Relation, protect
from medfed.text.base import Report
from medfed.text.corpora import (
    _RESERVED,
    ALL_SPLITS,
    CORPUS_COLUMNS,
    CORPUS_FILES,
    CORPUS_LANGUAGES,
    READERS,
    find_txv_data,
)
from medfed.text.taxonomy import Taxonomy, load_taxonomy


# --------------------------------------------------------------------------------------------- label mapping
def mapping_problems(mapping: Mapping[str, Sequence[str]], taxonomy: Taxonomy, where: str = "mapping") -> list[str]:
    """Every defect of one corpus's mapping: labels unknown to the taxonomy, taxonomy labels without terms,
    labels whose allowed values lack ``present`` or ``absent``, blank terms, and label names that clash with
    the site table's own columns."""
    out = []
    for label in mapping:
        if label not in taxonomy.names:
            out.append(f"{where}.{label}: not a label of taxonomy {taxonomy.name!r} ({', '.join(taxonomy.names)})")
    for label in taxonomy.names:
        terms = mapping.get(label)
        if label in _RESERVED:
            out.append(f"{where}.{label}: label name clashes with a site table column")
        if not terms:
            out.append(f"{where}.{label}: no corpus term (every taxonomy label needs at least one)")
        elif any(not str(t).strip() for t in terms):
            out.append(f"{where}.{label}: holds an empty term")
        missing = [v for v in ("present", "absent") if v not in taxonomy.allowed(label)]
        if missing:
            out.append(f"{where}.{label}: taxonomy does not allow {', '.join(missing)} for this label")
    return out


def map_raw_labels(raw_labels: Iterable[str], mapping: Mapping[str, Sequence[str]],
                   taxonomy: Taxonomy) -> dict[str, str]:
    """``present`` for each taxonomy label one of whose terms is among ``raw_labels`` (exact, lower case, outer
    spaces ignored), else ``absent`` (module docstring: these corpora never give ``uncertain``)."""
    have = {str(x).strip().lower() for x in raw_labels}
    return {
        label: "present" if any(str(t).strip().lower() in have for t in mapping.get(label, ())) else "absent"
        for label in taxonomy.names
    }


# ---------------------------------------------------------------------------------------------------- sites
class ReportSite:
    """One site of a report federation: a corpus held privately, with hashed ids, splits and taxonomy labels.

    ``corpus`` is a reader's frame (``source_id``, ``text``, ``language``, ``raw_labels``); ``mapping`` maps each
    taxonomy label to its corpus terms. ``max_reports`` keeps a seeded subsample (independent of row order).
    """

    def __init__(
        self, name: str, corpus: pd.DataFrame, taxonomy: Taxonomy, mapping: Mapping[str, Sequence[str]], *,
        split: SplitConfig | None = None, min_count: int = 5, salt: str = "", max_reports: int | None = None,
        language: str | None = None, problems: Sequence[Problem] = (),
    ) -> None:
        defects = mapping_problems(mapping, taxonomy, f"site {name}: mapping")
        if defects:
            raise ConfigError("invalid label mapping:\n  " + "\n  ".join(defects))
        missing = [c for c in CORPUS_COLUMNS if c not in corpus]
        if missing:
            raise ValueError(f"site {name}: corpus frame lacks column(s) {', '.join(missing)}")
        split = split or SplitConfig()
        self.name = name
        self.taxonomy = taxonomy
        self.min_count = min_count
        self.split_config = split
        self.problems: list[Problem] = list(problems)
        corpus = corpus.drop_duplicates("source_id", keep="first")
        source_ids = corpus["source_id"].astype(str)
        if max_reports is not None and len(corpus) > max_reports:
            ranked = source_ids.sort_values(kind="stable")
            keep = ranked.index.to_numpy()[np.random.default_rng(split.seed).permutation(len(ranked))[:max_reports]]
            corpus = corpus.loc[sorted(keep, key=lambda i: source_ids[i])]
            source_ids = corpus["source_id"].astype(str)
        table = pd.DataFrame({
            "report_id": [hash_case_id(s, name, salt) for s in source_ids],
            "text": corpus["text"].astype(str).to_numpy(),
            "language": corpus["language"].astype(str).to_numpy(),
        })
        values = [map_raw_labels(raw, mapping, taxonomy) for raw in corpus["raw_labels"]]
        for label in taxonomy.names:
            table[label] = [v[label] for v in values]
        stratify = split.stratify if split.stratify not in (None, "auto") else None
        if stratify is not None and stratify not in taxonomy.names:
            raise ConfigError(f"site {name}: split.stratify {stratify!r} is not a taxonomy label")
        strata = table[stratify] if stratify is not None else None
        table.insert(3, "split", assign_splits(table["report_id"], split.val, split.test, split.seed, strata))
        self._table = table
        languages = sorted(set(table["language"]))
        self.language = language or (languages[0] if len(languages) == 1 else ",".join(languages) or "en")

    def __len__(self) -> int:
        return len(self._table)

    def __repr__(self) -> str:
        return f"ReportSite({self.name!r}, {len(self)} reports, language={self.language!r})"

    def _rows(self, split: str) -> pd.DataFrame:
        if split not in ALL_SPLITS:
            raise ValueError(f"split must be one of {', '.join(ALL_SPLITS)}, got {split!r}")
        return self._table if split == "all" else self._table[self._table["split"] == split]

    def reports(self, split: str = "all") -> list[Report]:
        """The reports of ``split`` (``train``, ``val``, ``test`` or ``all``), in table order."""
        rows = self._rows(split)
        return [Report(r, t, lang) for r, t, lang in zip(rows["report_id"], rows["text"], rows["language"],
                                                          strict=True)]

    def targets(self, split: str = "all") -> pd.DataFrame:
        """``report_id`` and one value column per taxonomy label, aligned with :meth:`reports`."""
        return self._rows(split)[["report_id", *self.taxonomy.names]].reset_index(drop=True)

    def summary(self) -> dict[str, Any]:
        """Counts under disclosure control (:mod:`medfed.stats.disclosure`: small counts suppressed, and the
        counts that add up with them hidden too): reports per split, and per label value overall (``labels``) and
        per split (``labels_by_split``). Never any text or id."""
        table = self._table
        cells: dict[str, int] = {"reports": len(table)}
        relations = [Relation("reports", tuple(f"split:{s}" for s in SPLITS))]
        for split in SPLITS:
            cells[f"split:{split}"] = int((table["split"] == split).sum())
        for label in self.taxonomy.names:
            values = self.taxonomy.allowed(label)
            for value in values:
                cells[f"{label}={value}"] = int((table[label] == value).sum())
                relations.append(Relation(f"{label}={value}", tuple(f"{s}:{label}={value}" for s in SPLITS)))
                for split in SPLITS:
                    rows = table[table["split"] == split]
                    cells[f"{split}:{label}={value}"] = int((rows[label] == value).sum())
            relations.append(Relation("reports", tuple(f"{label}={v}" for v in values)))
            relations += [Relation(f"split:{s}", tuple(f"{s}:{label}={v}" for v in values)) for s in SPLITS]
        shown = protect(cells, relations, self.min_count)

        def label_counts(prefix: str) -> dict[str, dict[str, int | str]]:
            return {label: {value: shown[f"{prefix}{label}={value}"] for value in self.taxonomy.allowed(label)}
                    for label in self.taxonomy.names}

        return {
            "site": self.name,
            "language": self.language,
            "reports": shown["reports"],
            "splits": {s: shown[f"split:{s}"] for s in SPLITS},
            "labels": label_counts(""),
            "labels_by_split": {s: label_counts(f"{s}:") for s in SPLITS},
        }


# ----------------------------------------------------------------------------------------------- federation
class ReportSourceConfig(BaseModel):
    """One corpus turned into one site."""

    model_config = ConfigDict(extra="forbid")
    corpus: Literal["iu", "padchest"]
    name: str = Field(min_length=1)
    path: str | None = Field(None, description="the corpus file, or a folder holding it; null: find_txv_data")
    max_reports: int | None = Field(None, ge=1, description="seeded subsample size (keeps CPU runs short)")


class ReportFederationConfig(BaseModel):
    """The top level of a report federation file (module docstring)."""

    model_config = ConfigDict(extra="forbid")
    name: str
    taxonomy: str
    sources: list[ReportSourceConfig] = Field(min_length=1)
    mapping: dict[str, dict[str, list[str]]]
    split: SplitConfig = SplitConfig(stratify=None)
    min_count: int = Field(5, ge=1, description="counts below this are shown as '<min_count' in summaries")
    id_salt: str = Field("", description="secret mixed into hashed report ids; keep it private to the site")


@dataclass
class ReportFederation:
    """Report sites sharing one taxonomy; ``problems`` collects every reader's problems."""

    name: str
    taxonomy: Taxonomy
    sites: list[ReportSite]
    problems: list[Problem] = field(default_factory=list)
    config_path: Path | None = None

    def __iter__(self) -> Iterator[ReportSite]:
        return iter(self.sites)

    def __len__(self) -> int:
        return len(self.sites)

    @property
    def site_names(self) -> list[str]:
        return [site.name for site in self.sites]

    def site(self, name: str) -> ReportSite:
        for site in self.sites:
            if site.name == name:
                return site
        raise KeyError(name)


def load_report_federation(path: Path | str, strict: bool = False) -> ReportFederation:
    """Read a report federation file, its taxonomy and every corpus; :class:`ConfigError` lists every config
    defect at once, data problems are collected in ``problems`` (raised as :class:`DataProblems` if ``strict``)."""
    path = Path(path)
    config = validate_model(ReportFederationConfig, read_yaml(path), str(path))
    base = path.parent
    taxonomy = load_taxonomy(resolve_path(config.taxonomy, base))
    defects: list[str] = []
    names = [s.name for s in config.sources]
    for name in sorted({n for n in names if names.count(n) > 1}):
        defects.append(f"sources: site name {name!r} used more than once")
    for corpus in sorted({s.corpus for s in config.sources}):
        if corpus not in config.mapping:
            defects.append(f"mapping: no mapping for corpus {corpus!r}")
        else:
            defects.extend(mapping_problems(config.mapping[corpus], taxonomy, f"mapping.{corpus}"))
    for corpus in config.mapping:
        if corpus not in CORPUS_FILES:
            defects.append(f"mapping.{corpus}: unknown corpus (known: {', '.join(CORPUS_FILES)})")
    stratify = config.split.stratify
    if stratify not in (None, "auto") and stratify not in taxonomy.names:
        defects.append(f"split.stratify: {stratify!r} is not a taxonomy label")
    if defects:
        raise ConfigError(f"{path}: {len(defects)} problem(s):\n  - " + "\n  - ".join(defects))
    sites, problems = [], []
    for source in config.sources:
        explicit = resolve_path(source.path, base) if source.path is not None else None
        data = find_txv_data(CORPUS_FILES[source.corpus], explicit)
        found: list[Problem] = []
        corpus = READERS[source.corpus](data, found, site=source.name)
        site = ReportSite(
            source.name, corpus, taxonomy, config.mapping[source.corpus], split=config.split,
            min_count=config.min_count, salt=config.id_salt, max_reports=source.max_reports,
            language=CORPUS_LANGUAGES[source.corpus], problems=found,
        )
        sites.append(site)
        problems.extend(found)
    if strict and problems:
        raise DataProblems(problems, f"report federation {config.name}")
    return ReportFederation(config.name, taxonomy, sites, problems, path)
