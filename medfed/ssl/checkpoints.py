"""Pretrained encoder weights -> the MONAI ``ViT`` of a medfed task (the task head stays fresh).

Three file formats (``format="auto"`` tells them apart):

``dinov2``
    a state dict in the facebookresearch/dinov2 ViT layout (``patch_embed.proj``, ``pos_embed``,
    ``blocks.i.attn.proj``, ``blocks.i.ls1.gamma`` ...), mapped exactly onto MONAI's ViT where the two
    architectures agree (see :func:`_from_dinov2` for every formula).
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
import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from medfed.errors import MedfedError
from medfed.tasks.finetune import HEAD_PREFIXES  # the task's head, kept fresh

CheckpointFormat = Literal["auto", "dinov2", "monai", "medfed"]
FORMATS: tuple[str, ...] = ("auto", "dinov2", "monai", "medfed")
MEDFED_FORMAT = "medfed-encoder"
MEDFED_VERSION = 1
#: wrappers of training checkpoints, in order of preference
CONTAINER_KEYS: tuple[str, ...] = ("teacher", "state_dict", "model")
STRIP_PREFIXES: tuple[str, ...] = ("module.", "teacher.", "backbone.", "encoder.")
#: DINOv2 keys of a linear-probe / training head, never the encoder
SOURCE_HEAD_PREFIXES: tuple[str, ...] = ("head.", "classification_head.", "dino_head.", "ibot_head.")

POS_KEY = "patch_embedding.position_embeddings"
PATCH_KEY = "patch_embedding.patch_embeddings.weight"
_DINO_BLOCK = re.compile(r"^blocks\.(\d+)\.(.+)$")
_DINO_CHUNKED = re.compile(r"^blocks\.\d+\.(\d+)\.(.+)$")
_DINO_ONLY = re.compile(r"^blocks\.\d+\.(?:\d+\.)?(?:ls[12]\.|attn\.proj\.|mlp\.fc[12]\.|mlp\.w12\.|mlp\.w3\.)")


class CheckpointError(MedfedError):
    """A checkpoint cannot be read or does not fit the model (the message names the file and every reason)."""


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
                f"kept {len(self.kept)} at the model's initialisation{_names(self.kept)}; "
                f"{len(self.unused)} checkpoint tensor(s) unused{_names(self.unused)}.")
        return " ".join([text, *self.notes])


def _names(keys: Sequence[str], limit: int = 4) -> str:
    if not keys:
        return ""
    more = f" and {len(keys) - limit} more" if len(keys) > limit else ""
    return f" ({', '.join(keys[:limit])}{more})"


def _shape(t: torch.Tensor) -> str:
    return str(tuple(t.shape))


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
        fmt = "dinov2" if _looks_dinov2(state) else "monai"
    target = model.state_dict()
    if fmt == "dinov2":
        if not _looks_dinov2(state):
            raise CheckpointError(f"checkpoint {where}: format 'dinov2' but it has no DINOv2 keys "
                                  f"(patch_embed.proj.weight, pos_embed, blocks.i.attn.proj); first keys: "
                                  f"{', '.join(list(state)[:5])}")
        source, origin = _from_dinov2(state, origin, target, where, grid, unused, notes)
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
        raise CheckpointError(f"checkpoint {where}: not a state dict: entries {_names(bad, 6).strip(' ()')} "
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


def _looks_dinov2(state: dict[str, torch.Tensor]) -> bool:
    keys = set(state)
    return bool(keys & {"patch_embed.proj.weight", "pos_embed", "register_tokens", "mask_token"}) or any(
        _DINO_ONLY.match(k) for k in keys)


# ------------------------------------------------------------------------------------------- DINOv2 -> MONAI


def _from_dinov2(
    state: dict[str, torch.Tensor],
    origin: dict[str, str],
    target: dict[str, torch.Tensor],
    where: str,
    grid: Sequence[int] | None,
    unused: list[str],
    notes: list[str],
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """DINOv2 ViT state dict -> MONAI ``ViT`` keys (2-D, conv patch embedding). Per block ``i``:

    - ``norm1``, ``norm2``, ``attn.qkv`` copy as is (both order the qkv rows as (q/k/v, head, head_dim));
    - LayerScale folds exactly into the linear layer before it (MONAI's block has none; ``ls`` multiplies the
      sublayer output): ``out_proj.W = diag(gamma1) attn.proj.W``, ``out_proj.b = gamma1 * attn.proj.b``,
      and ``mlp.linear2`` from ``mlp.fc2`` with ``gamma2`` likewise; ``mlp.linear1 = mlp.fc1``;

    and for the embeddings:

    - MONAI adds no position embedding to the cls token (it is concatenated after the patch tokens got
      theirs), so ``cls_token' = cls_token + pos_embed[:, :1]`` (exact); a model without cls token
      (``classification=False``) does not use it (reported: its patch tokens then attend to patches only);
    - ``position_embeddings = pos_embed[:, 1:]``, its ``sqrt(N_src) x sqrt(N_src)`` grid resized bicubically
      (align_corners=False, as DINOv2 does for other resolutions) when the model's grid differs;
    - patch kernel (D, 3, p_src, p_src): to C=1 by summing over the RGB channels (a grey image replicated to
      RGB gives the same response), C=3 as is; resized to the model's patch size when it differs
      (:func:`_resize_patch_kernel`);
    - ``norm`` copies; ``mask_token`` (masked-image pretraining) is unused.

    Not supported (CheckpointError): ``register_tokens`` (MONAI's ViT has no register tokens; use a DINOv2
    checkpoint without registers) and the SwiGLU MLP of DINOv2 giant (``mlp.w12``, ``mlp.w3``).
    DINOv2 uses LayerNorm eps 1e-6, MONAI's ViT ``nn.LayerNorm``'s default 1e-5: a small numerical
    difference that loading cannot remove. Chunked blocks (``blocks.c.i.*``, DINOv2 ``block_chunks``) are
    renamed ``blocks.i.*`` first.
    """
    problems = []
    if "register_tokens" in state:
        problems.append(f"it has register tokens ({_shape(state['register_tokens'])}), which MONAI's ViT does "
                        "not have; use a DINOv2 checkpoint without registers")
    swiglu = sorted(origin[k] for k in state if re.search(r"\.mlp\.w(12|3)\.", k))
    if swiglu:
        problems.append(f"SwiGLU MLP not supported (keys {_names(swiglu, 3).strip(' ()')}; DINOv2 giant); "
                        "MONAI's ViT has a GELU MLP")
    if problems:
        raise CheckpointError(f"checkpoint {where} (dinov2): " + "; ".join(problems))
    if PATCH_KEY not in target or target[PATCH_KEY].ndim != 4 or POS_KEY not in target:
        raise CheckpointError(f"checkpoint {where} (dinov2): DINOv2 weights load into a 2-D MONAI ViT with a conv "
                              f"patch embedding (proj_type='conv', spatial_dims=2); the model has no 4-d {PATCH_KEY}")
    if any(_DINO_CHUNKED.match(k) for k in state):
        renamed = {}
        for key, value in state.items():
            match = _DINO_CHUNKED.match(key)
            renamed[f"blocks.{match.group(1)}.{match.group(2)}" if match else key] = (value, origin[key])
        state = {k: v for k, (v, _) in renamed.items()}
        origin = {k: o for k, (_, o) in renamed.items()}
        notes.append("Renamed chunked blocks blocks.c.i.* to blocks.i.*.")

    out: dict[str, torch.Tensor] = {}
    src: dict[str, str] = {}

    def put(key: str, value: torch.Tensor, source_key: str) -> None:
        out[key] = value
        src[key] = origin[source_key]

    gammas = {k: v.float() for k, v in state.items() if re.match(r"^blocks\.\d+\.ls[12]\.gamma$", k)}
    folded, consumed = 0, set()
    for key, value in state.items():
        value = value.float() if value.is_floating_point() else value
        block = _DINO_BLOCK.match(key)
        if key in ("cls_token", "pos_embed") or key in gammas:
            continue  # below / folded
        if key == "mask_token":
            unused.append(origin[key])
            notes.append("mask_token (DINOv2's masked-patch token) is unused.")
        elif key.startswith(SOURCE_HEAD_PREFIXES):
            unused.append(origin[key])
        elif key == "patch_embed.proj.weight":
            put(PATCH_KEY, _adapt_patch_kernel(value, target[PATCH_KEY], where, notes), key)
        elif key == "patch_embed.proj.bias":
            put("patch_embedding.patch_embeddings.bias", value, key)
        elif block:
            i, rest = block.groups()
            if rest in ("norm1.weight", "norm1.bias", "norm2.weight", "norm2.bias", "attn.qkv.weight", "attn.qkv.bias"):
                put(key, value, key)
            elif rest.startswith(("attn.proj.", "mlp.fc2.")):
                attn = rest.startswith("attn.")
                name = f"blocks.{i}." + ("attn.out_proj." if attn else "mlp.linear2.") + rest.rsplit(".", 1)[1]
                gamma_key = f"blocks.{i}.{'ls1' if attn else 'ls2'}.gamma"
                gamma = gammas.get(gamma_key)
                if gamma is not None:
                    if name in target:  # else the block is unexpected: so is its gamma
                        consumed.add(gamma_key)
                        folded += 1
                    if gamma.shape[0] != value.shape[0]:
                        raise CheckpointError(f"checkpoint {where} (dinov2): blocks.{i} LayerScale gamma "
                                              f"{_shape(gamma)} does not fit {origin[key]} {_shape(value)}")
                    value = gamma[:, None] * value if value.ndim == 2 else gamma * value
                put(name, value, key)
            elif rest.startswith("mlp.fc1."):
                put(f"blocks.{i}.mlp.linear1.{rest.rsplit('.', 1)[1]}", value, key)
            else:
                put(key, value, key)  # unexpected
        else:
            put(key, value, key)  # norm.* copies; anything else is unexpected
    for key in sorted(gammas.keys() - consumed):  # no layer to fold into: unexpected unless its block is missing
        put(key, gammas[key], key)
    if folded:
        notes.append(f"Folded LayerScale into {folded} linear layer(s) (W' = diag(gamma) W, b' = gamma b).")

    pos = state.get("pos_embed")
    pos_cls = None
    if pos is not None:
        pos = pos.float()
        n_total = pos.shape[1]
        if pos.ndim == 3 and n_total > 1 and math.isqrt(n_total - 1) ** 2 == n_total - 1:
            pos_cls, patches = pos[:, :1], pos[:, 1:]
        else:
            patches = pos
            notes.append("pos_embed has no cls slot (all of it is patch positions).")
        wanted = target[POS_KEY]
        if patches.shape[-1] == wanted.shape[-1] and patches.shape[1] != wanted.shape[1]:
            patches = _interpolate(patches, wanted, grid, 2, where, notes)
        put(POS_KEY, patches, "pos_embed")
    if "cls_token" in state:
        if "cls_token" in target:
            cls = state["cls_token"].float()
            if pos_cls is not None and pos_cls.shape[-1] == cls.shape[-1]:
                cls = cls + pos_cls
                notes.append("cls_token' = cls_token + pos_embed[:, :1] (MONAI adds no position to the cls token).")
            put("cls_token", cls, "cls_token")
        else:
            unused.append(origin["cls_token"])
            notes.append("The model has no cls token (classification=False): the DINOv2 cls token and its position "
                         "are unused, and patch tokens attend to patches only, so features differ from DINOv2's.")
    return out, src


def _adapt_patch_kernel(weight: torch.Tensor, wanted: torch.Tensor, where: str, notes: list[str]) -> torch.Tensor:
    channels, patch = wanted.shape[1], tuple(wanted.shape[2:])
    if weight.ndim != 4:
        return weight  # reported as mismatched
    if weight.shape[1] != channels:
        if weight.shape[1] == 3 and channels == 1:
            weight = weight.sum(dim=1, keepdim=True)
            notes.append("Patch kernel RGB -> 1 channel by summing over the input channels.")
        else:
            raise CheckpointError(f"checkpoint {where} (dinov2): patch kernel has {weight.shape[1]} input channels, "
                                  f"the model {channels}; supported: the same count, or 3 (RGB) -> 1 (summed)")
    if tuple(weight.shape[2:]) != patch:
        notes.append(f"Patch kernel resized {tuple(weight.shape[2:])} -> {patch} (bilinear, sum-preserving).")
        weight = _resize_patch_kernel(weight, patch)
    return weight


def _resize_patch_kernel(weight: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Patch kernel (D, C, p_src, p_src) -> (D, C, *size): bilinear resize (align_corners=False) times
    ``p_src^2 / prod(size)`` (``(p_src / p)^2``), then a uniform shift per (D, C) kernel so that
    ``sum(W') = sum(W)`` exactly: a constant image keeps its patch embedding (for integer ratios the shift is
    ~0). FlexiViT's pseudo-inverse resize (Beyer et al., CVPR 2023) preserves the embedding of every smooth
    patch more exactly; this is the simple, common choice."""
    size = tuple(int(s) for s in size)
    resized = F.interpolate(weight, size=size, mode="bilinear", align_corners=False, antialias=False)
    resized = resized * (weight.shape[2] * weight.shape[3] / math.prod(size))
    shift = (weight.sum(dim=(2, 3), keepdim=True) - resized.sum(dim=(2, 3), keepdim=True)) / math.prod(size)
    return resized + shift


