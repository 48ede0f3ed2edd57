"""Ref-YouTube-VOS (docs/datasets.md#ref-youtube-vos).

Layout under the dataset root (``ref-youtube-vos`` or ``refer_youtube_vos``, or their parent)::

    train/JPEGImages/<vid>/<frame>.jpg
    train/Annotations/<vid>/<frame>.png              palette PNG, pixel value = object id, 0 = background
    train/meta.json                                  {"videos": {vid: {"objects": {obj_id: {"category"}}}}}
    valid/JPEGImages/<vid>/<frame>.jpg
    valid/Annotations/<vid>/<frame>.png              only in one's own data (and the synthetic set)
    meta_expressions/{train,valid,test}/meta_expressions.json
        {"videos": {vid: {"expressions": {exp_id: {"exp", "obj_id" (train)}}, "frames": [...]}}}

Training samples are the reference's windows (:func:`wavecl.data.windows.training_windows`) of
every expression, kept when the referred object appears in at least one frame of the window; the list
is regenerated deterministically and cached (the shipped lists are corrupt and never read). Every frame
has a target.

Validation covers every frame of each (video, expression) of the valid split (the valid expression file
minus the test expression file) in consecutive windows of ``window_size`` frames, so memory is bounded
whatever the video length; ``window_size=None`` gives the reference's whole-video clips. Items carry no
targets, only the metadata needed to write ``Annotations/<video>/<exp_id>/<frame>.png``.

The real ``valid`` split has no masks; a split of one's own data in this layout may have them
(``valid/Annotations`` and an ``obj_id`` for every expression), and then :class:`YTVOSGroundTruth`
reads the referred object's masks so that J and F can be computed locally.
"""

from __future__ import annotations

import logging
import os
from collections import defaultdict
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
from torch.utils.data import Dataset

from wavecl.config import DataConfig
from wavecl.data.identifiers import check_identifier
from wavecl.data.index_png import read_index_mask
from wavecl.data.paths import natural_sorted, read_image, resolve_dataset_root
from wavecl.data.sample_cache import dataset_cache_dir, file_fingerprint, load_or_build
from wavecl.data.transforms import ClipTransform, FrameAnnotation, clean_expression
from wavecl.data.types import ClipSample, ExpressionMetadata, Split
from wavecl.data.windows import covering_windows, training_windows
from wavecl.inference_settings import InferenceSettings
from wavecl.jsonio import read_json

logger = logging.getLogger(__name__)

DATASET_FOLDER_NAMES = ("ref-youtube-vos", "refer_youtube_vos")
YTVOS_CATEGORIES: tuple[str, ...] = (
    "airplane",
    "ape",
    "bear",
    "bike",
    "bird",
    "boat",
    "bucket",
    "bus",
    "camel",
    "cat",
    "cow",
    "crocodile",
    "deer",
    "dog",
    "dolphin",
    "duck",
    "eagle",
    "earless_seal",
    "elephant",
    "fish",
    "fox",
    "frisbee",
    "frog",
    "giant_panda",
    "giraffe",
    "hand",
    "hat",
    "hedgehog",
    "horse",
    "knife",
    "leopard",
    "lion",
    "lizard",
    "monkey",
    "motorbike",
    "mouse",
    "others",
    "owl",
    "paddle",
    "parachute",
    "parrot",
    "penguin",
    "person",
    "plant",
    "rabbit",
    "raccoon",
    "sedan",
    "shark",
    "sheep",
    "sign",
    "skateboard",
    "snail",
    "snake",
    "snowboard",
    "squirrel",
    "surfboard",
    "tennis_racket",
    "tiger",
    "toilet",
    "train",
    "truck",
    "turtle",
    "umbrella",
    "whale",
    "zebra",
)
"""The 65 categories in alphabetical order; a category's position is its class index."""
CATEGORY_INDEX = {name: index for index, name in enumerate(YTVOS_CATEGORIES)}


