"""Scoring predictions saved by an earlier evaluation, without running the model again.

``wavecl evaluate --predictions PATH`` reads what the evaluators of :mod:`wavecl.evaluation.datasets`
wrote and recomputes their metrics:

- A2D-Sentences / JHMDB-Sentences: the ``predictions.json`` of :class:`~wavecl.evaluation.a2d.A2DEvaluator`
  (COCO segmentation results) -> mAP, P@K, overall and mean IoU against ``data.coco_gt_path``;
- RefCOCO/+/g: the folder of ``<set>_predictions.json`` files of
  :class:`~wavecl.evaluation.refcoco.RefCOCOEvaluator` -> per-set box and mask numbers and their mean;
- Ref-DAVIS17: the folder holding ``anno_0`` .. ``anno_3`` -> J&F over the four annotators;
- synthetic: a folder holding ``Annotations/<video>/<exp_id>/<frame>.png`` (0/255 masks) -> J, F, J&F
  against the held-out masks;
- Ref-YouTube-VOS: a submission folder or zip -> a completeness check (every valid frame of every
  expression has a mask); the scores themselves come from the evaluation server.
"""

from __future__ import annotations

import zipfile
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

from wavecl.data.davis import find_davis_folder
from wavecl.data.paths import read_json
from wavecl.data.synthetic import expression_ground_truth
from wavecl.data.types import ClipSample
from wavecl.data.ytvos import RefYouTubeVOS, YTVOSSample, read_index_mask
from wavecl.evaluation.a2d import a2d_metrics
from wavecl.evaluation.davis import db_eval_boundary, db_eval_iou, evaluate_ref_davis
from wavecl.evaluation.refcoco import evaluate_refcoco_sets, refcoco_ground_truth
from wavecl.evaluation.video import jf_summary
from wavecl.evaluation.ytvos import ANNOTATIONS_FOLDER

RESULT_KEYS = ("image_id", "category_id", "segmentation", "score")
MISSING_LISTED = 5


def read_coco_results(path: str | Path) -> list[dict[str, Any]]:
    """A COCO results file: a JSON list of ``{image_id, category_id, segmentation, score, ...}``.

    Raises:
        FileNotFoundError: the file is missing.
        ValueError: it is not such a list; the message names the file and the first bad entry.
    """
    path = Path(path)
    results = read_json(path)
    if not isinstance(results, list) or not results:
        raise ValueError(f"{path}: expected a non-empty JSON list of COCO results")
    for index, result in enumerate(results):
        missing = [key for key in RESULT_KEYS if not isinstance(result, dict) or key not in result]
        if missing:
            raise ValueError(f"{path}: entry {index} lacks {missing} (COCO results need {list(RESULT_KEYS)})")
    return results


def evaluate_a2d_predictions(predictions: str | Path, ground_truth: str | Path) -> dict[str, float]:
    """A2D/JHMDB metrics of a saved predictions file, as :class:`~wavecl.evaluation.a2d.A2DEvaluator` computes them.

    Args:
        predictions: the evaluator's ``predictions.json`` (or any COCO segmentation results file).
        ground_truth: the COCO-format ground truth (``wavecl prepare a2d-gt`` / ``jhmdb-gt``).

    Returns:
        ``mAP 0.5:0.95``, ``AP 0.5``, ``AP 0.75``, ``AP 0.5:0.95 S/M/L``, ``P@0.5`` .. ``P@0.9``,
        ``overall_iou``, ``mean_iou``.
    """
    return a2d_metrics(ground_truth, read_coco_results(predictions))


def evaluate_refcoco_predictions(predictions_dir: str | Path, dataset: Dataset[ClipSample]) -> dict[str, float]:
    """RefCOCO/+/g metrics of the ``<set>_predictions.json`` files in ``predictions_dir``.

    The ground truth of every set of ``dataset`` (the run's RefCOCO/+/g ``val`` sets) is rebuilt, as
    during training. Keys as :class:`~wavecl.evaluation.refcoco.RefCOCOEvaluator` returns them.
    """
    predictions_dir = Path(predictions_dir)
    ground_truth = refcoco_ground_truth(dataset)
    results = {name: read_coco_results(predictions_dir / f"{name}_predictions.json") for name in ground_truth}
    return evaluate_refcoco_sets(ground_truth, results)


def evaluate_davis_predictions(results_dir: str | Path, davis_root: str | Path) -> dict[str, float]:
    """Ref-DAVIS17 J&F of a results folder (``anno_<k>/<video>/<frame>.png``), averaged over the annotators.

    Args:
        results_dir: the folder holding ``anno_0`` .. ``anno_3``.
        davis_root: the Ref-DAVIS root (holding ``DAVIS/``) or its parent.

    Returns:
        The mean over the annotators of ``J&F-Mean``, ``J-Mean``, ``J-Recall``, ``J-Decay``, ``F-Mean``,
        ``F-Recall``, ``F-Decay`` (the keys of :class:`~wavecl.evaluation.video.RefDAVISEvaluator`).
    """
    summary = evaluate_ref_davis(results_dir, find_davis_folder(davis_root))
    return {key: float(value) for key, value in summary["mean"].items()}


