"""A2D/JHMDB metrics: P@K and IoU by hand, mAP against pycocotools called directly, dedup, evaluator."""

import contextlib
import io
import json

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from torch.utils.data import DistributedSampler

from wavecl.data.types import Batch, FrameTarget
from wavecl.evaluation.a2d import A2DEvaluator
from wavecl.evaluation.coco import (
    coco_segm_map,
    deduplicate_results,
    masks_to_coco_results,
    precision_and_iou,
    summarize_ious,
)
from wavecl.model.output import WaveCLOutput

H, W = 10, 12


def rect(y0: int, y1: int, x0: int, x1: int, height: int = H, width: int = W) -> np.ndarray:
    mask = np.zeros((height, width), dtype=np.uint8)
    mask[y0:y1, x0:x1] = 1
    return mask


def rle(mask: np.ndarray) -> dict:
    encoded = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": encoded["size"], "counts": encoded["counts"].decode("ascii")}


def ground_truth_dict(masks: dict[str, np.ndarray]) -> dict:
    """A2D-style COCO ground truth: string image ids, one annotation each, no 'info' key."""
    images, annotations = [], []
    for index, (image_id, mask) in enumerate(masks.items()):
        images.append({"id": image_id, "height": mask.shape[0], "width": mask.shape[1]})
        segmentation = rle(mask)
        annotations.append(
            {
                "id": index + 1,
                "image_id": image_id,
                "category_id": 1,
                "segmentation": segmentation,
                "area": float(mask_utils.area(segmentation)),
                "bbox": [float(v) for v in mask_utils.toBbox(segmentation)],
                "iscrowd": 0,
            }
        )
    return {"images": images, "annotations": annotations, "categories": [{"id": 1, "name": "dummy_class"}]}


def coco_from(dataset: dict) -> COCO:
    coco = COCO()
    coco.dataset = dataset
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def prediction(image_id: str, query: int, mask: np.ndarray, score: float) -> dict:
    return {"image_id": image_id, "query": query, "category_id": 1, "segmentation": rle(mask), "score": score}


GT_MASKS = {
    "v_a_f_1_i_0": rect(2, 6, 2, 8),  # 24 pixels
    "v_b_f_3_i_1": rect(0, 4, 0, 4),  # 16 pixels
    "v_c_f_5_i_0": rect(5, 9, 6, 12),  # 24 pixels, at least 32 px from nothing: a small object
}


def test_summarize_ious_hand_computed():
    # IoUs: (50 + e)/(100 + e) is just above 0.5, both-empty is exactly 1, empty GT vs a prediction ~ 0.
    metrics = summarize_ious([50, 0, 0], [100, 0, 100])
    eps = 1e-6
    ious = [(50 + eps) / (100 + eps), 1.0, eps / (100 + eps)]
    assert metrics["P@0.5"] == pytest.approx(2 / 3)
    assert metrics["P@0.6"] == pytest.approx(1 / 3)
    assert metrics["P@0.9"] == pytest.approx(1 / 3)
    assert metrics["overall_iou"] == pytest.approx(50 / 200)
    assert metrics["mean_iou"] == pytest.approx(sum(ious) / 3)


def test_summarize_ious_threshold_with_smoothing():
    # The smoothing pulls every IoU below 1 slightly up, so I/U = 0.7 exactly counts as "> 0.7"
    # (as in the reference), while 0.6999 does not.
    assert summarize_ious([7], [10])["P@0.7"] == 1.0
    assert summarize_ious([7], [10])["P@0.8"] == 0.0
    assert summarize_ious([6999], [10000])["P@0.7"] == 0.0


