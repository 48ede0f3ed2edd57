"""MeViS (docs/datasets.md#mevis): motion expressions, each referring to one or more objects.

Layout under the dataset root (``mevis``, ``MeViS`` or ``MeViS_release``, or their parent)::

    <split>/JPEGImages/<video>/<frame>.jpg
    <split>/meta_expressions.json   {"videos": {video: {"expressions": {exp_id: {"exp", "obj_id": [..],
                                                        "anno_id": [..]}}, "frames": [...]}}}
    <split>/mask_dict.json          {anno_id: [COCO RLE or null, one per frame in the order of "frames"]}

for the splits ``train`` and ``valid_u`` (masks: training, local evaluation) and ``valid`` (no masks,
``anno_id`` not needed: predictions go to the evaluation server as a zip of
``<video>/<exp_id>/<frame>.png``).

An expression's target in a frame is the union of the masks of its ``anno_id`` objects (a ``null`` RLE:
the object is absent), as the official scorer builds its ground truth; a frame where every object is
absent has an empty target (not visible). An expression whose objects never appear is scored as the
official scorer does (empty ground truth: an empty prediction scores J = F = 1) and yields no training
window. Training samples are the reference's windows (:func:`wavecl.data.windows.training_windows`) in
which at least one of the expression's objects has an RLE; evaluation clips cover every frame
(:func:`wavecl.data.ytvos.expression_clips`). ``mask_dict.json`` is read whole into memory.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from wavecl.atomic import write_json
from wavecl.config import DataConfig
from wavecl.data.index_png import save_index_png
from wavecl.data.paths import natural_sorted, open_image, resolve_dataset_root
from wavecl.data.transforms import ClipTransform, FrameAnnotation
from wavecl.data.types import Split
from wavecl.data.windows import training_windows
from wavecl.data.ytvos import (
    ExpressionTruth,
    RefYouTubeVOS,
    YTVOSSample,
    expression_clips,
    read_expression_videos,
)
from wavecl.jsonio import read_json
from wavecl.optional import require_package

logger = logging.getLogger(__name__)

DATASET_FOLDER_NAMES = ("mevis", "MeViS", "MeViS_release")
MEVIS_SPLITS = ("train", "valid_u", "valid")
MeViSSplit = Literal["train", "valid_u", "valid"]
ANNOTATED_SPLITS = ("train", "valid_u")
"""The splits that have ``mask_dict.json`` and an ``anno_id`` list in every expression."""


@dataclass(frozen=True)
class MeViSPaths:
    """The files of one MeViS copy."""

    root: Path

    def expressions(self, split: str) -> Path:
        return self.root / split / "meta_expressions.json"

    def mask_dict(self, split: str) -> Path:
        return self.root / split / "mask_dict.json"

    def frames_folder(self, split: str) -> Path:
        return self.root / split / "JPEGImages"

    def frame_file(self, split: str, video_id: str, frame: str) -> Path:
        return self.frames_folder(split) / video_id / f"{frame}.jpg"

    @classmethod
    def find(cls, root: str | os.PathLike, split: str) -> MeViSPaths:
        """The MeViS folder at ``root`` or below it that holds ``<split>/meta_expressions.json``."""
        return cls(resolve_dataset_root(root, DATASET_FOLDER_NAMES, f"{split}/meta_expressions.json"))


def _check_split(split: str) -> None:
    if split not in MEVIS_SPLITS:
        raise ValueError(f"MeViS split must be one of {MEVIS_SPLITS}, got {split!r}")


def anno_ids(expression: dict[str, Any], source: Path, video_id: str, exp_id: str) -> tuple[str, ...]:
    """The ``anno_id`` list of one expression as ``mask_dict.json`` keys (strings; integers or strings are read).

    Raises:
        ValueError: ``anno_id`` is missing or not a list of integers or non-empty strings (file, video and
            expression named).
    """
    ids = expression.get("anno_id")
    if not isinstance(ids, list) or not all(
        (isinstance(i, int) and not isinstance(i, bool)) or (isinstance(i, str) and i) for i in ids
    ):
        raise ValueError(
            f"{source}: video {video_id!r} expression {exp_id!r} needs an 'anno_id' list of integers "
            "(the keys of mask_dict.json)"
        )
    return tuple(str(i) for i in ids)


def rle_problem(rle: Any, size: tuple[int, int] | None) -> str | None:
    """What is wrong with one ``mask_dict.json`` entry of a frame of ``size = (H, W)`` (``None``: size not
    checked), or ``None`` for a COCO RLE (``{"size": [H, W], "counts": ...}``) of that size or a ``null``
    entry (object absent)."""
    if rle is None:
        return None
    if not isinstance(rle, dict) or not isinstance(rle.get("counts"), str | bytes) or "size" not in rle:
        return "not a COCO RLE {'size', 'counts'} or null"
    if size is not None and tuple(rle["size"]) != tuple(size):
        return f"RLE size {rle['size']} (height, width), its frame {list(size)}"
    return None


class MaskDict:
    """The per-frame COCO RLE masks of a MeViS split's ``mask_dict.json``.

    Args:
        path: the file, ``{anno_id: [RLE or null, ...]}``.

    Raises:
        FileNotFoundError / ValueError: the file is missing or not such a dict (named).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.masks = read_json(path)
        if not isinstance(self.masks, dict) or not all(isinstance(v, list) for v in self.masks.values()):
            raise ValueError(f"{path}: expected {{anno_id: [RLE or null, one per frame]}}")

    def rles(self, anno_id: str, num_frames: int, video_id: str) -> list[dict[str, Any] | None]:
        """The ``num_frames`` RLEs (``None`` where absent) of object ``anno_id`` of ``video_id``.

        Raises:
            ValueError: no such object, or its list has another length than the video's frames.
        """
        if anno_id not in self.masks:
            raise ValueError(f"{self.path}: no masks for anno_id {anno_id} (referred in video {video_id!r})")
        rles = self.masks[anno_id]
        if len(rles) != num_frames:
            raise ValueError(
                f"{self.path}: anno_id {anno_id} has {len(rles)} masks, video {video_id!r} has {num_frames} frames"
            )
        return rles

    def union(
        self, ids: Sequence[str], frame_index: int, num_frames: int, video_id: str, size: tuple[int, int]
    ) -> np.ndarray:
        """``[H, W]`` bool union of the masks of objects ``ids`` in frame ``frame_index`` (its position in
        the video's listed ``frames``); all-False where every object is absent.

        Args:
            size: ``(H, W)`` of the frame; every RLE must have it.

        Raises:
            ValueError: an RLE of another size or a malformed one (file, anno_id and frame index named).
        """
        union = np.zeros(size, dtype=bool)
        mask_utils = require_package("pycocotools.mask", "reading MeViS masks (COCO RLE)")
        for anno_id in ids:
            rle = self.rles(anno_id, num_frames, video_id)[frame_index]
            problem = rle_problem(rle, size)
            if problem is not None:
                raise ValueError(f"{self.path}: anno_id {anno_id} frame {frame_index} of video {video_id!r}: {problem}")
            if rle is not None:
                union |= mask_utils.decode(rle).astype(bool)
        return union


