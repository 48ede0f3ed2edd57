"""Look-alike referring videos: two shapes of the same colour and kind that cross and swap places.

In every clip two twins (same colour, kind and size) slide along one axis in opposite
directions, one in each half of the frame but close to the middle line, so that they pass each other
(the later-drawn one partly hiding the other) and end on each other's side. Only the motion ("moving to
the left") or the half ("at the top") in a sentence tells them apart, and only the twins have sentences.
Half of the clips add a distractor of another colour. Clips are long (48 frames by default), so
windowed inference cuts them into many windows and can jump from one twin to the other at a window
start (:mod:`wavecl.evaluation.identity` counts those jumps).

The clips are :class:`~wavecl.data.synthetic.SyntheticVideo` descriptions written by
:func:`~wavecl.data.synthetic.write_synthetic_videos`: the layout, frame names, colours, background and
determinism (a pure function of the seed, split and clip index) are those of the synthetic set.
"""

from __future__ import annotations

import zlib
from dataclasses import replace
from pathlib import Path

import numpy as np

from wavecl.data.synthetic import (
    COLOURS,
    KINDS,
    SyntheticExpression,
    SyntheticInfo,
    SyntheticObject,
    SyntheticVideo,
    assemble_video,
    draw_labels,
    is_visible_enough,
    sample_expressions,
    sample_object,
    write_synthetic_videos,
)

LOOKALIKE_FRAMES = 48
"""Default frames per look-alike clip: twelve windows of 4 frames, six of 8."""

_DISTRACTOR_PROBABILITY = 0.5
_MAX_LAYOUT_TRIES = 200
_OPPOSITE = {"left": "right", "right": "left", "up": "down", "down": "up"}


def _crossing_twins(
    rng: np.random.Generator, colour: str, kind: str, size: tuple[int, int], num_frames: int
) -> tuple[SyntheticObject, SyntheticObject]:
    """Two shapes of one size moving in opposite directions along one axis, each from near one end to near
    the other.

    The first stays in the top (or left) half, the second in the bottom (or right) half, their centres
    ``2 + 0.3 radius`` to ``2 + 0.6 radius`` pixels from the middle line, so they overlap as they pass.
    Ids are 0 (set by the caller).
    """
    height, width = size
    horizontal = bool(rng.random() < 0.5)
    along, across = (width, height) if horizontal else (height, width)
    forward, backward = ("right", "left") if horizontal else ("down", "up")
    positions = ("top", "bottom") if horizontal else ("left", "right")
    first_direction = forward if rng.random() < 0.5 else backward
    radius = float(rng.uniform(0.10, 0.15) * min(height, width))
    twins = []
    for side, (position, direction) in enumerate(zip(positions, (first_direction, _OPPOSITE[first_direction]))):
        slack = 0.1 * along
        low_end = float(rng.uniform(radius, radius + slack))
        high_end = float(rng.uniform(along - radius - slack, along - radius))
        start_along, end_along = (low_end, high_end) if direction == forward else (high_end, low_end)
        offset = float(rng.uniform(2.0 + 0.3 * radius, 2.0 + 0.6 * radius))
        start_across = across / 2 - offset if side == 0 else across / 2 + offset
        start = (start_along, start_across) if horizontal else (start_across, start_along)
        speed = abs(end_along - start_along) / max(num_frames - 1, 1)
        twins.append(SyntheticObject(0, colour, kind, direction, position, radius, start, speed))
    return twins[0], twins[1]


