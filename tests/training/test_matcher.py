"""HungarianMatcher: hand-computed costs, per-clip visibility, no-visible fallback, brute-force optimality."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from torchvision.ops import box_convert, generalized_box_iou

from wavecl.data.types import FrameTarget
from wavecl.model.output import WaveCLOutput
from wavecl.training.matcher import HungarianMatcher, NonFiniteCostError


def frame_target(mask: torch.Tensor, box: list[float], label: int, visible: bool) -> FrameTarget:
    size = tuple(mask.shape[-2:])
    return FrameTarget(
        masks=mask.bool().reshape(1, *size),
        boxes=torch.tensor([box]),
        labels=torch.tensor([label]),
        is_visible=visible,
        orig_size=size,
        size=size,
    )


def random_outputs(T: int, B: int, Q: int, K: int, h: int, w: int, C: int = 8, seed: int = 0) -> WaveCLOutput:
    generator = torch.Generator().manual_seed(seed)
    return WaveCLOutput(
        pred_masks=torch.randn(T, B, Q, h, w, generator=generator) * 2,
        pred_cls=torch.randn(T, B, Q, K, generator=generator) * 2,
        pred_boxes=torch.rand(T, B, Q, 4, generator=generator) * 0.5 + 0.25,
        video_queries=torch.randn(B, Q, C, generator=generator),
        text_sentence_feature=torch.randn(B, C, generator=generator),
    )


def random_targets(T: int, B: int, K: int, visibility: list[list[bool]], sizes: list[tuple[int, int]], seed: int = 1):
    """``visibility[b][t]``; ``sizes[b]`` is clip b's unpadded size."""
    generator = torch.Generator().manual_seed(seed)
    grid = []
    for t in range(T):
        row = []
        for b in range(B):
            visible = visibility[b][t]
            mask = (torch.rand(*sizes[b], generator=generator) > 0.6) & visible
            box = (torch.rand(4, generator=generator) * 0.4 + 0.3).tolist() if visible else [0.0] * 4
            row.append(frame_target(mask, box, label=(b + 1) % K, visible=visible))
        grid.append(row)
    return grid


def brute_force_cost(matcher: HungarianMatcher, outputs: WaveCLOutput, targets, b: int, q: int, m: int) -> float:
    """The matching cost of query q and instance m of clip b, one frame and one number at a time."""
    T = len(targets)
    height = max(row[i].masks.shape[-2] for row in targets for i in range(len(row)))
    width = max(row[i].masks.shape[-1] for row in targets for i in range(len(row)))
    dice, l1, giou, class_terms = 0.0, 0.0, 0.0, {}
    for t in range(T):
        target = targets[t][b]
        padded = torch.zeros(height, width)
        padded[: target.masks.shape[-2], : target.masks.shape[-1]] = target.masks[m].float()
        logits = outputs.pred_masks[t, b, q][None, None]
        prob = F.interpolate(logits, size=(height, width), mode="bilinear", align_corners=False)[0, 0].sigmoid()
        dice += (2 * (prob * padded).sum().item() + 1) / (prob.sum().item() + padded.sum().item() + 1)
        pred_box, target_box = outputs.pred_boxes[t, b, q], target.boxes[m]
        l1 += sum(abs(a - c) for a, c in zip(pred_box.tolist(), target_box.tolist()))
        giou += generalized_box_iou(
            box_convert(pred_box[None], "cxcywh", "xyxy"), box_convert(target_box[None], "cxcywh", "xyxy")
        ).item()
        column = int(target.labels[m]) if outputs.pred_cls.shape[-1] > 1 else 0
        p = torch.sigmoid(outputs.pred_cls[t, b, q, column]).item()
        alpha, gamma = matcher.focal_alpha, matcher.focal_gamma
        positive = alpha * (1 - p) ** gamma * -math.log(p + 1e-8)
        negative = (1 - alpha) * p**gamma * -math.log(1 - p + 1e-8)
        class_terms[t] = positive - negative
    visible = [t for t in range(T) if targets[t][b].is_visible] or list(range(T))
    class_cost = sum(class_terms[t] for t in visible) / len(visible)
    similarity = outputs.video_queries[b] @ outputs.text_sentence_feature[b]
    contrastive = -similarity.softmax(0)[q].item()
    return (
        matcher.cost_class * class_cost
        - matcher.cost_dice * dice / T
        + matcher.cost_bbox * l1 / T
        - matcher.cost_giou * giou / T
        + matcher.cost_con * contrastive
    )


