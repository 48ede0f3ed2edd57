"""Tests of the pure-PyTorch multi-scale deformable attention and the deformable transformer."""

from __future__ import annotations

import math
from unittest import mock

import pytest
import torch
from support import OperandDtypes, embedding_bag_operands
from torch import nn

from wavecl.model import deformable
from wavecl.model.deformable import (
    DeformableOutput,
    DeformableTransformer,
    MSDeformAttn,
    ms_deform_attn,
)
from wavecl.model.linear import relu_feed_forward


def naive_ms_deform_attn(value, shapes, sampling_locations, attention_weights):
    """Point-by-point bilinear sampling with explicit corner weights; zero outside the map."""
    n_frames, _, heads, head_dim = value.shape
    _, num_queries, _, levels, points, _ = sampling_locations.shape
    starts = [sum(h * w for h, w in shapes[:i]) for i in range(levels)]
    out = torch.zeros(n_frames, num_queries, heads, head_dim, dtype=value.dtype)
    for n in range(n_frames):
        for q in range(num_queries):
            for m in range(heads):
                for lvl, (h, w) in enumerate(shapes):
                    level_value = value[n, starts[lvl] : starts[lvl] + h * w, m].reshape(h, w, head_dim)
                    for p in range(points):
                        x = sampling_locations[n, q, m, lvl, p, 0].item() * w - 0.5
                        y = sampling_locations[n, q, m, lvl, p, 1].item() * h - 0.5
                        x0, y0 = math.floor(x), math.floor(y)
                        fx, fy = x - x0, y - y0
                        sample = torch.zeros(head_dim, dtype=value.dtype)
                        corners = [
                            (y0, x0, (1 - fy) * (1 - fx)),
                            (y0, x0 + 1, (1 - fy) * fx),
                            (y0 + 1, x0, fy * (1 - fx)),
                            (y0 + 1, x0 + 1, fy * fx),
                        ]
                        for yy, xx, weight in corners:
                            if 0 <= yy < h and 0 <= xx < w:
                                sample += weight * level_value[yy, xx]
                        out[n, q, m] += attention_weights[n, q, m, lvl, p] * sample
    return out.reshape(n_frames, num_queries, heads * head_dim)


def _msda_inputs():
    generator = torch.Generator().manual_seed(0)
    shapes = ((5, 7), (3, 4), (1, 2))
    n_frames, num_queries, heads, head_dim, points = 2, 4, 2, 3, 3
    length = sum(h * w for h, w in shapes)
    value = torch.randn(n_frames, length, heads, head_dim, generator=generator, dtype=torch.float64)
    # locations in [-0.3, 1.3]: many samples fall partly or fully outside the maps
    locations = (
        torch.rand(n_frames, num_queries, heads, 3, points, 2, generator=generator, dtype=torch.float64) * 1.6 - 0.3
    )
    locations[0, 0, 0, 0, 0] = torch.tensor([2.5 / 7, 1.5 / 5], dtype=torch.float64)  # an exact pixel centre
    weights = torch.rand(n_frames, num_queries, heads, 3, points, generator=generator, dtype=torch.float64)
    return shapes, value, locations, weights


FORMULATIONS = {
    "gather (inference)": deformable._sample_by_gather,
    "gather with gradient (CPU autograd)": deformable._GatherWithGradient.apply,
    "grid_sample (autograd elsewhere, compiled, ONNX export)": deformable._sample_by_grid,
}
"""The three exact formulations :func:`ms_deform_attn` chooses between, called directly: the tests run on the
CPU, where its own choice in training is the gather with gradient."""

DIFFERENTIABLE = [name for name in FORMULATIONS if name != "gather (inference)"]


