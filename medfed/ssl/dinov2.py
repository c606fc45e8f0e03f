"""DINOv2 ViT weights -> MONAI's ``ViT`` (2-D, conv patch embedding), exactly where the architectures agree.

Oquab et al., "DINOv2: Learning Robust Visual Features without Supervision" (TMLR 2024), facebookresearch/dinov2
layout (``patch_embed.proj``, ``pos_embed``, ``blocks.i.attn.proj``, ``blocks.i.ls1.gamma`` ...). Each step of
the conversion is one function (:func:`from_dinov2` runs them in order):

1. :func:`check_supported`: ``register_tokens`` (MONAI's ViT has none) and the SwiGLU MLP of DINOv2 giant
   (``mlp.w12``, ``mlp.w3``) are refused, as is a model without a 4-d conv patch kernel;
2. :func:`unchunk_blocks`: chunked blocks ``blocks.c.i.*`` (DINOv2 ``block_chunks``) become ``blocks.i.*``;
3. :func:`convert_blocks`: per block ``i``, ``norm1``, ``norm2``, ``attn.qkv`` copy as is (both order the qkv
   rows as (q/k/v, head, head_dim)); LayerScale folds exactly into the linear layer before it (MONAI's block
   has none; ``ls`` multiplies the sublayer output): ``out_proj.W = diag(gamma1) attn.proj.W``,
   ``out_proj.b = gamma1 * attn.proj.b``, ``mlp.linear2`` from ``mlp.fc2`` with ``gamma2`` likewise,
   ``mlp.linear1 = mlp.fc1``; the patch kernel (D, 3, p_src, p_src) goes to C=1 by summing over RGB (a grey
   image replicated to RGB gives the same response), C=3 as is, resized to the model's patch size when it
   differs (:func:`adapt_patch_kernel`); ``norm`` copies; ``mask_token`` (masked-image pretraining) is unused;
4. :func:`convert_position_embeddings`: ``position_embeddings = pos_embed[:, 1:]``, its
   ``sqrt(N_src) x sqrt(N_src)`` grid resized bicubically (align_corners=False, as DINOv2 does for other
   resolutions) when the model's grid differs;
5. :func:`convert_cls_token`: MONAI adds no position embedding to the cls token (it is concatenated after the
   patch tokens got theirs), so ``cls_token' = cls_token + pos_embed[:, :1]`` (exact); a model without cls
   token (``classification=False``) does not use it (reported: its patch tokens then attend to patches only).

DINOv2 uses LayerNorm eps 1e-6, MONAI's ViT ``nn.LayerNorm``'s default 1e-5: a small numerical difference that
loading cannot remove.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import torch

from medfed.ssl.vit_geometry import (
    PATCH_KEY,
    POS_KEY,
    CheckpointError,
    interpolate_patch_grid,
    key_list,
    resize_patch_kernel,
    shape_text,
)

#: DINOv2 keys of a linear-probe / training head, never the encoder
SOURCE_HEAD_PREFIXES: tuple[str, ...] = ("head.", "classification_head.", "dino_head.", "ibot_head.")
_BLOCK = re.compile(r"^blocks\.(\d+)\.(.+)$")
_CHUNKED = re.compile(r"^blocks\.\d+\.(\d+)\.(.+)$")
_DINO_ONLY = re.compile(r"^blocks\.\d+\.(?:\d+\.)?(?:ls[12]\.|attn\.proj\.|mlp\.fc[12]\.|mlp\.w12\.|mlp\.w3\.)")
_LAYER_SCALE = re.compile(r"^blocks\.\d+\.ls[12]\.gamma$")
_COPIED = ("norm1.weight", "norm1.bias", "norm2.weight", "norm2.bias", "attn.qkv.weight", "attn.qkv.bias")


class Converted:
    """The MONAI state dict being built, with the checkpoint key each tensor came from."""

    def __init__(self, origin: dict[str, str]) -> None:
        self.origin = origin
        self.state: dict[str, torch.Tensor] = {}
        self.source: dict[str, str] = {}

    def put(self, key: str, value: torch.Tensor, source_key: str) -> None:
        self.state[key] = value
        self.source[key] = self.origin[source_key]


def looks_dinov2(state: dict[str, torch.Tensor]) -> bool:
    """Whether a state dict has DINOv2-only keys."""
    keys = set(state)
    return bool(keys & {"patch_embed.proj.weight", "pos_embed", "register_tokens", "mask_token"}) or any(
        _DINO_ONLY.match(k) for k in keys)


def check_supported(state: dict[str, torch.Tensor], origin: dict[str, str], target: dict[str, torch.Tensor],
                    where: str) -> None:
    """Step 1: every reason the checkpoint cannot load into the model, at once (:class:`CheckpointError`)."""
    problems = []
    if "register_tokens" in state:
        problems.append(f"it has register tokens ({shape_text(state['register_tokens'])}), which MONAI's ViT does "
                        "not have; use a DINOv2 checkpoint without registers")
    swiglu = sorted(origin[k] for k in state if re.search(r"\.mlp\.w(12|3)\.", k))
    if swiglu:
        problems.append(f"SwiGLU MLP not supported (keys {key_list(swiglu, 3).strip(' ()')}; DINOv2 giant); "
                        "MONAI's ViT has a GELU MLP")
    if problems:
        raise CheckpointError(f"checkpoint {where} (dinov2): " + "; ".join(problems))
    if PATCH_KEY not in target or target[PATCH_KEY].ndim != 4 or POS_KEY not in target:
        raise CheckpointError(f"checkpoint {where} (dinov2): DINOv2 weights load into a 2-D MONAI ViT with a conv "
                              f"patch embedding (proj_type='conv', spatial_dims=2); the model has no 4-d {PATCH_KEY}")


def unchunk_blocks(state: dict[str, torch.Tensor], origin: dict[str, str],
                   notes: list[str]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Step 2: ``blocks.c.i.*`` -> ``blocks.i.*`` (the state and its key origins renamed together)."""
    if not any(_CHUNKED.match(k) for k in state):
        return state, origin
    renamed = {}
    for key, value in state.items():
        match = _CHUNKED.match(key)
        renamed[f"blocks.{match.group(1)}.{match.group(2)}" if match else key] = (value, origin[key])
    notes.append("Renamed chunked blocks blocks.c.i.* to blocks.i.*.")
    return {k: v for k, (v, _) in renamed.items()}, {k: o for k, (_, o) in renamed.items()}


