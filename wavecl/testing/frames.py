"""Frames and masks of the tiny test datasets: every frame a flat colour whose grey level identifies its frame index
(:func:`frame_level`), so a test can tell which frame a loader returned even after lossy H.264/JPEG coding;
masks are random rectangles."""

from __future__ import annotations

import numpy as np


def frame_level(index: int) -> int:
    """Grey level of 0-based frame ``index`` in every fixture video (distinct for indices 0..18, then cycling)."""
    return 20 + 12 * (index % 19)


def flat_frames(num_frames: int, height: int, width: int, tint: int) -> np.ndarray:
    """``[T, H, W, 3]`` uint8 flat frames: grey ``frame_level(t)`` with the blue channel shifted by ``tint``."""
    frames = np.empty((num_frames, height, width, 3), dtype=np.uint8)
    for index in range(num_frames):
        frames[index] = frame_level(index)
        frames[index, :, :, 2] = min(frame_level(index) + tint, 255)
    return frames


def random_rectangle(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """``[H, W]`` bool mask of one random axis-aligned rectangle of at least 2x2 pixels."""
    y1, x1 = int(rng.integers(0, height - 2)), int(rng.integers(0, width - 2))
    y2, x2 = int(rng.integers(y1 + 2, height + 1)), int(rng.integers(x1 + 2, width + 1))
    mask = np.zeros((height, width), dtype=bool)
    mask[y1:y2, x1:x2] = True
    return mask


def mask_box_xyxy(mask: np.ndarray) -> list[float]:
    """Inclusive-max ``[x1, y1, x2, y2]`` of a non-empty ``[H, W]`` mask (the fixtures' ``reBBox``)."""
    ys, xs = np.nonzero(mask)
    return [float(xs.min()), float(ys.min()), float(xs.max()), float(ys.max())]