def test_precision_and_iou_perfect_disjoint_partial_and_ties():
    coco_gt = coco_from(ground_truth_dict(GT_MASKS))
    a, b, c = GT_MASKS
    predictions = [
        prediction(a, 0, GT_MASKS[a], 0.9),  # perfect
        prediction(a, 1, rect(0, 1, 0, 1), 0.2),
        prediction(b, 0, rect(6, 10, 6, 10), 0.7),  # disjoint: IoU 0
        prediction(c, 0, rect(0, 2, 0, 2), 0.4),  # tied top score, inserted first: loses
        prediction(c, 1, rect(5, 9, 6, 10), 0.4),  # 16 of the 24 GT pixels: IoU 2/3
    ]
    metrics = precision_and_iou(predictions, coco_gt)
    eps = 1e-6
    ious = [1.0, eps / (32 + eps), (16 + eps) / (24 + eps)]
    assert metrics["P@0.5"] == pytest.approx(2 / 3)
    assert metrics["P@0.6"] == pytest.approx(2 / 3)
    assert metrics["P@0.7"] == pytest.approx(1 / 3)
    assert metrics["P@0.9"] == pytest.approx(1 / 3)
    assert metrics["overall_iou"] == pytest.approx((24 + 0 + 16) / (24 + 32 + 24))
    assert metrics["mean_iou"] == pytest.approx(np.mean(ious))


def test_precision_and_iou_empty_prediction_of_empty_ground_truth_is_one():
    masks = {"v_e_f_1_i_0": np.zeros((H, W), dtype=np.uint8)}
    metrics = precision_and_iou(
        [prediction("v_e_f_1_i_0", 0, masks["v_e_f_1_i_0"], 0.5)], coco_from(ground_truth_dict(masks))
    )
    assert metrics["mean_iou"] == 1.0 and metrics["P@0.9"] == 1.0


def test_precision_and_iou_rejects_missing_images_and_size_mismatch():
    coco_gt = coco_from(ground_truth_dict(GT_MASKS))
    a, b, c = GT_MASKS
    with pytest.raises(ValueError, match="no prediction"):
        precision_and_iou([prediction(a, 0, GT_MASKS[a], 1.0)], coco_gt)
    wrong_size = [prediction(i, 0, rect(0, 2, 0, 2, 5, 5), 1.0) for i in GT_MASKS]
    with pytest.raises(ValueError, match="size"):
        precision_and_iou(wrong_size, coco_gt)


def random_predictions(seed: int, queries: int = 4) -> list[dict]:
    rng = np.random.default_rng(seed)
    predictions = []
    for image_id, gt in GT_MASKS.items():
        for query in range(queries):
            noise = rng.random((H, W)) < 0.15
            mask = np.where(rng.random() < 0.5, gt ^ noise, noise).astype(np.uint8)
            predictions.append(prediction(image_id, query, mask, float(rng.random())))
    return predictions


def direct_coco_stats(coco_gt: COCO, predictions: list[dict]) -> np.ndarray:
    with contextlib.redirect_stdout(io.StringIO()):
        detections = coco_gt.loadRes([dict(p) for p in predictions])
        evaluator = COCOeval(coco_gt, detections, iouType="segm")
        evaluator.params.useCats = 0
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return evaluator.stats


def test_coco_segm_map_equals_pycocotools_called_directly(tmp_path):
    dataset = ground_truth_dict(GT_MASKS)
    gt_path = tmp_path / "gt.json"
    gt_path.write_text(json.dumps(dataset))
    predictions = random_predictions(seed=3)
    expected = direct_coco_stats(coco_from(dataset), predictions)
    metrics = coco_segm_map(gt_path, predictions)
    assert list(metrics) == ["mAP 0.5:0.95", "AP 0.5", "AP 0.75", "AP 0.5:0.95 S", "AP 0.5:0.95 M", "AP 0.5:0.95 L"]
    np.testing.assert_array_equal(list(metrics.values()), expected[:6])
    assert 0 < metrics["mAP 0.5:0.95"] < 1
    assert "area" not in predictions[0]  # the caller's dicts are not modified by loadRes


def test_coco_segm_map_ground_truth_as_prediction_is_one():
    coco_gt = coco_from(ground_truth_dict(GT_MASKS))
    predictions = [prediction(i, 0, m, 1.0) for i, m in GT_MASKS.items()]
    metrics = coco_segm_map(coco_gt, predictions)
    assert metrics["mAP 0.5:0.95"] == 1.0 and metrics["AP 0.5"] == 1.0 and metrics["AP 0.75"] == 1.0
    assert metrics["AP 0.5:0.95 S"] == 1.0
    assert metrics["AP 0.5:0.95 M"] == -1.0  # no medium or large ground truth
    with pytest.raises(ValueError, match="not in the ground truth"):
        coco_segm_map(coco_gt, [prediction("v_unknown", 0, GT_MASKS["v_a_f_1_i_0"], 1.0)])


