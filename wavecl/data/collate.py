"""Collation of :class:`ClipSample` lists into a time-major, zero-padded :class:`Batch` (docs/datasets.md)."""

from __future__ import annotations

import torch
from einops import rearrange

from wavecl.data.types import Batch, ClipSample, FrameTarget


def collate_clips(samples: list[ClipSample]) -> Batch:
    """Pad clips to the largest ``T``, ``H'`` and ``W'`` of the batch and stack them time-major.

    Padding is zeros at the end of time and at the bottom/right of each frame. Padded time steps have
    ``None`` targets and an all-True pad mask.

    Args:
        samples: ``B`` clips, ``frames`` of shape ``[T_b, 3, H_b, W_b]``.

    Returns:
        :class:`Batch` with ``frames [T, B, 3, Hp, Wp]``, ``pad_mask [T, B, Hp, Wp]`` (True on padding),
        ``targets[t][b]``, ``texts``, ``image_sizes [B, 2]`` = ``(H_b, W_b)`` and ``metadata``.
    """
    if not samples:
        raise ValueError("cannot collate an empty list of clips")
    num_frames = max(sample.frames.shape[0] for sample in samples)
    height = max(sample.frames.shape[2] for sample in samples)
    width = max(sample.frames.shape[3] for sample in samples)
    first = samples[0].frames
    frames = first.new_zeros(len(samples), num_frames, 3, height, width)
    pad_mask = torch.ones(len(samples), num_frames, height, width, dtype=torch.bool)
    targets: list[list[FrameTarget | None]] = [[None] * len(samples) for _ in range(num_frames)]
    for b, sample in enumerate(samples):
        t, _, h, w = sample.frames.shape
        if len(sample.targets) != t:
            raise ValueError(f"clip {b} ({sample.text!r}) has {t} frames but {len(sample.targets)} targets")
        frames[b, :t, :, :h, :w] = sample.frames
        pad_mask[b, :t, :h, :w] = False
        for time, target in enumerate(sample.targets):
            targets[time][b] = target
    return Batch(
        frames=rearrange(frames, "b t c h w -> t b c h w").contiguous(),
        pad_mask=rearrange(pad_mask, "b t h w -> t b h w").contiguous(),
        targets=targets,
        texts=[sample.text for sample in samples],
        image_sizes=torch.tensor([list(sample.frames.shape[2:]) for sample in samples], dtype=torch.long),
        metadata=[sample.metadata for sample in samples],
    )
