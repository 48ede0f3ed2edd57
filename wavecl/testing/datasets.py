"""Writers of tiny datasets in the exact on-disk formats of A2D-Sentences, JHMDB-Sentences and
Ref-YouTube-VOS, for tests and benchmarks.

Every frame is a flat colour whose grey level identifies its frame index (``frame_level``), so a test can
tell which frame a loader returned even after lossy H.264/JPEG coding. Masks are random rectangles.
Each writer returns a dataclass listing exactly what it wrote; loaders are checked against it.
"""

from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
import scipy.io
from PIL import Image

from wavecl.atomic import atomic_path, save_image, write_json, write_text
from wavecl.data.index_png import save_index_png
from wavecl.data.video_files import write_video

_MATLAB_HEADER = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan  1 00:00:00 2018 HDF5 schema 1.00 ."


def frame_level(index: int) -> int:
    """Grey level of 0-based frame ``index`` in every fixture video (distinct for indices 0..18, then cycling)."""
    return 20 + 12 * (index % 19)


def _flat_frames(num_frames: int, height: int, width: int, tint: int) -> np.ndarray:
    """``[T, H, W, 3]`` uint8 flat frames: grey ``frame_level(t)`` with the blue channel shifted by ``tint``."""
    frames = np.empty((num_frames, height, width, 3), dtype=np.uint8)
    for index in range(num_frames):
        frames[index] = frame_level(index)
        frames[index, :, :, 2] = min(frame_level(index) + tint, 255)
    return frames