def read_mevis_videos(paths: MeViSPaths, split: str) -> dict[str, Any]:
    """``{video_id: {"expressions", "frames"}}`` of ``split``, sorted by id, ids checked
    (:func:`~wavecl.data.ytvos.read_expression_videos`); in ``train`` and ``valid_u`` every expression must
    have an ``anno_id`` list (:func:`anno_ids`)."""
    source = paths.expressions(split)
    videos = read_expression_videos(source)
    if split in ANNOTATED_SPLITS:
        for video_id, video in videos.items():
            for exp_id, expression in video["expressions"].items():
                anno_ids(expression, source, video_id, exp_id)
    return {video_id: videos[video_id] for video_id in sorted(videos)}


def _frame_size(path: Path) -> tuple[int, int]:
    """``(H, W)`` of a frame, from its header."""
    with open_image(path) as image:
        width, height = image.size
    return height, width


class MeViS(RefYouTubeVOS):
    """MeViS training windows, or evaluation clips of ``valid_u`` / ``valid``.

    Items are those of :class:`~wavecl.data.ytvos.RefYouTubeVOS` (single class, label 0); a training
    frame's target is the union of the expression's objects (empty, not visible, where all are absent).

    Args:
        root: the MeViS folder or its parent.
        split: ``"train"``, ``"valid_u"`` or ``"valid"``.
        window_size: frames per clip; for evaluation, ``None`` puts each whole video in one clip.
        transform: the split's transform.

    Raises:
        ValueError: an unknown split; no expression yields a training window.
    """

    NAME = "MeViS"
    # Another layout and split names than the base's; what MeViS inherits reads only expressions() and
    # frame_file(), which both layouts have.
    paths: MeViSPaths  # type: ignore[assignment]
    subset: MeViSSplit  # type: ignore[assignment]

    def __init__(
        self, root: str | os.PathLike, split: MeViSSplit, window_size: int | None = 8, *, transform: ClipTransform
    ) -> None:
        _check_split(split)
        if window_size is not None and window_size < 1:
            raise ValueError(f"window_size must be positive, got {window_size}")
        self.paths = MeViSPaths.find(root, split)
        self.subset = split
        self.window_size = window_size
        self.transform = transform
        self.num_classes = 1
        self.categories = {}
        self.windowless = []
        self.videos = read_mevis_videos(self.paths, split)
        if split != "train":
            self.samples = expression_clips(self.videos, self.paths.frames_folder(split), window_size)
        elif window_size is None:
            raise ValueError("MeViS training windows need a window_size")
        else:
            self.mask_dict = MaskDict(self.paths.mask_dict(split))
            self.samples = self._mevis_train_samples(window_size)

    def _mevis_train_samples(self, window_size: int) -> list[YTVOSSample]:
        source = self.paths.expressions("train")
        samples: list[YTVOSSample] = []
        for video_id, video in self.videos.items():
            position = {name: index for index, name in enumerate(video["frames"])}
            windows = training_windows(natural_sorted(video["frames"]), window_size)
            for exp_id, expression in video["expressions"].items():
                ids = anno_ids(expression, source, video_id, exp_id)
                rles = [self.mask_dict.rles(anno_id, len(position), video_id) for anno_id in ids]
                present = {name for name, index in position.items() if any(r[index] is not None for r in rles)}
                kept = [window for window in windows if present.intersection(window)]
                if not kept:
                    self.windowless.append((video_id, exp_id))
                samples.extend(YTVOSSample(video_id, exp_id, expression["exp"], tuple(window)) for window in kept)
        if not samples:
            raise ValueError(f"{source}: no expression's objects appear in {self.paths.mask_dict('train')}")
        if self.windowless:
            logger.warning(
                "%s: %d expressions yield no training window (their objects appear in no frame) and are left out",
                source,
                len(self.windowless),
            )
        return samples

    def _annotations(self, sample: YTVOSSample, height: int, width: int) -> list[FrameAnnotation | None]:
        """The union of the expression's objects in each frame of training ``sample``.

        Raises:
            ValueError: an RLE is malformed or of another size than its frame.
        """
        video = self.videos[sample.video_id]
        expression = video["expressions"][sample.exp_id]
        ids = anno_ids(expression, self.paths.expressions("train"), sample.video_id, sample.exp_id)
        position = {name: index for index, name in enumerate(video["frames"])}
        return [
            FrameAnnotation(
                mask=self.mask_dict.union(ids, position[name], len(position), sample.video_id, (height, width)),
                label=0,
            )
            for name in sample.frame_names
        ]