def test_coco_segm_map_missing_file_names_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.json"):
        coco_segm_map(tmp_path / "missing.json", [])


def test_masks_to_coco_results_round_trip():
    masks = torch.from_numpy(np.stack([GT_MASKS["v_a_f_1_i_0"], np.zeros((H, W), np.uint8)])).bool()
    results = masks_to_coco_results("v_a_f_1_i_0", torch.tensor([0.25, 0.75]), masks)
    assert [r["query"] for r in results] == [0, 1]
    assert [r["score"] for r in results] == [0.25, 0.75]
    assert all(r["category_id"] == 1 and r["image_id"] == "v_a_f_1_i_0" for r in results)
    assert isinstance(results[0]["segmentation"]["counts"], str)
    json.dumps(results)
    decoded = mask_utils.decode([r["segmentation"] for r in results])  # [H, W, Q]
    np.testing.assert_array_equal(decoded.transpose(2, 0, 1), masks.numpy())


def test_deduplicate_removes_distributed_sampler_padding():
    image_ids = list(GT_MASKS)
    dataset = list(range(len(image_ids)))  # 3 samples on 2 ranks: one sample is repeated as padding
    per_rank = [list(DistributedSampler(dataset, num_replicas=2, rank=r, shuffle=False)) for r in range(2)]
    assert sum(len(indices) for indices in per_rank) == 4
    gathered = []
    for indices in per_rank:
        for index in indices:
            gathered += [prediction(image_ids[index], q, GT_MASKS[image_ids[index]], 0.5 + q / 10) for q in range(2)]
    unique = deduplicate_results(gathered)
    assert len(gathered) == 8 and len(unique) == 6
    assert sorted((r["image_id"], r["query"]) for r in unique) == sorted((i, q) for i in image_ids for q in range(2))
    assert coco_segm_map(coco_from(ground_truth_dict(GT_MASKS)), unique)["mAP 0.5:0.95"] == 1.0


# Evaluator end to end. The padded input is 8x8 and the stride-4 logits 2x2; a 2x2 grid whose left
# column is positive upsamples (bilinear, x4) to foreground columns [0:4] (see test_postprocess.py).
LEFT = torch.tensor([[10.0, -10.0], [10.0, -10.0]])


def make_batch(image_ids: list[str], orig_sizes: list[tuple[int, int]]) -> Batch:
    """Two-frame clips whose second frame is annotated (resized 8x8, no padding)."""
    clips = len(image_ids)
    targets = [[None] * clips, []]
    for image_id, orig_size in zip(image_ids, orig_sizes):
        targets[1].append(
            FrameTarget(
                masks=torch.zeros(1, 8, 8, dtype=torch.bool),
                boxes=torch.zeros(1, 4),
                labels=torch.zeros(1, dtype=torch.long),
                is_visible=True,
                orig_size=orig_size,
                size=(8, 8),
                image_id=image_id,
            )
        )
    return Batch(
        frames=torch.zeros(2, clips, 3, 8, 8),
        pad_mask=torch.zeros(2, clips, 8, 8, dtype=torch.bool),
        targets=targets,
        texts=["a person"] * clips,
        image_sizes=torch.tensor([[8, 8]] * clips),
    )


def make_outputs(clips: int) -> WaveCLOutput:
    """Query 0: left half, score sigmoid(3); query 1: right half, sigmoid(0); query 2: empty, sigmoid(-3)."""
    queries = torch.stack([LEFT, LEFT.flip(1), torch.full((2, 2), -10.0)])
    return WaveCLOutput(
        pred_masks=queries.expand(1, clips, 3, 2, 2).clone(),
        pred_cls=torch.tensor([3.0, 0.0, -3.0]).view(1, 1, 3, 1).expand(1, clips, 3, 1).clone(),
        pred_boxes=torch.zeros(1, clips, 3, 4),
        video_queries=torch.zeros(clips, 3, 16),
        text_sentence_feature=torch.zeros(clips, 16),
    )


