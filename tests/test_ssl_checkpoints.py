"""Pretrained encoder checkpoints -> MONAI ViT (medfed.ssl.checkpoints), on tiny models (D=48, 2 blocks, 3 heads)."""

from __future__ import annotations

import argparse

import pytest
import torch
import torch.nn.functional as F
from monai.networks.nets import ViT
from torch import nn
from torch.testing import assert_close

from medfed.ssl import (
    CheckpointError,
    LoadReport,
    load_encoder_checkpoint,
    save_encoder_checkpoint,
)

EPS = 1e-5  # MONAI's ViT LayerNorm eps (nn.LayerNorm's default); real DINOv2 uses 1e-6
ATOL = 1e-5


# ------------------------------------------------------------------------ reference DINOv2 ViT (key layout + forward)


class RefAttention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=True)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        att = (q @ k.transpose(-2, -1)) * (d // self.heads) ** -0.5
        return self.proj((att.softmax(dim=-1) @ v).transpose(1, 2).reshape(b, n, d))


class LayerScale(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.empty(dim).uniform_(0.2, 1.5))  # not ones: the fold must matter

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class RefMlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class RefBlock(nn.Module):
    def __init__(self, dim: int, heads: int, hidden: int) -> None:
        super().__init__()
        self.norm1, self.attn, self.ls1 = nn.LayerNorm(dim, eps=EPS), RefAttention(dim, heads), LayerScale(dim)
        self.norm2, self.mlp, self.ls2 = nn.LayerNorm(dim, eps=EPS), RefMlp(dim, hidden), LayerScale(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


class RefDinoViT(nn.Module):
    """facebookresearch/dinov2 ViT: its state-dict keys and forward (position embedding on all 1+N tokens)."""

    def __init__(self, img: int = 32, patch: int = 8, dim: int = 48, depth: int = 2, heads: int = 3,
                 hidden: int = 96, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        n = (img // patch) ** 2
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim) * 0.5)
        self.pos_embed = nn.Parameter(torch.randn(1, 1 + n, dim) * 0.5)
        self.mask_token = nn.Parameter(torch.zeros(1, dim))
        self.patch_embed = nn.Module()
        self.patch_embed.proj = nn.Conv2d(3, dim, patch, stride=patch)
        self.blocks = nn.ModuleList(RefBlock(dim, heads, hidden) for _ in range(depth))
        self.norm = nn.LayerNorm(dim, eps=EPS)
        with torch.no_grad():
            for module in self.modules():
                if isinstance(module, nn.LayerNorm):
                    module.weight.copy_(1 + 0.2 * torch.randn_like(module.weight))
                    module.bias.copy_(0.2 * torch.randn_like(module.bias))

    def forward(self, x: torch.Tensor, with_cls: bool = True) -> torch.Tensor:
        tokens = self.patch_embed.proj(x).flatten(2).transpose(1, 2)
        if with_cls:
            tokens = torch.cat([self.cls_token.expand(len(x), -1, -1), tokens], dim=1) + self.pos_embed
        else:  # what a MONAI ViT without cls token computes
            tokens = tokens + self.pos_embed[:, 1:]
        for block in self.blocks:
            tokens = block(tokens)
        return self.norm(tokens)


def monai_vit(classification: bool = True, channels: int = 3, img: int = 32, patch: int = 8, dim: int = 48,
              depth: int = 2, heads: int = 3, seed: int = 1) -> ViT:
    torch.manual_seed(seed)
    return ViT(in_channels=channels, img_size=(img, img), patch_size=(patch, patch), hidden_size=dim, mlp_dim=2 * dim,
               num_layers=depth, num_heads=heads, classification=classification, num_classes=4, spatial_dims=2,
               qkv_bias=True, post_activation=None).eval()


def features(model: ViT, x: torch.Tensor) -> torch.Tensor:
    """The final-norm tokens (cls first when the model has one), whatever ``classification`` is."""
    out = {}
    hook = model.norm.register_forward_hook(lambda module, args, result: out.setdefault("x", result))
    with torch.no_grad():
        model(x)
    hook.remove()
    return out["x"]


def save(tmp_path, obj, name: str = "ckpt.pth"):
    path = tmp_path / name
    torch.save(obj, path)
    return path


def image(channels: int = 3, size: int = 32, seed: int = 5) -> torch.Tensor:
    return torch.randn(2, channels, size, size, generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------------------------------------ DINOv2 mapping


def test_dinov2_into_vit_without_cls_matches_reference(tmp_path):
    ref = RefDinoViT()
    model = monai_vit(classification=False)
    report = load_encoder_checkpoint(model, save(tmp_path, ref.state_dict()))
    x = image()
    with torch.no_grad():
        assert_close(model(x)[0], ref(x, with_cls=False), atol=ATOL, rtol=1e-5)
    assert report.format == "dinov2"
    assert "cls_token" in report.unused and "mask_token" in report.unused
    assert any("no cls token" in n for n in report.notes)


def test_dinov2_into_classifier_matches_reference_and_keeps_head(tmp_path):
    ref = RefDinoViT()
    model = monai_vit(classification=True)
    head = {k: v.clone() for k, v in model.classification_head.state_dict().items()}
    report = load_encoder_checkpoint(model, save(tmp_path, ref.state_dict()), "dinov2")
    x = image()
    with torch.no_grad():
        assert_close(features(model, x), ref(x), atol=ATOL, rtol=1e-5)  # all 1+N tokens, cls included
    for key, value in model.classification_head.state_dict().items():
        assert torch.equal(value, head[key])
    assert {"classification_head.weight", "classification_head.bias"} <= set(report.kept)
    assert "blocks.0.attn.out_proj.weight" in report.loaded and "cls_token" in report.loaded
    assert any("LayerScale" in n for n in report.notes)
    text = str(report)
    assert "dinov2 checkpoint" in text and "classification_head" in text and "\n" not in text


def test_grey_model_equals_reference_on_replicated_image(tmp_path):
    ref = RefDinoViT()
    model = monai_vit(channels=1)
    report = load_encoder_checkpoint(model, save(tmp_path, ref.state_dict()))
    x = image(channels=1)
    with torch.no_grad():
        assert_close(features(model, x), ref(x.repeat(1, 3, 1, 1)), atol=ATOL, rtol=1e-5)
    assert any("RGB -> 1" in n for n in report.notes)


def test_position_embeddings_interpolated_to_larger_grid(tmp_path):
    ref = RefDinoViT(img=16)  # 2x2 grid
    model = monai_vit(img=32)  # 4x4 grid
    report = load_encoder_checkpoint(model, save(tmp_path, ref.state_dict()))
    pos = model.patch_embedding.position_embeddings
    assert pos.shape == (1, 16, 48)
    grid = ref.pos_embed[:, 1:].detach().reshape(1, 2, 2, 48).permute(0, 3, 1, 2)
    expected = F.interpolate(grid, size=(4, 4), mode="bicubic", align_corners=False).flatten(2).transpose(1, 2)
    assert_close(pos.detach(), expected)
    assert_close(model.cls_token.detach(), (ref.cls_token + ref.pos_embed[:, :1]).detach())
    assert any("2x2 to a 4x4" in n for n in report.notes)

    constant = ref.state_dict()
    constant["pos_embed"][:, 1:] = torch.linspace(-1, 1, 48)
    load_encoder_checkpoint(model, save(tmp_path, constant, "constant.pth"))
    assert_close(model.patch_embedding.position_embeddings.detach(), torch.linspace(-1, 1, 48).expand(1, 16, 48))


@pytest.mark.parametrize("patch", [4, 6, 16])
def test_patch_size_change_preserves_constant_image_embedding(tmp_path, patch):
    ref = RefDinoViT(patch=8)
    model = monai_vit(patch=patch)
    report = load_encoder_checkpoint(model, save(tmp_path, ref.state_dict()))
    assert model.patch_embedding.patch_embeddings.weight.shape == (48, 3, patch, patch)
    x = torch.tensor([0.3, -1.2, 2.0]).reshape(1, 3, 1, 1).expand(1, 3, 32, 32)  # constant per channel
    with torch.no_grad():
        got = model.patch_embedding.patch_embeddings(x)
        want = ref.patch_embed.proj(x)[..., :1, :1]
    assert_close(got, want.expand_as(got), atol=ATOL, rtol=1e-5)
    assert any("Patch kernel resized (8, 8)" in n for n in report.notes)
    assert model.patch_embedding.position_embeddings.shape[1] == (32 // patch) ** 2


def test_dinov2_training_checkpoint_containers_and_prefixes(tmp_path):
    ref = RefDinoViT()
    teacher = {f"backbone.{k}": v for k, v in ref.state_dict().items()}
    teacher["dino_head.last_layer.weight"] = torch.zeros(8, 48)
    student = {f"backbone.{k}": torch.zeros_like(v) for k, v in ref.state_dict().items()}
    model = monai_vit()
    report = load_encoder_checkpoint(model, save(tmp_path, {"student": student, "teacher": teacher}))
    x = image()
    assert_close(features(model, x), ref(x).detach(), atol=ATOL, rtol=1e-5)
    assert "dino_head.last_layer.weight" in report.unused

    # DINOv2 fvcore checkpoint: {"model": {"student.backbone.*", "teacher.backbone.*", ...}}, DDP "module."
    flat = {f"module.teacher.backbone.{k}": v for k, v in ref.state_dict().items()}
    flat.update({f"module.student.backbone.{k}": torch.zeros_like(v) for k, v in ref.state_dict().items()})
    model = monai_vit()
    load_encoder_checkpoint(model, save(tmp_path, {"model": flat, "iteration": 3}, "fvcore.pth"))
    assert_close(features(model, x), ref(x).detach(), atol=ATOL, rtol=1e-5)


def test_chunked_blocks_are_renamed(tmp_path):
    ref = RefDinoViT()
    chunked = {k.replace("blocks.", "blocks.0.", 1) if k.startswith("blocks.") else k: v
               for k, v in ref.state_dict().items()}
    model = monai_vit()
    load_encoder_checkpoint(model, save(tmp_path, {"state_dict": chunked}))
    assert_close(features(model, image()), ref(image()).detach(), atol=ATOL, rtol=1e-5)


# --------------------------------------------------------------------------------------------------------- errors


def test_random_bytes_file_is_an_error_naming_the_file(tmp_path):
    path = tmp_path / "garbage.pth"
    for seed in range(6):  # torch.load fails on random bytes with various exception types
        path.write_bytes(torch.randint(0, 256, (512,), generator=torch.Generator().manual_seed(seed),
                                       dtype=torch.uint8).numpy().tobytes())
        with pytest.raises(CheckpointError, match="garbage.pth: not a readable PyTorch checkpoint"):
            load_encoder_checkpoint(monai_vit(), path)
    with pytest.raises(CheckpointError, match="nowhere.pth: file not found"):
        load_encoder_checkpoint(monai_vit(), tmp_path / "nowhere.pth")


def test_non_state_dicts_are_errors(tmp_path):
    with pytest.raises(CheckpointError, match="list.pth: not a state dict"):
        load_encoder_checkpoint(monai_vit(), save(tmp_path, [1, 2, 3], "list.pth"))
    with pytest.raises(CheckpointError, match="mixed.pth: not a state dict: entries epoch"):
        load_encoder_checkpoint(monai_vit(), save(tmp_path, {"epoch": 3, "w": torch.zeros(2)}, "mixed.pth"))
    with pytest.raises(CheckpointError, match=r"args.pth: holds Python objects \(argparse.Namespace\) .* re-save only its state dict"):
        load_encoder_checkpoint(monai_vit(), save(tmp_path, {"args": argparse.Namespace(a=1)}, "args.pth"))


def test_other_width_lists_every_mismatch_with_both_shapes(tmp_path):
    ref = RefDinoViT(dim=64, heads=4, hidden=128)
    model = monai_vit()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(CheckpointError) as info:
        load_encoder_checkpoint(model, save(tmp_path, ref.state_dict(), "wide.pth"))
    message = str(info.value)
    assert "wide.pth" in message and "mismatched" in message
    assert "patch_embedding.patch_embeddings.weight (from patch_embed.proj.weight): (64, 3, 8, 8) -> (48, 3, 8, 8)" \
        in message
    assert "blocks.1.attn.out_proj.weight (from blocks.1.attn.proj.weight): (64, 64) -> (48, 48)" in message
    assert "blocks.0.mlp.linear1.weight (from blocks.0.mlp.fc1.weight): (128, 64) -> (96, 48)" in message
    assert "patch_embedding.position_embeddings (from pos_embed): (1, 16, 64) -> (1, 16, 48)" in message
    assert "norm.bias: (64,) -> (48,)" in message
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # unchanged on error


def test_missing_block_lists_every_missing_key(tmp_path):
    state = {k: v for k, v in RefDinoViT().state_dict().items() if not k.startswith("blocks.1.")}
    model = monai_vit()
    with pytest.raises(CheckpointError) as info:
        load_encoder_checkpoint(model, save(tmp_path, state))
    message = str(info.value)
    wanted = [k for k in model.state_dict() if k.startswith("blocks.1.") and "norm_cross_attn" not in k]
    assert len(wanted) == 12 and f"{len(wanted)} missing" in message
    assert all(f"    {k}\n" in message + "\n" for k in wanted)


def test_deeper_checkpoint_lists_unexpected_keys(tmp_path):
    with pytest.raises(CheckpointError, match=r"(?s)unexpected.*blocks\.2\.attn\.proj\.weight.*blocks\.2\.ls2\.gamma"):
        load_encoder_checkpoint(monai_vit(), save(tmp_path, RefDinoViT(depth=3).state_dict()))


def test_unsupported_dinov2_variants(tmp_path):
    state = RefDinoViT().state_dict()
    with pytest.raises(CheckpointError, match="register tokens.*without registers"):
        load_encoder_checkpoint(monai_vit(), save(tmp_path, {**state, "register_tokens": torch.zeros(1, 4, 48)}))
    swiglu = {k.replace("mlp.fc1", "mlp.w12").replace("mlp.fc2", "mlp.w3"): v for k, v in state.items()}
    with pytest.raises(CheckpointError, match="SwiGLU MLP not supported"):
        load_encoder_checkpoint(monai_vit(), save(tmp_path, swiglu))
    with pytest.raises(CheckpointError, match="patch kernel has 3 input channels, the model 5"):
        load_encoder_checkpoint(monai_vit(channels=5), save(tmp_path, state))
    with pytest.raises(CheckpointError, match="unknown format 'timm'"):
        load_encoder_checkpoint(monai_vit(), save(tmp_path, state), "timm")  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------- medfed and MONAI


def test_medfed_round_trip_and_network_check(tmp_path):
    source, model = monai_vit(seed=1), monai_vit(seed=2)
    path = save_encoder_checkpoint(source, tmp_path / "enc" / "vit.pth", network="vit", meta={"epochs": 3})
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == "medfed-encoder" and raw["version"] == 1 and raw["meta"] == {"epochs": 3}
    assert not any(k.startswith("classification_head.") for k in raw["state_dict"])
    head = model.classification_head.weight.detach().clone()
    report = load_encoder_checkpoint(model, path, "medfed", expected_network="vit")
    assert report.format == "medfed"
    for key, value in source.state_dict().items():
        if not key.startswith("classification_head."):
            assert torch.equal(model.state_dict()[key], value), key
    assert torch.equal(model.classification_head.weight, head)
    assert load_encoder_checkpoint(monai_vit(), path).format == "medfed"  # auto
    with pytest.raises(CheckpointError, match="vit.pth: saved for network 'vit', the model is 'resnet'"):
        load_encoder_checkpoint(monai_vit(), path, expected_network="resnet")
    with pytest.raises(CheckpointError, match="is not a medfed encoder file"):
        load_encoder_checkpoint(monai_vit(), save(tmp_path, source.state_dict()), "medfed")


def test_monai_round_trip_identical_outputs_head_kept(tmp_path):
    source, model = monai_vit(seed=1), monai_vit(seed=2)
    head = model.classification_head.weight.detach().clone()
    report = load_encoder_checkpoint(model, save(tmp_path, source.state_dict()))
    assert report.format == "monai"
    x = image()
    assert torch.equal(features(model, x), features(source, x))
    assert torch.equal(model.classification_head.weight, head)
    assert not torch.equal(model.classification_head.weight, source.classification_head.weight)
    assert "classification_head.weight" in report.unused and "classification_head.weight" in report.kept


def test_monai_position_embeddings_interpolated(tmp_path):
    source, model = monai_vit(img=16), monai_vit(img=32)
    report = load_encoder_checkpoint(model, save(tmp_path, source.state_dict()), "monai")
    assert model.patch_embedding.position_embeddings.shape == (1, 16, 48)
    assert any("2x2 to a 4x4" in n for n in report.notes)
    with pytest.raises(CheckpointError, match="(?s)mismatched.*blocks.0.attn.qkv.weight: \\(192, 64\\) -> \\(144, 48\\)"):
        load_encoder_checkpoint(model, save(tmp_path, monai_vit(dim=64, heads=4).state_dict(), "wide.pth"))


def test_load_report_str():
    report = LoadReport("monai", loaded=["a"], kept=["h.w", "h.b"], unused=[], notes=["note."])
    assert str(report) == ("monai checkpoint: loaded 1 tensor(s); kept 2 at the model's initialisation (h.w, h.b); "
                           "0 checkpoint tensor(s) unused. note.")
