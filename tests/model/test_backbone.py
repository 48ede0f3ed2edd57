"""Tests of the Video-Swin backbone and its checkpoint loading (docs/architecture.md#backbone)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torchvision.models.video.swin_transformer import ShiftedWindowAttention3d, SwinTransformer3d

from wavecl.model.backbone import (
    VIDEO_SWIN_VARIANTS,
    KeyReport,
    VideoSwinBackbone,
    WindowAttention3d,
    load_video_swin_weights,
    masked_attention,
)
from wavecl.original import backbone_key

SMALL = dict(embed_dim=16, depths=(1, 2, 1, 1), num_heads=(1, 2, 2, 2), window_size=(2, 3, 3))


def small_backbone() -> VideoSwinBackbone:
    return VideoSwinBackbone(**SMALL, drop_path=0.0).eval()


def torchvision_swin(patch_size: list[int], **options) -> SwinTransformer3d:
    """torchvision's Video-Swin with the SMALL sizes."""
    return SwinTransformer3d(
        patch_size=patch_size,
        embed_dim=SMALL["embed_dim"],
        depths=list(SMALL["depths"]),
        num_heads=list(SMALL["num_heads"]),
        window_size=list(SMALL["window_size"]),
        **options,
    )


def kinetics_model() -> SwinTransformer3d:
    """The classification model of the checkpoints: same sizes, patch [2, 4, 4], with norm and head."""
    torch.manual_seed(0)
    model = torchvision_swin([2, 4, 4], stochastic_depth_prob=0.0, num_classes=5)
    with torch.no_grad():  # make the two temporal taps of the patch kernel clearly different
        model.patch_embed.proj.weight[:, :, 1].mul_(-0.5).add_(0.01)
    return model.eval()


def official_key(torchvision_key: str) -> str:
    """Inverse of the key mapping, written here by hand: torchvision name → official checkpoint name."""
    parts = torchvision_key.split(".")
    if parts[0] == "head":
        return "cls_head.fc_cls." + parts[1]
    if parts[0] != "features":
        return "backbone." + torchvision_key
    index = int(parts[1])
    if index % 2 == 1:
        return f"backbone.layers.{index // 2}.downsample." + ".".join(parts[2:])
    rest = ".".join(parts[3:]).replace("mlp.0.", "mlp.fc1.").replace("mlp.3.", "mlp.fc2.")
    return f"backbone.layers.{index // 2}.blocks.{parts[2]}.{rest}"


def official_checkpoint(model: SwinTransformer3d) -> dict:
    state = {official_key(key): value.clone() for key, value in model.state_dict().items()}
    return {"meta": {"epoch": 30}, "state_dict": state}


def stage_outputs(model: SwinTransformer3d, clip: torch.Tensor) -> list[torch.Tensor]:
    """Stage outputs of the Kinetics model on ``clip [B, 3, T, H, W]``, channels-last ``[B, T', H, W, C]``."""
    tokens = model.patch_embed(clip)
    outputs = []
    for index, layer in enumerate(model.features):
        tokens = layer(tokens)
        if index % 2 == 0:
            outputs.append(tokens)
    return outputs


def test_variants_and_swin_t_parameter_count() -> None:
    backbone = VideoSwinBackbone.from_name("video-swin-t")
    assert sum(p.numel() for p in backbone.parameters()) == 27_844_326
    assert backbone.channels == (96, 192, 384, 768)
    assert not hasattr(backbone.body, "head") and not hasattr(backbone.body, "norm")
    assert set(VIDEO_SWIN_VARIANTS) == {"video-swin-t", "video-swin-s", "video-swin-b"}
    with pytest.raises(ValueError, match="video-swin-l"):
        VideoSwinBackbone.from_name("video-swin-l")


