"""RefCOCO metrics: box/mask mAP against pycocotools, xywh boxes, mask areas for S/M/L, box IoU by hand."""

import contextlib
import io

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from wavecl.evaluation.refcoco import (
    box_precision_and_iou,
    evaluate_refcoco,
    evaluate_refcoco_sets,
    refcoco_results,
)

H, W = 100, 120


def square_polygon(x0: float, y0: float, x1: float, y1: float) -> list[list[float]]:
    return [[x0, y0, x1, y0, x1, y1, x0, y1]]


def refcoco_ground_truth() -> COCO:
    """Three pseudo-images (one sentence each) with polygon masks and xywh boxes, COCO category ids."""
    boxes = {1: (20, 20, 40, 40), 2: (10, 30, 90, 95), 3: (60, 5, 110, 35)}
    dataset = {
        "info": {},
        "licenses": [],
        "images": [{"id": i, "height": H, "width": W, "file_name": f"{i}.jpg", "caption": "the dog"} for i in boxes],
        "annotations": [
            {
                "id": i,
                "image_id": i,
                "category_id": 18,
                "segmentation": square_polygon(*box),
                "area": float((box[2] - box[0]) * (box[3] - box[1])),
                "bbox": [box[0], box[1], box[2] - box[0], box[3] - box[1]],
                "iscrowd": 0,
            }
            for i, box in boxes.items()
        ],
        "categories": [{"id": 18, "name": "dog", "supercategory": "animal"}],
    }
    coco = COCO()
    coco.dataset = dataset
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def gt_mask(coco: COCO, image_id: int) -> torch.Tensor:
    return torch.from_numpy(coco.annToMask(coco.imgToAnns[image_id][0])).bool()


def gt_box_xyxy(coco: COCO, image_id: int) -> torch.Tensor:
    x, y, w, h = coco.imgToAnns[image_id][0]["bbox"]
    return torch.tensor([x, y, x + w, y + h], dtype=torch.float32)


def perfect_and_noisy_results(coco: COCO, seed: int) -> list[dict]:
    """Per image: the ground truth (score 0.6) and two random boxes/masks with random scores."""
    rng = np.random.default_rng(seed)
    results = []
    for image_id in coco.getImgIds():
        boxes, masks, scores = [gt_box_xyxy(coco, image_id)], [gt_mask(coco, image_id)], [0.6]
        for _ in range(2):
            x0, y0 = rng.uniform(0, 60), rng.uniform(0, 50)
            x1, y1 = x0 + rng.uniform(5, 60), y0 + rng.uniform(5, 50)
            boxes.append(torch.tensor([x0, y0, x1, y1], dtype=torch.float32))
            mask = torch.zeros(H, W, dtype=torch.bool)
            mask[int(y0) : int(y1), int(x0) : int(x1)] = True
            masks.append(mask)
            scores.append(float(rng.uniform(0, 1)))
        results += refcoco_results(
            image_id, torch.tensor(scores), torch.arange(3), torch.stack(boxes), torch.stack(masks)
        )
    return results


def direct_stats(coco: COCO, results: list[dict], iou_type: str, list_result_category: bool = True) -> np.ndarray:
    with contextlib.redirect_stdout(io.StringIO()):
        evaluator = COCOeval(coco, coco.loadRes([dict(r) for r in results]), iouType=iou_type)
        evaluator.params.useCats = 0
        if list_result_category:
            evaluator.params.catIds = [1, 18]
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return evaluator.stats


def test_refcoco_results_boxes_are_xywh():
    masks = torch.zeros(2, H, W, dtype=torch.bool)
    masks[0, 20:80, 10:50] = True
    results = refcoco_results(
        7, torch.tensor([0.9, 0.1]), torch.tensor([4, 0]), torch.tensor([[10.0, 20, 50, 80], [0, 0, 1, 1]]), masks
    )
    assert [r["bbox"] for r in results] == [[10.0, 20.0, 40.0, 60.0], [0.0, 0.0, 1.0, 1.0]]
    assert [r["query"] for r in results] == [4, 0]
    assert all(r["image_id"] == 7 and r["category_id"] == 1 for r in results)
    assert mask_utils.area(results[0]["segmentation"]) == 60 * 40


def test_ground_truth_as_prediction_scores_one():
    coco = refcoco_ground_truth()
    results = []
    for image_id in coco.getImgIds():
        results += refcoco_results(
            image_id,
            torch.tensor([1.0]),
            torch.tensor([0]),
            gt_box_xyxy(coco, image_id)[None],
            gt_mask(coco, image_id)[None],
        )
    metrics = evaluate_refcoco(coco, results)
    # The ground truth's only category is 18 and results are labelled 1: with default parameters
    # pycocotools would find no detection at all, even with useCats=0.
    assert direct_stats(coco, [{k: v for k, v in r.items() if k != "bbox"} for r in results], "segm", False)[0] == 0.0
    for prefix in ("segm", "bbox"):
        assert metrics[f"{prefix} mAP 0.5:0.95"] == 1.0
        assert metrics[f"{prefix} AP 0.5"] == 1.0
        assert metrics[f"{prefix} P@0.9"] == 1.0
        assert metrics[f"{prefix} mean_iou"] == pytest.approx(1.0)
        assert metrics[f"{prefix} overall_iou"] == pytest.approx(1.0)


