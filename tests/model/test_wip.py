"""FocusedLinearAttention and the WIP gate against naive formulas, PyWavelets and the full MMF."""

import copy

import numpy as np
import pytest
import pywt
import torch
import torch.nn.functional as F

from wavecl.model.fusion import MultimodalFusion
from wavecl.model.wip import FocusedLinearAttention, wavelet_gate

DIM, HEADS, HEAD_DIM = 8, 2, 4


def _attention(token_order: str = "frame", seed: int = 0) -> FocusedLinearAttention:
    torch.manual_seed(seed)
    fla = FocusedLinearAttention(DIM, HEADS, token_order=token_order).double()
    torch.nn.init.normal_(fla.scale)
    return fla


def _tokens(batch: int, frames: int, size: tuple[int, int], seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    pixels = frames * size[0] * size[1]
    x = torch.randn(batch, 3 * pixels, DIM, generator=generator, dtype=torch.float64)
    memory = torch.randn(batch, pixels, DIM, generator=generator, dtype=torch.float64)
    return x, memory


def _focus(t: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    z = (t.clamp(min=0) + 1e-6) / torch.log1p(torch.exp(scale))
    return z**3 * z.norm() / (z**3).norm()


def _naive_single_frame(
    fla: FocusedLinearAttention, x: torch.Tensor, memory: torch.Tensor, size: tuple[int, int]
) -> torch.Tensor:
    """FLA for one sample and T = 1, token by token and head by head (x [3hw, C], memory [hw, C])."""
    height, width = size
    pixels = height * width
    scale = fla.scale[0, 0]
    queries = [_focus(fla.q_x.weight @ token, scale) for token in x]
    keys = [_focus(fla.k_memory.weight @ token, scale) for token in memory]
    values = [fla.v.weight @ token for token in memory]
    out = torch.zeros_like(x)
    kernel = fla.dwc.weight[:, 0]
    radius = kernel.shape[-1] // 2
    for head in range(HEADS):
        channels = slice(head * HEAD_DIM, (head + 1) * HEAD_DIM)
        mean_key = sum(k[channels] for k in keys) / pixels
        for i, q in enumerate(queries):
            numerator = sum((q[channels] @ k[channels]) * v[channels] for k, v in zip(keys, values)) / pixels
            out[i, channels] = numerator / (q[channels] @ mean_key + 1e-6)
        for d in range(HEAD_DIM):
            for y in range(height):
                for x_pos in range(width):
                    local = fla.dwc.bias[d].clone()
                    for dy in range(-radius, radius + 1):
                        for dx in range(-radius, radius + 1):
                            yy, xx = y + dy, x_pos + dx
                            if 0 <= yy < height and 0 <= xx < width:
                                value = values[yy * width + xx][head * HEAD_DIM + d]
                                local = local + kernel[d, dy + radius, dx + radius] * value
                    for band in range(3):
                        out[band * pixels + y * width + x_pos, head * HEAD_DIM + d] += local
    return out @ fla.proj.weight.T + fla.proj.bias


def _projected_local_term(
    fla: FocusedLinearAttention, x: torch.Tensor, memory: torch.Tensor, frames: int, size: tuple[int, int]
) -> torch.Tensor:
    """proj.weight · (local term): the output minus the output of a copy whose dwc is zero."""
    without_local = copy.deepcopy(fla)
    torch.nn.init.zeros_(without_local.dwc.weight)
    torch.nn.init.zeros_(without_local.dwc.bias)
    with torch.no_grad():
        return fla(x, memory, frames, size) - without_local(x, memory, frames, size)


@pytest.mark.parametrize("token_order", ["frame", "reference"])
def test_single_frame_matches_naive_formula(token_order: str) -> None:
    fla = _attention(token_order)
    size = (3, 4)
    x, memory = _tokens(2, 1, size)
    with torch.no_grad():
        actual = fla(x, memory, 1, size)
        for b in range(2):
            torch.testing.assert_close(actual[b], _naive_single_frame(fla, x[b], memory[b], size))


def test_both_orders_agree_for_one_frame() -> None:
    frame, reference = _attention("frame"), _attention("reference")
    x, memory = _tokens(2, 1, (5, 3))
    with torch.no_grad():
        torch.testing.assert_close(frame(x, memory, 1, (5, 3)), reference(x, memory, 1, (5, 3)))


def _split_frames(x: torch.Tensor, memory: torch.Tensor, frames: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return list(zip(x.chunk(frames, dim=1), memory.chunk(frames, dim=1)))


@pytest.mark.parametrize("token_order", ["frame", "reference"])
def test_frame_order_local_term_is_the_single_frame_local_term(token_order: str) -> None:
    """The local term of the clip, frame by frame, equals that of the frame run alone (T = 1).

    Holds for "frame" and, as it must fail for the scrambled order, not for "reference".
    """
    fla = _attention(token_order)
    frames, size = 3, (4, 5)
    x, memory = _tokens(2, frames, size)
    clip_local = _projected_local_term(fla, x, memory, frames, size).chunk(frames, dim=1)
    per_frame = [
        _projected_local_term(fla, x_t, memory_t, 1, size) for x_t, memory_t in _split_frames(x, memory, frames)
    ]
    matches = [torch.allclose(clip_t, alone_t) for clip_t, alone_t in zip(clip_local, per_frame)]
    assert all(matches) == (token_order == "frame")


def _local_change_by_band(token_order: str, perturbed_frame: int) -> torch.Tensor:
    """|Δ local term| at frame 0's three bands [3] when memory frame ``perturbed_frame`` changes, T = 2."""
    fla = _attention(token_order)
    frames, size = 2, (4, 4)
    x, memory = _tokens(1, frames, size)
    pixels = size[0] * size[1]
    changed = memory.clone()
    changed[:, perturbed_frame * pixels : (perturbed_frame + 1) * pixels] += 1.0
    delta = _projected_local_term(fla, x, changed, frames, size) - _projected_local_term(fla, x, memory, frames, size)
    frame0 = delta[0, : 3 * pixels].reshape(3, pixels, DIM)
    return frame0.abs().amax(dim=(1, 2))


def test_frame_order_isolates_frames_in_the_local_term() -> None:
    assert torch.all(_local_change_by_band("frame", perturbed_frame=1) < 1e-12)
    assert torch.all(_local_change_by_band("frame", perturbed_frame=0) > 1e-3)


def test_reference_order_feeds_frame_one_into_frame_zero_band_one() -> None:
    # docs/differences.md#wavelet-high-band-attention: with T = 2, frame 0 band 1 receives frame 1's local term.
    assert _local_change_by_band("reference", perturbed_frame=1)[1] > 1e-3


def test_reference_order_reproduces_the_scrambled_layout() -> None:
    """Values read as one h × (w·T) image, convolved, then repeated as (band, token)."""
    fla = _attention("reference")
    frames, (height, width) = 3, (4, 3)
    x, memory = _tokens(2, frames, (height, width))
    pixels = frames * height * width
    values = memory @ fla.v.weight.T
    expected = torch.empty(2, 3 * pixels, DIM, dtype=torch.float64)
    with torch.no_grad():
        for b in range(2):
            for head in range(HEADS):
                channels = slice(head * HEAD_DIM, (head + 1) * HEAD_DIM)
                image = values[b, :, channels].T.reshape(HEAD_DIM, height, width * frames)
                convolved = F.conv2d(image[None], fla.dwc.weight, fla.dwc.bias, padding=2, groups=HEAD_DIM)[0]
                flat = convolved.reshape(HEAD_DIM, pixels).T
                for query in range(3 * pixels):
                    expected[b, query, channels] = flat[query % pixels]
    actual = _projected_local_term(fla, x, memory, frames, (height, width))
    torch.testing.assert_close(actual, expected @ fla.proj.weight.T)


def test_parameter_names_shapes_and_count() -> None:
    fla = FocusedLinearAttention()
    shapes = {name: tuple(p.shape) for name, p in fla.state_dict().items()}
    assert shapes == {
        "q_x.weight": (256, 256),
        "k_memory.weight": (256, 256),
        "v.weight": (256, 256),
        "proj.weight": (256, 256),
        "proj.bias": (256,),
        "dwc.weight": (32, 1, 5, 5),
        "dwc.bias": (32,),
        "scale": (1, 1, 256),
    }
    assert sum(p.numel() for p in fla.parameters()) == 263_488
    assert torch.all(fla.scale == 0)


def test_token_count_mismatch_is_rejected() -> None:
    x, memory = _tokens(1, 2, (3, 3))
    with pytest.raises(ValueError, match="memory tokens"):
        _attention()(x, memory, 2, (3, 4))


def _pywt_dwt(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    low, (band1, band2, band3) = pywt.dwt2(x.numpy(), "haar", mode="zero", axes=(-2, -1))
    return torch.from_numpy(low), torch.from_numpy(np.stack([band1, band2, band3], axis=2))


def _pywt_idwt(low: torch.Tensor, high: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    bands = tuple(high[:, :, band].numpy() for band in range(3))
    reconstruction = pywt.idwt2((low.numpy(), bands), "haar", mode="zero", axes=(-2, -1))
    return torch.from_numpy(reconstruction)[..., : size[0], : size[1]]


def _gate_from_spec(x, sentence, frames, fusion, fla):
    """The WIP gate step by step with PyWavelets, the full MMF forward and explicit permutes."""
    batch, channels = sentence.shape

    def scale_low(low: torch.Tensor) -> torch.Tensor:
        height, width = low.shape[-2:]
        tokens = low.reshape(batch, frames, channels, height, width).permute(1, 3, 4, 0, 2)
        fused = fusion(tokens.reshape(-1, batch, channels), sentence[None])
        fused = fused.reshape(frames, height, width, batch, channels).permute(3, 0, 4, 1, 2)
        return fused.reshape(batch * frames, channels, height, width)

    def attend(high: torch.Tensor, low: torch.Tensor) -> torch.Tensor:
        height, width = low.shape[-2:]
        queries = high.reshape(batch, frames, channels, 3, height, width).permute(0, 1, 3, 4, 5, 2)
        memory = low.reshape(batch, frames, channels, height, width).permute(0, 1, 3, 4, 2)
        out = fla(queries.reshape(batch, -1, channels), memory.reshape(batch, -1, channels), frames, (height, width))
        out = out.reshape(batch, frames, 3, height, width, channels).permute(0, 1, 5, 2, 3, 4)
        return out.reshape(batch * frames, channels, 3, height, width)

    low1, high1 = _pywt_dwt(x)
    low2, high2 = _pywt_dwt(low1)
    low2 = scale_low(low2)
    reconstructed1 = _pywt_idwt(low2, attend(high2, low2), low1.shape[-2:])
    low1 = scale_low(reconstructed1)
    return _pywt_idwt(low1, attend(high1, low1), x.shape[-2:])


@pytest.mark.parametrize("size", [(8, 12), (7, 9), (5, 6)])
@pytest.mark.parametrize("token_order", ["frame", "reference"])
def test_wavelet_gate_matches_spec_composition(size: tuple[int, int], token_order: str) -> None:
    torch.manual_seed(0)
    fusion = MultimodalFusion(DIM, HEADS).double()
    torch.nn.init.normal_(fusion.multihead_attn.in_proj_bias)
    torch.nn.init.normal_(fusion.multihead_attn.out_proj.bias)
    fla = _attention(token_order)
    batch, frames = 2, 3
    x = torch.randn(batch * frames, DIM, *size, dtype=torch.float64)
    sentence = torch.randn(batch, DIM, dtype=torch.float64)
    with torch.no_grad():
        gate = wavelet_gate(x, sentence, frames, fusion, fla)
        expected = _gate_from_spec(x, sentence, frames, fusion, fla)
    assert gate.shape == x.shape
    torch.testing.assert_close(gate, expected)


@pytest.mark.parametrize("size", [(10, 12), (9, 7)])
def test_wavelet_gate_shapes_and_gradients(size: tuple[int, int]) -> None:
    torch.manual_seed(0)
    channels, batch, frames = 32, 2, 3
    fusion = MultimodalFusion(channels, num_heads=8)
    fla = FocusedLinearAttention(channels, num_heads=8)
    x = torch.randn(batch * frames, channels, *size, requires_grad=True)
    sentence = torch.randn(batch, channels, requires_grad=True)
    gate = wavelet_gate(x, sentence, frames, fusion, fla)
    assert gate.shape == (batch * frames, channels, *size)
    (gate * torch.randn_like(gate)).sum().backward()
    attention = fusion.multihead_attn
    assert attention.in_proj_weight.grad[2 * channels :].abs().sum() > 0
    assert attention.in_proj_bias.grad[2 * channels :].abs().sum() > 0
    assert attention.in_proj_weight.grad[: 2 * channels].abs().sum() == 0  # q/k are dead (a single key)
    assert attention.out_proj.weight.grad.abs().sum() > 0 and attention.out_proj.bias.grad.abs().sum() > 0
    for name, parameter in fla.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name
    assert x.grad.abs().sum() > 0 and sentence.grad.abs().sum() > 0


def test_wavelet_gate_rejects_a_frame_count_mismatch() -> None:
    with pytest.raises(ValueError, match="wavelet_gate"):
        fusion, fla = MultimodalFusion(8, 2), FocusedLinearAttention(8, 2)
        wavelet_gate(torch.randn(5, 8, 4, 4), torch.randn(2, 8), 3, fusion, fla)


def test_focusing_survives_half_precision() -> None:
    # All query projections ≤ 0: z = 1e-6 / ln 2 everywhere, whose cube underflows in float16.
    fla = FocusedLinearAttention(DIM, HEADS).half()
    with torch.no_grad():
        fla.q_x.weight.copy_(-torch.eye(DIM))
    x, memory = (t.abs().half() for t in _tokens(1, 1, (2, 2)))
    with torch.no_grad():
        out = fla(x, memory, 1, (2, 2))
    assert out.dtype == torch.float16 and torch.isfinite(out).all()


def test_sums_stay_finite_under_float16_autocast() -> None:
    """Features scaled 100x (a trained network's can be): the linear attention's sums over 480 memory tokens
    overflow float16, so they run in float32; the output equals the float32 computation to float16 rounding."""
    torch.manual_seed(0)
    fla = FocusedLinearAttention(64, 4)
    frames, size = 2, (12, 20)
    generator = torch.Generator().manual_seed(3)
    pixels = frames * size[0] * size[1]
    x = 100 * torch.randn(1, 3 * pixels, 64, generator=generator)
    memory = 100 * torch.randn(1, pixels, 64, generator=generator)
    with torch.no_grad():
        expected = fla(x, memory, frames, size)
        with torch.autocast("cpu", dtype=torch.float16):
            out = fla(x, memory, frames, size)
            assert fla.v(memory).dtype == torch.float16  # autocast is really on
    assert out.dtype == torch.float16 and torch.isfinite(out).all()
    torch.testing.assert_close(out.float(), expected, rtol=0, atol=5e-3 * expected.abs().max().item())
