"""Ref-YouTube-VOS evaluation: the evaluator, and predictions in the Ref-YouTube-VOS format written,
zipped, read back, checked and scored (docs/datasets.md#ref-youtube-vos).

:class:`YTVOSEvaluator` runs window by window over whole videos (the datasets split them into windows
of ``window_size`` frames, so memory stays bounded; each window picks its own query) and writes the
PNGs, which :func:`evaluate_ytvos_predictions` scores again from disk for ``--predictions``.

Predictions are ``Annotations/<video_id>/<exp_id>/<frame>.png`` (single-channel, 0 or 255, original
frame size), in a folder or a zip whose top-level folder is ``Annotations/``.

- The real valid split has no local ground truth: the zip goes to the evaluation server, which
  computes J, F and J&F; :func:`check_ytvos_submission` checks that it is complete.
- A split with ground truth (``valid/Annotations``: one's own data, the synthetic set) is scored
  here by :func:`score_ytvos_predictions` with the DAVIS-2017 definitions of J and F. The predictions
  are compared against the ground truth's full list of (video, expression, frame): a missing mask
  counts as an empty one, and missing and extra masks are counted in the metrics and logged as
  warnings, so no number is ever computed on a silent subset.
"""

from __future__ import annotations

import logging
import os
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

from wavecl.atomic import atomic_path, save_image, write_text
from wavecl.config import Config
from wavecl.data.identifiers import check_identifier
from wavecl.data.index_png import read_index_mask
from wavecl.data.paths import is_hidden, natural_sorted, open_image
from wavecl.data.types import Batch, ClipSample, ExpressionMetadata
from wavecl.data.ytvos import ExpressionTruth, YTVOSGroundTruth, YTVOSPaths, evaluated_videos
from wavecl.distributed import gather_objects, on_main_process
from wavecl.evaluation.identity import IDENTITY_COLUMNS, IdentityScore, identity_score, identity_summary
from wavecl.evaluation.jf import db_eval_boundary, db_eval_iou
from wavecl.evaluation.tables import write_csv
from wavecl.inference_settings import InferenceSettings
from wavecl.model.linking import LinkedQueries
from wavecl.model.output import WaveCLOutput
from wavecl.model.postprocess import video_postprocess

logger = logging.getLogger(__name__)

ANNOTATIONS_FOLDER = "Annotations"
PER_EXPRESSION_FILENAME = "per_expression.csv"
MISSING_FILENAME = "missing_masks.txt"
EXTRA_FILENAME = "extra_masks.txt"
LISTED = 5
"""How many missing or extra masks a message names (the count is always complete)."""


def write_ytvos_masks(
    output_root: str | os.PathLike[str],
    video_id: str,
    exp_id: str,
    frame_names: Sequence[str],
    masks: Tensor,
) -> list[Path]:
    """Write one expression's masks as submission PNGs, atomically.

    Args:
        output_root: folder that receives ``Annotations/``.
        video_id: Ref-YouTube-VOS video id.
        exp_id: expression id within the video.
        frame_names: ``T`` frame names without extension.
        masks: ``[T, H, W]`` bool masks at the original frame size.

    Returns:
        The written paths ``<output_root>/Annotations/<video_id>/<exp_id>/<frame>.png``, in frame order.

    Raises:
        ValueError: ``masks`` does not match ``frame_names``; an id or frame name is no file name
            (:class:`~wavecl.data.identifiers.UnsafeIdentifierError`), checked before anything is written.
    """
    source = f"predictions in {output_root}"
    check_identifier(video_id, source, "video id")
    check_identifier(exp_id, source, f"video {video_id!r} expression id")
    for name in frame_names:
        check_identifier(name, source, f"video {video_id!r} frame name")
    if masks.ndim != 3 or masks.shape[0] != len(frame_names):
        raise ValueError(f"masks {tuple(masks.shape)} must be [T, H, W] with T = {len(frame_names)} frame names")
    folder = Path(output_root) / ANNOTATIONS_FOLDER / video_id / exp_id
    pixels = masks.detach().cpu().numpy().astype(np.uint8) * 255
    paths = []
    for name, frame in zip(frame_names, pixels):
        path = folder / f"{name}.png"
        save_image(Image.fromarray(frame), path, format="PNG")
        paths.append(path)
    return paths