@pytest.mark.parametrize("height, width", [(32, 48), (37, 45)])
def test_output_shapes_and_strides(height: int, width: int) -> None:
    backbone = small_backbone()
    batch, frames = 2, 3
    with torch.no_grad():
        outputs = backbone(torch.randn(batch, frames, 3, height, width))
    h, w = math.ceil(height / 4), math.ceil(width / 4)
    for stage, output in enumerate(outputs):
        assert output.shape == (batch * frames, 16 * 2**stage, h, w)
        h, w = math.ceil(h / 2), math.ceil(w / 2)


def test_outputs_are_batch_major_and_per_clip() -> None:
    """Row b*T + t of every output is clip b, frame t; clips do not interact."""
    backbone = small_backbone()
    clips = torch.randn(2, 3, 3, 24, 28)
    with torch.no_grad():
        together = backbone(clips)
        second_alone = backbone(clips[1:])
    for joint, alone in zip(together, second_alone):
        torch.testing.assert_close(joint[3:], alone, rtol=1e-5, atol=1e-5)


def test_official_checkpoint_matches_kinetics_model_on_doubled_frames(tmp_path) -> None:
    """The [2,4,4] model on frames f0,f0,f1,f1,... equals the [1,4,4] model with the time-summed kernel on f0,f1,...

    Each temporal patch of the doubled clip sees one frame twice, so its response is (w0 + w1) * f, which is
    exactly what the summed kernel computes on the single frame; everything after the patch embedding has the
    same weights and the same token grid.
    """
    reference = kinetics_model()
    path = tmp_path / "swin_kinetics.pth"
    torch.save(official_checkpoint(reference), path)
    backbone = small_backbone()
    report = load_video_swin_weights(backbone, path)
    assert report == KeyReport([], [])

    frames = torch.randn(1, 3, 3, 29, 35)
    doubled = frames.repeat_interleave(2, dim=1)
    with torch.no_grad():
        ours = backbone(frames)
        theirs = stage_outputs(reference, doubled.permute(0, 2, 1, 3, 4))
        logits = reference(doubled.permute(0, 2, 1, 3, 4))
    for stage, (mine, expected) in enumerate(zip(ours, theirs)):
        torch.testing.assert_close(mine, expected[0].permute(0, 3, 1, 2), rtol=1e-4, atol=1e-5, msg=f"stage {stage}")
    # torchvision's own classification forward, continued from our last stage
    with torch.no_grad():
        pooled = reference.norm(ours[3].permute(0, 2, 3, 1)).mean(dim=(0, 1, 2))
        torch.testing.assert_close(reference.head(pooled)[None], logits, rtol=1e-4, atol=1e-5)


def test_torchvision_weight_file_loads(tmp_path) -> None:
    reference = kinetics_model()
    path = tmp_path / "swin3d_t-7615ae03.pth"
    torch.save(reference.state_dict(), path)
    backbone = small_backbone()
    load_video_swin_weights(backbone, path)
    loaded = backbone.body.state_dict()
    original = reference.state_dict()
    torch.testing.assert_close(
        loaded["patch_embed.proj.weight"][:, :, 0],
        original["patch_embed.proj.weight"][:, :, 0] + original["patch_embed.proj.weight"][:, :, 1],
    )
    for key, value in loaded.items():
        if key != "patch_embed.proj.weight":
            assert torch.equal(value, original[key]), key


def test_strict_and_non_strict_key_reports(tmp_path) -> None:
    checkpoint = official_checkpoint(kinetics_model())
    del checkpoint["state_dict"]["backbone.layers.1.blocks.1.mlp.fc2.bias"]
    checkpoint["state_dict"]["backbone.extra_adapter.weight"] = torch.zeros(3)
    path = tmp_path / "partial.pth"
    torch.save(checkpoint, path)

    with pytest.raises(ValueError) as error:
        load_video_swin_weights(small_backbone(), path)
    message = str(error.value)
    assert "partial.pth" in message
    assert "body.features.2.1.mlp.3.bias" in message and "backbone.extra_adapter.weight" in message

    backbone = small_backbone()
    report = load_video_swin_weights(backbone, path, strict=False)
    assert report.missing == ["body.features.2.1.mlp.3.bias"]
    assert report.unexpected == ["backbone.extra_adapter.weight"]
    expected = checkpoint["state_dict"]["backbone.layers.2.blocks.0.attn.qkv.weight"]
    assert torch.equal(backbone.body.features[4][0].attn.qkv.weight, expected)