def interpolate_position_embeddings(
    pos: torch.Tensor, grid: Sequence[int], source_grid: Sequence[int] | None = None
) -> torch.Tensor:
    """Patch position embeddings (1, N_src, D) -> (1, prod(grid), D): reshaped to the source grid (row-major,
    as the conv tokens are flattened; square or cubic when ``source_grid`` is None), resized with bicubic
    (2-D) or trilinear (3-D) interpolation, align_corners=False, as DINOv2 does for other resolutions.
    ValueError when N_src is not a square/cube and no ``source_grid`` is given."""
    grid = tuple(int(g) for g in grid)
    n, dim = pos.shape[1], pos.shape[2]
    if source_grid is None:
        source_grid = (_side(n, len(grid)),) * len(grid)
    source_grid = tuple(int(g) for g in source_grid)
    if math.prod(source_grid) != n:
        raise ValueError(f"{n} position embeddings do not fill a {source_grid} grid")
    if source_grid == grid:
        return pos.clone()
    x = pos.float().reshape(1, *source_grid, dim).movedim(-1, 1)
    x = F.interpolate(x, size=grid, mode="bicubic" if len(grid) == 2 else "trilinear", align_corners=False)
    return x.movedim(1, -1).reshape(1, math.prod(grid), dim).to(pos.dtype)