class MeViSGroundTruth:
    """The expressions of ``valid_u`` (or ``train``) with their union masks, for J and F.

    Every expression of every video is scored over every frame (natural order), as the official scorer
    does, including an expression whose objects never appear (all-empty ground truth).

    Args:
        root: the MeViS folder or its parent.
        split: an annotated split, ``valid_u`` by default.

    Raises:
        ValueError: ``split`` has no masks; an expression has no ``anno_id`` list.
        FileNotFoundError: ``mask_dict.json`` is missing.
    """

    def __init__(self, root: str | os.PathLike, split: str = "valid_u") -> None:
        if split not in ANNOTATED_SPLITS:
            raise ValueError(f"MeViS {split!r} has no masks to score against; annotated splits: {ANNOTATED_SPLITS}")
        self.paths = MeViSPaths.find(root, split)
        self.split = split
        self.videos = read_mevis_videos(self.paths, split)
        self.mask_dict = MaskDict(self.paths.mask_dict(split))

    def truths(self) -> Iterator[ExpressionTruth]:
        """Every expression's ``[T, H, W]`` union masks, video by video; ``H, W`` is the first frame's size.

        Raises:
            FileNotFoundError: a video's first frame is missing.
            ValueError: see :meth:`MaskDict.union`.
        """
        source = self.paths.expressions(self.split)
        for video_id, video in self.videos.items():
            frames = tuple(natural_sorted(video["frames"]))
            position = {name: index for index, name in enumerate(video["frames"])}
            size = _frame_size(self.paths.frame_file(self.split, video_id, frames[0]))
            for exp_id, expression in video["expressions"].items():
                ids = anno_ids(expression, source, video_id, exp_id)
                masks = np.stack([self.mask_dict.union(ids, position[f], len(frames), video_id, size) for f in frames])
                yield ExpressionTruth(video_id, exp_id, expression["exp"], frames, masks, str(self.mask_dict.path))


