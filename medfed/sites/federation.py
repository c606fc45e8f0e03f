"""A federation: the list of sites a config file describes, plus a pooled view for the centralised reference."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from medfed.config import FederationConfig, load_federation_config
from medfed.errors import ConfigError, DataProblems, Problem, errors_only
from medfed.sites.base import Site

if TYPE_CHECKING:
    from torch.utils.data import ConcatDataset

#: adapter name -> module exposing
#: ``build_sites(config, config_dir, source) -> tuple[list[Site], list[Problem]]``
#: (``source`` names the config file in messages; problems are federation-level, e.g. a partition CSV)
ADAPTERS: dict[str, str] = {
    "brats": "medfed.sites.brats",
    "chest_xray": "medfed.sites.chest_xray",
    "ureteroscopy": "medfed.sites.ureteroscopy",
}


@dataclass
class Federation:
    """Sites of one federation. Iterate for sites; index by position or site name."""

    name: str
    sites: list[Site]
    config: FederationConfig | None = None
    source: Path | None = None
    problems: list[Problem] = field(default_factory=list)

    def __iter__(self) -> Iterator[Site]:
        return iter(self.sites)

    def __len__(self) -> int:
        return len(self.sites)

    def __getitem__(self, key: int | str) -> Site:
        if isinstance(key, int):
            return self.sites[key]
        for site in self.sites:
            if site.name == key:
                return site
        raise KeyError(f"federation {self.name} has no site {key!r}; sites: {[s.name for s in self.sites]}")

    @property
    def site_names(self) -> list[str]:
        return [s.name for s in self.sites]

    def case_table(self) -> pd.DataFrame:
        """Public case tables of every site, stacked."""
        return pd.concat([s.cases for s in self.sites], ignore_index=True)

    def pooled_dataset(
        self, split: str | Sequence[str] = "test", transform: Callable[[dict[str, Any]], dict[str, Any]] | None = None
    ) -> ConcatDataset:
        """All sites' datasets of a split, concatenated: the centralised (non-private) reference."""
        from torch.utils.data import ConcatDataset

        return ConcatDataset([s.dataset(split, transform) for s in self.sites])

    def validate(self, progress: bool = False, allow_duplicates: bool = False) -> list[Problem]:
        """Every problem of every site (federation-level problems first), then duplicate images within and across
        sites (:func:`medfed.sites.leakage.duplicate_problems`; ``allow_duplicates`` makes train/test copies
        warnings). Warnings are included: filter with :func:`medfed.errors.errors_only`."""
        from medfed.sites.leakage import duplicate_problems

        problems = list(self.problems)
        for site in self.sites:
            problems.extend(site.validate(progress=progress))
        prints = [fp for site in self.sites for fp in site.fingerprints]
        groups = {(site.name, case): group for site in self.sites
                  for case, group in site.cases[["case_id", "group"]].itertuples(index=False)}
        return problems + duplicate_problems(prints, allow_duplicates=allow_duplicates, groups=groups)


def build_federation(config: FederationConfig, config_dir: Path, source: Path | None = None) -> Federation:
    """Sites from a validated config; problems of building (e.g. a partition CSV) land in ``problems``."""
    module_name = ADAPTERS.get(config.adapter)
    if module_name is None:
        raise ConfigError(
            f"{source or 'config'}: adapter: unknown adapter {config.adapter!r}; choose from {', '.join(sorted(ADAPTERS))}"
        )
    module = importlib.import_module(module_name)
    sites, problems = module.build_sites(config, config_dir, str(source or config.name))
    return Federation(name=config.name, sites=sites, config=config, source=source, problems=problems)


def load_federation(path: str | Path, strict: bool = True) -> Federation:
    """Load the federation a ``sites/*.yaml`` file describes.

    With ``strict`` (the default, what training wants) any problem found while indexing raises
    :class:`DataProblems` listing all of them; ``strict=False`` returns the federation with problems
    attached, which is what ``medfed validate`` wants.
    """
    path = Path(path)
    config = load_federation_config(path)
    federation = build_federation(config, path.parent.resolve(), path)
    if strict:
        problems = errors_only(federation.problems + [p for s in federation.sites for p in s.index_problems])
        if problems:
            raise DataProblems(problems, f"federation {config.name} ({path})")
    return federation
