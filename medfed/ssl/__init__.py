"""Self-supervised initialisation: pretraining objectives, federated SSL and checkpoints.

- :mod:`medfed.ssl.checkpoints`: pretrained encoder weights (DINOv2, MONAI ViT state dicts or medfed's own
  encoder files) loaded into the task's network, the task head keeping its fresh initialisation;
- :mod:`medfed.ssl.objectives`, :mod:`medfed.ssl.augment`: SimCLR's NT-Xent and radiograph views;
- :mod:`medfed.ssl.simclr`: SimCLR as a task, so federated SSL runs through medfed's runner with any strategy
  (:class:`~medfed.ssl.simclr.LocalEntries` keeps the projector local: only encoder tensors are aggregated).
"""

from medfed.ssl.checkpoints import (
    CheckpointError,
    LoadReport,
    interpolate_position_embeddings,
    load_encoder_checkpoint,
    save_encoder_checkpoint,
)

__all__ = [
    "CheckpointError",
    "LoadReport",
    "interpolate_position_embeddings",
    "load_encoder_checkpoint",
    "save_encoder_checkpoint",
]
