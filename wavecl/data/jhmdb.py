"""JHMDB-Sentences (docs/datasets.md#jhmdb-sentences), evaluation only: three frames per video.

Layout under the dataset root (``jhmdb_sentences``, with or without a ``data/`` parent)::

    Rename_Images/<action>/<video>/<%05d>.png            RGB frames, 1-based
    puppet_mask/<action>/<video>/puppet_mask.mat         MATLAB v5 or v7.3, part_mask [H, W, Tm] 0/1
    jhmdb_annotation.txt                                 CSV video_id,query (one query per video)

The evaluated frames come either from a sample-list file in MTTR's format (a JSON list of
``[video_id, png path, mat path, number of frames with a mask, query]``; its ``./jhmdb_sentences/...``
paths are re-rooted here) — use MTTR's file to compare with published numbers — or are drawn as the
reference does: for each video in file order, 3 distinct frames among those with a mask, sorted,
with Python's ``random.sample`` from ``random.Random(seed)``.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from wavecl.atomic import write_json
from wavecl.config import DataConfig
from wavecl.data.coco_gt import coco_document
from wavecl.data.identifiers import check_identifier
from wavecl.data.matlab import read_mat_variable
from wavecl.data.paths import is_hidden, listed_files, read_csv_rows, read_image, resolve_dataset_root
from wavecl.data.transforms import ClipTransform, FrameAnnotation, clean_expression
from wavecl.data.types import A2DMetadata, ClipSample, Split
from wavecl.data.windows import at_window_centre, centred_window
from wavecl.jsonio import read_json

DATASET_FOLDER_NAMES = ("jhmdb_sentences", "data/jhmdb_sentences")
FRAMES_PER_VIDEO = 3


@dataclass(frozen=True)
class JHMDBSample:
    """One evaluated frame.

    Attributes:
        video_id: JHMDB video id.
        action: the action folder holding the video.
        frame: 1-based frame number (``<frame:05d>.png``; mask ``part_mask[..., frame - 1]``).
        num_frames: frames of the video that have a mask (windows are clamped to these).
        query: the sentence as written in the annotation file.
    """

    video_id: str
    action: str
    frame: int
    num_frames: int
    query: str

    @property
    def image_id(self) -> str:
        """COCO ground-truth key ``v_<video>_f_<frame>``."""
        return f"v_{self.video_id}_f_{self.frame}"


@dataclass(frozen=True)
class JHMDBPaths:
    """The files of one JHMDB-Sentences copy."""

    root: Path

    @property
    def annotations(self) -> Path:
        return self.root / "jhmdb_annotation.txt"

    def frame_file(self, action: str, video_id: str, frame: int) -> Path:
        return self.root / "Rename_Images" / action / video_id / f"{frame:05d}.png"

    def mask_file(self, action: str, video_id: str) -> Path:
        return self.root / "puppet_mask" / action / video_id / "puppet_mask.mat"

    @classmethod
    def find(cls, root: str | os.PathLike) -> JHMDBPaths:
        return cls(resolve_dataset_root(root, DATASET_FOLDER_NAMES, "jhmdb_annotation.txt"))


def read_puppet_masks(path: Path) -> np.ndarray:
    """``part_mask`` of a ``puppet_mask.mat`` file (MATLAB v5 or v7.3) as ``[Tm, H, W]`` bool.

    Raises:
        FileNotFoundError / ValueError naming the file when it is missing, unreadable or malformed.
    """
    masks = read_mat_variable(path, "part_mask")
    if masks.ndim != 3:
        raise ValueError(f"{path}: part_mask has shape {list(masks.shape)}, expected [H, W, T]")
    return masks.transpose(2, 0, 1) != 0


def _video_actions(paths: JHMDBPaths) -> dict[str, str]:
    """``{video id: action}`` from the ``Rename_Images/<action>/<video>`` folders."""
    frames_root = paths.root / "Rename_Images"
    if not frames_root.is_dir():
        raise FileNotFoundError(f"frame folder not found: {frames_root}")
    actions = [action for action in frames_root.iterdir() if action.is_dir() and not is_hidden(action.name)]
    return {
        video.name: action.name
        for action in actions
        for video in action.iterdir()
        if video.is_dir() and not is_hidden(video.name)
    }


def _samples_from_metadata(paths: JHMDBPaths, metadata_path: Path) -> list[JHMDBSample]:
    """Read an MTTR-style sample list, keeping ``<action>/<video>/<frame>.png`` of each path."""
    entries = read_json(metadata_path)
    if not isinstance(entries, list):
        raise ValueError(f"{metadata_path}: expected a JSON list of samples")
    samples = []
    for number, entry in enumerate(entries):
        if not (isinstance(entry, list) and len(entry) == 5):
            raise ValueError(f"{metadata_path}: entry {number} is not [video_id, png, mat, num_frames, query]")
        video_id, png, _, num_frames, query = entry
        check_identifier(video_id, metadata_path, f"entry {number} video id")
        png_path = Path(png)
        if png_path.parent.name != video_id or not png_path.stem.isdigit():
            raise ValueError(f"{metadata_path}: entry {number} has frame path {png!r} not of video {video_id!r}")
        action = check_identifier(png_path.parent.parent.name, metadata_path, f"entry {number} action folder")
        samples.append(JHMDBSample(video_id, action, int(png_path.stem), int(num_frames), query))
    return samples


def build_jhmdb_samples(
    root: str | os.PathLike, samples_metadata: str | os.PathLike | None = None, seed: int = 42
) -> list[JHMDBSample]:
    """The evaluated frames: from ``samples_metadata`` if given, else drawn as described in the module.

    Raises:
        FileNotFoundError / ValueError naming the file at fault (annotation file, frame folder, mask
        file, sample list), or the video when it has fewer than 3 frames with a mask.
    """
    paths = JHMDBPaths.find(root)
    if samples_metadata is not None:
        samples = _samples_from_metadata(paths, Path(samples_metadata))
    else:
        actions = _video_actions(paths)
        rng = random.Random(seed)
        samples = []
        for line, row in read_csv_rows(paths.annotations, header=("video_id", "query")):
            if len(row) != 2:
                raise ValueError(f"{paths.annotations}:{line}: expected 2 columns, found {len(row)}")
            video_id, query = row
            check_identifier(video_id, f"{paths.annotations}:{line}", "video id")
            if video_id not in actions:
                raise FileNotFoundError(f"{paths.annotations}:{line}: no frame folder Rename_Images/*/{video_id}")
            action = actions[video_id]
            num_pngs = len(listed_files(paths.root / "Rename_Images" / action / video_id, (".png",)))
            num_frames = min(num_pngs, len(read_puppet_masks(paths.mask_file(action, video_id))))
            if num_frames < FRAMES_PER_VIDEO:
                raise ValueError(f"video {video_id} has {num_frames} frames with a mask, fewer than {FRAMES_PER_VIDEO}")
            chosen = sorted(rng.sample(range(1, num_frames + 1), FRAMES_PER_VIDEO))
            samples.extend(JHMDBSample(video_id, action, frame, num_frames, query) for frame in chosen)
    for sample in samples:
        clean_expression(sample.query, f"{paths.annotations} (video {sample.video_id})")
    return samples


class JHMDBSentences(Dataset[ClipSample]):
    """JHMDB-Sentences evaluation clips centred on the evaluated frames.

    Args:
        root: the ``jhmdb_sentences`` folder or its parent.
        window_size: frames per clip.
        transform: evaluation transform (320 / 576: 240x320 frames become 320x426).
        samples_metadata: MTTR-format sample list, or ``None`` to draw frames with ``seed``.
        seed: seed of the draw.

    Each item: ``frames [window_size, 3, H', W']``, one target at position ``window_size // 2``
    (label 0, image id ``v_<vid>_f_<frame>``), :class:`~wavecl.data.types.A2DMetadata`.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        window_size: int = 8,
        *,
        transform: ClipTransform,
        samples_metadata: str | os.PathLike | None = None,
        seed: int = 42,
    ) -> None:
        if window_size < 1:
            raise ValueError(f"window_size must be positive, got {window_size}")
        self.paths = JHMDBPaths.find(root)
        self.window_size = window_size
        self.transform = transform
        self.samples = build_jhmdb_samples(self.paths.root, samples_metadata, seed)

    def __len__(self) -> int:
        return len(self.samples)

    def sentence(self, index: int) -> tuple[str, str]:
        """``(text, where)`` of sample ``index``'s sentence, ``where`` naming the file and the expression
        (read without loading any frame, so every sentence can be checked before a run starts)."""
        sample = self.samples[index]
        return sample.query, f"{self.paths.annotations}: video {sample.video_id}"

    def sample_name(self, index: int) -> str:
        """Human-readable identity of sample ``index``."""
        sample = self.samples[index]
        return f"JHMDB sample {index} ({sample.image_id}, {self.paths.mask_file(sample.action, sample.video_id)})"

    def __getitem__(self, index: int) -> ClipSample:
        sample = self.samples[index]
        mask_path = self.paths.mask_file(sample.action, sample.video_id)
        masks = read_puppet_masks(mask_path)
        if not 1 <= sample.frame <= min(len(masks), sample.num_frames):
            raise ValueError(f"{mask_path} has {len(masks)} masks; frame {sample.frame} has none")
        window = centred_window(sample.frame - 1, self.window_size, sample.num_frames)
        frames = [read_image(self.paths.frame_file(sample.action, sample.video_id, i + 1)) for i in window]
        width, height = frames[0].size
        if masks.shape[1:] != (height, width):
            raise ValueError(
                f"masks in {mask_path} are {masks.shape[1]}x{masks.shape[2]} but frames of "
                f"{sample.video_id} are {height}x{width}"
            )
        annotation = FrameAnnotation(masks[sample.frame - 1], label=0, image_id=sample.image_id)
        annotations = at_window_centre(annotation, self.window_size)
        text = clean_expression(sample.query, f"{self.paths.annotations} (video {sample.video_id})")
        clip, targets, text = self.transform(frames, annotations, text)
        metadata = A2DMetadata(sample.video_id, sample.frame, sample.image_id)
        return ClipSample(frames=clip, targets=targets, text=text, metadata=metadata)


