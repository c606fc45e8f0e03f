"""Simulated federation conditions of an experiment: the server's benchmark set and per-site conditions.

``with_server_benchmark`` draws ``cases`` training cases (of the task's training pool) from all sites
with ``(seed, "server-benchmark")``; they leave their sites (for every method, so comparisons stay fair)
and form the server's own site, whose training dataset is the benchmark FedAgain's reliability signal uses.
``apply_conditions`` wraps the named sites in :class:`medfed.sites.conditioned.ConditionedSite`.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from medfed.errors import ConfigError
from medfed.fl.config import ServerBenchmarkConfig, SiteConditions
from medfed.seeding import rng_for
from medfed.sites.base import Site
from medfed.sites.conditioned import ConditionedSite
from medfed.sites.federation import Federation
from medfed.tasks.base import Task

#: name of the server's benchmark "site" (never a training site)
SERVER = "server-benchmark"


def identity_assignment(federation: Federation) -> pd.Series:
    """``case_id -> site`` as the federation stands."""
    table = federation.case_table()
    return pd.Series(table["site"].to_numpy(), index=table["case_id"].to_numpy())


def with_server_benchmark(
    task: Task, federation: Federation, assignment: pd.Series, spec: ServerBenchmarkConfig, seed: int
) -> pd.Series:
    """``assignment`` with whole groups (patients) of the task's training pool moved to :data:`SERVER`: groups in
    a seeded random order until at least ``spec.cases`` training cases are moved. Every case of a moved group goes
    with it, so no patient is both at the server and at a site."""
    eligible = sorted(c for site in federation for c in task.training_case_ids(site))
    if len(eligible) <= spec.cases:
        raise ConfigError(f"server_benchmark: {spec.cases} cases asked, but the federation has only "
                          f"{len(eligible)} training case(s) of the task; lower server_benchmark.cases")
    cases = federation.case_table().set_index("case_id")["group"]
    eligible_per_group = cases.loc[eligible].value_counts().sort_index()
    rng = rng_for(spec.seed if spec.seed is not None else seed, "server-benchmark")
    order = eligible_per_group.index[rng.permutation(len(eligible_per_group))]
    taken = np.cumsum(eligible_per_group.loc[order].to_numpy())
    chosen = set(order[: int(np.searchsorted(taken, spec.cases)) + 1])
    moved = assignment.copy()
    moved[cases.index[cases.isin(chosen)].intersection(moved.index)] = SERVER
    emptied = sorted(set(assignment) - set(moved))
    if emptied:
        raise ConfigError(f"server_benchmark took every case of site(s) {', '.join(emptied)}; "
                          "lower server_benchmark.cases")
    return moved


def split_server(sites: list[Site]) -> tuple[list[Site], Site | None]:
    """``(training sites, the server's benchmark site or None)``."""
    server = next((s for s in sites if s.name == SERVER), None)
    return [s for s in sites if s.name != SERVER], server


def apply_conditions(federation: Federation, conditions: Mapping[str, SiteConditions], seed: int) -> Federation:
    """The federation with each site of ``conditions`` wrapped in its corruption / label poisoning."""
    unknown = sorted(set(conditions) - set(federation.site_names))
    if unknown:
        raise ConfigError(f"site_conditions name unknown site(s) {', '.join(unknown)}; "
                          f"sites are {', '.join(federation.site_names)}")
    sites: list[Site] = []
    for site in federation:
        spec = conditions.get(site.name)
        flip = spec is not None and spec.adversary is not None and spec.adversary.kind == "label_flip"
        if spec is None or (spec.corruption is None and not flip):
            sites.append(site)
        else:
            sites.append(ConditionedSite(site, corruption=spec.corruption, label_flip=flip, seed=seed))
    return Federation(federation.name, sites, config=federation.config, source=federation.source)
