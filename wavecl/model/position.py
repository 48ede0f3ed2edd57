"""Sine position encodings computed from padding masks (docs/architecture.md#input-projections-and-positions).

Positions are cumulative counts of non-padded elements, normalised to ``(0, 2π]`` by the count at the last
row/column, so an image or sentence gets the same encoding wherever it is padded. Channel ``2k`` is
``sin(p ω_k)`` and channel ``2k + 1`` is ``cos(p ω_k)``, with ``ω_k = temperature^(-2k / dim)``.
"""

from __future__ import annotations

import math

import torch
from einops import rearrange
from torch import Tensor

_EPS = 1e-6


def _interleaved_sine(positions: Tensor, dim: int, temperature: float) -> Tensor:
    """Encode ``positions [...]`` as ``[..., dim]``: sin on even channels, cos on odd ones, shared frequencies."""
    if dim % 2 != 0:
        raise ValueError(f"the encoding size must be even, got {dim}")
    exponents = 2 * torch.arange(dim // 2, device=positions.device) / dim
    angles = positions[..., None] / temperature**exponents
    return rearrange(torch.stack((angles.sin(), angles.cos()), dim=-1), "... k two -> ... (k two)")


def sine_position_2d(pad_mask: Tensor, num_pos_feats: int = 128, temperature: float = 10000.0) -> Tensor:
    """2-D sine encoding of feature maps, normalised per frame.

    ``y`` counts non-padded pixels down each column and ``x`` along each row; each is normalised as
    ``(y - 0.5) / (y_last + 1e-6) · 2π``, where ``y_last`` is the count at the last row (resp. column).

    Args:
        pad_mask: ``[N, H, W]`` bool, True = padding.
        num_pos_feats: channels per axis (even).
        temperature: frequency base.

    Returns:
        ``[N, 2 * num_pos_feats, H, W]`` float32: ``concat(pos_y, pos_x)`` over channels.
    """
    if pad_mask.dtype != torch.bool or pad_mask.ndim != 3:
        raise ValueError(f"pad_mask must be a bool [N, H, W] tensor, got {pad_mask.dtype} {tuple(pad_mask.shape)}")
    valid = (~pad_mask).float()
    y = valid.cumsum(dim=1)
    x = valid.cumsum(dim=2)
    y = (y - 0.5) / (y[:, -1:, :] + _EPS) * (2 * math.pi)
    x = (x - 0.5) / (x[:, :, -1:] + _EPS) * (2 * math.pi)
    encoding = torch.cat(
        (_interleaved_sine(y, num_pos_feats, temperature), _interleaved_sine(x, num_pos_feats, temperature)), dim=-1
    )
    return rearrange(encoding, "n h w c -> n c h w")


def sine_position_1d(pad_mask: Tensor, dim: int = 256, temperature: float = 10000.0) -> Tensor:
    """1-D sine encoding of token sequences.

    ``p`` counts non-padded tokens up to each position (1-based) and is normalised as
    ``p / (p_last + 1e-6) · 2π``, where ``p_last`` is the count at the last position.

    Args:
        pad_mask: ``[B, S]`` bool, True = padding.
        dim: encoding size (even).
        temperature: frequency base.

    Returns:
        ``[B, S, dim]`` float32.
    """
    if pad_mask.dtype != torch.bool or pad_mask.ndim != 2:
        raise ValueError(f"pad_mask must be a bool [B, S] tensor, got {pad_mask.dtype} {tuple(pad_mask.shape)}")
    positions = (~pad_mask).float().cumsum(dim=1)
    positions = positions / (positions[:, -1:] + _EPS) * (2 * math.pi)
    return _interleaved_sine(positions, dim, temperature)