@pytest.mark.parametrize("name", FORMULATIONS)
def test_each_formulation_matches_naive_bilinear_loop(name):
    shapes, value, locations, weights = _msda_inputs()
    expected = naive_ms_deform_attn(value, shapes, locations, weights)
    with_grad = name in DIFFERENTIABLE
    with torch.set_grad_enabled(with_grad):
        actual = FORMULATIONS[name](value.requires_grad_(with_grad), shapes, locations, weights)
    assert actual.shape == (2, 4, 2 * 3)
    assert actual.requires_grad == with_grad
    torch.testing.assert_close(actual, expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize(
    ("device", "tracing", "grad", "chosen"),
    [
        ("cpu", None, False, "_sample_by_gather"),
        ("cpu", None, True, "_GatherWithGradient"),
        ("cpu", "is_exporting", False, "_sample_by_grid"),
        ("cpu", "is_compiling", True, "_sample_by_grid"),
        ("meta", None, True, "_sample_by_grid"),
    ],
)
def test_ms_deform_attn_chooses_its_formulation(device, tracing, grad, chosen):
    """Gather without autograd, the gather with its written-out backward for eager CPU autograd,
    ``grid_sample`` for autograd on other devices (a meta tensor stands for one) or compiled, and for export."""
    shapes, *tensors = _msda_inputs()
    value, locations, weights = (tensor.to(device).requires_grad_(grad) for tensor in tensors)
    calls = []

    def spy(label):
        return lambda *args: calls.append(label) or torch.zeros(2, 4, 6, device=device)

    with (
        mock.patch.object(deformable, "_sample_by_gather", spy("_sample_by_gather")),
        mock.patch.object(deformable, "_sample_by_grid", spy("_sample_by_grid")),
        mock.patch.object(deformable._GatherWithGradient, "apply", spy("_GatherWithGradient")),
        mock.patch.object(torch.compiler, "is_exporting", return_value=tracing == "is_exporting"),
        mock.patch.object(torch.compiler, "is_compiling", return_value=tracing == "is_compiling"),
        torch.set_grad_enabled(grad),
    ):
        ms_deform_attn(value, shapes, locations, weights)
    assert calls == [chosen]


def naive_with_location_grad(shapes, value, locations, weights):
    """:func:`naive_ms_deform_attn` differentiable in the locations: the naive loop reads them with ``.item()``;
    here the gradient flows through the bilinear corner weights, which is what the formulations differentiate."""
    n_frames, _, heads, head_dim = value.shape
    out = []
    starts = [sum(h * w for h, w in shapes[:i]) for i in range(len(shapes))]
    for level, (h, w) in enumerate(shapes):
        level_value = value[:, starts[level] : starts[level] + h * w].reshape(n_frames, h, w, heads, head_dim)
        x = locations[:, :, :, level, :, 0] * w - 0.5
        y = locations[:, :, :, level, :, 1] * h - 0.5
        x0, y0 = x.floor().detach(), y.floor().detach()
        total = 0
        for dy in (0, 1):
            for dx in (0, 1):
                xx, yy = (x0 + dx).long(), (y0 + dy).long()
                inside = (xx >= 0) & (xx < w) & (yy >= 0) & (yy < h)
                fx, fy = x - x0, y - y0
                corner_weight = (fx if dx else 1 - fx) * (fy if dy else 1 - fy) * inside
                frames = torch.arange(n_frames)[:, None, None, None]
                head = torch.arange(heads)[None, None, :, None]
                picked = level_value[frames, yy.clamp(0, h - 1), xx.clamp(0, w - 1), head]  # [N, Q, M, P, D]
                total = total + (picked * (corner_weight * weights[:, :, :, level])[..., None]).sum(dim=3)
        out.append(total)
    return sum(out).flatten(2)


def test_differentiable_naive_loop_equals_the_naive_loop():
    shapes, value, locations, weights = _msda_inputs()
    torch.testing.assert_close(
        naive_with_location_grad(shapes, value, locations, weights),
        naive_ms_deform_attn(value, shapes, locations, weights),
        rtol=1e-10,
        atol=1e-10,
    )


@pytest.mark.parametrize("name", DIFFERENTIABLE)
def test_gradients_match_naive_bilinear_loop(name):
    """Gradients in value, locations and weights, against autograd through the naive loop's corner weights."""
    shapes, value, locations, weights = _msda_inputs()
    inputs = [value.requires_grad_(), locations.requires_grad_(), weights.requires_grad_()]
    upstream = torch.randn(2, 4, 6, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    expected = torch.autograd.grad(naive_with_location_grad(shapes, *inputs), inputs, upstream)
    actual = torch.autograd.grad(FORMULATIONS[name](inputs[0], shapes, inputs[1], inputs[2]), inputs, upstream)
    for label, mine, theirs in zip(("value", "locations", "weights"), actual, expected):
        torch.testing.assert_close(mine, theirs, rtol=1e-8, atol=1e-8, msg=label)


def test_ms_deform_attn_reads_zeros_at_non_finite_and_far_locations():
    """Inference: NaN, infinite and huge coordinates sample nothing, like a location just outside the map
    (Deformable DETR's kernel skips a NaN sample too), and never index outside the gathered table."""
    shapes, value, locations, weights = _msda_inputs()
    strange = locations.clone()
    for index, coordinate in enumerate((math.nan, math.inf, -math.inf, 1e30, -1e30, 3.0)):
        strange[1, index % 4, index % 2, index % 3, index % 3, index % 2] = coordinate
    outside = torch.where(strange.isfinite() & (strange.abs() < 2), strange, torch.full_like(strange, -0.5))
    with torch.no_grad():
        actual = ms_deform_attn(value, shapes, strange, weights)
    torch.testing.assert_close(actual, naive_ms_deform_attn(value, shapes, outside, weights), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("name", FORMULATIONS)
def test_each_formulation_samples_in_the_locations_dtype_under_autocast(name):
    """A bf16 value is sampled at float32 locations in float32 (the coordinate precision is kept), even
    under CPU bf16 autocast, which would otherwise run ``grid_sample`` on what it is given."""
    shapes, value, locations, weights = _msda_inputs()
    expected = naive_ms_deform_attn(value.bfloat16().double(), shapes, locations, weights)
    with_grad = name in DIFFERENTIABLE
    recorder = OperandDtypes({**embedding_bag_operands("sampling"), "grid_sampler_2d": ("sampling", ("input", "grid"))})
    with torch.set_grad_enabled(with_grad), torch.autocast("cpu", dtype=torch.bfloat16), recorder:
        value = value.bfloat16().requires_grad_(with_grad)
        actual = FORMULATIONS[name](value, shapes, locations.float(), weights.float())
    assert actual.dtype == torch.float32
    assert recorder.seen["sampling"] and set(recorder.seen["sampling"]) == {torch.float32}
    torch.testing.assert_close(actual.double(), expected, rtol=1e-5, atol=1e-5)


def test_ms_deform_attn_rejects_wrong_token_count():
    value = torch.randn(1, 10, 1, 2)
    with pytest.raises(ValueError, match="tokens"):
        ms_deform_attn(value, ((3, 3),), torch.rand(1, 1, 1, 1, 1, 2), torch.rand(1, 1, 1, 1, 1))


def test_msdeformattn_initialisation():
    attn = MSDeformAttn(d_model=64, n_levels=3, num_heads=8, n_points=4)
    assert torch.count_nonzero(attn.sampling_offsets.weight) == 0
    assert torch.count_nonzero(attn.attention_weights.weight) == 0
    assert torch.count_nonzero(attn.attention_weights.bias) == 0
    assert torch.count_nonzero(attn.value_proj.bias) == 0 and torch.count_nonzero(attn.output_proj.bias) == 0
    # head h points along angle 2πh/8, scaled so that the larger component is 1, times (point + 1)
    directions = torch.tensor(
        [[1, 0], [1, 1], [0, 1], [-1, 1], [-1, 0], [-1, -1], [0, -1], [1, -1]], dtype=torch.float32
    )
    bias = attn.sampling_offsets.bias.detach().reshape(8, 3, 4, 2)
    for level in range(3):
        for point in range(4):
            torch.testing.assert_close(bias[:, level, point], directions * (point + 1), atol=1e-5, rtol=0)


def _identity_attention(n_levels: int, n_points: int, offset_xy: tuple[float, float]) -> MSDeformAttn:
    """One-head attention whose projections are identities and whose points all sit at ``offset_xy``."""
    attn = MSDeformAttn(d_model=4, n_levels=n_levels, num_heads=1, n_points=n_points)
    with torch.no_grad():
        attn.value_proj.weight.copy_(torch.eye(4))
        attn.output_proj.weight.copy_(torch.eye(4))
        attn.sampling_offsets.bias.copy_(torch.tensor(offset_xy).repeat(n_levels * n_points))
    return attn


def test_msdeformattn_samples_at_reference_plus_pixel_offset():
    h, w = 5, 6
    feature = torch.randn(1, h * w, 4)
    attn = _identity_attention(n_levels=1, n_points=2, offset_xy=(1.0, 0.0))  # one pixel to the right
    shapes = ((h, w),)
    row, col = 2, 3
    reference = torch.tensor([(col + 0.5) / w, (row + 0.5) / h]).reshape(1, 1, 1, 2)
    out = attn(torch.zeros(1, 1, 4), reference, feature, shapes)
    torch.testing.assert_close(out[0, 0], feature[0, row * w + col + 1])


def test_msdeformattn_box_reference_scales_offsets_by_box_size():
    h, w = 4, 8
    feature = torch.randn(1, h * w, 4)
    attn = _identity_attention(n_levels=1, n_points=1, offset_xy=(0.0, 2.0))
    shapes = ((h, w),)
    row, col = 1, 5
    # offset / P * box_h * 0.5 = 2 * (1 / h) * 0.5 = one pixel down
    box = torch.tensor([(col + 0.5) / w, (row + 0.5) / h, 0.3, 1.0 / h]).reshape(1, 1, 1, 4)
    out = attn(torch.zeros(1, 1, 4), box, feature, shapes)
    torch.testing.assert_close(out[0, 0], feature[0, (row + 1) * w + col])


def test_msdeformattn_ignores_padded_values():
    h, w = 3, 3
    feature = torch.randn(1, h * w, 4)
    mask = torch.zeros(1, h * w, dtype=torch.bool)
    mask[0, 4] = True
    attn = _identity_attention(n_levels=1, n_points=1, offset_xy=(0.0, 0.0))
    centre = torch.tensor([1.5 / w, 1.5 / h]).reshape(1, 1, 1, 2)
    out = attn(torch.zeros(1, 1, 4), centre, feature, ((h, w),), mask)
    torch.testing.assert_close(out, torch.zeros(1, 1, 4))


LEVEL_SIZES = [(9, 13), (5, 7), (3, 4)]


def _small_transformer(dropout: float = 0.0) -> DeformableTransformer:
    torch.manual_seed(0)
    return DeformableTransformer(
        d_model=32,
        num_heads=4,
        num_encoder_layers=2,
        num_decoder_layers=2,
        dim_feedforward=48,
        dropout=dropout,
        num_feature_levels=3,
        enc_n_points=2,
        dec_n_points=3,
    )


def _box_mlps(transformer: DeformableTransformer) -> nn.ModuleList:
    c = transformer.d_model
    return nn.ModuleList(nn.Sequential(nn.Linear(c, c), nn.ReLU(), nn.Linear(c, 4)) for _ in transformer.decoder.layers)


def _inputs(n_frames: int = 3, c: int = 32):
    generator = torch.Generator().manual_seed(1)
    srcs = [torch.randn(n_frames, c, h, w, generator=generator) for h, w in LEVEL_SIZES]
    pos = [torch.randn(n_frames, c, h, w, generator=generator) for h, w in LEVEL_SIZES]
    masks = []
    for h, w in LEVEL_SIZES:
        mask = torch.zeros(n_frames, h, w, dtype=torch.bool)
        mask[1, :, w - max(1, w // 3) :] = True  # frame 1: right padding
        mask[2, h - max(1, h // 3) :, :] = True  # frame 2: bottom padding
        masks.append(mask)
    query_embed = torch.randn(6, c, generator=generator)
    return srcs, masks, pos, query_embed


def test_transformer_forward_shapes():
    transformer = _small_transformer()
    bbox_embed = _box_mlps(transformer)
    srcs, masks, pos, query_embed = _inputs()
    out = transformer(srcs, masks, pos, query_embed, bbox_embed)
    assert isinstance(out, DeformableOutput)
    assert out.hs.shape == (2, 3, 6, 32)
    assert out.init_reference.shape == (3, 6, 2)
    assert out.inter_references.shape == (2, 3, 6, 4)
    assert ((out.inter_references > 0) & (out.inter_references < 1)).all()
    assert not out.inter_references.requires_grad
    assert [tuple(m.shape) for m in out.memory] == [(3, 32, 9, 13), (3, 32, 5, 7)]


def test_transformer_requires_bbox_embed_and_all_levels():
    transformer = _small_transformer()
    srcs, masks, pos, query_embed = _inputs()
    bbox_embed = _box_mlps(transformer)
    with pytest.raises(ValueError, match="bbox_embed has 1 box MLPs for 2 decoder layers"):
        transformer(srcs, masks, pos, query_embed, bbox_embed[:1])
    with pytest.raises(ValueError, match="levels"):
        transformer(srcs[:2], masks[:2], pos[:2], query_embed, bbox_embed)


def test_transformer_frames_are_independent():
    transformer = _small_transformer(dropout=0.1).eval()
    bbox_embed = _box_mlps(transformer)
    srcs, masks, pos, query_embed = _inputs()
    with torch.no_grad():
        together = transformer(srcs, masks, pos, query_embed, bbox_embed)
        for frame in range(3):
            alone = transformer(
                [s[frame : frame + 1] for s in srcs],
                [m[frame : frame + 1] for m in masks],
                [p[frame : frame + 1] for p in pos],
                query_embed,
                bbox_embed,
            )
            torch.testing.assert_close(alone.hs, together.hs[:, frame : frame + 1], atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(
                alone.inter_references, together.inter_references[:, frame : frame + 1], atol=1e-5, rtol=1e-5
            )
            for a, b in zip(alone.memory, together.memory):
                torch.testing.assert_close(a, b[frame : frame + 1], atol=1e-5, rtol=1e-5)


def test_transformer_ignores_content_of_padded_pixels():
    transformer = _small_transformer().eval()
    bbox_embed = _box_mlps(transformer)
    srcs, masks, pos, query_embed = _inputs()
    noisy_srcs = [s.masked_fill(m[:, None], 0.0) + 50.0 * torch.randn_like(s) * m[:, None] for s, m in zip(srcs, masks)]
    with torch.no_grad():
        clean = transformer(srcs, masks, pos, query_embed, bbox_embed)
        noisy = transformer(noisy_srcs, masks, pos, query_embed, bbox_embed)
    torch.testing.assert_close(noisy.hs, clean.hs, atol=1e-5, rtol=1e-5)
    for mem_clean, mem_noisy, mask in zip(clean.memory, noisy.memory, masks):
        valid = ~mask[:, None].expand_as(mem_clean)
        torch.testing.assert_close(mem_noisy[valid], mem_clean[valid], atol=1e-5, rtol=1e-5)


def test_gradients_reach_every_parameter():
    transformer = _small_transformer()
    bbox_embed = _box_mlps(transformer)
    # leave the initial state, where the zero offset/weight projections make the queries' positions
    # irrelevant and the zero value bias of the first decoder self-attention makes its output zero
    for module in transformer.modules():
        if isinstance(module, MSDeformAttn):
            nn.init.normal_(module.sampling_offsets.weight, std=0.01)
            nn.init.normal_(module.attention_weights.weight, std=0.01)
        if isinstance(module, nn.MultiheadAttention):
            nn.init.normal_(module.in_proj_bias, std=0.01)
    srcs, masks, pos, query_embed = _inputs()
    query_embed.requires_grad_(True)
    out = transformer(srcs, masks, pos, query_embed, bbox_embed)
    generator = torch.Generator().manual_seed(2)
    # random projections: the sum of a LayerNorm output alone would have zero gradient
    loss = (out.hs * torch.randn(out.hs.shape, generator=generator)).sum()
    loss = loss + (out.init_reference * torch.randn(out.init_reference.shape, generator=generator)).sum()
    for memory in out.memory:
        loss = loss + (memory * torch.randn(memory.shape, generator=generator)).sum()
    for layer_states, box_mlp in zip(out.hs, bbox_embed):
        boxes = box_mlp(layer_states)
        loss = loss + (boxes * torch.randn(boxes.shape, generator=generator)).sum()
    loss.backward()
    # the first decoder self-attention sees tgt = 0: every value is the value bias, so its output does
    # not depend on the attention and its projection matrix gets no gradient, up to rounding (true of
    # the reference implementation as well)
    dead = "decoder.layers.0.self_attn.in_proj_weight"
    for name, parameter in transformer.named_parameters():
        assert parameter.grad is not None, name
        if name == dead:
            assert parameter.grad.abs().max() < 1e-5
        else:
            assert parameter.grad.abs().sum() > 0, name
    assert query_embed.grad is not None and query_embed.grad.abs().sum() > 0


def test_full_size_parameter_count_and_names():
    transformer = DeformableTransformer()
    assert sum(p.numel() for p in transformer.parameters()) == 8_485_634
    shapes = {k: tuple(v.shape) for k, v in transformer.state_dict().items()}
    assert shapes["level_embed"] == (4, 256)
    assert shapes["reference_points.weight"] == (2, 256)
    assert shapes["encoder.layers.2.self_attn.sampling_offsets.weight"] == (256, 256)
    assert shapes["encoder.layers.0.self_attn.attention_weights.weight"] == (128, 256)
    assert shapes["encoder.layers.1.linear1.weight"] == (2048, 256)
    assert shapes["encoder.layers.1.norm2.weight"] == (256,)
    assert shapes["decoder.layers.2.cross_attn.value_proj.weight"] == (256, 256)
    assert shapes["decoder.layers.0.self_attn.in_proj_weight"] == (768, 256)
    assert shapes["decoder.layers.0.norm3.bias"] == (256,)
    assert not any("bbox_embed" in name for name in transformer.state_dict()), "the model owns the box heads"


def test_relu_feed_forward_equals_the_plain_layers_without_rebuilding_a_view_in_backward():
    """Same values and gradients as ``linear2(relu(linear1(x)))``; the in-place ReLU leaves no ``CopySlices``
    node (autograd's rebuild of a view's base: a zero fill and a copy of the whole hidden tensor)."""
    torch.manual_seed(0)
    linear1, linear2 = torch.nn.Linear(6, 10).double(), torch.nn.Linear(10, 6).double()
    x = torch.randn(3, 5, 6, dtype=torch.float64, requires_grad=True)
    actual = relu_feed_forward(x, linear1, torch.nn.Identity(), linear2)
    expected = linear2(torch.relu(linear1(x)))
    torch.testing.assert_close(actual, expected)
    upstream = torch.randn_like(expected)
    parameters = [x, *linear1.parameters(), *linear2.parameters()]
    for mine, plain in zip(
        torch.autograd.grad(actual, parameters, upstream), torch.autograd.grad(expected, parameters, upstream)
    ):
        torch.testing.assert_close(mine, plain)
    nodes, pending = set(), [actual.grad_fn]
    while pending:
        node = pending.pop()
        nodes.add(type(node).__name__)
        pending.extend(child for child, _ in node.next_functions if child is not None)
    assert "ReluBackward0" in nodes and "CopySlices" not in nodes
