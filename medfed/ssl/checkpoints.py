"""Pretrained encoder weights -> the MONAI ``ViT`` of a medfed task (the task head stays fresh).

Three file formats (``format="auto"`` tells them apart):

``dinov2``
    a state dict in the facebookresearch/dinov2 ViT layout (``patch_embed.proj``, ``pos_embed``,
    ``blocks.i.attn.proj``, ``blocks.i.ls1.gamma`` ...), mapped exactly onto MONAI's ViT where the two
    architectures agree (see :mod:`medfed.ssl.dinov2` for every formula).
``monai``
    a state dict of the same MONAI network class (``patch_embedding.*``, ``blocks.i.attn.out_proj`` ...).
``medfed``
    medfed's own encoder file written by :func:`save_encoder_checkpoint`:
    ``{"format": "medfed-encoder", "version": 1, "network": ..., "state_dict": ..., "meta": ...}``.

Files are read with ``torch.load(..., weights_only=True)`` (no pickled code runs). Training checkpoints are
unwrapped: ``{"teacher": ...}`` (DINO; preferred over the student), ``{"state_dict": ...}``, ``{"model": ...}``,
and the key prefixes ``module.``, ``teacher.``, ``backbone.``, ``encoder.`` are stripped; when only some keys
carry such a prefix, the others (e.g. ``student.*``, ``dino_head.*``) are reported as unused.

Only encoder tensors load: the model's head (``classification_head.*``; ``fc.*`` / ``class_layers.*`` for
ResNet / DenseNet) keeps its fresh initialisation, since a pretrained head belongs to another task. Any
missing, unexpected or mismatched tensor is an error that lists every one of them.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from medfed.ssl.dinov2 import SOURCE_HEAD_PREFIXES, from_dinov2, looks_dinov2  # noqa: F401 - SOURCE_HEAD_PREFIXES re-exported
from medfed.ssl.vit_geometry import (  # noqa: F401 - re-exported: medfed.ssl's names
    PATCH_KEY,
    POS_KEY,
    CheckpointError,
    interpolate_patch_grid,
    interpolate_position_embeddings,
    key_list,
    shape_text,
)
from medfed.tasks.finetune import HEAD_PREFIXES  # the task's head, kept fresh

CheckpointFormat = Literal["auto", "dinov2", "monai", "medfed"]
FORMATS: tuple[str, ...] = ("auto", "dinov2", "monai", "medfed")
MEDFED_FORMAT = "medfed-encoder"
MEDFED_VERSION = 1
#: wrappers of training checkpoints, in order of preference
CONTAINER_KEYS: tuple[str, ...] = ("teacher", "state_dict", "model")
STRIP_PREFIXES: tuple[str, ...] = ("module.", "teacher.", "backbone.", "encoder.")



@dataclass
class LoadReport:
    """What :func:`load_encoder_checkpoint` did: model keys ``loaded`` from the file, model keys ``kept`` at
    their initialisation (the head, MONAI's unused cross-attention norms), checkpoint keys ``unused``, and
    ``notes`` on every conversion that was not a plain copy."""

    format: str
    loaded: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    unused: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    source: str = ""

    def __str__(self) -> str:
        where = f" {self.source}" if self.source else ""
        text = (f"{self.format} checkpoint{where}: loaded {len(self.loaded)} tensor(s); "
                f"kept {len(self.kept)} at the model's initialisation{key_list(self.kept)}; "
                f"{len(self.unused)} checkpoint tensor(s) unused{key_list(self.unused)}.")
        return " ".join([text, *self.notes])


# ---------------------------------------------------------------------------------------------------- saving


def save_encoder_checkpoint(
    model: nn.Module,
    path: str | Path,
    *,
    network: str,
    meta: dict[str, Any] | None = None,
    head: Sequence[str] = HEAD_PREFIXES,
) -> Path:
    """Write medfed's encoder file: ``{"format": "medfed-encoder", "version": 1, "network": network,
    "state_dict": <the model's tensors except the head, floating point as float32, on the CPU>,
    "meta": meta or {}}`` (``torch.save``, written to a temporary file and renamed). ``meta`` must hold plain
    JSON values, so the file loads with ``weights_only=True``."""
    meta = dict(meta or {})
    try:
        json.dumps(meta)
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"encoder checkpoint {path}: meta must hold plain JSON values ({err})") from None
    state = {}
    for key, value in model.state_dict().items():
        if key.startswith(tuple(head)):
            continue
        value = value.detach().to("cpu", copy=True)
        state[key] = value.float() if value.is_floating_point() else value
    payload = {"format": MEDFED_FORMAT, "version": MEDFED_VERSION, "network": str(network),
               "state_dict": state, "meta": meta}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)
    return path


# --------------------------------------------------------------------------------------------------- loading


def load_encoder_checkpoint(
    model: nn.Module,
    path: str | Path,
    format: CheckpointFormat = "auto",
    *,
    expected_network: str | None = None,
    grid: Sequence[int] | None = None,
    head: Sequence[str] = HEAD_PREFIXES,
) -> LoadReport:
    """Load the encoder tensors of the checkpoint at ``path`` into ``model`` (in place) and say what was done.

    ``format``: ``auto`` (medfed file, else DINOv2 keys ``patch_embed.proj.weight`` / ``pos_embed`` /
    ``blocks.i.attn.proj``, else MONAI), ``dinov2``, ``monai`` or ``medfed``. ``expected_network``: for medfed
    files, the network name the file must have been saved for (None: no check). ``grid``: the model's patch
    grid (rows, cols[, slices]) when it is not square (MONAI's ViT does not store it); needed only to
    interpolate position embeddings. ``head``: key prefixes of the model's head, kept fresh.
    Raises :class:`CheckpointError` naming the file and every problem; the model is unchanged then.
    """
    where = str(path)
    if format not in FORMATS:
        raise CheckpointError(f"checkpoint {where}: unknown format {format!r}; use one of {', '.join(FORMATS)}")
    obj = _read(path)
    notes: list[str] = []
    unused: list[str] = []
    if isinstance(obj, dict) and obj.get("format") == MEDFED_FORMAT:
        if format == "dinov2":
            raise CheckpointError(f"checkpoint {where}: is a medfed encoder file, not a DINOv2 checkpoint; "
                                  "use format 'auto' or 'medfed'")
        state = _medfed_state(obj, where, expected_network, notes)
        fmt = "medfed"
    elif format == "medfed":
        raise CheckpointError(f"checkpoint {where}: is not a medfed encoder file (no 'format': '{MEDFED_FORMAT}' "
                              "entry; save it with medfed.ssl.save_encoder_checkpoint); use format 'auto'")
    else:
        state = _unwrap(obj, where, notes)
        fmt = format
    state, origin = _strip_prefixes(state, unused, notes)
    if fmt == "auto":
        fmt = "dinov2" if looks_dinov2(state) else "monai"
    target = model.state_dict()
    if fmt == "dinov2":
        if not looks_dinov2(state):
            raise CheckpointError(f"checkpoint {where}: format 'dinov2' but it has no DINOv2 keys "
                                  f"(patch_embed.proj.weight, pos_embed, blocks.i.attn.proj); first keys: "
                                  f"{', '.join(list(state)[:5])}")
        source, origin = from_dinov2(state, origin, target, where, grid, unused, notes)
    else:
        source = _from_monai(state, target, where, grid, unused, notes)
    report = _apply(model, target, source, origin, fmt, where, tuple(head), unused, notes)
    report.source = where
    return report


def _read(path: str | Path) -> Any:
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint {path}: file not found")
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path}: not a file")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - torch.load raises many types for corrupt files
        text = str(err).strip()
        unsafe = re.search(r"Unsupported global: GLOBAL (\S+)", text)
        if unsafe:
            raise CheckpointError(
                f"checkpoint {path}: holds Python objects ({unsafe.group(1)}) besides tensors and plain containers, "
                "which torch.load(weights_only=True) refuses to run; re-save only its state dict "
                "(torch.save(model.state_dict(), ...))") from None
        detail = re.search(r"WeightsUnpickler error:\s*(.+)", text)
        first = detail.group(1).strip() if detail else (text.splitlines() or [""])[0]
        raise CheckpointError(f"checkpoint {path}: not a readable PyTorch checkpoint (corrupt or another file "
                              f"type; torch.load: {type(err).__name__}: {first})") from None


def _medfed_state(obj: dict[str, Any], where: str, expected: str | None, notes: list[str]) -> dict[str, torch.Tensor]:
    version = obj.get("version")
    if version != MEDFED_VERSION:
        raise CheckpointError(f"checkpoint {where}: medfed encoder file version {version!r}; this medfed reads "
                              f"version {MEDFED_VERSION}")
    network = obj.get("network")
    if expected is not None and network != expected:
        raise CheckpointError(f"checkpoint {where}: saved for network {network!r}, the model is {expected!r}")
    notes.append(f"Medfed encoder file for network {network!r}.")
    return _check_state(obj.get("state_dict"), where)


def _check_state(obj: Any, where: str) -> dict[str, torch.Tensor]:
    if not isinstance(obj, dict):
        raise CheckpointError(f"checkpoint {where}: not a state dict (holds a {type(obj).__name__})")
    if not obj:
        raise CheckpointError(f"checkpoint {where}: the state dict is empty")
    bad = [str(k) for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"checkpoint {where}: not a state dict: entries {key_list(bad, 6).strip(' ()')} "
                              f"are not named tensors (expected a dict of tensors or a wrapper with one of "
                              f"{', '.join(CONTAINER_KEYS)})")
    return {k: v.detach() for k, v in obj.items()}


def _unwrap(obj: Any, where: str, notes: list[str]) -> dict[str, torch.Tensor]:
    """Follow ``teacher`` / ``state_dict`` / ``model`` wrappers down to the tensors."""
    path: list[str] = []
    while isinstance(obj, dict) and not all(isinstance(v, torch.Tensor) for v in obj.values()):
        key = next((k for k in CONTAINER_KEYS if isinstance(obj.get(k), dict)), None)
        if key is None or len(path) > 8:
            break
        path.append(key)
        obj = obj[key]
    if path:
        notes.append(f"Took the tensors under {'/'.join(repr(p) for p in path)}.")
    return _check_state(obj, where)


def _strip_prefixes(
    state: dict[str, torch.Tensor], unused: list[str], notes: list[str]
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Strip wrapper prefixes; keys without a prefix that others carry go to ``unused``. Also returns
    ``new key -> original key``."""
    origin = {k: k for k in state}
    changed = True
    while changed:
        changed = False
        for prefix in STRIP_PREFIXES:
            if any(k.startswith(prefix) for k in state):
                others = [k for k in state if not k.startswith(prefix)]
                unused.extend(origin[k] for k in others)
                if others:
                    notes.append(f"Kept only the keys under {prefix!r}; {len(others)} other tensor(s) unused.")
                origin = {k[len(prefix):]: origin[k] for k in state if k.startswith(prefix)}
                state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
                changed = True
    return state, origin


# --------------------------------------------------------------------------------------------- MONAI / medfed


def _from_monai(
    state: dict[str, torch.Tensor],
    target: dict[str, torch.Tensor],
    where: str,
    grid: Sequence[int] | None,
    unused: list[str],
    notes: list[str],
) -> dict[str, torch.Tensor]:
    """A state dict of the same MONAI class: copied key by key; the patch position embeddings are interpolated
    (:func:`interpolate_position_embeddings`) when only the patch grid differs; stale ``blocks.i.cross_attn.*``
    keys of older MONAI versions are unused (as in ``ViT.load_old_state_dict``)."""
    out = dict(state)
    stale = [k for k in out if k not in target and re.match(r"^blocks\.\d+\.cross_attn\.", k)]
    for key in stale:
        unused.append(key)
        del out[key]
    if stale:
        notes.append(f"{len(stale)} cross-attention tensor(s) of an older MONAI version unused.")
    if POS_KEY in out and POS_KEY in target:
        pos, wanted = out[POS_KEY], target[POS_KEY]
        if pos.ndim == 3 and pos.shape[-1] == wanted.shape[-1] and pos.shape[1] != wanted.shape[1]:
            patch = target.get(PATCH_KEY)
            dims = patch.ndim - 2 if patch is not None and patch.ndim > 2 else 2  # conv kernel; perceptron: 2-D
            out[POS_KEY] = interpolate_patch_grid(pos.float(), wanted, grid, dims, where, notes)
    return out


def _optional_keys(model: nn.Module) -> set[str]:
    """MONAI TransformerBlock's ``norm_cross_attn`` exists even without cross-attention and is then unused."""
    keys = set()
    for name, module in model.named_modules():
        if hasattr(module, "norm_cross_attn") and not getattr(module, "with_cross_attention", True):
            keys.update(f"{name}.norm_cross_attn.{p}" for p, _ in module.norm_cross_attn.named_parameters())
    return keys


def _apply(
    model: nn.Module,
    target: dict[str, torch.Tensor],
    source: dict[str, torch.Tensor],
    origin: dict[str, str],
    fmt: str,
    where: str,
    head: tuple[str, ...],
    unused: list[str],
    notes: list[str],
) -> LoadReport:
    heads = [k for k in source if k.startswith(head)]
    if heads:
        unused.extend(origin.get(k, k) for k in heads)
        notes.append("The checkpoint's head is unused (it belongs to another task).")
        source = {k: v for k, v in source.items() if k not in heads}
    optional = _optional_keys(model)
    kept = [k for k in target if k.startswith(head)]  # the head first: the report names it
    missing, mismatched, loaded = [], [], []
    for key, value in target.items():
        if key.startswith(head):
            continue
        if key in optional and key not in source:
            kept.append(key)
        elif key not in source:
            missing.append(key)
        elif source[key].shape != value.shape:
            named = key if origin.get(key, key) == key else f"{key} (from {origin[key]})"
            mismatched.append(f"{named}: {shape_text(source[key])} -> {shape_text(value)}")
        else:
            loaded.append(key)
    unexpected = [origin.get(k, k) for k in source if k not in target]
    if missing or unexpected or mismatched:
        lines = [f"checkpoint {where} ({fmt}) does not fit the {type(model).__name__}:"]
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("mismatched (checkpoint -> model)",
                                                                               mismatched)):
            if keys:
                lines.append(f"  {len(keys)} {label}:")
                lines.extend(f"    {k}" for k in keys)
        lines.append("  (a checkpoint of another depth, width, patch embedding or network?)")
        raise CheckpointError("\n".join(lines))
    taken = set(loaded)
    model.load_state_dict({k: source[k] if k in taken else v for k, v in target.items()}, strict=True)
    if any(k in optional for k in kept):
        notes.append("MONAI's unused cross-attention norms (norm_cross_attn) kept.")
    return LoadReport(format=fmt, loaded=loaded, kept=kept, unused=list(unused), notes=list(notes))