@dataclass(frozen=True)
class YTVOSPaths:
    """The files of one Ref-YouTube-VOS copy."""

    root: Path

    def expressions(self, subset: str) -> Path:
        return self.root / "meta_expressions" / subset / "meta_expressions.json"

    def frame_file(self, subset: str, video_id: str, frame: str) -> Path:
        return self.root / subset / "JPEGImages" / video_id / f"{frame}.jpg"

    def mask_file(self, video_id: str, frame: str, subset: str = "train") -> Path:
        return self.annotations(subset) / video_id / f"{frame}.png"

    def annotations(self, subset: str) -> Path:
        """``<subset>/Annotations``: index PNGs of every frame (train; valid only in one's own data)."""
        return self.root / subset / "Annotations"

    @property
    def train_meta(self) -> Path:
        return self.root / "train" / "meta.json"

    @classmethod
    def find(cls, root: str | os.PathLike) -> YTVOSPaths:
        return cls(resolve_dataset_root(root, DATASET_FOLDER_NAMES, "meta_expressions"))


def read_expression_videos(path: Path) -> dict[str, Any]:
    """``videos`` of a meta_expressions file (Ref-YouTube-VOS, or Ref-DAVIS17 converted to its layout).

    Every video is checked to have an ``expressions`` dict and a non-empty ``frames`` list, every
    expression an ``exp`` string that is not empty after :func:`clean_expression`. Video ids, expression
    ids and frame names become path components, so each must pass :func:`check_identifier`.

    Raises:
        FileNotFoundError / ValueError naming the file, video and expression at fault
        (:class:`~wavecl.data.identifiers.UnsafeIdentifierError` for an id that is no file name).
    """
    content = read_json(path)
    videos = content.get("videos") if isinstance(content, dict) else None
    if not isinstance(videos, dict):
        raise ValueError(f"{path}: expected {{'videos': {{...}}}}")
    for video_id, video in videos.items():
        check_identifier(video_id, path, "video id")
        if not isinstance(video, dict) or not isinstance(video.get("expressions"), dict) or not video.get("frames"):
            raise ValueError(f"{path}: video {video_id!r} needs 'expressions' and a non-empty 'frames' list")
        if not isinstance(video["frames"], list):
            raise ValueError(f"{path}: video {video_id!r} 'frames' must be a list of frame names")
        for frame in video["frames"]:
            check_identifier(frame, path, f"video {video_id!r} frame name")
        for exp_id, expression in video["expressions"].items():
            check_identifier(exp_id, path, f"video {video_id!r} expression id")
            if not isinstance(expression, dict) or not isinstance(expression.get("exp"), str):
                raise ValueError(f"{path}: video {video_id!r} expression {exp_id!r} has no 'exp' string")
            clean_expression(expression["exp"], f"{path} (video {video_id!r}, expression {exp_id!r})")
    return videos


def evaluated_videos(paths: YTVOSPaths, subset: str = "valid") -> dict[str, Any]:
    """``{video_id: {"expressions", "frames"}}`` of the videos of ``subset`` that are evaluated, sorted by id.

    For ``valid`` these are the videos of ``meta_expressions/valid`` minus those of
    ``meta_expressions/test`` (the real valid file lists both). Without a test file, an annotated split
    (``valid/Annotations``, one's own data) keeps every listed video; an unannotated one keeps the
    videos that have a frame folder, with a warning naming how many were left out.
    """
    videos = read_expression_videos(paths.expressions(subset))
    test_file = paths.expressions("test")
    if subset != "valid" or (paths.annotations(subset).is_dir() and not test_file.is_file()):
        video_ids = sorted(videos)
    elif test_file.is_file():
        video_ids = sorted(set(videos) - set(read_expression_videos(test_file)))
    else:
        video_ids = sorted(v for v in videos if (paths.root / subset / "JPEGImages" / v).is_dir())
        if len(video_ids) < len(videos):
            logger.warning(
                "no %s: predicting the %d of %d videos of %s that have frames",
                test_file,
                len(video_ids),
                len(videos),
                paths.expressions(subset),
            )
    return {video_id: videos[video_id] for video_id in video_ids}


