"""A Ref-YouTube-VOS-layout dataset checked whole before anything trains on it (docs/datasets.md#checking-a-dataset);
MeViS is checked likewise by :func:`check_mevis_dataset`.

What a run would otherwise find late (a missing frame at step 10 000, an empty ``valid/Annotations`` at the
first evaluation) is looked for first, in every split the run reads:

- layout: the dataset folder, ``meta_expressions/<split>/meta_expressions.json``, ``<split>/JPEGImages``;
- the expression file: video ids, expression ids and frame names are file names, sentences are not empty
  (:func:`~wavecl.data.ytvos.read_expression_videos`);
- frames: ``<split>/JPEGImages/<video>/<frame>.jpg`` exists for every listed frame, and is a JPEG or PNG
  within the pixel limit (header read only);
- masks, where the split is annotated (``train``; ``valid`` when it has ``Annotations/``): every listed
  frame has ``<split>/Annotations/<video>/<frame>.png``, a palette or grey PNG of its frame's size
  (header only), every expression has an integer ``obj_id``, and that object appears in at least one of
  its video's masks. Masks are decoded only to find the referred objects, video by video in frame order,
  stopping at the frame where the last of them is seen (usually the first).

An expression whose object appears in no annotated frame is a data error, not an empty target: it would
give no training window and a J = F = 1 from empty predictions.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from wavecl.data.mevis import ANNOTATED_SPLITS, MaskDict, MeViSPaths, read_mevis_videos, rle_problem
from wavecl.data.paths import natural_sorted, open_image, read_image
from wavecl.data.ytvos import YTVOSPaths, evaluated_videos, read_expression_videos

SHOWN_PROBLEMS = 10
"""How many problems a report lists (their number is always complete)."""
CHECKED_SPLITS = ("train", "valid")


class DatasetCheckError(ValueError):
    """A dataset has problems that would stop or falsify a run; the message lists them."""


@dataclass(frozen=True)
class DatasetProblem:
    """One thing wrong with a dataset.

    Attributes:
        file: the file (or folder) at fault.
        video: the video concerned, ``None`` for a split-wide problem.
        key: what in that video (``frame 00005``, ``expression 3 obj_id 2``); ``None`` for the video itself.
        message: what is wrong.
    """

    file: Path
    video: str | None
    key: str | None
    message: str

    def __str__(self) -> str:
        where = "" if self.video is None else f" video {self.video!r}"
        where += "" if self.key is None else f" {self.key}"
        return f"{self.file}:{where} {self.message}" if where else f"{self.file}: {self.message}"


@dataclass
class SplitSummary:
    """What one split holds, counted from the files.

    Attributes:
        split: ``train`` or ``valid``.
        videos: videos checked (for ``valid``, the evaluated ones: :func:`~wavecl.data.ytvos.evaluated_videos`).
        expressions: their expressions.
        frames: frame files found among the listed frames.
        masks: mask files found among the listed frames (0 for a split without ``Annotations/``).
        objects: distinct referred objects, ``(video, obj_id)`` pairs (0 without ``Annotations/``).
        annotated: whether the split has ``Annotations/``.
    """

    split: str
    videos: int = 0
    expressions: int = 0
    frames: int = 0
    masks: int = 0
    objects: int = 0
    annotated: bool = False

    def add(self, other: SplitSummary) -> None:
        """Add the counts of ``other`` (one video's) to these."""
        for name in ("videos", "expressions", "frames", "masks", "objects"):
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def describe(self) -> str:
        text = f"{self.split}: {self.videos} videos, {self.expressions} expressions, {self.frames} frames"
        if self.annotated:
            return text + f", {self.masks} masks, {self.objects} referred objects"
        return text + " (no Annotations/)"


@dataclass
class DatasetReport:
    """The result of :func:`check_ytvos_dataset`.

    Attributes:
        root: the dataset folder.
        splits: one summary per checked split.
        problems: everything found wrong, in file order.
    """

    root: Path
    splits: list[SplitSummary] = field(default_factory=list)
    problems: list[DatasetProblem] = field(default_factory=list)

    def summary(self, shown: int = SHOWN_PROBLEMS) -> str:
        """Lines naming the dataset, each split's counts, and the number of problems with the first ``shown``."""
        lines = [f"dataset {self.root}"] + [f"  {split.describe()}" for split in self.splits]
        if not self.problems:
            return "\n".join([*lines, "  no problems found"])
        lines.append(f"  {len(self.problems)} problem{'s' if len(self.problems) > 1 else ''}:")
        lines += [f"    {problem}" for problem in self.problems[:shown]]
        if len(self.problems) > shown:
            lines.append(f"    ... and {len(self.problems) - shown} more")
        return "\n".join(lines)

    def raise_for_problems(self) -> None:
        """Raise :class:`DatasetCheckError` with :meth:`summary` when any problem was found."""
        if self.problems:
            raise DatasetCheckError(self.summary())


def _file_names(folder: Path) -> set[str]:
    """Names of the entries of ``folder``; empty when it does not exist (one listing instead of a stat per file)."""
    return set(os.listdir(folder)) if folder.is_dir() else set()


def _image_header(path: Path) -> tuple[tuple[int, int], str]:
    """``((width, height), mode)`` from the header of a JPEG or PNG (:func:`~wavecl.data.paths.open_image`)."""
    with open_image(path) as image:
        return image.size, image.mode


def _check_split(paths: YTVOSPaths, split: str, report: DatasetReport, workers: int) -> None:
    """Add ``split``'s summary and problems to ``report``, its videos checked in ``workers`` processes
    (0: in this one)."""
    summary = SplitSummary(split)
    report.splits.append(summary)
    problems = report.problems
    source = paths.expressions(split)
    if not source.is_file():
        problems.append(DatasetProblem(source, None, None, "missing: the expression file of this split"))
        return
    try:
        videos = read_expression_videos(source) if split == "train" else evaluated_videos(paths, split)
    except ValueError as error:  # names the file, video and key; the rest of the split cannot be read
        problems.append(DatasetProblem(source, None, None, str(error).removeprefix(f"{source}: ")))
        return
    frame_root = paths.root / split / "JPEGImages"
    if not frame_root.is_dir():
        problems.append(DatasetProblem(frame_root, None, None, "missing: the frame folder of this split"))
        return
    summary.annotated = paths.annotations(split).is_dir()
    arguments = [(paths, split, video_id, video, summary.annotated) for video_id, video in videos.items()]
    if workers > 0 and arguments:
        with ProcessPoolExecutor(workers) as pool:
            per_video = list(pool.map(_check_video, *zip(*arguments), chunksize=8))
    else:
        per_video = [_check_video(*argument) for argument in arguments]
    for counts, found in per_video:
        summary.add(counts)
        problems.extend(found)


def _check_video(
    paths: YTVOSPaths, split: str, video_id: str, video: dict, annotated: bool
) -> tuple[SplitSummary, list[DatasetProblem]]:
    """One video's counts and problems: its frames, and its masks and objects when ``annotated``."""
    summary = SplitSummary(split, videos=1, expressions=len(video["expressions"]), annotated=annotated)
    problems: list[DatasetProblem] = []
    frames = natural_sorted(video["frames"])
    sizes = _check_frames(paths, split, video_id, frames, summary, problems)
    if annotated:
        _check_masks(paths, split, video_id, video, frames, sizes, summary, problems)
    return summary, problems


def _check_frames(
    paths: YTVOSPaths | MeViSPaths,
    split: str,
    video_id: str,
    frames: list[str],
    summary: SplitSummary,
    problems: list[DatasetProblem],
) -> dict[str, tuple[int, int]]:
    """``{frame: (width, height)}`` of the readable listed frames of one video (headers only); missing and
    unreadable frames are added to ``problems``, found ones counted in ``summary``."""
    frame_files = _file_names(paths.frame_file(split, video_id, frames[0]).parent)
    sizes: dict[str, tuple[int, int]] = {}
    for frame in frames:
        path = paths.frame_file(split, video_id, frame)
        if path.name not in frame_files:
            problems.append(DatasetProblem(path, video_id, f"frame {frame!r}", "missing: listed frame"))
            continue
        try:
            sizes[frame] = _image_header(path)[0]
            summary.frames += 1
        except ValueError as error:
            problems.append(DatasetProblem(path, video_id, f"frame {frame!r}", str(error)))
    return sizes


def _check_masks(
    paths: YTVOSPaths,
    split: str,
    video_id: str,
    video: dict,
    frames: list[str],
    sizes: dict[str, tuple[int, int]],
    summary: SplitSummary,
    problems: list[DatasetProblem],
) -> None:
    """Mask headers of every listed frame of one video, then the referred objects' presence."""
    source = paths.expressions(split)
    mask_files = _file_names(paths.annotations(split) / video_id)
    readable = []
    for frame in frames:
        path = paths.mask_file(video_id, frame, split)
        if path.name not in mask_files:
            problems.append(DatasetProblem(path, video_id, f"frame {frame!r}", "missing: mask of a listed frame"))
            continue
        summary.masks += 1
        try:
            size, mode = _image_header(path)
        except ValueError as error:
            problems.append(DatasetProblem(path, video_id, f"frame {frame!r}", str(error)))
            continue
        if mode not in ("P", "L"):
            problems.append(
                DatasetProblem(path, video_id, f"frame {frame!r}", f"mask must be a palette or grey PNG, not {mode}")
            )
        elif frame in sizes and size != sizes[frame]:
            problems.append(
                DatasetProblem(
                    path,
                    video_id,
                    f"frame {frame!r}",
                    f"mask is {size[0]}x{size[1]}, its frame {sizes[frame][0]}x{sizes[frame][1]} (width x height)",
                )
            )
        else:
            readable.append(path)
    referred: dict[int, list[str]] = {}
    for exp_id, expression in video["expressions"].items():
        try:
            referred.setdefault(int(expression["obj_id"]), []).append(exp_id)
        except (KeyError, TypeError, ValueError):
            problems.append(
                DatasetProblem(
                    source,
                    video_id,
                    f"expression {exp_id!r}",
                    f"needs an integer 'obj_id' (its pixel value in {paths.annotations(split)})",
                )
            )
    summary.objects += len(referred)
    unseen = _objects_never_seen(readable, set(referred), video_id, problems)
    for obj_id in sorted(unseen):
        for exp_id in referred[obj_id]:
            problems.append(
                DatasetProblem(
                    source,
                    video_id,
                    f"expression {exp_id!r} obj_id {obj_id}",
                    f"appears in none of the video's {len(frames)} listed masks "
                    f"({paths.annotations(split) / video_id}); {len(readable)} readable",
                )
            )


def _objects_never_seen(
    masks: Iterable[Path], objects: set[int], video_id: str, problems: list[DatasetProblem]
) -> set[int]:
    """The ``objects`` (pixel values) found in none of ``masks``, decoded in order until all are seen; a mask
    that fails to decode is added to ``problems``."""
    unseen = set(objects)
    for path in masks:
        if not unseen:
            break
        try:
            pixels = np.asarray(read_image(path, mode=None))
        except (OSError, ValueError) as error:
            problems.append(DatasetProblem(path, video_id, None, f"cannot be decoded: {error}"))
            continue
        unseen -= set(np.flatnonzero(np.bincount(pixels.ravel(), minlength=256)).tolist())
    return unseen


def check_ytvos_dataset(
    root: str | os.PathLike, splits: Iterable[str] = CHECKED_SPLITS, workers: int = 0
) -> DatasetReport:
    """Check a Ref-YouTube-VOS-layout dataset (Ref-YouTube-VOS, one's own data, the synthetic set) whole.

    Args:
        root: the dataset folder or its parent.
        splits: the splits to check; ``valid`` is checked as evaluated (the valid expression file minus
            the test file, see :func:`~wavecl.data.ytvos.evaluated_videos`).
        workers: processes checking videos (0: this process); the report is the same, in the same order.

    Returns:
        The counts of each split and every problem found (call :meth:`DatasetReport.raise_for_problems`).

    Raises:
        FileNotFoundError: no dataset folder at ``root`` (the paths tried are named).
    """
    paths = YTVOSPaths.find(root)
    report = DatasetReport(paths.root)
    for split in splits:
        _check_split(paths, split, report, workers)
    return report


def _check_mevis_rles(
    mask_dict: MaskDict,
    video_id: str,
    video: dict,
    sizes: dict[str, tuple[int, int]],
    summary: SplitSummary,
    problems: list[DatasetProblem],
) -> None:
    """The RLE lists of the objects one MeViS video's expressions refer to: present, one entry per listed
    frame, each ``null`` or an RLE of its frame's size (not decoded). Objects that never appear are no
    problem: the official scorer scores their expressions."""
    referred = {anno_id for expression in video["expressions"].values() for anno_id in expression["anno_id"]}
    summary.objects += len(referred)
    frames = video["frames"]
    for anno_id in sorted(str(i) for i in referred):
        key = f"anno_id {anno_id}"
        try:
            rles = mask_dict.rles(anno_id, len(frames), video_id)
        except ValueError as error:
            problems.append(
                DatasetProblem(mask_dict.path, video_id, key, str(error).removeprefix(f"{mask_dict.path}: "))
            )
            continue
        for frame, rle in zip(frames, rles):
            if rle is None:
                continue
            size = sizes.get(frame)  # (width, height); a missing frame is reported by the frame check
            problem = rle_problem(rle, None if size is None else (size[1], size[0]))
            if problem is None:
                summary.masks += 1
            else:
                problems.append(DatasetProblem(mask_dict.path, video_id, f"{key} frame {frame!r}", problem))


def check_mevis_dataset(root: str | os.PathLike, splits: Iterable[str] = ("train", "valid_u")) -> DatasetReport:
    """Check MeViS splits whole: the expression file (ids, sentences, ``anno_id`` lists where the split has
    masks), every listed frame (header only), and in ``train`` / ``valid_u`` the RLE lists of every referred
    object (present, one per frame, of the frame's size; not decoded). In this process.

    Returns:
        The counts of each split (``masks``: non-null RLEs, ``objects``: referred ``anno_id``) and every
        problem found (call :meth:`DatasetReport.raise_for_problems`).

    Raises:
        FileNotFoundError: no MeViS folder at ``root`` holding the first split.
    """
    splits = list(splits)
    paths = MeViSPaths.find(root, splits[0])
    report = DatasetReport(paths.root)
    for split in splits:
        summary = SplitSummary(split, annotated=split in ANNOTATED_SPLITS)
        report.splits.append(summary)
        source = paths.expressions(split)
        try:
            videos = read_mevis_videos(paths, split)
            mask_dict = MaskDict(paths.mask_dict(split)) if summary.annotated else None
        except (FileNotFoundError, ValueError) as error:
            report.problems.append(DatasetProblem(source, None, None, str(error)))
            continue
        for video_id, video in videos.items():
            counts = SplitSummary(split, videos=1, expressions=len(video["expressions"]))
            sizes = _check_frames(paths, split, video_id, natural_sorted(video["frames"]), counts, report.problems)
            if mask_dict is not None:
                _check_mevis_rles(mask_dict, video_id, video, sizes, counts, report.problems)
            summary.add(counts)
    return report
