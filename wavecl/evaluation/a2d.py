"""A2D-Sentences / JHMDB-Sentences evaluation (docs/datasets.md#metrics).

Two families of numbers are reported for the annotated frame of every test sample:

* COCO mask mAP: every query of every sample is a detection (RLE mask at the original
  resolution, score = sigmoid probability), evaluated by pycocotools' ``COCOeval`` with
  ``iouType='segm'`` and ``useCats=0`` against the COCO-format ground truth, one annotation per image.
* Precision@K, overall IoU and mean IoU of the top-scoring query of every sample.

Unlike the reference, predictions duplicated by ``DistributedSampler`` padding are removed before
either is computed (docs/differences.md#evaluation). The COCO computations are
:mod:`wavecl.evaluation.coco`'s; this module holds the evaluator and the scorer of its saved
``predictions.json``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch.utils.data import Dataset

from wavecl.atomic import write_json
from wavecl.config import Config
from wavecl.data.types import Batch, ClipSample
from wavecl.distributed import on_main_process
from wavecl.evaluation.coco import (
    coco_segm_map,
    gather_results,
    load_coco_ground_truth,
    masks_to_coco_results,
    precision_and_iou,
    read_coco_results,
    sample_counts,
)
from wavecl.model.output import WaveCLOutput
from wavecl.model.postprocess import a2d_postprocess

if TYPE_CHECKING:
    from pycocotools.coco import COCO


def a2d_metrics(
    ground_truth: str | os.PathLike[str] | COCO, results: Sequence[dict[str, Any]], precision_metrics: bool = True
) -> dict[str, float]:
    """All A2D/JHMDB numbers: :func:`coco_segm_map`, plus :func:`precision_and_iou` if ``precision_metrics``,
    and the :func:`sample_counts`.

    Args:
        ground_truth: COCO-format ground truth (path or ``COCO``), one annotation per image.
        results: COCO segmentation results without duplicates (see :func:`masks_to_coco_results`).
        precision_metrics: also compute P@K, overall IoU and mean IoU.
    """
    coco_gt = load_coco_ground_truth(ground_truth)
    metrics = coco_segm_map(coco_gt, results)
    if precision_metrics:
        metrics |= precision_and_iou(results, coco_gt)
    return metrics | sample_counts(coco_gt, results)


class A2DEvaluator:
    """Accumulates A2D/JHMDB predictions over an evaluation epoch and computes its metrics (docs/datasets.md#metrics).

    Usage: ``update(outputs, batch)`` after every forward pass, then ``summarize()`` once on every rank.

    Args:
        ground_truth: COCO-format ground-truth json (path) or ``COCO`` object.
        results_path: where rank 0 writes the (deduplicated) predictions as json; ``None`` to skip.
        precision_metrics: also compute P@K, overall IoU and mean IoU
            (``calculate_precision_and_iou_metrics``).
    """

    def __init__(
        self,
        ground_truth: str | os.PathLike[str] | COCO,
        results_path: str | os.PathLike[str] | None = None,
        precision_metrics: bool = True,
    ) -> None:
        self.ground_truth = ground_truth
        self.results_path = results_path
        self.precision_metrics = precision_metrics
        self.results: list[dict[str, Any]] = []

    def update(self, outputs: WaveCLOutput, batch: Batch) -> None:
        """Add the predictions of one batch.

        Args:
            outputs: model output on the annotated frames, ``pred_cls [T, B, Q, K]`` and
                ``pred_masks [T, B, Q, h, w]`` with ``T = 1`` after valid-frame selection (or ``T`` equal
                to the batch's when every frame is annotated).
            batch: the input batch; its annotated targets give ``image_id``, ``size`` and ``orig_size``.
        """
        _, targets = batch.valid_frames()
        num_frames, batch_size = outputs.pred_cls.shape[:2]
        if len(targets) != num_frames or any(len(row) != batch_size for row in targets):
            raise ValueError(
                f"outputs hold {num_frames}x{batch_size} frames but the batch has "
                f"{len(targets)}x{len(targets[0]) if targets else 0} annotated frames"
            )
        padded_size = (batch.frames.shape[-2], batch.frames.shape[-1])
        for t, row in enumerate(targets):
            if any(target.image_id is None for target in row):
                raise ValueError("every evaluated target needs an image_id")
            samples = a2d_postprocess(
                outputs.pred_cls[t],
                outputs.pred_masks[t],
                padded_size,
                [target.size for target in row],
                [target.orig_size for target in row],
            )
            for target, sample in zip(row, samples):
                assert target.image_id is not None  # checked above
                self.results.extend(masks_to_coco_results(target.image_id, sample["scores"], sample["masks"]))

    def summarize(self) -> dict[str, float]:
        """Gather every rank's predictions, drop padding duplicates, and compute the metrics.

        Rank 0 computes and saves the predictions to ``results_path``; the metrics are
        then shared so that every rank returns the same dict, :func:`a2d_metrics`.
        """
        results = gather_results(self.results)

        def score() -> dict[str, float]:
            assert results is not None  # gathered on the main process, where this runs
            if self.results_path is not None:
                write_json(self.results_path, results)
            return a2d_metrics(self.ground_truth, results, self.precision_metrics)

        return on_main_process(score, "computing the A2D / JHMDB metrics")


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


def coco_ground_truth_path(config: Config) -> str:
    """``data.coco_gt_path``, which the A2D protocol needs.

    Raises:
        ValueError: it is not set; the message says how to build it.
    """
    if not config.data.coco_gt_path:
        raise ValueError(
            f"data.coco_gt_path is required to evaluate {config.data.dataset_name} (build it with `wavecl prepare`)"
        )
    return config.data.coco_gt_path


def build_a2d_evaluator(config: Config, dataset: Dataset[ClipSample], out_dir: Path) -> A2DEvaluator:
    """The A2D evaluator of a run: scores against ``data.coco_gt_path``, writes ``<out_dir>/predictions.json``."""
    return A2DEvaluator(coco_ground_truth_path(config), results_path=out_dir / "predictions.json")


def score_saved_a2d(config: Config, path: Path, out_dir: Path | None) -> dict[str, float]:
    """:func:`evaluate_a2d_predictions` of ``path`` (a results file, or the folder holding ``predictions.json``)."""
    return evaluate_a2d_predictions(
        path / "predictions.json" if path.is_dir() else path, coco_ground_truth_path(config)
    )
