"""Self-supervised initialisation: pretraining objectives, federated SSL and checkpoints.

This package so far holds the checkpoint loader (:mod:`medfed.ssl.checkpoints`): pretrained encoder
weights (DINOv2, MONAI ViT state dicts or medfed's own encoder files) loaded into the MONAI ViT of a
medfed task, the task head keeping its fresh initialisation.
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