def _side(n: int, dims: int) -> int:
    side = round(n ** (1 / dims))
    if side**dims != n:
        raise ValueError(f"{n} position embeddings are not a {'square' if dims == 2 else 'cubic'} grid")
    return side


def _interpolate(
    patches: torch.Tensor, wanted: torch.Tensor, grid: Sequence[int] | None, dims: int, where: str, notes: list[str]
) -> torch.Tensor:
    dims = len(grid) if grid is not None else dims
    try:
        if grid is None:
            grid = (_side(wanted.shape[1], dims),) * dims
        if math.prod(grid) != wanted.shape[1]:
            raise ValueError(f"grid {tuple(grid)} does not have the model's {wanted.shape[1]} patches")
        source = (_side(patches.shape[1], dims),) * dims
        out = interpolate_position_embeddings(patches, grid, source)
    except ValueError as err:
        raise CheckpointError(f"checkpoint {where}: cannot interpolate the position embeddings ({err}); pass "
                              "grid=(rows, cols) for a model with a non-square patch grid") from None
    notes.append(f"Position embeddings interpolated from a {'x'.join(map(str, source))} to a "
                 f"{'x'.join(map(str, grid))} patch grid ({'bicubic' if dims == 2 else 'trilinear'}).")
    return out


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
            out[POS_KEY] = _interpolate(pos.float(), wanted, grid, dims, where, notes)
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
            mismatched.append(f"{named}: {_shape(source[key])} -> {_shape(value)}")
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
