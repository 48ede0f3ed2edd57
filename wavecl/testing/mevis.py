"""A tiny MeViS copy in the real format (frames, ``meta_expressions.json``, ``mask_dict.json`` of COCO RLEs).

The masks are kept in :class:`MeViSFixture` so that tests compare what wavecl reads against them
directly, without going through wavecl's decoding.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

from wavecl.atomic import save_image, write_json


@dataclass
class MeViSFixtureVideo:
    """One video as written.

    Attributes:
        frame_names: in the order of ``frames`` in ``meta_expressions.json`` (and of the RLE lists).
        size: ``(H, W)``.
        objects: ``{anno_id: [T, H, W] bool}``, all-False in the frames where the RLE is null.
        expressions: ``{exp_id: (sentence, [anno_id, ...])}``.
    """

    frame_names: list[str]
    size: tuple[int, int]
    objects: dict[int, np.ndarray]
    expressions: dict[str, tuple[str, list[int]]]


@dataclass
class MeViSFixture:
    """What :func:`write_mevis_fixture` wrote under ``root``: ``{split: {video id: MeViSFixtureVideo}}``."""

    root: Path
    splits: dict[str, dict[str, MeViSFixtureVideo]]


def _object(rng: np.random.Generator, num_frames: int, size: tuple[int, int], present: list[int]) -> np.ndarray:
    """``[T, H, W]`` bool: a random rectangle in each frame of ``present``, nothing elsewhere."""
    masks = np.zeros((num_frames, *size), dtype=bool)
    height, width = size
    for index in present:
        top, left = rng.integers(0, height // 2), rng.integers(0, width // 2)
        masks[index, top : top + rng.integers(3, height // 2 + 2), left : left + rng.integers(3, width // 2 + 2)] = True
    return masks


def _video(
    rng: np.random.Generator,
    num_frames: int,
    size: tuple[int, int],
    presence: dict[int, list[int]],
    expressions: dict[str, tuple[str, list[int]]],
) -> MeViSFixtureVideo:
    names = [f"{5 * index:05d}" for index in range(num_frames)]
    objects = {anno_id: _object(rng, num_frames, size, present) for anno_id, present in presence.items()}
    return MeViSFixtureVideo(names, size, objects, expressions)


def write_mevis_fixture(root: str | os.PathLike, *, seed: int = 0) -> MeViSFixture:
    """Write a tiny MeViS copy under ``root`` (the ``mevis`` folder itself).

    train: ``mv_a`` (6 frames, 20x28; anno 10 in frames 0-3, anno 11 in frames 2-5, overlapping it in
    places, anno 12 never; expressions "0" -> [10, 11], "1" -> [11], "2" -> [12]) and ``mv_b`` (3 frames,
    24x16; anno 20 in frame 1 only). valid_u: ``vu_a`` (5 frames, 20x28; anno 30 everywhere, anno 31 in
    frames 1 and 3, anno 32 never; "0" -> [30, 31], "1" -> [31], "2" -> [32]) and ``vu_b`` (3 frames,
    16x24; anno 40 in frames 0 and 2). valid: ``vv_a`` (4 frames, two expressions, no masks).
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    splits = {
        "train": {
            "mv_a": _video(
                rng,
                6,
                (20, 28),
                {10: [0, 1, 2, 3], 11: [2, 3, 4, 5], 12: []},
                {"0": ("the two cars moving left", [10, 11]), "1": ("the car that turns", [11]), "2": ("a bird", [12])},
            ),
            "mv_b": _video(rng, 3, (24, 16), {20: [1]}, {"0": ("the dog jumping", [20])}),
        },
        "valid_u": {
            "vu_a": _video(
                rng,
                5,
                (20, 28),
                {30: [0, 1, 2, 3, 4], 31: [1, 3], 32: []},
                {"0": ("both people walking", [30, 31]), "1": ("the man who stops", [31]), "2": ("a cat", [32])},
            ),
            "vu_b": _video(rng, 3, (16, 24), {40: [0, 2]}, {"0": ("the ball rolling away", [40])}),
        },
        "valid": {
            "vv_a": _video(rng, 4, (18, 26), {}, {"0": ("the fish turning", []), "1": ("the slowest fish", [])}),
        },
    }
    for split, videos in splits.items():
        mask_dict = {}
        for video_id, video in videos.items():
            for index, name in enumerate(video.frame_names):
                frame = np.full((*video.size, 3), 40 + 30 * index, dtype=np.uint8)
                save_image(Image.fromarray(frame), root / split / "JPEGImages" / video_id / f"{name}.jpg", "JPEG")
            for anno_id, masks in video.objects.items():
                rles: list[dict[str, Any] | None] = []
                for mask in masks:
                    if not mask.any():
                        rles.append(None)
                        continue
                    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
                    rles.append({"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")})
                mask_dict[str(anno_id)] = rles
        annotated = split != "valid"
        meta = {
            "videos": {
                video_id: {
                    "expressions": {
                        exp_id: (
                            {"exp": text, "obj_id": list(range(len(ids))), "anno_id": ids}
                            if annotated
                            else {"exp": text}
                        )
                        for exp_id, (text, ids) in video.expressions.items()
                    },
                    "frames": video.frame_names,
                }
                for video_id, video in videos.items()
            }
        }
        write_json(root / split / "meta_expressions.json", meta)
        if annotated:
            write_json(root / split / "mask_dict.json", mask_dict)
    return MeViSFixture(root, splits)
