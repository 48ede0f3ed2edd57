"""Temporal windows: which frames of a video form one clip."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

Item = TypeVar("Item")


def centred_window(centre: int, window_size: int, num_frames: int) -> list[int]:
    """0-based frame indices of a window centred on ``centre`` (A2D, JHMDB).

    The window covers ``centre - window_size // 2`` (inclusive) to ``centre + ceil(window_size / 2)``
    (exclusive), so ``centre`` sits at position ``window_size // 2``; indices outside
    ``[0, num_frames - 1]`` are clamped, repeating the edge frames.

    Example: ``centred_window(1, 8, 10) == [0, 0, 0, 0, 1, 2, 3, 4]``.
    """
    if window_size < 1:
        raise ValueError(f"window_size must be positive, got {window_size}")
    if num_frames < 1:
        raise ValueError(f"num_frames must be positive, got {num_frames}")
    start = centre - window_size // 2
    return [min(max(index, 0), num_frames - 1) for index in range(start, start + window_size)]


def at_window_centre(item: Item, window_size: int) -> list[Item | None]:
    """``window_size`` entries, ``None`` except ``item`` at position ``window_size // 2``, where
    :func:`centred_window` puts its centre frame (the annotation list of an A2D / JHMDB clip)."""
    entries: list[Item | None] = [None] * window_size
    entries[window_size // 2] = item
    return entries


def training_windows(frames: Sequence[Item], window_size: int) -> list[list[Item]]:
    """Split a video's frame list into training windows of exactly ``window_size`` (Ref-YouTube-VOS).

    Consecutive, non-overlapping windows; a short last window is replaced by the last ``window_size``
    frames when the video has that many (overlapping the previous window), otherwise padded by
    repeating its last frame.

    Example: 10 frames, size 4 -> ``[0..3], [4..7], [6..9]``; 3 frames, size 4 -> ``[0, 1, 2, 2]``.
    """
    if window_size < 1:
        raise ValueError(f"window_size must be positive, got {window_size}")
    if not frames:
        return []
    windows = [list(frames[start : start + window_size]) for start in range(0, len(frames), window_size)]
    if len(windows[-1]) < window_size:
        if len(frames) >= window_size:
            windows[-1] = list(frames[-window_size:])
        else:
            windows[-1] += [windows[-1][-1]] * (window_size - len(windows[-1]))
    return windows


def covering_windows(num_frames: int, window_size: int | None, overlap: int = 0) -> list[range]:
    """Consecutive windows covering every frame, each sharing its first ``overlap`` frames with the
    previous one, the last one possibly shorter.

    ``window_size=None`` gives one window with the whole video (the reference's validation protocol).

    Example: ``covering_windows(10, 4) == [range(0, 4), range(4, 8), range(8, 10)]``;
    ``covering_windows(10, 4, overlap=1) == [range(0, 4), range(3, 7), range(6, 10)]``.

    Raises:
        ValueError: ``window_size < 1`` or ``overlap`` outside ``[0, window_size)``.
    """
    if window_size is None:
        return [range(num_frames)] if num_frames else []
    if window_size < 1:
        raise ValueError(f"window_size must be positive, got {window_size}")
    if not 0 <= overlap < window_size:
        raise ValueError(f"overlap must be in [0, window_size={window_size}), got {overlap}")
    step = window_size - overlap
    starts = range(0, max(num_frames - overlap, 1), step) if num_frames else range(0)
    return [range(start, min(start + window_size, num_frames)) for start in starts]