def test_wrong_size_checkpoint_names_file_and_key(tmp_path) -> None:
    path = tmp_path / "swin_other_size.pth"
    torch.save(official_checkpoint(kinetics_model()), path)
    other = VideoSwinBackbone(embed_dim=24, depths=(1, 2, 1, 1), num_heads=(1, 2, 2, 2), window_size=(2, 3, 3))
    with pytest.raises(ValueError, match=r"swin_other_size\.pth.*patch_embed\.proj\.weight"):
        load_video_swin_weights(other, path, strict=False)


def test_missing_truncated_and_foreign_files(tmp_path) -> None:
    backbone = small_backbone()
    with pytest.raises(FileNotFoundError, match="absent.pth"):
        load_video_swin_weights(backbone, tmp_path / "absent.pth")

    good = tmp_path / "good.pth"
    torch.save(official_checkpoint(kinetics_model()), good)
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(ValueError, match="truncated.pth"):
        load_video_swin_weights(backbone, truncated)

    foreign = tmp_path / "resnet.pth"
    torch.save(nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)).state_dict(), foreign)
    with pytest.raises(ValueError, match="resnet.pth.*not a Video-Swin checkpoint"):
        load_video_swin_weights(backbone, foreign, strict=False)

    text = tmp_path / "notes.pth"
    text.write_text("not a checkpoint at all")
    with pytest.raises(ValueError, match="notes.pth"):
        load_video_swin_weights(backbone, text)


def test_reference_key_mapping() -> None:
    assert backbone_key("backbone.0.body.patch_embed.proj.weight") == "backbone.body.patch_embed.proj.weight"
    assert backbone_key("backbone.0.body.layers.2.blocks.5.mlp.fc1.weight") == "backbone.body.features.4.5.mlp.0.weight"
    assert (
        backbone_key("backbone.0.body.layers.3.blocks.1.attn.relative_position_index")
        == "backbone.body.features.6.1.attn.relative_position_index"
    )
    assert backbone_key("backbone.0.body.downsamples.1.reduction.weight") == "backbone.body.features.3.reduction.weight"
    with pytest.raises(ValueError, match="text_encoder"):
        backbone_key("text_encoder.pooler.dense.weight")


def test_reference_keys_cover_the_backbone_exactly() -> None:
    """Every backbone key, written the reference's way by hand, maps back to itself."""
    ours = ["backbone." + key for key in small_backbone().state_dict()]
    reference = []
    for key in ours:
        parts = key.split(".")  # backbone, body, features, index, ...
        if parts[2] != "features":
            reference.append("backbone.0.body." + ".".join(parts[2:]))
        elif int(parts[3]) % 2 == 1:
            reference.append(f"backbone.0.body.downsamples.{int(parts[3]) // 2}." + ".".join(parts[4:]))
        else:
            rest = ".".join(parts[5:]).replace("mlp.0.", "mlp.fc1.").replace("mlp.3.", "mlp.fc2.")
            reference.append(f"backbone.0.body.layers.{int(parts[3]) // 2}.blocks.{parts[4]}.{rest}")
    assert [backbone_key(key) for key in reference] == ours