@dataclass(frozen=True)
class ReferredExpression:
    """One evaluated expression of an annotated split.

    Attributes:
        video_id, exp_id, text: identify the expression.
        obj_id: pixel value of the referred object in the split's ``Annotations`` PNGs.
        frames: every frame of the video in natural order (:func:`~wavecl.data.paths.natural_sorted`),
            the frames that are predicted and scored.
    """

    video_id: str
    exp_id: str
    text: str
    obj_id: int
    frames: tuple[str, ...]


@dataclass(frozen=True)
class ExpressionTruth:
    """The ground truth of one scored expression, whatever the dataset's mask format.

    Attributes:
        video_id, exp_id, text: identify the expression.
        frames: the scored frames, in order.
        masks: ``[T, H, W]`` bool masks of what the expression refers to, one per frame of ``frames``.
        source: where the masks come from (a folder or file, named in errors).
        labels: ``[T, H, W]`` ids of every object of the video (0 = background) where the dataset has index
            masks (the Ref-YouTube-VOS layout; shared by the video's expressions), else ``None``; identity
            switches are measured against them (:mod:`wavecl.evaluation.identity`).
    """

    video_id: str
    exp_id: str
    text: str
    frames: tuple[str, ...]
    masks: np.ndarray
    source: str
    labels: np.ndarray | None = None