def _random_rectangle(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
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


# --------------------------------------------------------------------------------------------- A2D


@dataclass
class A2DFixtureSample:
    """A sample the A2D loader must produce: sentence as written, video, 1-based frame, instance."""

    query: str
    video_id: str
    frame: int
    instance_id: int


@dataclass
class A2DFixture:
    """What :func:`write_a2d_fixture` wrote.

    Attributes:
        root: the ``a2d_sentences`` folder.
        frames: ``{video: [T, H, W, 3] uint8}`` frames given to the encoder.
        masks: ``{(video, 1-based frame): {instance id: [H, W] bool}}`` per mask file.
        samples: ``{"train" | "test": expected samples in order}``.
        missed_videos: ids listed as missed (they have a sentence that must be ignored).
        single_instance_files: mask files written with a squeezed ``[W, H]`` ``reMask``.
    """

    root: Path
    frames: dict[str, np.ndarray]
    masks: dict[tuple[str, int], dict[int, np.ndarray]]
    samples: dict[str, list[A2DFixtureSample]]
    missed_videos: list[str]
    single_instance_files: list[Path]


def write_matlab_h5_masks(
    path: Path, instance_ids: list[int], masks: list[np.ndarray], boxes: list[list[float]]
) -> None:
    """Write an A2D instance-mask file in MATLAB v7.3 layout, atomically.

    ``instance`` is a MATLAB column vector (HDF5 ``[1, N]`` doubles); ``reMask`` is ``[N, W, H]`` uint8
    (``[W, H]`` for a single instance, as MATLAB squeezes trailing singleton dimensions); ``reBBox`` is
    ``[4, N]``. The file starts with MATLAB's 512-byte user block and text header.
    """
    stacked = np.stack([mask.T for mask in masks]).astype(np.uint8)
    with atomic_path(path) as temporary:
        with h5py.File(temporary, "w", userblock_size=512) as handle:
            handle.create_dataset("instance", data=np.asarray(instance_ids, dtype=np.float64)[None, :])
            handle.create_dataset("reMask", data=stacked[0] if len(masks) == 1 else stacked)
            handle.create_dataset("reBBox", data=np.asarray(boxes, dtype=np.float64).T)
            handle["instance"].attrs["MATLAB_class"] = np.bytes_("double")
            handle["reMask"].attrs["MATLAB_class"] = np.bytes_("logical")
            handle["reBBox"].attrs["MATLAB_class"] = np.bytes_("double")
        with open(temporary, "r+b") as raw:
            raw.write(_MATLAB_HEADER.ljust(116) + bytes(8) + b"\x00\x02IM")


def write_a2d_fixture(
    root: str | os.PathLike,
    *,
    height: int = 32,
    width: int = 48,
    num_frames: int = 10,
    clips_folder: str = "clips320H",
    seed: int = 0,
) -> A2DFixture:
    """Write a tiny A2D-Sentences copy under ``root`` (the ``a2d_sentences`` folder itself).

    Contents: three train videos (one is ``T6bNPuKV-wY`` with the public file's ``1 (copy)`` row), one
    test video and one missed video that still has a sentence. Annotated frames include the first and
    last frames (edge-clamped windows), a single-instance file, an instance absent from some frames and
    a sentence with a comma, capitals and repeated spaces.
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    videos = {"vidTrainA": 0, "vidTrainB": 0, "T6bNPuKV-wY": 0, "vidTest": 1, "vidMissed": 0}
    annotated = {  # video -> {1-based frame: instance ids in file order}
        "vidTrainA": {2: [1, 2], 7: [1]},
        "vidTrainB": {1: [3], num_frames: [3, 1]},
        "T6bNPuKV-wY": {5: [1]},
        "vidTest": {5: [1, 2], 9: [2]},
    }
    rows = [
        ("vidTrainA", "1", "The man on the LEFT   running"),
        ("vidTrainA", "2", "a dog, jumping"),
        ("T6bNPuKV-wY", "1", "a person walking"),
        ("T6bNPuKV-wY", "1 (copy)", "a person walking"),
        ("vidTrainB", "3", "the ball rolling"),
        ("vidMissed", "1", "a sentence of a missed video"),
        ("vidTest", "1", "the left car driving"),
        ("vidTest", "2", "a bird flying"),
    ]

    frames = {video: _flat_frames(num_frames, height, width, tint=7 * number) for number, video in enumerate(videos)}
    for video, video_frames in frames.items():
        write_video(root / "Release" / clips_folder / f"{video}.mp4", list(video_frames), fps=24.0)

    videoset = io.StringIO()
    for video, subset in videos.items():
        csv.writer(videoset, lineterminator="\n").writerow(
            [video, 11, 0, 1, height, width, num_frames, len(annotated.get(video, {})), subset]
        )
    write_text(root / "Release" / "videoset.csv", videoset.getvalue())

    annotation_text = io.StringIO()
    writer = csv.writer(annotation_text, lineterminator="\n")
    writer.writerow(["video_id", "instance_id", "query"])
    writer.writerows(rows)
    write_text(root / "text_annotations" / "a2d_annotation.txt", annotation_text.getvalue())
    write_text(root / "text_annotations" / "a2d_missed_videos.txt", "vidMissed\n")

    masks: dict[tuple[str, int], dict[int, np.ndarray]] = {}
    single_instance_files: list[Path] = []
    for video, frame_instances in annotated.items():
        for frame, ids in frame_instances.items():
            frame_masks = {instance: _random_rectangle(rng, height, width) for instance in ids}
            masks[video, frame] = frame_masks
            path = root / "text_annotations" / "a2d_annotation_with_instances" / video / f"{frame:05d}.h5"
            instance_masks = list(frame_masks.values())
            write_matlab_h5_masks(path, ids, instance_masks, [mask_box_xyxy(m) for m in instance_masks])
            if len(ids) == 1:
                single_instance_files.append(path)

    samples: dict[str, list[A2DFixtureSample]] = {"train": [], "test": []}
    for video, instance, query in rows:
        if video == "vidMissed" or instance == "1 (copy)":
            continue
        subset = "train" if videos[video] == 0 else "test"
        samples[subset].extend(
            A2DFixtureSample(query, video, frame, int(instance))
            for frame, ids in sorted(annotated[video].items())
            if int(instance) in ids
        )
    return A2DFixture(root, frames, masks, samples, ["vidMissed"], single_instance_files)


# ------------------------------------------------------------------------------------------- JHMDB


@dataclass
class JHMDBFixtureVideo:
    """One JHMDB video: its action folder, query, frames ``[T, H, W, 3]`` and masks ``[Tm, H, W]`` bool."""

    action: str
    query: str
    frames: np.ndarray
    masks: np.ndarray


@dataclass
class JHMDBFixture:
    """What :func:`write_jhmdb_fixture` wrote.

    Attributes:
        root: the ``jhmdb_sentences`` folder.
        videos: ``{video id: JHMDBFixtureVideo}`` in annotation-file order.
        samples_metadata: path of an MTTR-style sample list (``./jhmdb_sentences/...`` paths).
        metadata_frames: ``{video id: 1-based frames}`` listed in that file.
    """

    root: Path
    videos: dict[str, JHMDBFixtureVideo]
    samples_metadata: Path
    metadata_frames: dict[str, list[int]] = field(default_factory=dict)


def write_jhmdb_fixture(root: str | os.PathLike, *, height: int = 24, width: int = 32, seed: int = 0) -> JHMDBFixture:
    """Write a tiny JHMDB-Sentences copy under ``root`` (the ``jhmdb_sentences`` folder itself).

    Three videos: one whose puppet mask covers fewer frames than it has PNGs, and one with 5 frames, so
    windows are clamped at both ends. Also writes ``jhmdb_sentences_samples_metadata.json`` in MTTR's
    format (5-lists with ``./jhmdb_sentences/`` paths).
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    specification = [  # video id, action, query, number of PNGs, frames with a mask
        ("brush_hair_girl_1", "brush_hair", "A girl brushing her hair", 12, 12),
        ("run_man_2", "run", "man  running on the RIGHT", 10, 8),
        ("jump_kid_3", "jump", "a kid jumping", 5, 5),
    ]
    videos: dict[str, JHMDBFixtureVideo] = {}
    for number, (video, action, query, num_frames, num_masks) in enumerate(specification):
        frames = _flat_frames(num_frames, height, width, tint=9 * number)
        masks = np.stack([_random_rectangle(rng, height, width) for _ in range(num_masks)])
        for index, frame in enumerate(frames):
            save_image(Image.fromarray(frame), root / "Rename_Images" / action / video / f"{index + 1:05d}.png", "PNG")
        mask_path = root / "puppet_mask" / action / video / "puppet_mask.mat"
        with atomic_path(mask_path) as temporary:
            with open(temporary, "wb") as handle:
                scipy.io.savemat(handle, {"part_mask": masks.transpose(1, 2, 0).astype(np.uint8)})
        videos[video] = JHMDBFixtureVideo(action, query, frames, masks)

    annotation_text = io.StringIO()
    writer = csv.writer(annotation_text, lineterminator="\n")
    writer.writerow(["video_id", "query"])
    writer.writerows([(video, spec.query) for video, spec in videos.items()])
    write_text(root / "jhmdb_annotation.txt", annotation_text.getvalue())

    metadata_frames = {"brush_hair_girl_1": [1, 6, 12], "run_man_2": [2, 3, 8], "jump_kid_3": [1, 3, 5]}
    entries = [
        [
            video,
            f"./jhmdb_sentences/Rename_Images/{videos[video].action}/{video}/{frame:05d}.png",
            f"./jhmdb_sentences/puppet_mask/{videos[video].action}/{video}/puppet_mask.mat",
            len(videos[video].masks),
            videos[video].query,
        ]
        for video, frames in metadata_frames.items()
        for frame in frames
    ]
    metadata_path = root / "jhmdb_sentences_samples_metadata.json"
    write_json(metadata_path, entries)
    return JHMDBFixture(root, videos, metadata_path, metadata_frames)


# --------------------------------------------------------------------------------- Ref-YouTube-VOS


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
        long_labels[index][_random_rectangle(rng, 24, 40)] = 1
        if index < 3:
            long_labels[index, :6, 30:] = 2
        long_labels[index, 20:, :4] = 3
    short_labels = np.stack([_random_rectangle(rng, 30, 20).astype(np.uint8) for _ in range(3)])
    train = {
        "vid_long": _ytvos_video(
            _flat_frames(11, 24, 40, tint=5),
            long_labels,
            {"1": "person", "2": "dog", "3": "earless_seal"},
            {"0": ("a person walking on the left", "1"), "1": ("the  Dog", "2"), "2": ("a man", "1")},
        ),
        "vid_short": _ytvos_video(
            _flat_frames(3, 30, 20, tint=15), short_labels, {"1": "zebra"}, {"0": ("a zebra", "1")}
        ),
    }
    valid = {
        "val_a": _ytvos_video(_flat_frames(7, 24, 40, tint=25), None, {}, {"0": ("a cat", None), "1": ("a hat", None)}),
        "val_b": _ytvos_video(_flat_frames(3, 20, 36, tint=35), None, {}, {"0": ("the right shoe", None)}),
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
