"""Ref-DAVIS17: conversion to the Ref-YouTube-VOS layout and the inference dataset (docs/datasets.md#ref-davis17).

Raw layout under ``root`` (the reference's ``data/refer-davis``)::

    DAVIS/ImageSets/2017/{train,val}.txt                 60 / 30 video names
    DAVIS/JPEGImages/480p/<video>/<frame>.jpg
    DAVIS/Annotations_unsupervised/480p/<video>/<frame>.png   palette PNG: object ids, 255 = void
    DAVIS/davis_semantics.json                           {video: {"1": category, ...}}
    davis_text_annotations/Davis17_annot{1,2}{,_full_video}.txt   lines `<video> <obj_id> "<sentence>"`

:func:`convert_davis` writes the Ref-YouTube-VOS layout (``train`` and ``valid``)::

    <out>/<split>/JPEGImages/<video>     link (or copy) of DAVIS/JPEGImages/480p/<video>
    <out>/<split>/Annotations/<video>    link (or copy) of DAVIS/Annotations_unsupervised/480p/<video>
    <out>/<split>/meta.json              {"videos": {video: {"objects": {"1": {"category": ...}, ...}}}}
    <out>/meta_expressions/<split>/meta_expressions.json

Unlike the reference, nothing is moved: the raw ground truth stays where the DAVIS evaluation
reads it. Expression ids: object ``k`` (in obj_id order) gets ids ``4k .. 4k+3`` from
annotator 1 first-frame, annotator 1 full-video, annotator 2 first-frame, annotator 2 full-video.

:class:`RefDAVIS17` yields, per video, annotator slot ``a`` and object ``k`` (expression ``4k + a``),
the video in consecutive 36-frame chunks. Predictions are merged over objects per slot and
written to ``anno_<a>/<video>/<frame>.png`` (:func:`davis_result_path`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

from wavecl.atomic import place_folder, write_json
from wavecl.config import DataConfig
from wavecl.data.identifiers import check_identifier
from wavecl.data.index_png import read_index_mask
from wavecl.data.paths import listed_files, read_image, require_file, resolve_dataset_root
from wavecl.data.transforms import ClipTransform, FrameAnnotation, clean_expression
from wavecl.data.types import ClipSample, DavisMetadata, Split
from wavecl.data.windows import covering_windows
from wavecl.data.ytvos import read_expression_videos
from wavecl.jsonio import read_json

ANNOTATION_FILES: tuple[tuple[str, str], ...] = (
    ("Davis17_annot1.txt", "utf-8"),
    ("Davis17_annot1_full_video.txt", "utf-8"),
    ("Davis17_annot2.txt", "latin-1"),
    ("Davis17_annot2_full_video.txt", "latin-1"),
)
"""The four expression files in annotator-slot order (slot ``a`` = expression ``4k + a``), with encodings."""
NUM_ANNOTATORS = len(ANNOTATION_FILES)
DAVIS_CHUNK_SIZE = 36
"""Frames per forward pass in the reference's Ref-DAVIS inference; each chunk chooses its own query."""
VIDEO_NAME_FIXES = {"clasic-car": "classic-car", "dog-scale": "dogs-scale", "motor-bike": "motorbike"}
"""Misspelt video names in the expression files and the DAVIS folder names they mean."""
DATASET_FOLDER_NAMES = ("refer-davis", "ref-davis")
"""Folder names of the Ref-DAVIS root under a data folder (``data/refer-davis``)."""
SPLIT_FOLDERS = {"train": "train", "val": "valid"}
"""DAVIS ImageSets split -> Ref-YouTube-VOS split folder."""


@dataclass(frozen=True)
class DavisExpression:
    """One line of an expression file: the object id (string, as in the file) and the sentence."""

    obj_id: str
    text: str


@dataclass(frozen=True)
class DavisConversion:
    """What :func:`convert_davis` wrote.

    Attributes:
        out_dir: root of the Ref-YouTube-VOS-style layout.
        videos: split folder (``train``/``valid``) -> video names written, in ImageSets order.
        num_expressions: split folder -> number of expressions written.
        meta_expressions: split folder -> path of its ``meta_expressions.json``.
    """

    out_dir: Path
    videos: dict[str, list[str]]
    num_expressions: dict[str, int]
    meta_expressions: dict[str, Path]