class YTVOSGroundTruth:
    """The referred objects' masks of a Ref-YouTube-VOS-layout split that has ``Annotations/``.

    One's own data (and the synthetic dataset) in this layout may ship its held-out split with
    ``<subset>/Annotations/<video>/<frame>.png`` (index PNGs, as in ``train``) and an ``obj_id`` in
    every expression of ``meta_expressions/<subset>``; the real Ref-YouTube-VOS valid split has
    neither (use :meth:`find`, which returns ``None`` then).

    Args:
        root: the dataset folder or its parent.
        subset: the annotated split, ``valid`` by default.

    Attributes:
        expressions: every evaluated expression (:func:`evaluated_videos`), by video then expression id.

    Raises:
        FileNotFoundError: ``<subset>/Annotations`` is missing.
        ValueError: an expression has no integer ``obj_id`` (the file, video and expression are named).
    """

    def __init__(self, root: str | os.PathLike, subset: str = "valid") -> None:
        self.paths = YTVOSPaths.find(root)
        self.subset = subset
        if not self.paths.annotations(subset).is_dir():
            raise FileNotFoundError(f"no ground truth: {self.paths.annotations(subset)} does not exist")
        source = self.paths.expressions(subset)
        self.expressions: list[ReferredExpression] = []
        for video_id, video in evaluated_videos(self.paths, subset).items():
            frames = tuple(natural_sorted(video["frames"]))
            for exp_id, expression in video["expressions"].items():
                try:
                    obj_id = int(expression["obj_id"])
                except (KeyError, TypeError, ValueError):
                    raise ValueError(
                        f"{source}: video {video_id!r} expression {exp_id!r} needs an integer 'obj_id' "
                        f"(the object's pixel value in {self.paths.annotations(subset)}) to be scored"
                    ) from None
                self.expressions.append(ReferredExpression(video_id, exp_id, expression["exp"], obj_id, frames))

    @classmethod
    def find(cls, root: str | os.PathLike, subset: str = "valid") -> YTVOSGroundTruth | None:
        """The ground truth of ``subset``, or ``None`` when it has no ``Annotations`` folder."""
        return cls(root, subset) if YTVOSPaths.find(root).annotations(subset).is_dir() else None

    def video_labels(self, video_id: str, frames: tuple[str, ...]) -> np.ndarray:
        """``[T, H, W]`` uint8 object ids of ``frames`` of one video.

        Raises:
            FileNotFoundError / ValueError: a PNG is missing, unreadable, or of another size than the first.
        """
        labels = [read_index_mask(self.paths.mask_file(video_id, frame, self.subset)) for frame in frames]
        for frame, frame_labels in zip(frames, labels):
            if frame_labels.shape != labels[0].shape:
                raise ValueError(
                    f"{self.paths.mask_file(video_id, frame, self.subset)} is {frame_labels.shape[0]}x"
                    f"{frame_labels.shape[1]}, {self.paths.mask_file(video_id, frames[0], self.subset)} is "
                    f"{labels[0].shape[0]}x{labels[0].shape[1]}"
                )
        return np.stack(labels)

    def truths(self) -> Iterator[ExpressionTruth]:
        """Every expression's masks, video by video (each video's PNGs are read once).

        An expression whose object appears in none of its video's masks is a data error, not a score: a
        frame where ground truth and prediction are both empty scores 1 (the DAVIS convention), so an
        empty prediction would get J = F = 1 for it.

        Raises:
            FileNotFoundError / ValueError: as :meth:`video_labels`; an expression's object is absent from
                every frame (file, video, expression and obj_id named).
        """
        by_video: dict[str, list[ReferredExpression]] = defaultdict(list)
        for expression in self.expressions:
            by_video[expression.video_id].append(expression)
        for video_id, expressions in by_video.items():
            labels = self.video_labels(video_id, expressions[0].frames)
            folder = self.paths.annotations(self.subset) / video_id
            for expression in expressions:
                masks = labels == expression.obj_id
                if not masks.any():
                    raise ValueError(
                        f"{self.paths.expressions(self.subset)}: video {video_id!r} expression "
                        f"{expression.exp_id!r} obj_id {expression.obj_id} appears in none of the "
                        f"{len(expression.frames)} masks of {folder}: it cannot be scored (an empty prediction "
                        "would get J = F = 1); fix its obj_id or remove the expression (`wavecl prepare check` "
                        "lists every such expression)"
                    )
                yield ExpressionTruth(
                    video_id, expression.exp_id, expression.text, expression.frames, masks, str(folder), labels
                )

    def masks(self, video_id: str, exp_id: str) -> np.ndarray:
        """``[T, H, W]`` bool masks of the object that expression ``exp_id`` of ``video_id`` refers to.

        Raises:
            KeyError: no such evaluated expression.
        """
        for expression in self.expressions:
            if (expression.video_id, expression.exp_id) == (video_id, exp_id):
                return self.video_labels(video_id, expression.frames) == expression.obj_id
        raise KeyError(f"{self.paths.expressions(self.subset)} has no expression {exp_id!r} of video {video_id!r}")


def _objects_per_frame(paths: YTVOSPaths, video_id: str, frames: list[str]) -> dict[str, list[int]]:
    """``{frame: object ids present}`` of one training video."""
    present = {}
    for frame in frames:
        counts = np.bincount(read_index_mask(paths.mask_file(video_id, frame)).ravel(), minlength=256)
        present[frame] = [int(value) for value in np.flatnonzero(counts[1:]) + 1]
    return present


def _video_train_samples(paths: YTVOSPaths, video_id: str, video: dict[str, Any], window_size: int) -> list[list[Any]]:
    frames = natural_sorted(video["frames"])
    present = _objects_per_frame(paths, video_id, frames)
    windows = training_windows(frames, window_size)
    samples: list[list[Any]] = []
    for exp_id, expression in video["expressions"].items():
        if "obj_id" not in expression:
            raise ValueError(f"{paths.expressions('train')}: video {video_id!r} expression {exp_id!r} has no obj_id")
        entry = {"exp": expression["exp"], "obj_id": str(expression["obj_id"]), "exp_id": exp_id}
        obj = int(expression["obj_id"])
        samples.extend(
            [video_id, window, entry] for window in windows if any(obj in present[frame] for frame in window)
        )
    return samples


