"""RefCOCO / RefCOCO+ / RefCOCOg evaluation (docs/datasets.md#refcoco-refcoco-refcocog).

Every query of every pseudo-image is a detection with an absolute box and a mask at the original
resolution. Reported per validation set:

* mask and box COCO mAP through pycocotools with categories ignored (``useCats=0``);
* mask and box Precision@K, overall IoU and mean IoU of the top-scoring query.

The reference hands pycocotools ``xyxy`` boxes together with the masks, so pycocotools computes the
mask "area" from a wrong box and the segm S/M/L split is wrong. Here boxes are ``xywh`` as COCO
expects, and the segm evaluation sees only the masks (its areas come from the RLE), the bbox
evaluation only the boxes, as in DETR's ``CocoEvaluator``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import Tensor
from torch.utils.data import Dataset
from torchvision.ops import box_convert

from wavecl.atomic import write_json
from wavecl.config import Config
from wavecl.data.datasets import build_dataset
from wavecl.data.refcoco import build_refcoco_gt
from wavecl.data.types import Batch, ClipSample, RefCOCOMetadata
from wavecl.distributed import on_main_process
from wavecl.evaluation.coco import (
    coco_map,
    gather_results,
    load_coco_ground_truth,
    masks_to_coco_results,
    precision_and_iou,
    read_coco_results,
    sample_counts,
    single_annotation,
    summarize_ious,
    top_predictions_per_image,
)
from wavecl.model.output import WaveCLOutput
from wavecl.model.postprocess import refcoco_postprocess

if TYPE_CHECKING:
    from pycocotools.coco import COCO

PRIMARY_METRIC = "segm mAP 0.5:0.95"


def refcoco_results(
    image_id: int, scores: Tensor, queries: Tensor, boxes: Tensor, masks: Tensor
) -> list[dict[str, Any]]:
    """COCO results (box and mask) of every query of one pseudo-image.

    Args:
        image_id: the image id in the RefCOCO json (an int).
        scores: ``[Q]`` scores.
        queries: ``[Q]`` query index of each entry.
        boxes: ``[Q, 4]`` absolute ``(x1, y1, x2, y2)`` in original pixels.
        masks: ``[Q, H, W]`` bool masks at the original size.

    Returns:
        ``Q`` dicts ``{image_id, query, category_id: 1, bbox: [x, y, w, h], segmentation: RLE, score}``.
    """
    if boxes.shape != (len(scores), 4):
        raise ValueError(f"boxes must be [Q, 4] with Q = {len(scores)}, got {tuple(boxes.shape)}")
    results = masks_to_coco_results(image_id, scores, masks, queries.tolist())
    for result, box in zip(results, box_convert(boxes.detach().float().cpu(), "xyxy", "xywh").tolist()):
        result["bbox"] = box
    return results


def _box_intersection_and_union(box_a: Sequence[float], box_b: Sequence[float]) -> tuple[float, float]:
    """Intersection and union areas of two ``(x1, y1, x2, y2)`` boxes in continuous coordinates."""
    width = max(min(box_a[2], box_b[2]) - max(box_a[0], box_b[0]), 0.0)
    height = max(min(box_a[3], box_b[3]) - max(box_a[1], box_b[1]), 0.0)
    intersection = width * height
    area_a = (box_a[2] - box_a[0]) * (box_a[3] - box_a[1])
    area_b = (box_b[2] - box_b[0]) * (box_b[3] - box_b[1])
    return intersection, area_a + area_b - intersection


def box_precision_and_iou(
    results: Sequence[dict[str, Any]], ground_truth: str | os.PathLike[str] | COCO
) -> dict[str, float]:
    """Box Precision@K, overall IoU and mean IoU of the top-scoring prediction per image.

    Args:
        results: COCO results with an ``xywh`` ``bbox`` and a ``score``.
        ground_truth: RefCOCO json (path or ``COCO``), one annotation with an ``xywh`` ``bbox`` per image.

    Returns:
        ``P@0.5`` .. ``P@0.9``, ``overall_iou``, ``mean_iou`` (see :func:`wavecl.evaluation.coco.summarize_ious`).
    """
    coco_gt = load_coco_ground_truth(ground_truth)
    intersections, unions = [], []
    for image_id, prediction in top_predictions_per_image(coco_gt, results):
        x, y, w, h = prediction["bbox"]
        gx, gy, gw, gh = single_annotation(coco_gt, image_id)["bbox"]
        intersection, union = _box_intersection_and_union((x, y, x + w, y + h), (gx, gy, gx + gw, gy + gh))
        intersections.append(intersection)
        unions.append(union)
    return summarize_ious(intersections, unions)


def evaluate_refcoco(
    ground_truth: str | os.PathLike[str] | COCO, results: Sequence[dict[str, Any]]
) -> dict[str, float]:
    """All RefCOCO numbers of one validation set.

    Args:
        ground_truth: the set's json (path or ``COCO``), e.g. ``refcoco/instances_refcoco_val.json``.
        results: :func:`refcoco_results` of every image (duplicates removed).

    Returns:
        ``segm <k>`` and ``bbox <k>`` for ``k`` in ``mAP 0.5:0.95``, ``AP 0.5``, ``AP 0.75``,
        ``AP 0.5:0.95 S/M/L``, and for ``k`` in ``P@0.5`` .. ``P@0.9``, ``overall_iou``, ``mean_iou``; the
        counts ``samples`` and ``unpredicted_samples`` (:func:`~wavecl.evaluation.coco.sample_counts`).
        Checkpoints are selected on ``segm mAP 0.5:0.95`` averaged over the three sets.
    """
    coco_gt = load_coco_ground_truth(ground_truth)
    mask_results = [{k: v for k, v in r.items() if k != "bbox"} for r in results]
    box_results = [{k: v for k, v in r.items() if k != "segmentation"} for r in results]
    metrics: dict[str, float] = {}
    for iou_type, typed_results in (("segm", mask_results), ("bbox", box_results)):
        metrics.update({f"{iou_type} {key}": v for key, v in coco_map(coco_gt, typed_results, iou_type).items()})
    metrics.update({f"segm {k}": v for k, v in precision_and_iou(mask_results, coco_gt).items()})
    metrics.update({f"bbox {k}": v for k, v in box_precision_and_iou(box_results, coco_gt).items()})
    return metrics | sample_counts(coco_gt, results)


def refcoco_ground_truth(datasets: Any) -> dict[str, COCO]:
    """``{set name: COCO ground truth}`` of the evaluated :class:`~wavecl.data.refcoco.RefCOCO` sets (a
    ``ConcatDataset`` of them or one set), built with :func:`~wavecl.data.refcoco.build_refcoco_gt`."""
    return {d.dataset_name: build_refcoco_gt(d) for d in getattr(datasets, "datasets", [datasets])}


def evaluate_refcoco_sets(
    ground_truth: Mapping[str, str | os.PathLike[str] | COCO], results: Mapping[str, Sequence[dict[str, Any]]]
) -> dict[str, float]:
    """:func:`evaluate_refcoco` of every set, keyed ``<set> <metric>``, and the primary metric
    (``segm mAP 0.5:0.95``) averaged over the sets, which selects the best pretraining checkpoint.

    Args:
        ground_truth: set name -> its json (path or ``COCO``).
        results: set name -> its :func:`refcoco_results`, for every set of ``ground_truth``.
    """
    metrics: dict[str, float] = {}
    for name, coco_gt in ground_truth.items():
        metrics |= {f"{name} {k}": v for k, v in evaluate_refcoco(coco_gt, results[name]).items()}
    metrics[PRIMARY_METRIC] = sum(metrics[f"{name} {PRIMARY_METRIC}"] for name in ground_truth) / len(ground_truth)
    return metrics


class RefCOCOEvaluator:
    """Accumulates RefCOCO/+/g predictions and scores each validation set.

    Args:
        datasets: the evaluated :class:`~wavecl.data.refcoco.RefCOCO` sets (a ``ConcatDataset`` of them
            or one set); their ground truth is built with :func:`refcoco_ground_truth`.
        results_dir: where rank 0 writes ``<set>_predictions.json``; ``None`` to skip.

    ``summarize`` returns :func:`evaluate_refcoco_sets` of the gathered predictions on every rank.
    """

    def __init__(self, datasets: Any, results_dir: str | os.PathLike | None = None) -> None:
        self.ground_truth = refcoco_ground_truth(datasets)
        self.results_dir = results_dir
        self.results: dict[str, list[dict[str, Any]]] = {name: [] for name in self.ground_truth}

    def update(self, outputs: WaveCLOutput, batch: Batch) -> None:
        """Add one batch: ``outputs`` of single-frame clips (``T = 1``); each clip's
        :class:`~wavecl.data.types.RefCOCOMetadata` names its set and pseudo-image."""
        _, targets = batch.valid_frames()
        row = targets[0]
        processed = refcoco_postprocess(
            outputs.pred_cls[0],
            outputs.pred_boxes[0],
            outputs.pred_masks[0],
            [t.size for t in row],
            [t.orig_size for t in row],
        )
        for meta, sample in zip(batch.metadata_as(RefCOCOMetadata), processed):
            self.results[meta.dataset].extend(
                refcoco_results(
                    int(meta.image_id), sample["scores"], sample["queries"], sample["boxes"], sample["masks"]
                )
            )

    def summarize(self) -> dict[str, float]:
        gathered = {name: gather_results(results) for name, results in self.results.items()}  # on rank 0 only

        def score() -> dict[str, float]:
            complete: dict[str, list[dict[str, Any]]] = {}
            for name, results in gathered.items():
                assert results is not None  # gathered on the main process, where this runs
                complete[name] = results
            if self.results_dir is not None:
                for name, results in complete.items():
                    write_json(os.path.join(self.results_dir, f"{name}_predictions.json"), results)
            return evaluate_refcoco_sets(self.ground_truth, complete)

        return on_main_process(score, "computing the RefCOCO metrics")


__all__ = [
    "PRIMARY_METRIC",
    "RefCOCOEvaluator",
    "box_precision_and_iou",
    "evaluate_refcoco",
    "evaluate_refcoco_sets",
    "refcoco_ground_truth",
    "refcoco_results",
]


def evaluate_refcoco_predictions(predictions_dir: str | Path, dataset: Dataset[ClipSample]) -> dict[str, float]:
    """RefCOCO/+/g metrics of the ``<set>_predictions.json`` files in ``predictions_dir``.

    The ground truth of every set of ``dataset`` (the run's RefCOCO/+/g ``val`` sets) is rebuilt, as
    during training. Keys as :class:`~wavecl.evaluation.refcoco.RefCOCOEvaluator` returns them.
    """
    predictions_dir = Path(predictions_dir)
    ground_truth = refcoco_ground_truth(dataset)
    results = {name: read_coco_results(predictions_dir / f"{name}_predictions.json") for name in ground_truth}
    return evaluate_refcoco_sets(ground_truth, results)


def build_refcoco_evaluator(config: Config, dataset: Dataset[ClipSample], out_dir: Path) -> RefCOCOEvaluator:
    """The evaluator of a RefCOCO/+/g run over ``dataset`` (its ``val`` sets), writing into ``out_dir``."""
    return RefCOCOEvaluator(dataset, results_dir=out_dir)


def score_saved_refcoco(config: Config, path: Path, out_dir: Path | None) -> dict[str, float]:
    """:func:`evaluate_refcoco_predictions` of the folder ``path``, against the run's ``val`` sets rebuilt."""
    return evaluate_refcoco_predictions(path, build_dataset(config.data, "eval", config.model.num_classes))
