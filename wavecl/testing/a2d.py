"""Writer of a tiny A2D-Sentences dataset in its exact on-disk format, for tests and benchmarks.

The writer returns a dataclass listing exactly what it wrote; loaders are checked against it.
"""

from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from wavecl.atomic import atomic_path, write_text
from wavecl.data.video_files import write_video
from wavecl.testing.frames import flat_frames, mask_box_xyxy, random_rectangle

_MATLAB_HEADER = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan  1 00:00:00 2018 HDF5 schema 1.00 ."


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

    frames = {video: flat_frames(num_frames, height, width, tint=7 * number) for number, video in enumerate(videos)}
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
            frame_masks = {instance: random_rectangle(rng, height, width) for instance in ids}
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
        split = "train" if videos[video] == 0 else "test"
        samples[split].extend(
            A2DFixtureSample(query, video, frame, int(instance))
            for frame, ids in sorted(annotated[video].items())
            if int(instance) in ids
        )
    return A2DFixture(root, frames, masks, samples, ["vidMissed"], single_instance_files)