def _expression_frames(samples: Iterable[YTVOSSample]) -> dict[tuple[str, str], list[str]]:
    """``{(video, exp_id): frame names in order}`` covered by validation windows."""
    frames: dict[tuple[str, str], list[str]] = defaultdict(list)
    for sample in samples:
        frames[sample.video_id, sample.exp_id].extend(sample.frame_names)
    return frames


class _Submission:
    """The PNG masks of a submission, read from an ``Annotations``-holding folder or a zip."""

    def __init__(self, path: Path) -> None:
        self.path = path
        if path.is_file() and zipfile.is_zipfile(path):
            self.archive: zipfile.ZipFile | None = zipfile.ZipFile(path)
            self.names = set(self.archive.namelist())
        elif (path / ANNOTATIONS_FOLDER).is_dir():
            self.archive = None
            self.names = {p.relative_to(path).as_posix() for p in (path / ANNOTATIONS_FOLDER).rglob("*.png")}
        else:
            raise FileNotFoundError(
                f"no submission at {path}: expected a zip or a folder holding {ANNOTATIONS_FOLDER}/"
            )

    @staticmethod
    def member(video: str, exp_id: str, frame: str) -> str:
        return f"{ANNOTATIONS_FOLDER}/{video}/{exp_id}/{frame}.png"

    def missing(self, expected: dict[tuple[str, str], list[str]]) -> list[str]:
        return [
            self.member(video, exp_id, frame)
            for (video, exp_id), frames in expected.items()
            for frame in frames
            if self.member(video, exp_id, frame) not in self.names
        ]

    def read_mask(self, video: str, exp_id: str, frame: str) -> np.ndarray:
        """``[H, W]`` bool mask (pixels above 127)."""
        member = self.member(video, exp_id, frame)
        if self.archive is None:
            return read_index_mask(self.path / member) > 127
        with self.archive.open(member) as handle, Image.open(handle) as image:
            if image.mode not in ("P", "L"):
                raise ValueError(f"{self.path}: {member} must be a single-channel PNG, got mode {image.mode}")
            return np.asarray(image) > 127


def _complete_submission(
    path: str | Path, dataset: RefYouTubeVOS
) -> tuple[_Submission, dict[tuple[str, str], list[str]]]:
    """The submission at ``path`` and the frames it must cover; raises ValueError naming missing masks."""
    submission = _Submission(Path(path))
    expected = _expression_frames(dataset.samples)
    missing = submission.missing(expected)
    if missing:
        raise ValueError(
            f"{path} lacks {len(missing)} of {sum(map(len, expected.values()))} masks, e.g. {missing[:MISSING_LISTED]}"
        )
    return submission, expected


def check_ytvos_submission(path: str | Path, dataset: RefYouTubeVOS) -> dict[str, float]:
    """Check that a Ref-YouTube-VOS submission has a mask for every frame of every valid expression.

    Args:
        path: ``submission.zip`` or the folder holding ``Annotations/``.
        dataset: the ``valid`` split the submission answers.

    Returns:
        ``{"expressions", "frames"}``: what the submission covers.

    Raises:
        ValueError: masks are missing (the first few are named).
    """
    _, expected = _complete_submission(path, dataset)
    return {"expressions": float(len(expected)), "frames": float(sum(map(len, expected.values())))}


def evaluate_synthetic_predictions(path: str | Path, dataset: RefYouTubeVOS) -> dict[str, float]:
    """J, F and J&F of saved synthetic predictions, computed as
    :class:`~wavecl.evaluation.video.SyntheticJFEvaluator` does.

    Per expression, the per-frame J and F (DAVIS definitions) are averaged over its frames; the
    results average over the expressions.

    Args:
        path: a folder holding ``Annotations/<video>/<exp_id>/<frame>.png``, or its zip.
        dataset: the synthetic ``valid`` split, whose masks are the ground truth.
    """
    submission, expected = _complete_submission(path, dataset)
    per_expression = []
    for (video, exp_id), frames in expected.items():
        predicted = np.stack([submission.read_mask(video, exp_id, frame) for frame in frames])
        truth = expression_ground_truth(dataset.paths.root, dataset.subset, video, exp_id)
        if truth.shape != predicted.shape:
            raise ValueError(
                f"{path}: masks of video {video!r} expression {exp_id!r} are {predicted.shape}, "
                f"ground truth {truth.shape}"
            )
        per_expression.append((np.mean(db_eval_iou(truth, predicted)), np.mean(db_eval_boundary(truth, predicted))))
    return jf_summary(per_expression)