def _block_tensor(out: Converted, key: str, value: torch.Tensor, block: re.Match[str],
                  gammas: dict[str, torch.Tensor], consumed: set[str], target: dict[str, torch.Tensor],
                  where: str) -> bool:
    """One tensor of block ``i`` under its MONAI name, LayerScale folded in; returns whether a gamma was folded."""
    i, rest = block.groups()
    if rest in _COPIED:
        out.put(key, value, key)
    elif rest.startswith(("attn.proj.", "mlp.fc2.")):
        attn = rest.startswith("attn.")
        name = f"blocks.{i}." + ("attn.out_proj." if attn else "mlp.linear2.") + rest.rsplit(".", 1)[1]
        gamma_key = f"blocks.{i}.{'ls1' if attn else 'ls2'}.gamma"
        gamma = gammas.get(gamma_key)
        folded = False
        if gamma is not None:
            if name in target:  # else the block is unexpected: so is its gamma
                consumed.add(gamma_key)
                folded = True
            if gamma.shape[0] != value.shape[0]:
                raise CheckpointError(f"checkpoint {where} (dinov2): blocks.{i} LayerScale gamma "
                                      f"{shape_text(gamma)} does not fit {out.origin[key]} {shape_text(value)}")
            value = gamma[:, None] * value if value.ndim == 2 else gamma * value
        out.put(name, value, key)
        return folded
    elif rest.startswith("mlp.fc1."):
        out.put(f"blocks.{i}.mlp.linear1.{rest.rsplit('.', 1)[1]}", value, key)
    else:
        out.put(key, value, key)  # unexpected
    return False


