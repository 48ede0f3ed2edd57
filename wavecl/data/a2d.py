"""A2D-Sentences (docs/datasets.md#a2d-sentences): one sample per (sentence, annotated frame) pair.

Layout under the dataset root (``data/a2d_sentences``; ``data/`` itself is accepted too)::

    Release/videoset.csv                                  9 columns, no header; column 8: 0 train, 1 test
    Release/clips320H/<vid>.mp4  (or Release/CLIPS320/)   the 320-pixel-high clips
    text_annotations/a2d_annotation.txt                   CSV video_id,instance_id,query
    text_annotations/a2d_missed_videos.txt                one video id per line (no sentences)
    text_annotations/a2d_annotation_with_instances/<vid>/<frame:05d>.h5
        MATLAB v7.3 (HDF5): instance [N] ids, reMask [N, W, H] uint8 (column-major; [W, H] when N = 1),
        reBBox [4, N] rows x1, y1, x2, y2

A sample is a window of ``window_size`` frames centred on the annotated frame (edge frames repeated);
only the annotated frame, at window position ``window_size // 2``, carries a target.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import numpy as np
from torch.utils.data import Dataset

from wavecl.atomic import write_json
from wavecl.config import DataConfig
from wavecl.data.coco_gt import coco_document
from wavecl.data.identifiers import check_identifier
from wavecl.data.matlab import open_hdf5, read_hdf5_dataset
from wavecl.data.paths import first_existing, listed_files, read_csv_rows, require_file, resolve_dataset_root
from wavecl.data.sample_cache import dataset_cache_dir, file_fingerprint, load_or_build
from wavecl.data.transforms import ClipTransform, FrameAnnotation, clean_expression
from wavecl.data.types import A2DMetadata, ClipSample, Split
from wavecl.data.video_files import read_video_window
from wavecl.data.windows import at_window_centre

DATASET_FOLDER_NAMES = ("a2d_sentences",)
CLIP_FOLDER_NAMES = ("clips320H", "CLIPS320")
VIDEOSET_COLUMNS = 9
BAD_INSTANCE_ID = "1 (copy)"
"""The one ``instance_id`` of the public text file that is not an integer (video ``T6bNPuKV-wY``)."""
SUBSET_CODES = {"train": 0, "test": 1}


@dataclass(frozen=True)
class A2DPaths:
    """The files of one A2D-Sentences copy."""

    root: Path

    @property
    def videoset(self) -> Path:
        return self.root / "Release" / "videoset.csv"

    @cached_property
    def clips(self) -> Path:
        return first_existing(self.root / "Release", CLIP_FOLDER_NAMES)

    @property
    def annotations(self) -> Path:
        return self.root / "text_annotations" / "a2d_annotation.txt"

    @property
    def missed_videos(self) -> Path:
        return self.root / "text_annotations" / "a2d_missed_videos.txt"

    @property
    def instance_masks(self) -> Path:
        return self.root / "text_annotations" / "a2d_annotation_with_instances"

    def video(self, video_id: str) -> Path:
        return self.clips / f"{video_id}.mp4"

    def mask_file(self, video_id: str, frame: int) -> Path:
        return self.instance_masks / video_id / f"{frame:05d}.h5"

    @classmethod
    def find(cls, root: str | os.PathLike) -> A2DPaths:
        """Locate the dataset from its folder or its parent; raises naming what is missing."""
        return cls(resolve_dataset_root(root, DATASET_FOLDER_NAMES, "Release"))


@dataclass(frozen=True)
class A2DSample:
    """One (sentence, annotated frame) pair.

    Attributes:
        query: the sentence, lower-cased (as stored by the reference's sample list).
        video_id: A2D video id.
        frame: 1-based frame number of the annotated frame (decoded frame ``frame - 1``).
        instance_id: the referred instance's id in the HDF5 ``instance`` list.
    """

    query: str
    video_id: str
    frame: int
    instance_id: int

    @property
    def image_id(self) -> str:
        """COCO ground-truth key ``v_<video>_f_<frame>_i_<instance>`` (no zero padding)."""
        return f"v_{self.video_id}_f_{self.frame}_i_{self.instance_id}"


@dataclass
class InstanceMasks:
    """The contents of one A2D instance-mask HDF5 file.

    Attributes:
        instance_ids: ``N`` instance ids.
        masks: ``[N, H, W]`` bool.
        boxes: ``[N, 4]`` float, the file's ``reBBox`` as ``x1, y1, x2, y2``.
    """

    instance_ids: list[int]
    masks: np.ndarray
    boxes: np.ndarray


def read_instance_ids(path: Path) -> list[int]:
    """The ``instance`` ids of an A2D mask file (stored as MATLAB doubles of any vector shape)."""
    with open_hdf5(path) as handle:
        ids = read_hdf5_dataset(handle, "instance", path).reshape(-1)
    if not np.all(ids == np.round(ids)):
        raise ValueError(f"{path}: non-integer instance ids {ids.tolist()}")
    return [int(value) for value in ids]


def read_instance_masks(path: Path) -> InstanceMasks:
    """Read ids, masks and boxes of an A2D mask file.

    ``reMask`` is MATLAB column-major, ``[N, W, H]`` (``[W, H]`` when there is a single instance); it is
    returned as ``[N, H, W]``.
    """
    with open_hdf5(path) as handle:
        ids = read_hdf5_dataset(handle, "instance", path).reshape(-1)
        masks = read_hdf5_dataset(handle, "reMask", path)
        boxes = read_hdf5_dataset(handle, "reBBox", path)
    if masks.ndim == 2:
        masks = masks[None]
    if masks.ndim != 3 or masks.shape[0] != len(ids):
        raise ValueError(f"{path}: reMask has shape {list(masks.shape)} for {len(ids)} instances")
    if boxes.size != 4 * len(ids):
        raise ValueError(f"{path}: reBBox does not hold 4 coordinates for each of {len(ids)} instances")
    return InstanceMasks(
        instance_ids=[int(value) for value in ids],
        masks=masks.transpose(0, 2, 1).astype(bool),
        boxes=boxes.reshape(4, -1).T.astype(np.float64),
    )


def read_referred_instance(path: Path, instance_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Mask ``[H, W]`` bool and box ``[4]`` (``x1, y1, x2, y2``) of instance ``instance_id`` of an A2D mask file.

    Raises:
        ValueError: the file does not list ``instance_id``; the message names the file.
    """
    instances = read_instance_masks(path)
    if instance_id not in instances.instance_ids:
        raise ValueError(f"{path}: instance {instance_id} not in {instances.instance_ids}")
    index = instances.instance_ids.index(instance_id)
    return instances.masks[index], instances.boxes[index]


def _read_videoset(path: Path) -> dict[str, int]:
    """``{video id: subset code}`` from ``videoset.csv``; each id is a file name (:func:`check_identifier`)."""
    subsets: dict[str, int] = {}
    for line, row in read_csv_rows(path, header=None):
        if len(row) != VIDEOSET_COLUMNS:
            raise ValueError(f"{path}:{line}: expected {VIDEOSET_COLUMNS} columns, found {len(row)}")
        video_id = check_identifier(row[0], f"{path}:{line}", "video id")
        try:
            subsets[video_id] = int(float(row[8]))
        except ValueError as error:
            raise ValueError(f"{path}:{line}: subset column is not a number: {row[8]!r}") from error
    return subsets


def build_a2d_samples(root: str | os.PathLike, subset: Literal["train", "test"]) -> list[A2DSample]:
    """Build the single-frame sample list of one subset, deterministically.

    Used videos are those of the subset that are not in the missed list. Text rows of used videos are
    taken in file order, the ``"1 (copy)"`` row is dropped, and each row gives one sample per mask file
    of its video (sorted by name) whose ``instance`` list contains the row's instance id.
    """
    if subset not in SUBSET_CODES:
        raise ValueError(f"A2D subset must be 'train' or 'test', got {subset!r}")
    paths = A2DPaths.find(root)
    subsets = _read_videoset(paths.videoset)
    missed = set(require_file(paths.missed_videos).read_text(encoding="utf-8").split())
    used = {video for video, code in subsets.items() if code == SUBSET_CODES[subset] and video not in missed}

    frame_instances: dict[str, list[tuple[int, list[int]]]] = {}
    samples: list[A2DSample] = []
    for line, row in read_csv_rows(paths.annotations, header=("video_id", "instance_id", "query")):
        if len(row) != 3:
            raise ValueError(f"{paths.annotations}:{line}: expected 3 columns, found {len(row)}")
        video_id, instance_text, query = row
        if video_id not in used or instance_text == BAD_INSTANCE_ID:
            continue
        clean_expression(query, f"{paths.annotations}:{line}")
        try:
            instance_id = int(instance_text)
        except ValueError as error:
            raise ValueError(f"{paths.annotations}:{line}: instance_id {instance_text!r} is not an integer") from error
        if video_id not in frame_instances:
            folder = paths.instance_masks / video_id
            if not folder.is_dir():
                raise FileNotFoundError(f"instance-mask folder not found: {folder}")
            frame_instances[video_id] = [
                (int(file.stem), read_instance_ids(file)) for file in listed_files(folder, (".h5",))
            ]
        samples.extend(
            A2DSample(query.lower(), video_id, frame, instance_id)
            for frame, ids in frame_instances[video_id]
            if instance_id in ids
        )
    return samples


def _parse_samples(rows: list[Any]) -> list[A2DSample]:
    """Cached ``[query, video_id, frame, instance_id]`` rows as samples; raises on a malformed row."""
    samples = []
    for query, video_id, frame, instance_id in rows:
        if not isinstance(query, str) or not isinstance(video_id, str):
            raise ValueError(f"malformed A2D sample {[query, video_id, frame, instance_id]!r}")
        check_identifier(video_id, "the cached A2D samples", "video id")
        samples.append(A2DSample(query, video_id, int(frame), int(instance_id)))
    return samples


class A2DSentences(Dataset[ClipSample]):
    """A2D-Sentences clips centred on annotated frames.

    Args:
        root: the ``a2d_sentences`` folder or its parent.
        subset: ``"train"`` or ``"test"``.
        window_size: frames per clip (8 in every published run).
        transform: flip/resize/normalise (train: flip, 320 / 576; test: 320 / 576).
        cache_dir: root of the cache of the sample list (``data.cache_dir``; default ``$WAVECL_CACHE_DIR``
            or ``~/.cache/wavecl``); the file is ``wavecl_a2d_<subset>_samples.json`` in the dataset's
            :func:`~wavecl.data.sample_cache.dataset_cache_dir`. The dataset folder is only read.

    Each item is a :class:`ClipSample` with ``frames [window_size, 3, H', W']``, the target at position
    ``window_size // 2`` (label 0, image id ``v_<vid>_f_<frame>_i_<inst>``) and
    :class:`~wavecl.data.types.A2DMetadata`.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        subset: Literal["train", "test"],
        window_size: int = 8,
        *,
        transform: ClipTransform,
        cache_dir: str | os.PathLike | None = None,
    ) -> None:
        if window_size < 1:
            raise ValueError(f"window_size must be positive, got {window_size}")
        self.paths = A2DPaths.find(root)
        self.subset = subset
        self.window_size = window_size
        self.transform = transform
        sources = [self.paths.videoset, self.paths.annotations, self.paths.missed_videos]
        for source in sources:
            require_file(source)
        self.paths.clips  # noqa: B018 -- a missing clip folder is reported now, not at the first item
        cache = dataset_cache_dir(cache_dir, self.paths.root) / f"wavecl_a2d_{subset}_samples.json"
        key = {"format": "wavecl.a2d_samples.v1", "subset": subset, "sources": file_fingerprint(sources)}
        self.samples = load_or_build(
            cache,
            key,
            lambda: [[s.query, s.video_id, s.frame, s.instance_id] for s in build_a2d_samples(self.paths.root, subset)],
            _parse_samples,
        )

    def __len__(self) -> int:
        return len(self.samples)

    def clip_key(self, index: int) -> tuple[str, int]:
        """The clip that sample ``index`` shows, ``(video, annotated frame)``: test samples with one key
        (the instances referred to in one frame) hold equal frames and can share one backbone pass."""
        sample = self.samples[index]
        return (sample.video_id, sample.frame)

    def sentence(self, index: int) -> tuple[str, str]:
        """``(text, where)`` of sample ``index``'s sentence, ``where`` naming the file and the expression
        (read without loading any frame, so every sentence can be checked before a run starts)."""
        sample = self.samples[index]
        return sample.query, f"{self.paths.annotations}: video {sample.video_id}, instance {sample.instance_id}"

    def sample_name(self, index: int) -> str:
        """Human-readable identity of sample ``index`` (for warnings and errors)."""
        sample = self.samples[index]
        return f"A2D {self.subset} sample {index} ({sample.image_id}, {self.paths.video(sample.video_id)})"

    def __getitem__(self, index: int) -> ClipSample:
        sample = self.samples[index]
        video_path = self.paths.video(sample.video_id)
        mask_path = self.paths.mask_file(sample.video_id, sample.frame)
        frames = read_video_window(video_path, sample.frame - 1, self.window_size)
        mask, _ = read_referred_instance(mask_path, sample.instance_id)
        width, height = frames[0].size
        if mask.shape != (height, width):
            raise ValueError(
                f"mask in {mask_path} is {mask.shape[0]}x{mask.shape[1]} "
                f"but frames of {video_path} are {height}x{width}"
            )
        annotations = at_window_centre(FrameAnnotation(mask=mask, label=0, image_id=sample.image_id), self.window_size)
        text = clean_expression(sample.query, f"{self.paths.annotations} ({sample.image_id})")
        clip, targets, text = self.transform(frames, annotations, text)
        metadata = A2DMetadata(sample.video_id, sample.frame, sample.image_id, sample.instance_id)
        return ClipSample(frames=clip, targets=targets, text=text, metadata=metadata)


def build_a2d(config: DataConfig, split: Split, transform: ClipTransform, num_classes: int) -> A2DSentences:
    """A2D-Sentences ``train``, or ``test`` for evaluation (``num_classes`` is not used: one class)."""
    return A2DSentences(
        config.root,
        "train" if split == "train" else "test",
        config.window_size,
        transform=transform,
        cache_dir=config.cache_dir,
    )


def build_a2d_coco_gt(dataset_root: str | os.PathLike, out_path: str | os.PathLike) -> dict[str, Any]:
    """Write the A2D-Sentences test ground truth to ``out_path`` (atomically) and return it.

    Samples are those of :func:`wavecl.data.a2d.build_a2d_samples` for ``"test"``; ``bbox`` is the
    file's ``reBBox`` as ``[x1, y1, x2 - x1, y2 - y1]``.
    """
    paths = A2DPaths.find(dataset_root)
    entries = []
    for sample in build_a2d_samples(paths.root, "test"):
        mask, box = read_referred_instance(paths.mask_file(sample.video_id, sample.frame), sample.instance_id)
        x1, y1, x2, y2 = (float(value) for value in box)
        entries.append((sample.image_id, mask, [x1, y1, x2 - x1, y2 - y1]))
    document = coco_document("A2D-Sentences test ground truth (wavecl)", entries)
    write_json(Path(out_path), document)
    return document
