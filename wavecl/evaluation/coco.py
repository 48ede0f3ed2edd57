"""COCO-format evaluation shared by the A2D/JHMDB and RefCOCO protocols: ground truth, results files, mask
mAP (pycocotools' ``COCOeval``), precision@K and IoU of the top-scoring prediction per image."""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from torch import Tensor

from wavecl.distributed import gather_to_main
from wavecl.jsonio import read_json
from wavecl.optional import require_package

if TYPE_CHECKING:
    from pycocotools.coco import COCO


PRECISION_THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.9)


IOU_SMOOTHING = 1e-6


COCO_SUMMARY_KEYS = ("mAP 0.5:0.95", "AP 0.5", "AP 0.75", "AP 0.5:0.95 S", "AP 0.5:0.95 M", "AP 0.5:0.95 L")


def load_coco_ground_truth(ground_truth: str | os.PathLike[str] | COCO) -> COCO:
    """Return ``ground_truth`` as a pycocotools ``COCO`` object, reading the json file if given a path.

    Raises:
        FileNotFoundError: the json file does not exist.
        ValueError: malformed JSON, or an object repeating a key (:func:`~wavecl.data.paths.read_json`).
    """
    coco_class = require_package("pycocotools.coco", "COCO-format evaluation").COCO
    if isinstance(ground_truth, coco_class):
        return ground_truth
    path = Path(ground_truth)
    if not path.is_file():
        raise FileNotFoundError(f"COCO-format ground-truth file not found: {path}")
    coco = coco_class()
    coco.dataset = read_json(path)
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def _check_image_ids(coco_gt: COCO, results: Sequence[dict[str, Any]]) -> None:
    unknown = {r["image_id"] for r in results} - set(coco_gt.getImgIds())
    if unknown:
        examples = sorted(map(str, unknown))[:5]
        raise ValueError(f"{len(unknown)} predicted image_ids are not in the ground truth, e.g. {examples}")


def sample_counts(coco_gt: COCO, results: Sequence[dict[str, Any]]) -> dict[str, float]:
    """The counts behind COCO-style numbers (:mod:`wavecl.evaluation.counts`): ``samples``, the
    ground-truth images scored, and ``unpredicted_samples``, those without any result (scored as misses)."""
    samples = set(coco_gt.getImgIds())
    unpredicted = samples - {result["image_id"] for result in results}
    return {"samples": float(len(samples)), "unpredicted_samples": float(len(unpredicted))}


def coco_stats(
    ground_truth: str | os.PathLike[str] | COCO, results: Sequence[dict[str, Any]], iou_type: str
) -> np.ndarray:
    """The 12 standard COCO summary numbers of ``results``, with categories ignored (``useCats=0``).

    Ground truth and detections are pooled per image whatever their ``category_id``.

    Args:
        ground_truth: COCO-format ground truth (path or ``COCO``).
        results: COCO result dicts with ``image_id``, ``score`` and, for ``iou_type='segm'``, an RLE
            ``segmentation``; for ``iou_type='bbox'``, an ``xywh`` ``bbox``. They are not modified.
        iou_type: ``"segm"`` or ``"bbox"``.

    Returns:
        ``[12]`` float array, ``COCOeval.stats`` (AP 0.5:0.95, AP 0.5, AP 0.75, AP S/M/L, AR...).
    """
    if iou_type not in ("segm", "bbox"):
        raise ValueError(f"iou_type must be 'segm' or 'bbox', got {iou_type!r}")
    coco_gt = load_coco_ground_truth(ground_truth)
    if not results:
        raise ValueError("no predictions to evaluate")
    _check_image_ids(coco_gt, results)
    with contextlib.redirect_stdout(io.StringIO()):
        coco_dt = coco_gt.loadRes([dict(r) for r in results])
        cocoeval = require_package("pycocotools.cocoeval", "COCO-format evaluation")
        evaluator = cocoeval.COCOeval(coco_gt, coco_dt, iouType=iou_type)
        evaluator.params.useCats = 0
        # Even with useCats=0, pycocotools collects detections only under the ground truth's category ids;
        # results are labelled 1, which RefCOCO sets need not contain, so every label is listed.
        evaluator.params.catIds = sorted(set(coco_gt.getCatIds()) | {r["category_id"] for r in results})
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return np.asarray(evaluator.stats, dtype=np.float64)