@pytest.mark.parametrize("shape", [(1, 1, 9, 11), (2, 3, 13, 15), (1, 8, 14, 21)])
@pytest.mark.parametrize("window", [(2, 3, 3), (8, 7, 7)])
@pytest.mark.parametrize("shifted", [False, True], ids=["plain", "shifted"])
def test_window_attention_equals_torchvision(shape, window, shifted) -> None:
    """Outputs and gradients (input and every parameter) of torchvision's module with the same weights;
    the shapes cover padding, windows shrunk to the input, and shifts along time and space."""
    torch.manual_seed(0)
    shift = [size // 2 for size in window] if shifted else [0, 0, 0]
    reference = ShiftedWindowAttention3d(16, list(window), shift, 2).double()
    fast = WindowAttention3d(16, list(window), shift, 2).double()
    fast.load_state_dict(reference.state_dict())
    assert list(fast.state_dict()) == list(reference.state_dict())
    tokens = torch.randn(*shape, 16, dtype=torch.float64, requires_grad=True)
    upstream = torch.randn(*shape, 16, dtype=torch.float64)
    expected = reference(tokens)
    actual = fast(tokens)
    torch.testing.assert_close(actual, expected, rtol=1e-10, atol=1e-10)
    expected_grads = torch.autograd.grad(expected, [tokens, *reference.parameters()], upstream)
    actual_grads = torch.autograd.grad(actual, [tokens, *fast.parameters()], upstream)
    for mine, theirs in zip(actual_grads, expected_grads):
        torch.testing.assert_close(mine, theirs, rtol=1e-10, atol=1e-10)


def test_every_block_uses_the_fast_attention_with_torchvision_keys() -> None:
    backbone = small_backbone()
    blocks = [block for stage in backbone.body.features[::2] for block in stage]
    assert len(blocks) == sum(SMALL["depths"])
    assert all(type(block.attn) is WindowAttention3d for block in blocks)
    plain = torchvision_swin([1, 4, 4])
    expected = {key: value.shape for key, value in plain.state_dict().items() if not key.startswith(("norm.", "head."))}
    assert {key: value.shape for key, value in backbone.body.state_dict().items()} == expected


def test_window_layout_built_under_inference_mode_serves_training() -> None:
    """The per-shape indices are cached: a first call under inference_mode must not leave inference
    tensors that a later training step cannot save for backward."""
    attention = WindowAttention3d(16, [2, 3, 3], [1, 1, 1], 2)
    tokens = torch.randn(1, 3, 10, 11, 16)  # a shape no other test uses, so the first call builds it
    with torch.inference_mode():
        expected = attention(tokens)
    actual = attention(tokens.requires_grad_())
    actual.sum().backward()
    torch.testing.assert_close(actual, expected)
    assert tokens.grad is not None


def test_training_attention_under_bf16_autocast_computes_in_float32() -> None:
    """The CPU training path of the window attention (mask needing a gradient) takes bfloat16 q, k, v as
    torch's math attention does: computed in float32, only the output rounded. Logits of magnitude ~10,
    rounded to bfloat16 first, would miss the float64 result by several hundredths."""
    generator = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(3, 2, 49, 16, generator=generator).bfloat16() for _ in range(3))
    k = k * 3
    mask = torch.randn(1, 2, 49, 49, generator=generator, requires_grad=True)
    upstream = torch.randn(3, 2, 49, 16, generator=generator)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        output = masked_attention(q, k, v, mask, dropout=0.0)
    (mask_grad,) = torch.autograd.grad(output.float(), mask, upstream)
    exact_mask = mask.detach().double().requires_grad_()
    scores = q.double() @ k.double().transpose(-2, -1) / 4 + exact_mask
    expected = scores.softmax(dim=-1) @ v.double()
    (expected_grad,) = torch.autograd.grad(expected, exact_mask, upstream.double())
    assert output.dtype == torch.bfloat16
    # bfloat16 rounding of the output (2^-9 of its magnitude, < 4 here), not the 0.05 of bf16 logits
    assert (output.double() - expected).abs().max() < 0.015
    # the upstream gradient passes the bfloat16 output too: 2^-9 of it, far from the 0.06 of bf16 logits
    assert (mask_grad.double() - expected_grad).abs().max() < 0.02
