"""SSL pretraining runs (``medfed pretrain CONFIG``): SimCLR on 2D images (``task.kind: simclr``, the default)
or masked-volume reconstruction on 3D volumes (``kind: masked_volume``), centrally or federated.

.. code-block:: yaml

    name: ssl_chest_xray_federated
    federation: demo:chest_xray       # whose images are read; labels never are (demo-pool:chest_xray: other
                                      #   synthetic patients, an unlabeled pool outside the federation)
    seed: 0
    where: federated                  # central: one model on the pooled images (the "general-purpose" route
                                      #   when the federation is an unlabeled pool); federated: each site pretrains
                                      #   on its own images and only encoder tensors are aggregated
    strategy: {strategy: fedavg}      # federated only: any medfed strategy, with its parameters
    task: {network: vit, model: {img_size: 64}, feature_dim: 128, batch_size: 32, splits: [train]}
    training: {rounds: 10, local_steps: 10}

Output under ``<out>/<name>/``: ``encoder.pt`` (medfed's encoder checkpoint: the task network without the
projector or reconstruction head, ``network`` and the config in ``meta``; load it with ``model.init`` or a method's ``init``),
``runs/<kind>/rounds.jsonl`` (loss per round and site) and ``pretrain.json`` (losses, images per second).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag

from medfed.config import read_yaml, validate_model
from medfed.fl.config import DEMO_PREFIX, MethodConfig, TrainingConfig
from medfed.fl.runner import MethodRunner
from medfed.fl.strategies import build_strategy
from medfed.fl.strategies.centralised import Centralised
from medfed.fl.weights import set_weights
from medfed.io import atomic_write_text
from medfed.seeding import derive_seed
from medfed.sites.federation import load_federation
from medfed.ssl.checkpoints import save_encoder_checkpoint
from medfed.ssl.simclr import LocalEntries, SimCLRConfig, SimCLRTask
from medfed.ssl.task import PretrainTask
from medfed.ssl.volumes import MaskedVolumeConfig, MaskedVolumeTask


def _objective(value: Any) -> str:
    """The pretraining objective of a task config: its ``kind`` (``simclr`` when absent)."""
    return value.get("kind", "simclr") if isinstance(value, dict) else value.kind


OBJECTIVES: dict[str, type[PretrainTask]] = {"simclr": SimCLRTask, "masked_volume": MaskedVolumeTask}


class PretrainConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    federation: str
    seed: int = 0
    where: Literal["central", "federated"] = "central"
    strategy: MethodConfig = MethodConfig(strategy="fedavg")
    task: Annotated[
        Annotated[SimCLRConfig, Tag("simclr")] | Annotated[MaskedVolumeConfig, Tag("masked_volume")],
        Discriminator(_objective),
    ] = SimCLRConfig()
    training: TrainingConfig = TrainingConfig()


def load_pretrain(path: Path | str) -> PretrainConfig:
    return validate_model(PretrainConfig, read_yaml(path), str(path))


def run_pretraining(config_path: Path | str, out_root: Path | str = "reports", *, federation_file: Path,
                    progress: bool = True) -> Path:
    """Pretrain as configured; returns the path of ``encoder.pt``."""
    config = load_pretrain(config_path)
    sites = list(load_federation(federation_file))
    task = OBJECTIVES[config.task.kind](config.task)
    strategy = Centralised() if config.where == "central" else LocalEntries(
        build_strategy(config.strategy.strategy, config.strategy.params, f"{config_path}: strategy"),
        prefixes=type(task).local_prefixes)
    out = Path(out_root) / config.name
    out.mkdir(parents=True, exist_ok=True)
    kind = config.task.kind
    runner = MethodRunner(kind, task, sites, strategy, config.training, config.seed, out / "runs" / kind,
                          progress=progress)
    began = time.perf_counter()
    result = runner.run()
    seconds = time.perf_counter() - began
    model = task.build_model(derive_seed(config.seed, "init"))
    set_weights(model, result.models["global"])
    checkpoint = out / "encoder.pt"
    save_encoder_checkpoint(model.encoder, checkpoint, network=config.task.network,
                            meta={"pretrain": config.model_dump(mode="json"), "federation": str(federation_file)})
    losses = [_mean(r["train_loss"]) for r in result.rounds if r.get("train_loss")]
    summary: dict[str, Any] = {"where": config.where, "rounds": len(result.rounds), "loss_by_round": losses,
                               "seconds": round(seconds, 2), "checkpoint": str(checkpoint),
                               "failures": result.failures}
    atomic_write_text(out / "pretrain.json", json.dumps(summary, indent=1))
    atomic_write_text(out / "config.yaml", yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))
    return checkpoint


def _mean(values: dict[str, Any]) -> float:
    finite = [float(v) for v in values.values() if v is not None]
    return round(sum(finite) / len(finite), 6) if finite else float("nan")


def demo_source(config: PretrainConfig) -> tuple[str, str] | None:
    """``("demo" | "pool", modality)`` for ``demo:<modality>`` / ``demo-pool:<modality>``; ``None`` for a path."""
    from medfed.demo import POOL_PREFIX

    for prefix, kind in ((POOL_PREFIX, "pool"), (DEMO_PREFIX, "demo")):
        if config.federation.startswith(prefix):
            return kind, config.federation[len(prefix):]
    return None