def convert_blocks(state: dict[str, torch.Tensor], out: Converted, target: dict[str, torch.Tensor], where: str,
                   unused: list[str], notes: list[str]) -> None:
    """Step 3: the patch embedding, the transformer blocks (LayerScale folded) and the final norm."""
    gammas = {k: v.float() for k, v in state.items() if _LAYER_SCALE.match(k)}
    folded, consumed = 0, set()
    for key, value in state.items():
        value = value.float() if value.is_floating_point() else value
        block = _BLOCK.match(key)
        if key in ("cls_token", "pos_embed") or key in gammas:
            continue  # steps 4 and 5 / folded
        if key == "mask_token":
            unused.append(out.origin[key])
            notes.append("mask_token (DINOv2's masked-patch token) is unused.")
        elif key.startswith(SOURCE_HEAD_PREFIXES):
            unused.append(out.origin[key])
        elif key == "patch_embed.proj.weight":
            out.put(PATCH_KEY, adapt_patch_kernel(value, target[PATCH_KEY], where, notes), key)
        elif key == "patch_embed.proj.bias":
            out.put("patch_embedding.patch_embeddings.bias", value, key)
        elif block:
            folded += _block_tensor(out, key, value, block, gammas, consumed, target, where)
        else:
            out.put(key, value, key)  # norm.* copies; anything else is unexpected
    for key in sorted(gammas.keys() - consumed):  # no layer to fold into: unexpected unless its block is missing
        out.put(key, gammas[key], key)
    if folded:
        notes.append(f"Folded LayerScale into {folded} linear layer(s) (W' = diag(gamma) W, b' = gamma b).")


def convert_position_embeddings(state: dict[str, torch.Tensor], out: Converted, target: dict[str, torch.Tensor],
                                grid: Sequence[int] | None, where: str, notes: list[str]) -> torch.Tensor | None:
    """Step 4: the patch positions of ``pos_embed`` (resized to the model's grid); returns its cls slot, if any."""
    pos = state.get("pos_embed")
    if pos is None:
        return None
    pos, pos_cls = pos.float(), None
    n_total = pos.shape[1]
    if pos.ndim == 3 and n_total > 1 and math.isqrt(n_total - 1) ** 2 == n_total - 1:
        pos_cls, patches = pos[:, :1], pos[:, 1:]
    else:
        patches = pos
        notes.append("pos_embed has no cls slot (all of it is patch positions).")
    wanted = target[POS_KEY]
    if patches.shape[-1] == wanted.shape[-1] and patches.shape[1] != wanted.shape[1]:
        patches = interpolate_patch_grid(patches, wanted, grid, 2, where, notes)
    out.put(POS_KEY, patches, "pos_embed")
    return pos_cls


def convert_cls_token(state: dict[str, torch.Tensor], out: Converted, target: dict[str, torch.Tensor],
                      pos_cls: torch.Tensor | None, unused: list[str], notes: list[str]) -> None:
    """Step 5: ``cls_token + pos_embed[:, :1]``, or unused by a model without cls token."""
    if "cls_token" not in state:
        return
    if "cls_token" in target:
        cls = state["cls_token"].float()
        if pos_cls is not None and pos_cls.shape[-1] == cls.shape[-1]:
            cls = cls + pos_cls
            notes.append("cls_token' = cls_token + pos_embed[:, :1] (MONAI adds no position to the cls token).")
        out.put("cls_token", cls, "cls_token")
    else:
        unused.append(out.origin["cls_token"])
        notes.append("The model has no cls token (classification=False): the DINOv2 cls token and its position "
                     "are unused, and patch tokens attend to patches only, so features differ from DINOv2's.")


def from_dinov2(
    state: dict[str, torch.Tensor],
    origin: dict[str, str],
    target: dict[str, torch.Tensor],
    where: str,
    grid: Sequence[int] | None,
    unused: list[str],
    notes: list[str],
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """DINOv2 state dict -> MONAI ``ViT`` keys, steps 1-5 of the module docstring; ``(state, key origins)``."""
    check_supported(state, origin, target, where)
    state, origin = unchunk_blocks(state, origin, notes)
    out = Converted(origin)
    convert_blocks(state, out, target, where, unused, notes)
    pos_cls = convert_position_embeddings(state, out, target, grid, where, notes)
    convert_cls_token(state, out, target, pos_cls, unused, notes)
    return out.state, out.source


def adapt_patch_kernel(weight: torch.Tensor, wanted: torch.Tensor, where: str, notes: list[str]) -> torch.Tensor:
    """The checkpoint's patch kernel for the model's input channels (RGB summed to 1) and patch size."""
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
        weight = resize_patch_kernel(weight, patch)
    return weight