def read_davis_expression_file(path: str | Path, encoding: str) -> dict[str, list[DavisExpression]]:
    """Parse a ``Davis17_annot*.txt`` file into ``{video: [expressions sorted by obj_id string]}``.

    Each non-empty line is ``<video> <obj_id> "<sentence>"``: the sentence is the third and later
    whitespace-separated tokens joined by single spaces, without its first and last characters (the
    quotes), exactly as the reference reads it. Misspelt video names are fixed (:data:`VIDEO_NAME_FIXES`).
    The sort is stable and compares obj_ids as strings, like the reference.

    Raises:
        FileNotFoundError: the file is missing.
        ValueError: a line has fewer than three tokens, or its video name is no file name
            (:func:`check_identifier`); the message names the file and line.
    """
    path = require_file(Path(path))
    videos: dict[str, list[DavisExpression]] = {}
    for number, line in enumerate(path.read_text(encoding=encoding).splitlines(), start=1):
        tokens = line.split()
        if not tokens:
            continue
        if len(tokens) < 3:
            raise ValueError(f"{path}:{number}: expected '<video> <obj_id> \"<sentence>\"', got {line!r}")
        video = check_identifier(VIDEO_NAME_FIXES.get(tokens[0], tokens[0]), f"{path}:{number}", "video")
        videos.setdefault(video, []).append(DavisExpression(obj_id=tokens[1], text=" ".join(tokens[2:])[1:-1]))
    return {video: sorted(entries, key=lambda entry: entry.obj_id) for video, entries in videos.items()}


def read_split_list(path: Path) -> list[str]:
    """The video names of a DAVIS ``ImageSets`` list, one per non-blank line.

    Raises:
        FileNotFoundError: no file at ``path``.
        UnsafeIdentifierError: a name is no file name (:func:`check_identifier`); file and line are named.
    """
    require_file(path)
    lines = enumerate(path.read_text(encoding="utf-8").splitlines(), start=1)
    return [check_identifier(line.strip(), f"{path}:{number}", "video") for number, line in lines if line.strip()]


def _frame_names(folder: Path, suffix: str) -> list[str]:
    """File names (without extension), in natural order (:func:`~wavecl.data.paths.listed_files`), of the
    ``suffix`` files in ``folder``, hidden ones skipped."""
    if not folder.is_dir():
        raise FileNotFoundError(f"DAVIS folder not found: {folder}")
    names = [entry.stem for entry in listed_files(folder, (suffix,))]
    if not names:
        raise ValueError(f"no {suffix} files in {folder}")
    return names


def convert_davis(
    root: str | Path, out_dir: str | Path, mode: Literal["symlink", "copy"] = "symlink"
) -> DavisConversion:
    """Write the Ref-YouTube-VOS-style layout of Ref-DAVIS17 without moving the raw files.

    Args:
        root: raw Ref-DAVIS root (contains ``DAVIS/`` and ``davis_text_annotations/``) or its parent.
        out_dir: destination root; may equal ``root``.
        mode: ``"symlink"`` (default, no extra disk) or ``"copy"`` for the frame and mask folders.

    Returns:
        A :class:`DavisConversion` describing what was written.

    Raises:
        FileNotFoundError: a raw file or folder is missing (named in the message).
        ValueError: a video of the split lists has no expressions or no semantics entry.
    """
    if mode not in ("symlink", "copy"):
        raise ValueError(f"mode must be 'symlink' or 'copy', got {mode!r}")
    root, out_dir = find_davis_folder(root).parent, Path(out_dir)
    davis = root / "DAVIS"
    text_dir = root / "davis_text_annotations"
    per_slot = [read_davis_expression_file(text_dir / name, encoding) for name, encoding in ANNOTATION_FILES]
    semantics_path = davis / "davis_semantics.json"
    semantics = read_json(semantics_path)

    videos_written: dict[str, list[str]] = {}
    num_expressions: dict[str, int] = {}
    meta_paths: dict[str, Path] = {}
    for image_set, split in SPLIT_FOLDERS.items():
        videos = read_split_list(davis / "ImageSets" / "2017" / f"{image_set}.txt")
        expressions_meta: dict[str, Any] = {}
        objects_meta: dict[str, Any] = {}
        for video in videos:
            for (name, _), slot in zip(ANNOTATION_FILES, per_slot):
                if video not in slot:
                    raise ValueError(f"video {video!r} of {image_set}.txt has no expressions in {text_dir / name}")
            if video not in semantics:
                raise ValueError(f"video {video!r} of {image_set}.txt is missing from {semantics_path}")
            frames_folder = davis / "JPEGImages" / "480p" / video
            masks_folder = davis / "Annotations_unsupervised" / "480p" / video
            frames = _frame_names(frames_folder, ".jpg")
            if not masks_folder.is_dir():
                raise FileNotFoundError(f"DAVIS folder not found: {masks_folder}")
            expressions: dict[str, dict[str, str]] = {}
            for group in zip(*(slot[video] for slot in per_slot)):
                for entry in group:
                    expressions[str(len(expressions))] = {"exp": entry.text, "obj_id": entry.obj_id}
            expressions_meta[video] = {"expressions": expressions, "frames": frames}
            categories = semantics[video]
            objects_meta[video] = {
                "objects": {str(obj): {"category": categories[str(obj)]} for obj in range(1, len(categories) + 1)}
            }
            place_folder(frames_folder, out_dir / split / "JPEGImages" / video, mode)
            place_folder(masks_folder, out_dir / split / "Annotations" / video, mode)
        meta_paths[split] = out_dir / "meta_expressions" / split / "meta_expressions.json"
        write_json(meta_paths[split], {"videos": expressions_meta})
        write_json(out_dir / split / "meta.json", {"videos": objects_meta})
        videos_written[split] = videos
        num_expressions[split] = sum(len(v["expressions"]) for v in expressions_meta.values())
    return DavisConversion(out_dir, videos_written, num_expressions, meta_paths)


