"""What every self-supervised pretraining task shares: the images of each site's ``splits`` (labels are never
read), no per-case evaluation, and the weight entries that stay at each site in federated pretraining."""

from __future__ import annotations

from typing import ClassVar

import pandas as pd
from torch import nn
from torch.utils.data import Dataset

from medfed.errors import Problem
from medfed.sites.base import Site
from medfed.tasks.base import Task


class PretrainTask(Task):
    """A :class:`Task` whose loss needs no label; subclasses give the model, views and loss."""

    primary_metric: ClassVar[str] = "loss"
    #: weight entries that stay at each site in federated pretraining (never aggregated)
    local_prefixes: ClassVar[tuple[str, ...]] = ()

    def check_site(self, site: Site) -> list[Problem]:
        splits = self.config.splits  # type: ignore[attr-defined]
        return [] if len(site.split(splits)) else [site.problem(f"no image in {splits}")]

    def train_dataset(self, site: Site) -> Dataset:
        return site.dataset(self.config.splits)  # type: ignore[attr-defined]

    def eval_dataset(self, site: Site, split: str) -> Dataset:
        return site.dataset(split)

    def evaluate(self, model: nn.Module, dataset: Dataset) -> pd.DataFrame:
        raise NotImplementedError("SSL pretraining has no per-case evaluation; fine-tune and evaluate the task")

    def metrics(self, records: pd.DataFrame) -> dict[str, float]:
        return {}
