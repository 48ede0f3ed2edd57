"""Writer of a tiny JHMDB-Sentences dataset in its exact on-disk format, for tests.

The writer returns a dataclass listing exactly what it wrote; loaders are checked against it.
"""

from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.io
from PIL import Image

from wavecl.atomic import atomic_path, save_image, write_json, write_text
from wavecl.testing.frames import flat_frames, random_rectangle


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
        frames = flat_frames(num_frames, height, width, tint=9 * number)
        masks = np.stack([random_rectangle(rng, height, width) for _ in range(num_masks)])
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
