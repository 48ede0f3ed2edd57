"""Sine position encodings against naive per-element loops (docs/architecture.md#input-projections-and-positions)."""

from __future__ import annotations

import math

import pytest
import torch

from wavecl.model.position import sine_position_1d, sine_position_2d


def padded_masks() -> torch.Tensor:
    """Three frames: unpadded, padded right/bottom, and an irregular mask."""
    mask = torch.zeros(3, 5, 6, dtype=torch.bool)
    mask[1, 3:, :] = True
    mask[1, :, 4:] = True
    mask[2] = torch.rand(5, 6, generator=torch.Generator().manual_seed(0)) > 0.6
    return mask


def naive_2d(mask: torch.Tensor, feats: int, temperature: float) -> torch.Tensor:
    n_frames, height, width = mask.shape
    out = torch.zeros(n_frames, 2 * feats, height, width, dtype=torch.float64)
    for n in range(n_frames):
        for i in range(height):
            for j in range(width):
                y = sum(not mask[n, r, j] for r in range(i + 1))
                y_last = sum(not mask[n, r, j] for r in range(height))
                x = sum(not mask[n, i, c] for c in range(j + 1))
                x_last = sum(not mask[n, i, c] for c in range(width))
                y = (y - 0.5) / (y_last + 1e-6) * 2 * math.pi
                x = (x - 0.5) / (x_last + 1e-6) * 2 * math.pi
                for k in range(feats):
                    frequency = temperature ** (2 * (k // 2) / feats)
                    trig = math.sin if k % 2 == 0 else math.cos
                    out[n, k, i, j] = trig(y / frequency)
                    out[n, feats + k, i, j] = trig(x / frequency)
    return out


def naive_1d(mask: torch.Tensor, dim: int, temperature: float) -> torch.Tensor:
    batch, length = mask.shape
    out = torch.zeros(batch, length, dim, dtype=torch.float64)
    for b in range(batch):
        total = sum(not mask[b, s] for s in range(length))
        for s in range(length):
            p = sum(not mask[b, r] for r in range(s + 1)) / (total + 1e-6) * 2 * math.pi
            for i in range(dim):
                trig = math.sin if i % 2 == 0 else math.cos
                out[b, s, i] = trig(p / temperature ** (2 * (i // 2) / dim))
    return out


@pytest.mark.parametrize("feats, temperature", [(8, 10000.0), (6, 20.0)])
def test_2d_matches_naive_loop(feats: int, temperature: float) -> None:
    mask = padded_masks()
    result = sine_position_2d(mask, num_pos_feats=feats, temperature=temperature)
    assert result.shape == (3, 2 * feats, 5, 6) and result.dtype == torch.float32
    expected = naive_2d(mask, feats, temperature)
    # In a fully padded column (row) y (x) is (0 - 0.5) / 1e-6 · 2π ≈ -3e6 rad, where float32 sin/cos carry
    # only a few correct digits: compare those entries for range only.
    column_valid = (~mask).any(dim=1, keepdim=True).expand_as(mask)
    row_valid = (~mask).any(dim=2, keepdim=True).expand_as(mask)
    y_exact = column_valid[:, None].expand(-1, feats, -1, -1)
    x_exact = row_valid[:, None].expand(-1, feats, -1, -1)
    exact = torch.cat((y_exact, x_exact), dim=1)
    assert (~exact).any(), "the masks must include a fully padded row or column"
    torch.testing.assert_close(result.double()[exact], expected[exact], rtol=0, atol=1e-5)
    assert result[~exact].abs().max() <= 1


def test_2d_default_size_and_padding_invariance() -> None:
    """The valid region of a padded frame is encoded as if the frame were cut to that region."""
    mask = torch.zeros(1, 10, 12, dtype=torch.bool)
    mask[:, 7:] = True
    mask[:, :, 9:] = True
    padded = sine_position_2d(mask)
    alone = sine_position_2d(torch.zeros(1, 7, 9, dtype=torch.bool))
    assert padded.shape == (1, 256, 10, 12)
    torch.testing.assert_close(padded[:, :, :7, :9], alone)


@pytest.mark.parametrize("dim, temperature", [(8, 10000.0), (12, 50.0)])
def test_1d_matches_naive_loop(dim: int, temperature: float) -> None:
    mask = torch.tensor([[False] * 7, [False] * 4 + [True] * 3, [False, False, True, False, True, True, True]])
    result = sine_position_1d(mask, dim=dim, temperature=temperature)
    assert result.shape == (3, 7, dim) and result.dtype == torch.float32
    torch.testing.assert_close(result.double(), naive_1d(mask, dim, temperature), rtol=0, atol=1e-5)


def test_1d_default_size() -> None:
    assert sine_position_1d(torch.zeros(2, 5, dtype=torch.bool)).shape == (2, 5, 256)


def test_bad_masks_are_rejected() -> None:
    with pytest.raises(ValueError, match="bool"):
        sine_position_2d(torch.zeros(1, 4, 4))
    with pytest.raises(ValueError, match=r"\[B, S\]"):
        sine_position_1d(torch.zeros(1, 2, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="even"):
        sine_position_1d(torch.zeros(1, 4, dtype=torch.bool), dim=7)