def test_a2d_evaluator_end_to_end(tmp_path):
    # Left half of the original frame: columns [0:4] of 8 (same size) and [0:2] of 4 (nearest 8 -> 4).
    masks = {"v_x_f_1_i_0": rect(0, 8, 0, 4, 8, 8), "v_y_f_2_i_0": rect(0, 4, 0, 2, 4, 4)}
    gt_path = tmp_path / "gt.json"
    gt_path.write_text(json.dumps(ground_truth_dict(masks)))
    results_path = tmp_path / "out" / "predictions.json"
    evaluator = A2DEvaluator(gt_path, results_path=results_path)
    batch = make_batch(list(masks), [(8, 8), (4, 4)])
    evaluator.update(make_outputs(2), batch)
    evaluator.update(make_outputs(2), batch)  # the same samples again, as sampler padding would add
    metrics = evaluator.summarize()

    assert metrics["mAP 0.5:0.95"] == 1.0
    assert metrics["P@0.9"] == 1.0 and metrics["mean_iou"] == 1.0 and metrics["overall_iou"] == 1.0
    assert metrics["samples"] == len(masks) and metrics["unpredicted_samples"] == 0

    # a sample without any prediction is counted (mAP scores it as a miss; P@K and IoU refuse it)
    alone = A2DEvaluator(gt_path, precision_metrics=False)
    alone.update(make_outputs(1), make_batch(list(masks)[:1], [(8, 8)]))
    counted = alone.summarize()
    assert counted["samples"] == len(masks) and counted["unpredicted_samples"] == len(masks) - 1
    saved = json.loads(results_path.read_text())
    assert len(saved) == 2 * 3
    assert sorted((r["image_id"], r["query"]) for r in saved) == sorted((i, q) for i in masks for q in range(3))
    assert [p.name for p in results_path.parent.iterdir()] == ["predictions.json"]


def test_a2d_evaluator_rejects_mismatched_outputs(tmp_path):
    evaluator = A2DEvaluator(coco_from(ground_truth_dict(GT_MASKS)))
    with pytest.raises(ValueError, match="annotated frames"):
        evaluator.update(make_outputs(3), make_batch(["v_a_f_1_i_0", "v_b_f_3_i_1"], [(8, 8), (8, 8)]))


def _distributed_worker(
    rank: int, world_size: int, init_file: str, gt_path: str, results_path: str, out_dir: str
) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    image_ids = ["v_x_f_1_i_0", "v_y_f_2_i_0", "v_z_f_3_i_0"]
    evaluator = A2DEvaluator(gt_path, results_path=results_path)
    for index in DistributedSampler(range(len(image_ids)), num_replicas=world_size, rank=rank, shuffle=False):
        evaluator.update(make_outputs(1), make_batch([image_ids[index]], [(8, 8)]))
    metrics = evaluator.summarize()
    with open(f"{out_dir}/metrics_{rank}.json", "w") as handle:
        json.dump({"metrics": metrics, "local": len(evaluator.results)}, handle)
    dist.destroy_process_group()


@pytest.mark.slow  # two spawned processes re-import torch: ~25 s on a busy CPU
def test_a2d_evaluator_gathers_across_ranks_without_duplicates(tmp_path):
    masks = {image_id: rect(0, 8, 0, 4, 8, 8) for image_id in ["v_x_f_1_i_0", "v_y_f_2_i_0", "v_z_f_3_i_0"]}
    gt_path = tmp_path / "gt.json"
    gt_path.write_text(json.dumps(ground_truth_dict(masks)))
    results_path = tmp_path / "predictions.json"
    torch.multiprocessing.spawn(
        _distributed_worker,
        args=(2, str(tmp_path / "init"), str(gt_path), str(results_path), str(tmp_path)),
        nprocs=2,
    )
    reports = [json.loads((tmp_path / f"metrics_{rank}.json").read_text()) for rank in range(2)]
    assert [r["local"] for r in reports] == [2 * 3, 2 * 3]  # rank 1 holds one padding duplicate
    assert reports[0]["metrics"] == reports[1]["metrics"]
    assert reports[0]["metrics"]["mAP 0.5:0.95"] == 1.0
    saved = json.loads(results_path.read_text())
    assert sorted((r["image_id"], r["query"]) for r in saved) == sorted((i, q) for i in masks for q in range(3))
