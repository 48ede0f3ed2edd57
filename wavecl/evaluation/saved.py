"""Scoring predictions saved by an earlier evaluation, without running the model again.

``wavecl evaluate --predictions PATH`` reads what the evaluators of :mod:`wavecl.evaluation.datasets`
wrote and recomputes their metrics:

- A2D-Sentences / JHMDB-Sentences: the ``predictions.json`` of :class:`~wavecl.evaluation.a2d.A2DEvaluator`
  (COCO segmentation results) -> mAP, P@K, overall and mean IoU against ``data.coco_gt_path``;
- RefCOCO/+/g: the folder of ``<set>_predictions.json`` files of
  :class:`~wavecl.evaluation.refcoco.RefCOCOEvaluator` -> per-set box and mask numbers and their mean;
- Ref-DAVIS17: the folder holding ``anno_0`` .. ``anno_3`` -> J&F over the four annotators;
- Ref-YouTube-VOS layout (one's own data, the synthetic set): a folder holding
  ``Annotations/<video>/<exp_id>/<frame>.png`` (0/255 masks) or its zip -> J, F, J&F against the
  ``valid/Annotations`` masks, over every expression and frame of the ground truth; where the split
  has no ``Annotations`` (the real Ref-YouTube-VOS valid), a completeness check (every valid frame of
  every expression has a mask), the scores themselves coming from the evaluation server;
- MeViS: the same folder or zip (with or without the top-level ``Annotations/``) -> J, F, J&F against the
  union masks of ``valid_u``; for ``valid`` (no masks) a completeness check of the submission.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from wavecl.data.davis import find_davis_folder
from wavecl.data.mevis import MeViSGroundTruth, MeViSPaths, read_mevis_videos
from wavecl.data.paths import natural_sorted
from wavecl.data.types import ClipSample
from wavecl.data.ytvos import YTVOSGroundTruth, YTVOSPaths, evaluated_videos
from wavecl.evaluation.a2d import a2d_metrics
from wavecl.evaluation.davis import ref_davis_metrics
from wavecl.evaluation.refcoco import evaluate_refcoco_sets, refcoco_ground_truth
from wavecl.evaluation.ytvos import check_ytvos_submission, score_ytvos_predictions
from wavecl.jsonio import read_json

RESULT_KEYS = ("image_id", "category_id", "segmentation", "score")


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
        ``F-Recall``, ``F-Decay``, with the ``videos`` and ``annotators`` counts (the keys of
        :class:`~wavecl.evaluation.video.RefDAVISEvaluator`).
    """
    return ref_davis_metrics(results_dir, find_davis_folder(davis_root))


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


def evaluate_mevis_predictions(
    path: str | Path, root: str | Path, split: str = "valid_u", per_expression_path: str | Path | None = None
) -> dict[str, float]:
    """Score MeViS predictions on ``valid_u``, or check a ``valid`` submission for completeness.

    Args:
        path: a folder holding ``Annotations/<video>/<exp_id>/<frame>.png``, or a zip of it (the submission
            zip's ``<video>/<exp_id>/<frame>.png`` at the top is read too).
        root: the MeViS folder or its parent.
        split: ``valid_u`` (J, F, J&F against the union masks of every expression,
            :class:`~wavecl.data.mevis.MeViSGroundTruth`) or ``valid`` (completeness check).
        per_expression_path: for ``valid_u``, where to write the per-expression CSV.

    Returns:
        As :func:`~wavecl.evaluation.ytvos.score_ytvos_predictions` (``valid_u``) or
        :func:`~wavecl.evaluation.ytvos.check_ytvos_submission` (``valid``).
    """
    if split == "valid_u":
        return score_ytvos_predictions(path, MeViSGroundTruth(root, split), per_expression_path)
    videos = read_mevis_videos(MeViSPaths.find(root, split), split)
    return check_ytvos_submission(path, expected_frames(videos))