def davis_result_path(results_root: str | os.PathLike[str], annotator: int, video: str, frame_name: str) -> Path:
    """Where the merged prediction of annotator slot ``annotator`` for one frame goes:
    ``<results_root>/anno_<annotator>/<video>/<frame_name>.png`` (a palette PNG of object labels).

    Raises:
        UnsafeIdentifierError: ``video`` or ``frame_name`` is no file name (:func:`check_identifier`).
    """
    check_identifier(video, f"predictions in {results_root}", "video")
    check_identifier(frame_name, f"predictions in {results_root}", f"video {video!r} frame name")
    return Path(results_root) / f"anno_{annotator}" / video / f"{frame_name}.png"


@dataclass(frozen=True)
class _DavisSample:
    video: str
    exp_id: str
    obj_id: str
    text: str
    annotator: int
    object_index: int
    num_objects: int
    frame_names: tuple[str, ...]
    chunk_index: int
    num_chunks: int


class RefDAVIS17(Dataset[ClipSample]):
    """Ref-DAVIS17 inference samples from the converted layout.

    Samples are ordered by video (meta file order), annotator slot ``a`` (in ``annotators`` order), object ``k`` (the
    ``k``-th group of four expressions; ``num_objects = len(expressions) // 4`` as in the reference) and
    chunk; the expression is ``4k + a``.

    Args:
        root: output of :func:`convert_davis` (or its parent, e.g. ``data`` for ``data/refer-davis``).
        transform: eval clip transform (the reference resizes short 360 / max 640).
        split: split folder, ``valid`` for evaluation.
        chunk_size: frames per sample (36 in the reference); ``None`` gives the whole video.
        load_masks: attach the referred object's ground-truth mask (``Annotations`` pixel value ==
            obj_id; void is background) as targets with label 0; otherwise targets are ``None``.
        annotators: the annotator slots to predict (config ``davis_annotators``).

    Each item is a :class:`ClipSample` with ``frames [T, 3, H', W']`` and
    :class:`~wavecl.data.types.DavisMetadata`.
    The inference loop gathers the ``num_objects`` probability maps of one (video, annotator, chunk),
    merges them and writes :func:`davis_result_path` files.
    """

    def __init__(
        self,
        root: str | Path,
        transform: ClipTransform,
        split: str = "valid",
        chunk_size: int | None = DAVIS_CHUNK_SIZE,
        load_masks: bool = True,
        annotators: Sequence[int] = tuple(range(NUM_ANNOTATORS)),
    ) -> None:
        self.root = resolve_dataset_root(root, DATASET_FOLDER_NAMES, f"meta_expressions/{split}/meta_expressions.json")
        self.split = split
        self.transform = transform
        self.load_masks = load_masks
        self.meta_path = self.root / "meta_expressions" / split / "meta_expressions.json"
        if any(annotator not in range(NUM_ANNOTATORS) for annotator in annotators):
            raise ValueError(f"annotators must be slots in 0..{NUM_ANNOTATORS - 1}, got {list(annotators)}")
        self.samples: list[_DavisSample] = []
        for video, entry in read_expression_videos(self.meta_path).items():
            where = f"{self.meta_path}: video {video!r}"
            exp_ids = list(entry["expressions"])
            frames = list(entry["frames"])
            num_objects = len(exp_ids) // NUM_ANNOTATORS
            chunks = covering_windows(len(frames), chunk_size)
            for annotator in annotators:
                for object_index in range(num_objects):
                    exp_id = exp_ids[NUM_ANNOTATORS * object_index + annotator]
                    expression = entry["expressions"][exp_id]
                    if "obj_id" not in expression:
                        raise ValueError(f"{where}: expression {exp_id!r} needs an 'obj_id'")
                    for chunk_index, chunk in enumerate(chunks):
                        self.samples.append(
                            _DavisSample(
                                video=video,
                                exp_id=exp_id,
                                obj_id=str(expression["obj_id"]),
                                text=clean_expression(expression["exp"], f"{where}, expression {exp_id!r}"),
                                annotator=annotator,
                                object_index=object_index,
                                num_objects=num_objects,
                                frame_names=tuple(frames[i] for i in chunk),
                                chunk_index=chunk_index,
                                num_chunks=len(chunks),
                            )
                        )

    def __len__(self) -> int:
        return len(self.samples)

    def sentence(self, index: int) -> tuple[str, str]:
        """``(text, where)`` of sample ``index``'s sentence, ``where`` naming the file and the expression
        (read without loading any frame, so every sentence can be checked before a run starts)."""
        sample = self.samples[index]
        return sample.text, f"{self.meta_path}: video {sample.video}, expression {sample.exp_id}"

    def clip_key(self, index: int) -> tuple[str, ...]:
        """The clip that sample ``index`` shows, ``(video, *frame names)``: every annotator's expression of
        every object of one chunk holds equal frames, so they can share one backbone pass."""
        sample = self.samples[index]
        return (sample.video, *sample.frame_names)

    def _read_frame(self, video: str, name: str) -> Image.Image:
        return read_image(self.root / self.split / "JPEGImages" / video / f"{name}.jpg")

    def _read_mask(self, video: str, name: str, obj_id: str) -> np.ndarray:
        path = self.root / self.split / "Annotations" / video / f"{name}.png"
        if not path.is_file():
            raise FileNotFoundError(f"annotation {path} not found (pass load_masks=False to run without)")
        return read_index_mask(path) == int(obj_id)

    def __getitem__(self, index: int) -> ClipSample:
        sample = self.samples[index]
        frames = [self._read_frame(sample.video, name) for name in sample.frame_names]
        annotations: list[FrameAnnotation | None] = [
            FrameAnnotation(mask=self._read_mask(sample.video, name, sample.obj_id), label=0)
            if self.load_masks
            else None
            for name in sample.frame_names
        ]
        video, targets, text = self.transform(frames, annotations, sample.text)
        width, height = frames[0].size
        metadata = DavisMetadata(
            video_id=sample.video,
            exp_id=sample.exp_id,
            obj_id=sample.obj_id,
            annotator=sample.annotator,
            object_index=sample.object_index,
            num_objects=sample.num_objects,
            frame_names=tuple(sample.frame_names),
            chunk_index=sample.chunk_index,
            num_chunks=sample.num_chunks,
            orig_size=(height, width),
            size=(int(video.shape[-2]), int(video.shape[-1])),
        )
        return ClipSample(frames=video, targets=targets, text=text, metadata=metadata)


def build_davis(config: DataConfig, split: Split, transform: ClipTransform, num_classes: int) -> RefDAVIS17:
    """Ref-DAVIS17 ``valid`` in 36-frame chunks (evaluation only; ``split``, ``num_classes`` not used)."""
    return RefDAVIS17(config.root, transform, annotators=config.davis_annotators)


def find_davis_folder(root: str | Path) -> Path:
    """The ``DAVIS`` folder of a Ref-DAVIS root (or of its parent, either spelling of the name).

    Raises:
        FileNotFoundError: no ``DAVIS`` folder there; the message names the places looked at.
    """
    return resolve_dataset_root(root, DATASET_FOLDER_NAMES, "DAVIS") / "DAVIS"