def _train_cache_key(paths: YTVOSPaths, window_size: int) -> dict[str, Any]:
    return {
        "format": "wavecl.ytvos_train_samples.v2",
        "window_size": window_size,
        "sources": file_fingerprint([paths.expressions("train")]),
    }


def train_samples_cache_path(cache_dir: str | os.PathLike | None, root: str | os.PathLike, window_size: int) -> Path:
    """Where :class:`RefYouTubeVOS` keeps the training windows of the dataset at ``root``: a file in its
    :func:`~wavecl.data.sample_cache.dataset_cache_dir` (``cache_dir`` is ``data.cache_dir``)."""
    folder = dataset_cache_dir(cache_dir, YTVOSPaths.find(root).root)
    return folder / f"wavecl_ytvos_train_samples_ws{window_size}.json"


def _build_train_samples(paths: YTVOSPaths, window_size: int, num_workers: int) -> list[list[Any]]:
    """``[video_id, [window_size frame names], {"exp", "obj_id", "exp_id"}]`` for every kept window."""
    if window_size < 1:
        raise ValueError(f"window_size must be positive, got {window_size}")
    videos = read_expression_videos(paths.expressions("train"))
    arguments = [(paths, video_id, video, window_size) for video_id, video in videos.items()]
    if num_workers > 0:
        with ProcessPoolExecutor(num_workers) as pool:
            per_video = list(pool.map(_video_train_samples, *zip(*arguments)))
    else:
        per_video = [_video_train_samples(*argument) for argument in arguments]
    return [sample for samples in per_video for sample in samples]


def build_ytvos_train_samples(
    root: str | os.PathLike, window_size: int, out: str | os.PathLike, num_workers: int = 0
) -> list[list[Any]]:
    """The training windows cached in ``out``: read back when ``out`` holds them for these inputs,
    else regenerated and written atomically.

    Write to :func:`train_samples_cache_path` for :class:`RefYouTubeVOS` to use the file.

    Args:
        root: the dataset folder or its parent.
        window_size: frames per window.
        out: output JSON file.
        num_workers: processes reading annotation PNGs (0: in this process); the result is identical.

    Returns:
        the samples, ``[video_id, [frame names], {"exp", "obj_id", "exp_id"}]``.
    """
    paths = YTVOSPaths.find(root)
    return load_or_build(
        Path(out),
        _train_cache_key(paths, window_size),
        lambda: _build_train_samples(paths, window_size, num_workers),
        _parse_train_samples,
    )


def _parse_train_samples(rows: list[Any]) -> list[list[Any]]:
    """Check cached training windows: ``[video_id, [frame names], {"exp", "obj_id", "exp_id"}]`` each,
    whose ids and frame names are file names (:func:`check_identifier`)."""
    for video_id, frames, entry in rows:
        if not isinstance(video_id, str) or not isinstance(frames, list) or not frames:
            raise ValueError(f"malformed training window {[video_id, frames, entry]!r}")
        str(entry["exp"]), int(entry["obj_id"])
        check_identifier(video_id, "the cached training windows", "video id")
        check_identifier(entry["exp_id"], "the cached training windows", f"video {video_id!r} expression id")
        for frame in frames:
            check_identifier(frame, "the cached training windows", f"video {video_id!r} frame name")
    return rows


@dataclass(frozen=True)
class YTVOSSample:
    """One clip: an expression over some frames of a video.

    Attributes:
        video_id, exp_id, expression: identify the expression.
        frame_names: the clip's frames (training windows may repeat a frame).
        obj_id: the referred object's pixel value (training only).
        window_start: position of the clip's first frame among the video's frames (validation).
        num_video_frames: frames of the whole video (validation).
    """

    video_id: str
    exp_id: str
    expression: str
    frame_names: tuple[str, ...]
    obj_id: int | None = None
    window_start: int = 0
    num_video_frames: int = 0