@dataclass(frozen=True)
class PNGConversion:
    """What :func:`write_mevis_png` wrote.

    Attributes:
        annotations: the ``Annotations`` folder.
        objects: ``{video: {anno_id: pixel value}}``, also written as ``objects.json`` beside it.
        frames: PNGs written.
    """

    annotations: Path
    objects: dict[str, dict[str, int]]
    frames: int


def write_mevis_png(root: str | os.PathLike, split: str, out: str | os.PathLike) -> PNGConversion:
    """Convert a split's ``mask_dict.json`` into index PNGs ``<out>/Annotations/<video>/<frame>.png``.

    In each video the objects its expressions refer to get the pixel values 1, 2, ... in increasing
    ``anno_id`` order (numeric: :func:`~wavecl.data.paths.natural_sorted`; 0 is background); where objects
    overlap, the later one (larger ``anno_id``) wins. ``<out>/objects.json`` maps each video's ``anno_id`` to
    its pixel value. The dataset is only read.

    Raises:
        ValueError: ``split`` has no masks; ``out`` is inside the dataset folder; a video refers to more than
            255 objects; an RLE is malformed or of another size than its frame.
    """
    if split not in ANNOTATED_SPLITS:
        raise ValueError(f"MeViS {split!r} has no mask_dict.json; splits with masks: {ANNOTATED_SPLITS}")
    paths = MeViSPaths.find(root, split)
    out = Path(out)
    if out.resolve().is_relative_to(paths.root.resolve()):
        raise ValueError(f"{out} is inside the dataset folder {paths.root}, which is only read; choose another --out")
    videos = read_mevis_videos(paths, split)
    mask_dict = MaskDict(paths.mask_dict(split))
    source = paths.expressions(split)
    objects: dict[str, dict[str, int]] = {}
    written = 0
    for video_id, video in videos.items():
        referred = {int(i) for exp_id, e in video["expressions"].items() for i in anno_ids(e, source, video_id, exp_id)}
        ordered = [str(i) for i in sorted(referred)]
        if len(ordered) > 255:
            raise ValueError(f"{source}: video {video_id!r} refers to {len(ordered)} objects; a PNG holds 255")
        objects[video_id] = {anno_id: value for value, anno_id in enumerate(ordered, start=1)}
        frames = video["frames"]
        size = _frame_size(paths.frame_file(split, video_id, natural_sorted(frames)[0]))
        for index, frame in enumerate(frames):
            labels = np.zeros(size, dtype=np.uint8)
            for value, anno_id in enumerate(ordered, start=1):
                labels[mask_dict.union([anno_id], index, len(frames), video_id, size)] = value
            save_index_png(labels, out / "Annotations" / video_id / f"{frame}.png")
            written += 1
    write_json(out / "objects.json", objects, indent=1)
    return PNGConversion(out / "Annotations", objects, written)


def build_mevis(config: DataConfig, split: Split, transform: ClipTransform, num_classes: int) -> MeViS:
    """MeViS ``train`` windows, or the evaluation split ``data.mevis_eval_split`` (``valid_u``: scored here,
    ``valid``: a submission zip) in windows of ``window_size`` frames (whole videos with ``eval_whole_video``).

    Raises:
        ValueError: ``num_classes`` is not 1 (MeViS has no categories).
    """
    if num_classes != 1:
        raise ValueError(f"MeViS has no categories: model.num_classes must be 1, got {num_classes}")
    whole_video = split == "eval" and config.eval_whole_video
    return MeViS(
        config.root,
        "train" if split == "train" else config.mevis_eval_split,
        None if whole_video else config.window_size,
        transform=transform,
    )
