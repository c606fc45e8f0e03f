"""Tasks: model, loss, local training and per-case evaluation (see :class:`medfed.tasks.base.Task`)."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from medfed.tasks.anomaly import AnomalyConfig, AnomalyTask
from medfed.tasks.base import LocalHook, Task, TrainResult
from medfed.tasks.classification import ClassificationConfig, ClassificationTask
from medfed.tasks.segmentation import SegmentationConfig, SegmentationTask

TASKS: dict[str, type[Task]] = {
    "classification": ClassificationTask,
    "segmentation": SegmentationTask,
    "anomaly": AnomalyTask,
}

#: a task config, told apart by its ``kind`` field
TaskConfig = Annotated[ClassificationConfig | SegmentationConfig | AnomalyConfig, Field(discriminator="kind")]


def build_task(config: ClassificationConfig | SegmentationConfig | AnomalyConfig) -> Task:
    """The task object for a validated task config."""
    return TASKS[config.kind](config)  # type: ignore[arg-type]


__all__ = [
    "TASKS", "AnomalyConfig", "AnomalyTask", "ClassificationConfig", "ClassificationTask", "LocalHook",
    "SegmentationConfig", "SegmentationTask", "Task", "TaskConfig", "TrainResult", "build_task",
]