def expression_clips(
    videos: dict[str, Any], frames_folder: Path, window_size: int | None, overlap: int = 0
) -> list[YTVOSSample]:
    """Evaluation clips: every frame of every expression of ``videos`` in consecutive windows.

    Args:
        videos: ``{video_id: {"expressions", "frames"}}`` (:func:`read_expression_videos`), in the order
            to evaluate.
        frames_folder: the split's ``JPEGImages`` folder.
        window_size: frames per clip (:func:`~wavecl.data.windows.covering_windows`); ``None`` for whole videos.
        overlap: frames each window shares with the previous one.

    Returns:
        one :class:`YTVOSSample` per (video, expression, window), frames in natural order.

    Raises:
        FileNotFoundError: a video has no frame folder (checked before any sample is built).
    """
    for video_id in videos:
        if not (frames_folder / video_id).is_dir():
            raise FileNotFoundError(f"frame folder not found: {frames_folder / video_id}")
    samples: list[YTVOSSample] = []
    for video_id, video in videos.items():
        frames = natural_sorted(video["frames"])
        for exp_id, expression in video["expressions"].items():
            samples.extend(
                YTVOSSample(
                    video_id,
                    exp_id,
                    expression["exp"],
                    tuple(frames[window.start : window.stop]),
                    window_start=window.start,
                    num_video_frames=len(frames),
                )
                for window in covering_windows(len(frames), window_size, overlap)
            )
    return samples