def test_map_equals_pycocotools_on_single_type_results():
    coco = refcoco_ground_truth()
    results = perfect_and_noisy_results(coco, seed=5)
    metrics = evaluate_refcoco(coco, results)
    keys = ["mAP 0.5:0.95", "AP 0.5", "AP 0.75", "AP 0.5:0.95 S", "AP 0.5:0.95 M", "AP 0.5:0.95 L"]
    boxes_only = [{k: v for k, v in r.items() if k != "segmentation"} for r in results]
    masks_only = [{k: v for k, v in r.items() if k != "bbox"} for r in results]
    np.testing.assert_array_equal([metrics[f"bbox {k}"] for k in keys], direct_stats(coco, boxes_only, "bbox")[:6])
    np.testing.assert_array_equal([metrics[f"segm {k}"] for k in keys], direct_stats(coco, masks_only, "segm")[:6])
    assert 0 < metrics["segm mAP 0.5:0.95"] < 1


def test_segm_area_ranges_use_mask_areas():
    # Image 1 holds a small (20x20) object. A higher-scored false positive has a tiny mask but a huge
    # box. Its mask area makes it a small detection, so it counts against "AP S": precision 1/2 at full
    # recall. Handing pycocotools the box as well (as the reference does) would take the box area as the
    # mask area, ignore the false positive in the small range, and report 1.0.
    coco = refcoco_ground_truth()
    false_positive = torch.zeros(1, H, W, dtype=torch.bool)
    false_positive[0, 80:90, 100:110] = True
    results = refcoco_results(
        1, torch.tensor([0.9]), torch.tensor([0]), torch.tensor([[0.0, 0, 119, 99]]), false_positive
    )
    for image_id in coco.getImgIds():
        results += refcoco_results(
            image_id,
            torch.tensor([0.5]),
            torch.tensor([1]),
            gt_box_xyxy(coco, image_id)[None],
            gt_mask(coco, image_id)[None],
        )
    metrics = evaluate_refcoco(coco, results)
    assert metrics["segm AP 0.5:0.95 S"] == pytest.approx(0.5)
    assert direct_stats(coco, results, "segm")[3] == pytest.approx(1.0)


def test_box_precision_and_iou_hand_computed():
    coco = refcoco_ground_truth()
    # Image 1 GT box (20, 20)-(40, 40): prediction shifted right by 10 -> I = 200, U = 600.
    # Image 2 GT box (10, 30)-(90, 95): exact. Image 3 GT box (60, 5)-(110, 35): disjoint prediction.
    results = [
        {"image_id": 1, "query": 0, "bbox": [30.0, 20.0, 20.0, 20.0], "score": 0.8},
        {"image_id": 1, "query": 1, "bbox": [20.0, 20.0, 20.0, 20.0], "score": 0.3},
        {"image_id": 2, "query": 0, "bbox": [10.0, 30.0, 80.0, 65.0], "score": 0.5},
        {"image_id": 3, "query": 0, "bbox": [0.0, 50.0, 10.0, 10.0], "score": 0.5},
    ]
    metrics = box_precision_and_iou(results, coco)
    eps = 1e-6
    ious = [(200 + eps) / (600 + eps), 1.0, eps / (1500 + 100 + eps)]
    assert metrics["P@0.5"] == pytest.approx(1 / 3)
    assert metrics["P@0.9"] == pytest.approx(1 / 3)
    assert metrics["overall_iou"] == pytest.approx((200 + 5200) / (600 + 5200 + 1600))
    assert metrics["mean_iou"] == pytest.approx(np.mean(ious))


def test_evaluate_refcoco_sets_prefixes_each_set_and_averages_the_primary_metric():
    coco = refcoco_ground_truth()
    results = {"refcoco": perfect_and_noisy_results(coco, seed=0), "refcoco+": perfect_and_noisy_results(coco, seed=1)}
    metrics = evaluate_refcoco_sets({"refcoco": coco, "refcoco+": coco}, results)
    separately = {name: evaluate_refcoco(coco, set_results) for name, set_results in results.items()}
    assert set(metrics) == {f"{name} {key}" for name in results for key in separately["refcoco"]} | {
        "segm mAP 0.5:0.95"
    }
    for name, set_metrics in separately.items():
        for key, value in set_metrics.items():
            assert metrics[f"{name} {key}"] == value
    for name in results:
        assert metrics[f"{name} samples"] == len(coco.getImgIds())
        predicted = {result["image_id"] for result in results[name]}
        assert metrics[f"{name} unpredicted_samples"] == len(set(coco.getImgIds()) - predicted)
    primary = [separately[name]["segm mAP 0.5:0.95"] for name in results]
    assert primary[0] != primary[1]
    assert metrics["segm mAP 0.5:0.95"] == pytest.approx(sum(primary) / 2)