def build_jhmdb(config: DataConfig, split: Split, transform: ClipTransform, num_classes: int) -> JHMDBSentences:
    """JHMDB-Sentences, every evaluated frame (evaluation only; ``split`` and ``num_classes`` are not used)."""
    return JHMDBSentences(
        config.root, config.window_size, transform=transform, samples_metadata=config.jhmdb_samples_metadata
    )


def build_jhmdb_coco_gt(
    dataset_root: str | os.PathLike,
    out_path: str | os.PathLike,
    samples_metadata: str | os.PathLike | None = None,
    seed: int = 42,
) -> dict[str, Any]:
    """Write the JHMDB-Sentences ground truth of the evaluated frames to ``out_path`` and return it.

    Pass the same ``samples_metadata`` and ``seed`` as to :class:`wavecl.data.jhmdb.JHMDBSentences`,
    so that image ids match the predictions. Annotations have no ``bbox`` (as in the reference).
    """
    paths = JHMDBPaths.find(dataset_root)
    entries = []
    for sample in build_jhmdb_samples(paths.root, samples_metadata, seed):
        mask_file = paths.mask_file(sample.action, sample.video_id)
        masks = read_puppet_masks(mask_file)
        if not 1 <= sample.frame <= len(masks):
            raise ValueError(f"{mask_file} has {len(masks)} masks; frame {sample.frame} has none")
        entries.append((sample.image_id, masks[sample.frame - 1], None))
    document = coco_document("JHMDB-Sentences ground truth (wavecl)", entries)
    write_json(Path(out_path), document)
    return document