def test_hand_computed_costs_two_frames_one_invisible():
    # Frame 0: object visible at the top-left pixel; frame 1: invisible (empty mask, zero box).
    targets = [
        [frame_target(torch.tensor([[1, 0], [0, 0]]), [0.5, 0.5, 0.2, 0.2], 0, True)],
        [frame_target(torch.zeros(2, 2), [0.0, 0.0, 0.0, 0.0], 0, False)],
    ]
    l3 = math.log(3)
    pred_masks = torch.zeros(2, 1, 2, 2, 2)  # query 0: p = 0.5 everywhere
    pred_masks[0, 0, 1] = torch.tensor([[l3, -l3], [-l3, -l3]])  # query 1, frame 0: p = 0.75, 0.25, 0.25, 0.25
    pred_masks[1, 0, 1] = -l3  # query 1, frame 1: p = 0.25 everywhere
    pred_cls = torch.tensor([[0.0, l3], [-3.0, 4.0]]).reshape(2, 1, 2, 1)  # frame 1 must not count
    pred_boxes = torch.tensor([[0.5, 0.5, 0.2, 0.2], [0.4, 0.5, 0.2, 0.2]]).expand(2, 1, 2, 4).clone()
    outputs = WaveCLOutput(pred_masks, pred_cls, pred_boxes, torch.zeros(1, 2, 4), torch.zeros(1, 4))

    # Per query: dice of frame 0 and frame 1, L1 of frames 0 and 1, GIoU of frames 0 and 1.
    dice = [(2 / 4 + 1 / 3) / 2, (5 / 7 + 1 / 2) / 2]
    l1 = [(0.0 + 1.4) / 2, (0.1 + 1.3) / 2]
    giou = [(1 - 8 / 9) / 2, (1 / 3 - 13 / 15) / 2]
    # Class cost of frame 0 only: p = 0.5 for query 0, p = 0.75 for query 1.
    cls = [
        0.25 * 0.25 * math.log(2) - 0.75 * 0.25 * math.log(2),
        0.25 / 16 * math.log(4 / 3) - 0.75 * 9 / 16 * math.log(4),
    ]
    matcher = HungarianMatcher()
    torch.testing.assert_close(
        matcher.dice_cost(pred_masks[:, 0], torch.stack([t[0].masks.float() for t in targets])),
        -torch.tensor(dice)[:, None],
    )
    boxes = torch.stack([t[0].boxes for t in targets])
    torch.testing.assert_close(matcher.l1_cost(pred_boxes[:, 0], boxes), torch.tensor(l1)[:, None])
    torch.testing.assert_close(matcher.giou_cost(pred_boxes[:, 0], boxes), -torch.tensor(giou)[:, None])
    torch.testing.assert_close(
        matcher.class_cost(pred_cls[:, 0], torch.tensor([0]), [True, False]), torch.tensor(cls)[:, None]
    )
    expected = [2 * cls[q] - 5 * dice[q] + 2 * l1[q] - 2 * giou[q] for q in range(2)]
    costs = matcher.clip_costs(outputs, 0, [t[0] for t in targets], (2, 2))
    assert sorted(costs) == ["cost_bbox", "cost_class", "cost_dice", "cost_giou"]
    torch.testing.assert_close(sum(costs.values()), torch.tensor(expected)[:, None])
    [(query, target)] = matcher(outputs, targets)
    assert query.tolist() == [min(range(2), key=expected.__getitem__)] and target.tolist() == [0]


@pytest.mark.parametrize("num_classes", [1, 3])
def test_batch_with_different_visible_counts_matches_brute_force(num_classes):
    T, B, Q = 3, 4, 6
    # Clip 3 has no visible frame: the class cost falls back to all frames.
    visibility = [[True, True, True], [True, False, False], [False, True, True], [False, False, False]]
    sizes = [(12, 16), (10, 16), (12, 13), (9, 11)]
    outputs = random_outputs(T, B, Q, num_classes, h=3, w=4)
    targets = random_targets(T, B, num_classes, visibility, sizes)
    matcher = HungarianMatcher(cost_con=1.5)

    indices = matcher(outputs, targets)
    assert len(indices) == B
    for b, (query, target) in enumerate(indices):
        costs = [brute_force_cost(matcher, outputs, targets, b, q, 0) for q in range(Q)]
        assert all(math.isfinite(c) for c in costs)
        assert query.tolist() == [min(range(Q), key=costs.__getitem__)] and target.tolist() == [0]
        assert query.dtype == torch.long
        torch.testing.assert_close(
            sum(matcher.clip_costs(outputs, b, [row[b] for row in targets], (12, 16)).values())[:, 0]
            - 1.5 * (outputs.video_queries[b] @ outputs.text_sentence_feature[b]).softmax(0),
            torch.tensor(costs, dtype=torch.float32),
            rtol=1e-4,
            atol=1e-5,
        )