def _sample_lookalike_objects(
    rng: np.random.Generator, size: tuple[int, int], num_frames: int
) -> tuple[tuple[SyntheticObject, ...], tuple[int, int]]:
    """The clip's objects with ids ``1..n`` in drawing order, and the twins' ids."""
    colours, kinds = list(COLOURS), list(KINDS)
    colour, kind = colours[int(rng.integers(len(colours)))], kinds[int(rng.integers(len(kinds)))]
    objects = list(_crossing_twins(rng, colour, kind, size, num_frames))
    if rng.random() < _DISTRACTOR_PROBABILITY:
        others = [(c, k) for c in colours for k in kinds if c != colour]
        other_colour, other_kind = others[int(rng.integers(len(others)))]
        axis = "horizontal" if rng.random() < 0.5 else "vertical"
        directions = ("left", "right") if axis == "horizontal" else ("up", "down")
        direction = directions[int(rng.integers(2))]
        objects.append(sample_object(rng, 0, other_colour, other_kind, axis, direction, size, num_frames))
    order = [int(index) for index in rng.permutation(len(objects))]  # drawing order; ids follow it
    drawn = tuple(replace(objects[index], obj_id=obj_id) for obj_id, index in enumerate(order, start=1))
    return drawn, (order.index(0) + 1, order.index(1) + 1)


def sample_lookalike_video(
    seed: int, split: str, index: int, num_frames: int = LOOKALIKE_FRAMES, size: tuple[int, int] = (64, 96)
) -> SyntheticVideo:
    """Draw the description of look-alike clip ``index`` of ``split``; a pure function of its arguments.

    The clips draw from other random streams than :func:`wavecl.data.synthetic.sample_synthetic_video`,
    and clip ``index`` does not depend on how many clips are drawn.

    Raises:
        ValueError: ``num_frames < 2`` (nothing could cross), or a frame smaller than 24x24 pixels.
        RuntimeError: no layout keeps every object visible enough (never seen at the default sizes).
    """
    if num_frames < 2:
        raise ValueError(f"look-alike clips need at least 2 frames to cross, got {num_frames}")
    height, width = size
    if height < 24 or width < 24:
        raise ValueError(f"frame size must be at least 24x24 pixels, got {size}")
    rng = np.random.default_rng([seed, zlib.crc32(f"lookalike/{split}".encode()), index])
    for _ in range(_MAX_LAYOUT_TRIES):
        objects, twins = _sample_lookalike_objects(rng, size, num_frames)
        labels = np.stack([draw_labels(objects, t, size) for t in range(num_frames)])
        if is_visible_enough(objects, labels, size):
            break
    else:
        raise RuntimeError(f"no look-alike layout with visible objects for clip {index} of {split!r} (seed {seed})")
    about_twins = [e for e in sample_expressions(rng, objects) if e.obj_id in twins]
    expressions = tuple(SyntheticExpression(str(n), e.text, e.obj_id) for n, e in enumerate(about_twins))
    return assemble_video(rng, split, index, size, num_frames, objects, lambda: expressions)


def write_lookalike_ytvos(
    root: str | Path,
    num_videos: int,
    num_frames: int = LOOKALIKE_FRAMES,
    size: tuple[int, int] = (64, 96),
    seed: int = 0,
    split: str = "valid",
) -> SyntheticInfo:
    """Draw ``num_videos`` look-alike clips and write them as ``split`` under ``root`` in the Ref-YouTube-VOS
    layout, with ``Annotations/`` (:func:`~wavecl.data.synthetic.write_synthetic_videos`).

    Args:
        root: dataset root; ``<split>/`` and ``meta_expressions/<split>/`` are (over)written.
        num_videos: number of clips.
        num_frames: frames per clip ``T`` (at least 2).
        size: ``(H, W)`` of every frame (at least 24x24).
        seed: all content is a deterministic function of ``seed``, ``split`` and the clip index.
        split: split folder name (``train``, ``valid``, ...).

    Returns:
        A :class:`~wavecl.data.synthetic.SyntheticInfo` listing every clip, object and expression written.

    Raises:
        ValueError / RuntimeError: as :func:`sample_lookalike_video`, before anything is written.
    """
    videos = tuple(sample_lookalike_video(seed, split, index, num_frames, size) for index in range(num_videos))
    write_synthetic_videos(root, split, videos)
    return SyntheticInfo(Path(root), split, seed, (size[0], size[1]), num_frames, videos)
