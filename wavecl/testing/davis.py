"""Writer of a tiny Ref-DAVIS17 dataset in its exact raw on-disk format, for tests.

The writer returns a dataclass listing what it wrote, so loaders can be checked against it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from wavecl.atomic import save_image, write_json, write_text
from wavecl.data.index_png import save_index_png


@dataclass
class DavisFixtureObject:
    """One object of a fixture video and its four sentences, in annotator-slot order."""

    obj_id: str
    category: str
    sentences: tuple[str, str, str, str]


@dataclass
class DavisFixture:
    """What :func:`write_davis_fixture` wrote.

    Attributes:
        root: the raw Ref-DAVIS root (``DAVIS/``, ``davis_text_annotations/``).
        splits: ``{"train" | "val": video names in ImageSets order}``.
        frames: ``{video: [T, H, W, 3] uint8}`` given to the JPEG encoder.
        labels: ``{video: [T, H, W] uint8}`` annotation PNG values (object ids, 255 = void).
        frame_names: ``{video: names without extension}``.
        objects: ``{video: objects sorted by obj_id}``.
        misspelt: ``{name used in the expression files: real video name}``.
    """

    root: Path
    splits: dict[str, list[str]]
    frames: dict[str, np.ndarray]
    labels: dict[str, np.ndarray]
    frame_names: dict[str, list[str]]
    objects: dict[str, list[DavisFixtureObject]]
    misspelt: dict[str, str]


def write_davis_fixture(
    root: str | Path, num_frames: int = 5, size: tuple[int, int] = (24, 40), seed: int = 0
) -> DavisFixture:
    """Write a raw Ref-DAVIS17 tree: one train video, two val videos (one misspelt in the text files).

    Masks hold object ids 1..n, a few void (255) pixels and objects absent from some frames. The
    expression files list lines in reverse obj_id order (the converter must sort them), the annotator-2
    files are Latin-1 encoded and contain a non-ASCII character.
    """
    rng = np.random.default_rng(seed)
    root = Path(root)
    davis = root / "DAVIS"
    height, width = size
    splits = {"train": ["bear"], "val": ["blackswan", "classic-car"]}
    misspelt = {"clasic-car": "classic-car"}
    spelling = {real: wrong for wrong, real in misspelt.items()}
    object_counts = {"bear": 1, "blackswan": 2, "classic-car": 3}
    categories = {"bear": ["bear"], "blackswan": ["swan", "rock"], "classic-car": ["car", "person", "person"]}

    frames_out: dict[str, np.ndarray] = {}
    labels_out: dict[str, np.ndarray] = {}
    names_out: dict[str, list[str]] = {}
    objects_out: dict[str, list[DavisFixtureObject]] = {}
    for video, count in object_counts.items():
        names = [f"{t:05d}" for t in range(num_frames)]
        frames = rng.integers(0, 256, size=(num_frames, height, width, 3), dtype=np.uint8)
        labels = np.zeros((num_frames, height, width), dtype=np.uint8)
        for t in range(num_frames):
            for obj in range(1, count + 1):
                if obj == 2 and t == num_frames - 1:
                    continue  # object 2 leaves the scene in the last frame
                y, x = int(rng.integers(0, height - 6)), int(rng.integers(0, width - 6))
                labels[t, y : y + 6, x : x + 6] = obj
            labels[t, 0, :3] = 255
        for t, name in enumerate(names):
            save_image(
                Image.fromarray(frames[t]),
                davis / "JPEGImages" / "480p" / video / f"{name}.jpg",
                format="JPEG",
                quality=95,
            )
            save_index_png(labels[t], davis / "Annotations_unsupervised" / "480p" / video / f"{name}.png")
        frames_out[video], labels_out[video], names_out[video] = frames, labels, names
        objects_out[video] = [
            DavisFixtureObject(
                obj_id=str(obj),
                category=categories[video][obj - 1],
                sentences=(
                    f"{video} object {obj} first frame",
                    f"{video} object {obj} whole video",
                    f"a {categories[video][obj - 1]} number {obj} café",
                    f"a {categories[video][obj - 1]} number {obj} moving  right",
                ),
            )
            for obj in range(1, count + 1)
        ]

    for split, videos in splits.items():
        write_text(davis / "ImageSets" / "2017" / f"{split}.txt", "".join(f"{v}\n" for v in videos))
    semantics = {video: {str(i + 1): c for i, c in enumerate(cats)} for video, cats in categories.items()}
    write_json(davis / "davis_semantics.json", semantics)
    file_specs = [
        ("Davis17_annot1.txt", "utf-8"),
        ("Davis17_annot1_full_video.txt", "utf-8"),
        ("Davis17_annot2.txt", "latin-1"),
        ("Davis17_annot2_full_video.txt", "latin-1"),
    ]
    for slot, (name, encoding) in enumerate(file_specs):
        lines = [
            f'{spelling.get(video, video)} {obj.obj_id} "{obj.sentences[slot]}"\n'
            for video, objects in objects_out.items()
            for obj in reversed(objects)
        ]
        write_text(root / "davis_text_annotations" / name, "\n" + "".join(lines), encoding)
    return DavisFixture(root, splits, frames_out, labels_out, names_out, objects_out, misspelt)