def test_clip_without_visible_frame_averages_over_all_frames():
    logits = torch.randn(4, 5, 1)
    matcher = HungarianMatcher()
    no_frame = matcher.class_cost(logits, torch.tensor([0]), torch.zeros(4, dtype=torch.bool))
    all_frames = matcher.class_cost(logits, torch.tensor([0]), torch.ones(4, dtype=torch.bool))
    assert torch.isfinite(no_frame).all()
    torch.testing.assert_close(no_frame, all_frames)


def test_several_instances_per_clip_equal_exhaustive_assignment():
    T, Q, M = 2, 4, 2
    outputs = random_outputs(T, 1, Q, 1, h=4, w=4, seed=3)
    generator = torch.Generator().manual_seed(4)
    targets = []
    for _ in range(T):
        masks = torch.rand(M, 8, 8, generator=generator) > 0.5
        boxes = torch.rand(M, 4, generator=generator) * 0.4 + 0.3
        targets.append([FrameTarget(masks, boxes, torch.zeros(M, dtype=torch.long), True, (8, 8), (8, 8))])
    matcher = HungarianMatcher()
    [(query, target)] = matcher(outputs, targets)
    cost = [[brute_force_cost(matcher, outputs, targets, 0, q, m) for m in range(M)] for q in range(Q)]
    best = min(itertools.permutations(range(Q), M), key=lambda qs: sum(cost[q][m] for m, q in enumerate(qs)))
    assignment = dict(zip(target.tolist(), query.tolist()))
    assert [assignment[m] for m in range(M)] == list(best)


def test_incomplete_targets_are_rejected():
    outputs = random_outputs(2, 1, 3, 1, h=2, w=2)
    target = frame_target(torch.ones(4, 4), [0.5, 0.5, 0.5, 0.5], 0, True)
    with pytest.raises(ValueError, match="targets\\[1\\]\\[0\\] is None"):
        HungarianMatcher()(outputs, [[target], [None]])
    with pytest.raises(ValueError, match="T=2"):
        HungarianMatcher()(outputs, [[target]])


def test_out_of_range_label_is_named():
    """The error names the frame target whose label lies outside ``[0, K)``; in-range labels pass."""
    K = 3
    outputs = random_outputs(2, 2, 3, K, h=2, w=2)
    targets = random_targets(2, 2, K, visibility=[[True, True], [True, False]], sizes=[(4, 4), (4, 6)])
    HungarianMatcher()(outputs, targets)
    targets[1][0].labels = torch.tensor([K])
    with pytest.raises(ValueError, match=r"targets\[1\]\[0\]\.labels \[3\] out of range for num_classes=3"):
        HungarianMatcher()(outputs, targets)
    targets[1][0].labels = torch.tensor([0])
    targets[0][1].labels = torch.tensor([-1])
    with pytest.raises(ValueError, match=r"targets\[0\]\[1\]\.labels \[-1\] out of range"):
        HungarianMatcher()(outputs, targets)


def test_nonfinite_costs_are_named_instead_of_failing_in_the_assignment():
    outputs = random_outputs(2, 3, 4, 1, h=2, w=2)
    targets = random_targets(2, 3, 1, visibility=[[True, True]] * 3, sizes=[(4, 4)] * 3)
    outputs.pred_boxes[1, 2, 3, 0] = float("nan")  # frame 1, clip 2, query 3
    with pytest.raises(NonFiniteCostError, match=r"\['cost_bbox', 'cost_giou'\] for clip 2") as caught:
        HungarianMatcher()(outputs, targets)
    assert caught.value.terms == ["cost_bbox", "cost_giou"] and caught.value.clip == 2

    outputs = random_outputs(2, 3, 4, 1, h=2, w=2)
    outputs.pred_cls[0, 0, 0, 0] = float("nan")
    with pytest.raises(NonFiniteCostError) as caught:
        HungarianMatcher()(outputs, targets)
    assert caught.value.terms == ["cost_class"] and caught.value.clip == 0

    outputs = random_outputs(2, 3, 4, 1, h=2, w=2)
    outputs.text_sentence_feature[1] = float("nan")
    with pytest.raises(NonFiniteCostError) as caught:
        HungarianMatcher(cost_con=0.0)(outputs, targets)  # 0 * NaN is still NaN
    assert caught.value.terms == ["cost_con"] and caught.value.clip == 1