def zip_submission(
    annotations_root: str | os.PathLike[str], zip_path: str | os.PathLike[str], folder: str | None = ANNOTATIONS_FOLDER
) -> Path:
    """Zip an ``Annotations`` folder for the evaluation server, atomically.

    Args:
        annotations_root: the folder holding ``<video_id>/<exp_id>/<frame>.png`` (normally
            ``<output_root>/Annotations``).
        zip_path: the archive to write.
        folder: the archive's top-level folder: ``Annotations`` (Ref-YouTube-VOS), or ``None`` for members
            at the top, ``<video_id>/<exp_id>/<frame>.png`` (MeViS).

    Returns:
        ``zip_path``. Members are ``folder/`` and every folder and file below it as
        ``folder/<relative path>`` (or the relative paths alone), in sorted order; PNGs are stored without
        recompression. Hidden files are left out.

    Raises:
        FileNotFoundError: ``annotations_root`` is not a folder.
    """
    root = Path(annotations_root)
    if not root.is_dir():
        raise FileNotFoundError(f"annotations folder not found: {root}")
    zip_path = Path(zip_path)
    prefix = "" if folder is None else f"{folder}/"
    with atomic_path(zip_path) as temporary, zipfile.ZipFile(temporary, "w", compression=zipfile.ZIP_STORED) as archive:
        if folder is not None:
            archive.write(root, folder)
        for path in sorted(root.rglob("*")):
            if any(is_hidden(part) for part in path.relative_to(root).parts):
                continue
            archive.write(path, prefix + path.relative_to(root).as_posix())
    return zip_path


def mask_member(video_id: str, exp_id: str, frame: str) -> str:
    """``Annotations/<video_id>/<exp_id>/<frame>.png``: a mask's path inside a predictions folder or zip."""
    return f"{ANNOTATIONS_FOLDER}/{video_id}/{exp_id}/{frame}.png"


