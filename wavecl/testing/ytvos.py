"""Writer of a tiny Ref-YouTube-VOS dataset in its exact on-disk format, for tests and benchmarks.

The writer returns a dataclass listing exactly what it wrote; loaders are checked against it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from wavecl.atomic import save_image, write_json
from wavecl.data.index_png import save_index_png
from wavecl.testing.frames import flat_frames, random_rectangle


@dataclass
class YTVOSFixtureVideo:
    """One Ref-YouTube-VOS video.

    Attributes:
        frame_names: sorted frame names (``00000``, ``00005``, ...).
        frames: ``[T, H, W, 3]`` uint8 given to the JPEG encoder.
        labels: ``[T, H, W]`` uint8 object ids of the annotation PNGs (train only, else ``None``).
        categories: ``{obj_id string: category}`` (train only).
        expressions: ``{exp_id: (sentence, obj_id or None)}`` in file order.
    """

    frame_names: list[str]
    frames: np.ndarray
    labels: np.ndarray | None
    categories: dict[str, str]
    expressions: dict[str, tuple[str, str | None]]


@dataclass
class YTVOSFixture:
    """What :func:`write_ytvos_fixture` wrote: ``{split: {video id: YTVOSFixtureVideo}}`` under ``root``.

    ``test_videos`` are listed in both the valid and the test expression files and have no frames.
    """

    root: Path
    train: dict[str, YTVOSFixtureVideo]
    valid: dict[str, YTVOSFixtureVideo]
    test_videos: list[str]


def _ytvos_video(
    frames: np.ndarray,
    labels: np.ndarray | None,
    categories: dict[str, str],
    expressions: dict[str, tuple[str, str | None]],
) -> YTVOSFixtureVideo:
    names = [f"{5 * index:05d}" for index in range(len(frames))]
    return YTVOSFixtureVideo(names, frames, labels, categories, expressions)


def write_ytvos_fixture(root: str | os.PathLike, *, seed: int = 0) -> YTVOSFixture:
    """Write a tiny Ref-YouTube-VOS copy under ``root`` (the ``ref-youtube-vos`` folder itself).

    Train: ``vid_long`` (11 frames, 24x40; object 1 "person" everywhere, object 2 "dog" only in frames
    0-2, object 3 "earless_seal" never referred; three expressions, two for object 1) and ``vid_short``
    (3 frames, 30x20 portrait; object 1 "zebra"). Valid: ``val_a`` (7 frames) and ``val_b`` (3 frames),
    plus ``test_c`` which appears only in the expression files (valid and test).
    """
    root = Path(root)
    rng = np.random.default_rng(seed)

    long_labels = np.zeros((11, 24, 40), dtype=np.uint8)
    for index in range(11):
        long_labels[index][random_rectangle(rng, 24, 40)] = 1
        if index < 3:
            long_labels[index, :6, 30:] = 2
        long_labels[index, 20:, :4] = 3
    short_labels = np.stack([random_rectangle(rng, 30, 20).astype(np.uint8) for _ in range(3)])
    train = {
        "vid_long": _ytvos_video(
            flat_frames(11, 24, 40, tint=5),
            long_labels,
            {"1": "person", "2": "dog", "3": "earless_seal"},
            {"0": ("a person walking on the left", "1"), "1": ("the  Dog", "2"), "2": ("a man", "1")},
        ),
        "vid_short": _ytvos_video(
            flat_frames(3, 30, 20, tint=15), short_labels, {"1": "zebra"}, {"0": ("a zebra", "1")}
        ),
    }
    valid = {
        "val_a": _ytvos_video(flat_frames(7, 24, 40, tint=25), None, {}, {"0": ("a cat", None), "1": ("a hat", None)}),
        "val_b": _ytvos_video(flat_frames(3, 20, 36, tint=35), None, {}, {"0": ("the right shoe", None)}),
    }
    test_videos = ["test_c"]

    for split, videos in (("train", train), ("valid", valid)):
        for video, spec in videos.items():
            for name, frame in zip(spec.frame_names, spec.frames):
                jpeg = root / split / "JPEGImages" / video / f"{name}.jpg"
                save_image(Image.fromarray(frame), jpeg, "JPEG", quality=95)
            if spec.labels is not None:
                for name, labels in zip(spec.frame_names, spec.labels):
                    save_index_png(labels, root / split / "Annotations" / video / f"{name}.png")
    write_json(
        root / "train" / "meta.json",
        {
            "videos": {
                video: {
                    "objects": {
                        obj: {"category": category, "frames": spec.frame_names}
                        for obj, category in spec.categories.items()
                    }
                }
                for video, spec in train.items()
            }
        },
    )

    def expression_file(videos: dict[str, YTVOSFixtureVideo], with_objects: bool) -> dict:
        return {
            "videos": {
                video: {
                    "expressions": {
                        exp_id: ({"exp": sentence, "obj_id": obj} if with_objects else {"exp": sentence})
                        for exp_id, (sentence, obj) in spec.expressions.items()
                    },
                    "frames": spec.frame_names,
                }
                for video, spec in videos.items()
            }
        }

    test_spec = {"test_c": _ytvos_video(np.zeros((2, 1, 1, 3), np.uint8), None, {}, {"0": ("a test video", None)})}
    write_json(root / "meta_expressions" / "train" / "meta_expressions.json", expression_file(train, True))
    write_json(root / "meta_expressions" / "valid" / "meta_expressions.json", expression_file(valid | test_spec, False))
    write_json(root / "meta_expressions" / "test" / "meta_expressions.json", expression_file(test_spec, False))
    return YTVOSFixture(root, train, valid, test_videos)