def coco_segm_map(ground_truth: str | os.PathLike[str] | COCO, results: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Mask mAP as reported for A2D/JHMDB (docs/datasets.md#coco-mask-map).

    Args:
        ground_truth: COCO-format ground truth (path or ``COCO``), one annotation per image.
        results: COCO segmentation results (see :func:`masks_to_coco_results`).

    Returns:
        ``mAP 0.5:0.95``, ``AP 0.5``, ``AP 0.75``, ``AP 0.5:0.95 S``, ``AP 0.5:0.95 M``, ``AP 0.5:0.95 L``
        (``-1`` where no ground truth falls in an area range, as pycocotools reports it).
    """
    return coco_map(ground_truth, results, "segm")


def coco_map(
    ground_truth: str | os.PathLike[str] | COCO, results: Sequence[dict[str, Any]], iou_type: str
) -> dict[str, float]:
    """The first six :func:`coco_stats` numbers of ``iou_type`` keyed by :data:`COCO_SUMMARY_KEYS`
    (``mAP 0.5:0.95`` .. ``AP 0.5:0.95 L``)."""
    stats = coco_stats(ground_truth, results, iou_type)
    return {key: float(value) for key, value in zip(COCO_SUMMARY_KEYS, stats[:6])}


def masks_to_coco_results(
    image_id: str | int, scores: Tensor, masks: Tensor, queries: Sequence[int] | None = None
) -> list[dict[str, Any]]:
    """COCO segmentation results of every query of one sample.

    Args:
        image_id: the sample's key in the ground truth.
        scores: ``[Q]`` scores.
        masks: ``[Q, H, W]`` bool masks at the original resolution.
        queries: the query index of each entry; ``None`` when entry ``q`` is query ``q``.

    Returns:
        ``Q`` dicts ``{image_id, query, category_id: 1, segmentation: RLE with str counts, score}``
        in input order; ``query`` identifies the prediction for :func:`deduplicate_results`.
    """
    if masks.ndim != 3 or scores.shape != masks.shape[:1]:
        raise ValueError(f"expected scores [Q] and masks [Q, H, W], got {tuple(scores.shape)} and {tuple(masks.shape)}")
    queries = range(len(scores)) if queries is None else [int(q) for q in queries]
    if len(queries) != len(scores):
        raise ValueError(f"got {len(queries)} query indices for {len(scores)} scores")
    array = np.asfortranarray(masks.detach().cpu().numpy().astype(np.uint8).transpose(1, 2, 0))
    rles = require_package("pycocotools.mask", "COCO-format evaluation").encode(array)
    results = []
    for query, score, rle in zip(queries, scores.detach().cpu().tolist(), rles):
        segmentation = {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")}
        results.append(
            {
                "image_id": image_id,
                "query": query,
                "category_id": 1,
                "segmentation": segmentation,
                "score": float(score),
            }
        )
    return results


def deduplicate_results(results: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Drop repeated predictions of the same (``image_id``, ``query``), keeping the first.

    ``DistributedSampler`` pads the evaluation set by repeating samples so that every rank gets the
    same number; the repeats would otherwise enter COCO mAP twice.
    """
    seen: set[tuple[Any, Any]] = set()
    unique = []
    for result in results:
        key = (result["image_id"], result["query"])
        if key not in seen:
            seen.add(key)
            unique.append(result)
    return unique


def gather_results(results: list[dict[str, Any]]) -> list[dict[str, Any]] | None:
    """On rank 0, all ranks' results in rank order without duplicates (this rank's list in one process);
    ``None`` on the other ranks, which are not sent the others' predictions."""
    parts = gather_to_main(results)
    return None if parts is None else deduplicate_results(r for rank_results in parts for r in rank_results)


def top_scoring(results: Iterable[dict[str, Any]]) -> dict[Any, dict[str, Any]]:
    """The highest-scoring result of every image.

    Among equal top scores the last one wins, as with the reference's stable ascending sort.
    """
    best: dict[Any, dict[str, Any]] = {}
    for result in results:
        current = best.get(result["image_id"])
        if current is None or result["score"] >= current["score"]:
            best[result["image_id"]] = result
    return best


def summarize_ious(intersections: Sequence[float], unions: Sequence[float]) -> dict[str, float]:
    """Precision@K, overall IoU and mean IoU from per-sample intersections and unions.

    Args:
        intersections: ``N`` intersection sizes (pixels or box areas).
        unions: ``N`` union sizes.

    Returns:
        ``P@0.5`` .. ``P@0.9``: fraction of samples whose IoU ``(I + 1e-6) / (U + 1e-6)`` is strictly
        greater than K; ``overall_iou``: ``sum(I) / sum(U)`` without smoothing (NaN if every union is
        empty); ``mean_iou``: the mean per-sample IoU.
    """
    inter = np.asarray(intersections, dtype=np.float64)
    union = np.asarray(unions, dtype=np.float64)
    if inter.shape != union.shape or inter.ndim != 1 or inter.size == 0:
        raise ValueError(f"expected two non-empty 1-D sequences of equal length, got {inter.shape} and {union.shape}")
    ious = (inter + IOU_SMOOTHING) / (union + IOU_SMOOTHING)
    metrics = {f"P@{k}": float((ious > k).mean()) for k in PRECISION_THRESHOLDS}
    metrics["overall_iou"] = float(inter.sum() / union.sum()) if union.sum() > 0 else float("nan")
    metrics["mean_iou"] = float(ious.mean())
    return metrics


def single_annotation(coco_gt: COCO, image_id: Any) -> dict[str, Any]:
    """The one ground-truth annotation of ``image_id`` (A2D, JHMDB and RefCOCO have exactly one)."""
    annotations = coco_gt.imgToAnns.get(image_id, [])
    if len(annotations) != 1:
        raise ValueError(f"ground-truth image {image_id!r} has {len(annotations)} annotations, expected exactly 1")
    return annotations[0]


def top_predictions_per_image(coco_gt: COCO, results: Sequence[dict[str, Any]]) -> list[tuple[Any, dict[str, Any]]]:
    """``(image_id, top-scoring result)`` for every ground-truth image, in ``getImgIds`` order.

    Raises:
        ValueError: some ground-truth image has no prediction.
    """
    best = top_scoring(results)
    image_ids = coco_gt.getImgIds()
    missing = [image_id for image_id in image_ids if image_id not in best]
    if missing:
        raise ValueError(f"{len(missing)} ground-truth images have no prediction, e.g. {missing[:5]}")
    return [(image_id, best[image_id]) for image_id in image_ids]


def precision_and_iou(
    predictions: Sequence[dict[str, Any]], ground_truth: str | os.PathLike[str] | COCO
) -> dict[str, float]:
    """Mask Precision@K, overall IoU and mean IoU of the top-scoring prediction per image.

    Args:
        predictions: COCO segmentation results (RLE at the original resolution, ``score``).
        ground_truth: COCO-format ground truth (path or ``COCO``), one annotation per image; every
            ground-truth image must have at least one prediction.

    Returns:
        ``P@0.5`` .. ``P@0.9``, ``overall_iou``, ``mean_iou`` (see :func:`summarize_ious`).
    """
    coco_gt = load_coco_ground_truth(ground_truth)
    mask_utils = require_package("pycocotools.mask", "COCO-format evaluation")
    intersections, unions = [], []
    for image_id, prediction in top_predictions_per_image(coco_gt, predictions):
        gt_rle = coco_gt.annToRLE(single_annotation(coco_gt, image_id))
        pred_rle = prediction["segmentation"]
        if list(pred_rle["size"]) != list(gt_rle["size"]):
            raise ValueError(
                f"image {image_id!r}: predicted mask size {pred_rle['size']} != ground truth {gt_rle['size']}"
            )
        intersections.append(float(mask_utils.area(mask_utils.merge([pred_rle, gt_rle], intersect=True))))
        unions.append(float(mask_utils.area(mask_utils.merge([pred_rle, gt_rle], intersect=False))))
    return summarize_ious(intersections, unions)


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