class RefYouTubeVOS(Dataset[ClipSample]):
    """Ref-YouTube-VOS training windows or validation clips.

    Args:
        root: the dataset folder or its parent.
        subset: ``"train"`` or ``"valid"``.
        window_size: frames per clip; for ``"valid"``, ``None`` puts each whole video in one clip.
        overlap: ``"valid"``: frames each window shares with the previous one (linked windows).
        transform: train: flip, 360 / 640; valid: 360 / 640.
        cache_dir: root of the cache of training windows (``data.cache_dir``; default ``$WAVECL_CACHE_DIR``
            or ``~/.cache/wavecl``); the file is :func:`train_samples_cache_path`. The dataset folder
            is only read.
        num_classes: 65 gives each target its category index (:data:`YTVOS_CATEGORIES`, from
            ``train/meta.json``); 1 gives label 0 and does not read ``meta.json``.

    Attributes:
        windowless: ``(video, exp_id)`` of the training expressions left out because they yield no window
            (logged as a warning with their count; no window at all is an error).

    Raises:
        ValueError: the training split yields no window at all.

    Train items: ``frames [window_size, 3, H', W']``, one target per frame. Valid items:
    ``frames [T, 3, H', W']`` with ``T <= window_size``, no targets, and ``window_start`` and
    ``num_video_frames`` in their :class:`~wavecl.data.types.ExpressionMetadata`.
    """

    NAME = "Ref-YouTube-VOS"
    """The dataset named in :meth:`sample_name`."""

    def __init__(
        self,
        root: str | os.PathLike,
        subset: Literal["train", "valid"],
        window_size: int | None = 8,
        *,
        transform: ClipTransform,
        cache_dir: str | os.PathLike | None = None,
        num_classes: Literal[1, 65] = 65,
        overlap: int = 0,
    ) -> None:
        if subset not in ("train", "valid"):
            raise ValueError(f"Ref-YouTube-VOS subset must be 'train' or 'valid', got {subset!r}")
        if num_classes not in (1, 65):
            raise ValueError(f"num_classes must be 1 or 65 for Ref-YouTube-VOS, got {num_classes}")
        if window_size is not None and window_size < 1:
            raise ValueError(f"window_size must be positive, got {window_size}")
        self.paths = YTVOSPaths.find(root)
        self.subset = subset
        self.window_size = window_size
        self.overlap = overlap
        self.transform = transform
        self.num_classes = num_classes
        self.windowless: list[tuple[str, str]] = []
        if subset == "valid":
            self.samples = self._valid_samples()
        elif window_size is None:
            raise ValueError("Ref-YouTube-VOS training windows need a window_size")
        else:
            self.samples = self._train_samples(cache_dir, window_size)
        self.categories = self._read_categories() if subset == "train" and num_classes == 65 else {}

    def _train_samples(self, cache_dir: str | os.PathLike | None, window_size: int) -> list[YTVOSSample]:
        rows = load_or_build(
            train_samples_cache_path(cache_dir, self.paths.root, window_size),
            _train_cache_key(self.paths, window_size),
            lambda: _build_train_samples(self.paths, window_size, num_workers=0),
            _parse_train_samples,
        )
        self.windowless = self._windowless_expressions(rows)
        return [
            YTVOSSample(video_id, entry["exp_id"], entry["exp"], tuple(frames), obj_id=int(entry["obj_id"]))
            for video_id, frames, entry in rows
        ]

    def _windowless_expressions(self, rows: list[list[Any]]) -> list[tuple[str, str]]:
        """``(video, exp_id)`` of the training expressions that yield no window (their object is in none of
        their video's masks), with a warning counting them and the videos left without any window.

        Raises:
            ValueError: no expression yields a window (the file and the counts are named).
        """
        source = self.paths.expressions("train")
        videos = read_expression_videos(source)
        kept = {(video_id, entry["exp_id"]) for video_id, _, entry in rows}
        listed = [(video_id, exp_id) for video_id, video in videos.items() for exp_id in video["expressions"]]
        windowless = [key for key in listed if key not in kept]
        if not rows:
            raise ValueError(
                f"{source}: none of the {len(listed)} expressions of {len(videos)} videos yields a training "
                f"window: no referred object appears in the masks of {self.paths.annotations('train')} "
                "(`wavecl prepare check` lists them)"
            )
        if windowless:
            empty_videos = {video_id for video_id, _ in listed} - {video_id for video_id, _ in kept}
            logger.warning(
                "%s: %d of %d expressions yield no training window and are left out (%d of %d videos have none); "
                "their objects appear in none of their frames' masks: %s",
                source,
                len(windowless),
                len(listed),
                len(empty_videos),
                len(videos),
                ", ".join(f"video {video_id!r} expression {exp_id!r}" for video_id, exp_id in windowless[:5]),
            )
        return windowless

    def _valid_samples(self) -> list[YTVOSSample]:
        videos = evaluated_videos(self.paths, "valid")
        return expression_clips(videos, self.paths.root / "valid" / "JPEGImages", self.window_size, self.overlap)

    def _read_categories(self) -> dict[tuple[str, int], int]:
        """``{(video, object id): class index}`` for every referred object, from ``train/meta.json``."""
        meta = read_json(self.paths.train_meta)
        videos = meta.get("videos", {}) if isinstance(meta, dict) else {}
        categories: dict[tuple[str, int], int] = {}
        for sample in self.samples:
            assert sample.obj_id is not None  # training samples name their object
            key = (sample.video_id, sample.obj_id)
            if key in categories:
                continue
            try:
                name = videos[sample.video_id]["objects"][str(sample.obj_id)]["category"]
            except (KeyError, TypeError) as error:
                raise ValueError(
                    f"{self.paths.train_meta}: no category for video {sample.video_id!r} object {sample.obj_id}"
                ) from error
            if name not in CATEGORY_INDEX:
                raise ValueError(
                    f"{self.paths.train_meta}: video {sample.video_id!r} object {sample.obj_id} "
                    f"has unknown category {name!r}"
                )
            categories[key] = CATEGORY_INDEX[name]
        return categories

    def __len__(self) -> int:
        return len(self.samples)

    def clip_key(self, index: int) -> tuple[str, ...]:
        """The clip that sample ``index`` shows, ``(video, *frame names)``: validation samples with one key
        (the expressions of one window) hold equal frames and can share one backbone pass."""
        sample = self.samples[index]
        return (sample.video_id, *sample.frame_names)

    def sentence(self, index: int) -> tuple[str, str]:
        """``(text, where)`` of sample ``index``'s sentence, ``where`` naming the file and the expression
        (read without loading any frame, so every sentence can be checked before a run starts)."""
        sample = self.samples[index]
        where = f"{self.paths.expressions(self.subset)}: video {sample.video_id}, expression {sample.exp_id}"
        return sample.expression, where

    def sample_name(self, index: int) -> str:
        """Human-readable identity of sample ``index``."""
        sample = self.samples[index]
        frames = f"{sample.frame_names[0]}..{sample.frame_names[-1]}"
        return (
            f"{self.NAME} {self.subset} sample {index} "
            f"(video {sample.video_id}, expression {sample.exp_id}, frames {frames})"
        )

    def _annotations(self, sample: YTVOSSample, height: int, width: int) -> list[FrameAnnotation | None]:
        """The referred object in each frame of training ``sample`` (``height`` x ``width`` frames).

        Raises:
            ValueError: a mask is of another size than its frame (both files named).
        """
        assert sample.obj_id is not None  # training samples name their object
        label = self.categories[sample.video_id, sample.obj_id] if self.num_classes == 65 else 0
        annotations: list[FrameAnnotation | None] = []
        for name in sample.frame_names:
            mask_path = self.paths.mask_file(sample.video_id, name)
            ids = read_index_mask(mask_path)
            if ids.shape != (height, width):
                raise ValueError(
                    f"{mask_path} is {ids.shape[0]}x{ids.shape[1]} but "
                    f"{self.paths.frame_file(self.subset, sample.video_id, name)} is {height}x{width}"
                )
            annotations.append(FrameAnnotation(mask=ids == sample.obj_id, label=label))
        return annotations

    def __getitem__(self, index: int) -> ClipSample:
        sample = self.samples[index]
        frames = [read_image(self.paths.frame_file(self.subset, sample.video_id, name)) for name in sample.frame_names]
        source = f"{self.paths.expressions(self.subset)} (video {sample.video_id!r}, expression {sample.exp_id!r})"
        text = clean_expression(sample.expression, source)
        width, height = frames[0].size
        metadata = ExpressionMetadata(sample.video_id, sample.exp_id, tuple(sample.frame_names), (height, width))
        if self.subset != "train":
            clip, targets, text = self.transform(frames, [None] * len(frames), text)
            metadata = replace(metadata, window_start=sample.window_start, num_video_frames=sample.num_video_frames)
            return ClipSample(frames=clip, targets=targets, text=text, metadata=metadata)

        annotations = self._annotations(sample, height, width)
        clip, targets, text = self.transform(frames, annotations, text)
        return ClipSample(frames=clip, targets=targets, text=text, metadata=metadata)


def build_ytvos(config: DataConfig, split: Split, transform: ClipTransform, num_classes: int) -> RefYouTubeVOS:
    """Ref-YouTube-VOS-layout ``train`` windows, or ``valid`` in the windows of
    :meth:`~wavecl.inference_settings.InferenceSettings.of_evaluation` (whole videos with
    ``eval_whole_video``); category ids are kept with ``num_classes == 65``."""
    window_size: int | None
    if split == "train":
        window_size, overlap = config.window_size, 0
    else:
        settings = InferenceSettings.of_evaluation(config)
        window_size, overlap = (None, 0) if config.eval_whole_video else (settings.window, settings.overlap)
    return RefYouTubeVOS(
        config.root,
        "train" if split == "train" else "valid",
        window_size,
        transform=transform,
        cache_dir=config.cache_dir,
        num_classes=65 if num_classes == 65 else 1,
        overlap=overlap,
    )