class SavedMasks:
    """The PNG masks of saved predictions: a folder holding ``Annotations/``, or a zip of it, with or without
    the top-level ``Annotations/`` (a zip none of whose PNGs is under ``Annotations/`` is read as
    ``<video>/<exp_id>/<frame>.png`` at the top, the MeViS submission layout).

    Attributes:
        path: the folder or zip.
        members: every ``Annotations/.../<frame>.png`` it holds (:func:`mask_member` form).

    Raises:
        FileNotFoundError: ``path`` is neither a zip nor a folder holding ``Annotations/``.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.archive: zipfile.ZipFile | None = None
        if self.path.is_file() and zipfile.is_zipfile(self.path):
            self.archive = zipfile.ZipFile(self.path)
            names = [name for name in self.archive.namelist() if name.endswith(".png")]
            top = f"{ANNOTATIONS_FOLDER}/"
            prefix = "" if any(name.startswith(top) for name in names) else top
            self.archive_names = {prefix + name: name for name in names}
            self.members = set(self.archive_names)
        elif (self.path / ANNOTATIONS_FOLDER).is_dir():
            folder = self.path / ANNOTATIONS_FOLDER
            self.members = {p.relative_to(self.path).as_posix() for p in folder.rglob("*.png")}
        else:
            raise FileNotFoundError(
                f"no predictions at {self.path}: expected a zip or a folder holding {ANNOTATIONS_FOLDER}/"
            )

    def read(self, member: str) -> np.ndarray:
        """``[H, W]`` bool mask of ``member`` (pixels above 127).

        Raises:
            ValueError: the PNG is not single-channel or cannot be read (the file is named).
        """
        if self.archive is None:
            return read_index_mask(self.path / member) > 127
        name = self.archive_names[member]
        with self.archive.open(name) as handle, open_image(handle, f"{self.path}: {member}") as image:
            if image.mode not in ("P", "L"):
                raise ValueError(f"{self.path}: {member} must be a single-channel PNG, got mode {image.mode}")
            return np.asarray(image) > 127

    def close(self) -> None:
        if self.archive is not None:
            self.archive.close()

    def __enter__(self) -> SavedMasks:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _listed(members: Sequence[str]) -> str:
    more = f" and {len(members) - LISTED} more" if len(members) > LISTED else ""
    return ", ".join(members[:LISTED]) + more


def check_ytvos_submission(
    path: str | os.PathLike[str], expected: Mapping[tuple[str, str], Sequence[str]]
) -> dict[str, float]:
    """Check that a submission has a mask for every frame of every expression (no ground truth needed).

    Args:
        path: ``submission.zip`` or the folder holding ``Annotations/``.
        expected: ``{(video_id, exp_id): frame names}`` the split asks for.

    Returns:
        ``{"expressions", "frames"}``: what the submission covers.

    Raises:
        ValueError: masks are missing (their number and the first few are named).
    """
    with SavedMasks(path) as saved:
        wanted = [mask_member(video, exp_id, frame) for (video, exp_id), frames in expected.items() for frame in frames]
        missing = [member for member in wanted if member not in saved.members]
    if missing:
        raise ValueError(f"{path} lacks {len(missing)} of {len(wanted)} masks: {_listed(missing)}")
    return {"expressions": float(len(expected)), "frames": float(len(wanted))}


def jf_summary(per_expression: Sequence[tuple[float, float]]) -> dict[str, float]:
    """``J``, ``F``, ``J&F`` and ``expressions`` from each expression's frame-averaged ``(J, F)``: every
    expression weighs the same, whatever its length. Empty input gives an empty dict."""
    if not per_expression:
        return {}
    j, f = np.mean(np.asarray(per_expression, dtype=np.float64), axis=0).tolist()
    return {"J": j, "F": f, "J&F": (j + f) / 2, "expressions": float(len(per_expression))}


PER_EXPRESSION_COLUMNS = ("video", "exp_id", "expression", "frames", "missing", "J", "F", "J&F", *IDENTITY_COLUMNS)


class ExpressionGroundTruth(Protocol):
    """An annotated split that :func:`score_expression_predictions` scores against: Ref-YouTube-VOS layout
    (:class:`~wavecl.data.ytvos.YTVOSGroundTruth`) or MeViS (:class:`~wavecl.data.mevis.MeViSGroundTruth`)."""

    def truths(self) -> Iterable[ExpressionTruth]:
        """Every scored expression with its ``[T, H, W]`` masks."""
        ...


def score_ytvos_predictions(
    path: str | os.PathLike[str],
    ground_truth: ExpressionGroundTruth,
    per_expression_path: str | os.PathLike[str] | None = None,
    window: int | None = None,
    overlap: int = 0,
) -> dict[str, float]:
    """J, F and J&F of saved predictions against an annotated split, over the ground truth's full list.

    Per expression, J (region similarity) and F (boundary measure), with the DAVIS-2017 definitions
    of :mod:`wavecl.evaluation.jf`, are averaged over every frame of its video; the results
    average over the expressions (:func:`jf_summary`). A mask the predictions lack is scored as an
    empty mask; masks that no expression of the ground truth asks for are ignored. Both are counted
    and logged as warnings naming the first few. Where the ground truth has every object's ids (the
    Ref-YouTube-VOS layout), identity switches at the starts of windows of ``window`` frames overlapping
    by ``overlap`` and temporal stability are measured too (:mod:`wavecl.evaluation.identity`).

    Args:
        path: a folder holding ``Annotations/<video>/<exp_id>/<frame>.png``, or its zip (with or without
            the top-level ``Annotations/``).
        ground_truth: the annotated split (:class:`~wavecl.data.ytvos.YTVOSGroundTruth`,
            :class:`~wavecl.data.mevis.MeViSGroundTruth`); it decides which expressions are scored and
            refuses those it cannot score.
        per_expression_path: if given, a CSV with one row per expression (video, exp_id, expression,
            frames, missing, J, F, J&F, switches, stability; the last two empty without object ids) is written
            there, and beside it the full lists of missing and extra masks (``missing_masks.txt``,
            ``extra_masks.txt``, one path per line) when there are any.
        window: frames per window of the identity switches; ``None``: the whole video.
        overlap: frames shared by consecutive windows, in ``[0, window)``.

    Returns:
        ``J``, ``F``, ``J&F``, and the counts (:mod:`wavecl.evaluation.counts`): ``expressions``, ``videos``,
        ``frames`` (scored), ``missing_masks`` (scored as empty) and ``extra_masks`` (ignored); with object
        ids also ``identity_switches`` (total) and ``temporal_stability`` (mean over expressions).

    Raises:
        FileNotFoundError: no predictions at ``path``, or a ground-truth file is missing.
        ValueError: a predicted mask is not single-channel or has another size than its ground truth;
            the ground truth refuses an expression (see its ``truths``).
    """
    per_expression: list[tuple[float, float]] = []
    identities: list[IdentityScore] = []
    rows: list[tuple[object, ...]] = []
    missing: list[str] = []
    expected: set[str] = set()
    videos: set[str] = set()
    with SavedMasks(path) as saved:
        for truth in ground_truth.truths():
            videos.add(truth.video_id)
            predicted = np.zeros_like(truth.masks)
            absent = 0
            for t, frame in enumerate(truth.frames):
                member = mask_member(truth.video_id, truth.exp_id, frame)
                expected.add(member)
                if member not in saved.members:
                    missing.append(member)
                    absent += 1
                    continue
                mask = saved.read(member)
                if mask.shape != truth.masks.shape[1:]:
                    raise ValueError(
                        f"{path}: {member} is {mask.shape[0]}x{mask.shape[1]}, its ground truth (frame {frame!r} "
                        f"of {truth.source}) is {truth.masks.shape[1]}x{truth.masks.shape[2]}"
                    )
                predicted[t] = mask
            j = float(np.mean(db_eval_iou(truth.masks, predicted)))
            f = float(np.mean(db_eval_boundary(truth.masks, predicted)))
            per_expression.append((j, f))
            identity: tuple[object, ...] = ("", "")
            if truth.labels is not None:
                identities.append(identity_score(predicted, truth.masks, truth.labels, window, overlap))
                identity = (identities[-1].switches, identities[-1].stability)
            rows.append(
                (truth.video_id, truth.exp_id, truth.text, len(truth.frames), absent, j, f, (j + f) / 2, *identity)
            )
        extra = sorted(saved.members - expected)
    folder = None if per_expression_path is None else Path(per_expression_path).parent
    if per_expression_path is not None:
        write_csv(Path(per_expression_path), PER_EXPRESSION_COLUMNS, rows, decimals=6)
    problems = (
        (MISSING_FILENAME, missing, f"lacks {len(missing)} of {len(expected)} masks, scored as empty masks"),
        (EXTRA_FILENAME, extra, f"holds {len(extra)} masks that the ground truth does not ask for, ignored"),
    )
    for filename, members, summary in problems:
        listing = "" if folder is None else f" (all in {folder / filename})"
        if folder is not None and members:
            write_text(folder / filename, "".join(f"{member}\n" for member in members))
        elif folder is not None:
            (folder / filename).unlink(missing_ok=True)  # a list left by an earlier scoring no longer holds
        if members:
            logger.warning("%s %s: %s%s", path, summary, _listed(members), listing)
    scores = jf_summary(per_expression) | identity_summary(identities)
    return scores | {
        "videos": float(len(videos)),
        "frames": float(len(expected)),
        "missing_masks": float(len(missing)),
        "extra_masks": float(len(extra)),
    }


def expected_frames(videos: dict[str, dict]) -> dict[tuple[str, str], list[str]]:
    """``{(video, exp_id): frame names in natural order}``: what a submission for ``videos`` (as the
    expression readers return them) must hold."""
    return {
        (video_id, exp_id): natural_sorted(video["frames"])
        for video_id, video in videos.items()
        for exp_id in video["expressions"]
    }


def evaluate_ytvos_predictions(
    path: str | Path,
    root: str | Path,
    per_expression_path: str | Path | None = None,
    window: int | None = None,
    overlap: int = 0,
) -> dict[str, float]:
    """Score Ref-YouTube-VOS-format predictions, or check a submission where there is no ground truth.

    Args:
        path: a folder holding ``Annotations/<video>/<exp_id>/<frame>.png``, or its zip.
        root: the dataset (``data.root``). When its ``valid`` split has ``Annotations/`` (one's own
            data, the synthetic set), J, F and J&F are computed against every expression and frame of
            the ground truth (:func:`~wavecl.evaluation.ytvos.score_ytvos_predictions`: missing masks
            count as empty and are counted); otherwise (the real valid split) the submission is checked
            for completeness (:func:`~wavecl.evaluation.ytvos.check_ytvos_submission`).
        per_expression_path: with ground truth, where to write the per-expression CSV.
        window, overlap: with ground truth, the windows whose starts identity switches are counted at.
    """
    ground_truth = YTVOSGroundTruth.find(root)
    if ground_truth is not None:
        return score_ytvos_predictions(path, ground_truth, per_expression_path, window, overlap)
    videos = evaluated_videos(YTVOSPaths.find(root), "valid")
    return check_ytvos_submission(path, expected_frames(videos))


def clip_masks(
    outputs: WaveCLOutput, batch: Batch, b: int, metadata: ExpressionMetadata, link: LinkedQueries | None = None
) -> Tensor:
    """Binary masks ``[T, H, W]`` of clip ``b`` (described by ``metadata``) at its original size: one query for
    the window, the best-scoring one, or the one ``link`` chooses (which it then remembers)."""
    T = len(metadata.frame_names)
    size = (int(batch.image_sizes[b, 0]), int(batch.image_sizes[b, 1]))
    padded_size = (int(batch.frames.shape[-2]), int(batch.frames.shape[-1]))
    pred_cls, pred_masks = outputs.pred_cls[:T, b], outputs.pred_masks[:T, b]
    query = None if link is None else link.choose(pred_cls, pred_masks, padded_size, size)
    _, masks = video_postprocess(pred_cls, pred_masks, padded_size, size, metadata.orig_size, query=query)
    return masks


@dataclass
class _OpenExpression:
    """An expression whose next window is still to come: its choices so far and where that window starts."""

    link: LinkedQueries
    next_start: int


class YTVOSEvaluator:
    """Ref-YouTube-VOS-layout evaluation: writes ``<out_dir>/Annotations/<video>/<exp_id>/<frame>.png``,
    then scores them when the split has ground truth, or zips them for the evaluation server.

    Args:
        out_dir: receives ``Annotations/`` and, with ground truth, ``per_expression.csv`` (J, F, J&F of
            every expression); without, ``submission.zip``.
        ground_truth: the annotated split (one's own data, the synthetic set, MeViS ``valid_u``), or ``None``
            for a split without local ground truth (the real Ref-YouTube-VOS valid split, MeViS ``valid``).
        zip_folder: the top-level folder of ``submission.zip`` (:func:`~wavecl.evaluation.ytvos.zip_submission`):
            ``Annotations`` for Ref-YouTube-VOS, ``None`` for MeViS (``<video>/<exp_id>/<frame>.png`` at the top).
        window: frames per window, the windows whose starts identity switches are counted at
            (:mod:`wavecl.evaluation.identity`); ``None``: whole videos.
        settings: the windows' ``overlap`` and ``link_weight`` (:meth:`InferenceSettings.of_evaluation`), as
            the dataset's windows were cut; ``None``: disjoint windows, each choosing its own query.

    Linked windows: an expression's windows must arrive in order, as evaluation batches them in one process
    (:mod:`wavecl.evaluation.sharing`); a window whose predecessor went to another process chooses on its
    own. Frames a window shares with the previous one keep the masks the previous one wrote. One expression
    is open (its last choice held) per expression of the videos being evaluated.

    With ground truth, :meth:`summarize` returns what
    :func:`~wavecl.evaluation.ytvos.score_ytvos_predictions` returns (J, F, J&F, expressions, videos, frames,
    missing_masks, extra_masks), scored from the PNGs on disk against the ground truth's full list, the
    same computation as ``wavecl evaluate --predictions``; without, the counts of what was written:
    ``{"windows", "videos", "expressions", "frames"}`` (over every rank).
    """

    def __init__(
        self,
        out_dir: str | Path,
        ground_truth: ExpressionGroundTruth | None = None,
        zip_folder: str | None = ANNOTATIONS_FOLDER,
        window: int | None = None,
        settings: InferenceSettings | None = None,
    ) -> None:
        self.out_dir = Path(out_dir)
        self.ground_truth = ground_truth
        self.zip_folder = zip_folder
        self.window = window
        self.overlap = 0 if settings is None else settings.overlap
        self.link_weight = 0.0 if settings is None else settings.link_weight
        self.open: dict[tuple[str, str], _OpenExpression] = {}
        self.num_windows = 0
        self.num_frames = 0
        self.expressions: set[tuple[str, str]] = set()

    def update(self, outputs: WaveCLOutput, batch: Batch) -> None:
        for b, meta in enumerate(batch.metadata_as(ExpressionMetadata)):
            key = (meta.video_id, meta.exp_id)
            start = meta.window_start or 0
            link = self._link(key, start)
            masks = clip_masks(outputs, batch, b, meta, link)
            shared = self.overlap if start > 0 else 0  # written with the previous window
            write_ytvos_masks(self.out_dir, *key, meta.frame_names[shared:], masks[shared:])
            end = start + len(meta.frame_names)
            if meta.num_video_frames is not None and end < meta.num_video_frames:
                self.open[key] = _OpenExpression(link, end - self.overlap)
            self.num_windows += 1
            self.num_frames += len(meta.frame_names) - shared
            self.expressions.add(key)

    def _link(self, key: tuple[str, str], start: int) -> LinkedQueries:
        """The choices of expression ``key`` so far when its window starting at ``start`` follows them,
        else fresh ones."""
        opened = self.open.pop(key, None)
        if opened is not None and opened.next_start == start:
            return opened.link
        return LinkedQueries(self.overlap, self.link_weight)

    def summarize(self) -> dict[str, float]:
        # a collective: every rank's PNGs are on disk
        shards = gather_objects((self.num_windows, self.num_frames, self.expressions))
        windows = sum(windows for windows, _, _ in shards)
        expressions = set().union(*(expressions for _, _, expressions in shards))
        written = {
            "windows": float(windows),
            "videos": float(len({video_id for video_id, _ in expressions})),
            "expressions": float(len(expressions)),
            "frames": float(sum(frames for _, frames, _ in shards)),
        }

        def finish() -> dict[str, float]:
            if self.ground_truth is None:
                zip_submission(self.out_dir / ANNOTATIONS_FOLDER, self.out_dir / "submission.zip", self.zip_folder)
                return written
            per_expression = self.out_dir / PER_EXPRESSION_FILENAME
            return score_ytvos_predictions(self.out_dir, self.ground_truth, per_expression, self.window, self.overlap)

        what = "zipping the submission" if self.ground_truth is None else "scoring J&F"
        return on_main_process(finish, what)


def build_ytvos_evaluator(config: Config, dataset: Dataset[ClipSample], out_dir: Path) -> YTVOSEvaluator:
    """The evaluator of a Ref-YouTube-VOS-layout run: scored where ``valid/Annotations`` exist, else zipped."""
    settings = None if config.data.eval_whole_video else InferenceSettings.of_evaluation(config.data)
    return YTVOSEvaluator(
        out_dir, YTVOSGroundTruth.find(config.data.root), window=config.data.window_size, settings=settings
    )


def score_saved_ytvos(config: Config, path: Path, out_dir: Path | None) -> dict[str, float]:
    """:func:`evaluate_ytvos_predictions` against ``data.root``; the per-expression CSV goes to ``out_dir``."""
    per_expression = None if out_dir is None else out_dir / PER_EXPRESSION_FILENAME
    return evaluate_ytvos_predictions(
        path, config.data.root, per_expression, window=config.data.window_size, overlap=config.data.eval_overlap
    )
