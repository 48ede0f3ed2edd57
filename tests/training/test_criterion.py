"""SetCriterion: every term against an independent computation, num_masks, aux keys, gradients."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from support import make_batch
from torchvision.ops import box_convert, generalized_box_iou, generalized_box_iou_loss, sigmoid_focal_loss

from wavecl.config import LossConfig
from wavecl.model.output import NonFiniteOutputError, WaveCLOutput
from wavecl.training import criterion as criterion_module
from wavecl.training.criterion import SetCriterion, dice_loss, giou_loss
from wavecl.training.matcher import HungarianMatcher, NonFiniteCostError

TERMS = ["loss_con", "loss_dice", "loss_sigmoid_focal", "loss_cls", "loss_bbox", "loss_giou"]


def reference_losses(layer: WaveCLOutput, targets, indices, num_classes: int) -> dict[str, float]:
    """The six terms of docs/training.md#losses, frame by frame and clip by clip."""
    T, B, Q = layer.pred_cls.shape[:3]
    num_masks = T * B
    height = max(row[b].masks.shape[-2] for row in targets for b in range(B))
    width = max(row[b].masks.shape[-1] for row in targets for b in range(B))
    focal = dice = l1 = giou = 0.0
    for t in range(T):
        for b in range(B):
            q = int(indices[b][0][0])
            target = targets[t][b]
            padded = torch.zeros(height, width)
            padded[: target.masks.shape[-2], : target.masks.shape[-1]] = target.masks[0].float()
            logits = F.interpolate(layer.pred_masks[t, b, q][None, None], size=(height, width), mode="bilinear")[0, 0]
            focal += sigmoid_focal_loss(logits, padded, alpha=0.25, gamma=2, reduction="mean").item()
            p = logits.sigmoid()
            dice += 1 - (2 * (p * padded).sum().item() + 1) / (p.sum().item() + padded.sum().item() + 1)
            pred_box, target_box = layer.pred_boxes[t, b, q], target.boxes[0]
            l1 += (pred_box - target_box).abs().sum().item()
            giou += (
                1
                - generalized_box_iou(
                    box_convert(pred_box[None], "cxcywh", "xyxy"), box_convert(target_box[None], "cxcywh", "xyxy")
                ).item()
            )
    cls = 0.0
    for t in range(T):
        for b in range(B):
            q_b = int(indices[b][0][0])
            for q in range(Q):
                for k in range(num_classes):
                    positive_class = 0 if num_classes == 1 else int(targets[t][b].labels[0])
                    y = float(targets[t][b].is_visible and q == q_b and k == positive_class)
                    p = torch.sigmoid(layer.pred_cls[t, b, q, k]).item()
                    p_t = p * y + (1 - p) * (1 - y)
                    alpha_t = 0.25 * y + 0.75 * (1 - y)
                    cls += alpha_t * (1 - p_t) ** 2 * -math.log(p_t)
    con = 0.0
    C = layer.video_queries.shape[-1]
    for b in range(B):
        z = (layer.video_queries[b] @ layer.text_sentence_feature[b]) / C
        con += -torch.log_softmax(z, 0)[int(indices[b][0][0])].item()
    return {
        "loss_con": con / B,
        "loss_dice": dice / num_masks,
        "loss_sigmoid_focal": focal / num_masks,
        "loss_cls": cls / num_masks,
        "loss_bbox": l1 / num_masks,
        "loss_giou": giou / num_masks,
    }


@pytest.mark.parametrize(("T", "B", "K"), [(2, 2, 1), (3, 3, 4), (1, 1, 1)])
def test_every_term_of_every_layer_matches_independent_computation(T, B, K):
    outputs, targets = make_batch(T, B, Q=5, K=K)
    matcher = HungarianMatcher()
    criterion = SetCriterion(matcher, num_classes=K)
    losses = criterion(outputs, targets)

    expected_keys = TERMS + [f"{k}_{i}" for i in range(2) for k in TERMS]
    assert sorted(losses) == sorted(expected_keys) == sorted(criterion.weight_dict)
    layers = {"": outputs, "_0": outputs.aux_outputs[0], "_1": outputs.aux_outputs[1]}
    for suffix, layer in layers.items():
        reference = reference_losses(layer, targets, matcher(layer, targets), K)
        for term, value in reference.items():
            assert losses[term + suffix].item() == pytest.approx(value, rel=1e-4, abs=1e-6), term + suffix


def test_contrastive_loss_is_cross_entropy_over_queries():
    outputs, targets = make_batch(2, 3, Q=6, K=1)
    criterion = SetCriterion(HungarianMatcher(), num_classes=1)
    indices = criterion.matcher(outputs, targets)
    referred = torch.cat([query for query, _ in indices])
    logits = torch.einsum("bqc,bc->bq", outputs.video_queries, outputs.text_sentence_feature) / 16
    torch.testing.assert_close(criterion(outputs, targets)["loss_con"], F.cross_entropy(logits, referred))


def test_num_masks_is_frames_times_clips():
    for T, B in [(1, 2), (8, 1), (3, 4)]:
        _, targets = make_batch(T, B, Q=3, K=1)
        assert SetCriterion.num_masks(targets, torch.device("cpu")).item() == T * B


def test_num_masks_is_averaged_over_processes(monkeypatch):
    # Two ranks holding 2 and 6 target masks: every rank normalises by (2 + 6) / 2 = 4.
    _, targets = make_batch(1, 2, Q=3, K=1)
    monkeypatch.setattr(criterion_module, "all_reduce_mean", lambda count: (count + 6.0) / 2)
    assert SetCriterion.num_masks(targets, torch.device("cpu")).item() == 4.0
    # A rank whose batch has no target never divides by less than 1.
    monkeypatch.setattr(criterion_module, "all_reduce_mean", lambda count: count * 0.25)
    assert SetCriterion.num_masks(targets, torch.device("cpu")).item() == 1.0


def test_dice_loss_matches_hand_value():
    logits = torch.tensor([[0.0, 0.0], [math.log(3), -math.log(3)]])
    target = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    expected = (1 - (2 * 0.5 + 1) / (1 + 1 + 1)) + (1 - (2 * 1.0 + 1) / (1 + 2 + 1))
    assert dice_loss(logits, target, 2.0).item() == pytest.approx(expected / 2)


def test_weighted_total_and_gradients_are_finite():
    outputs, targets = make_batch(2, 2, Q=4, K=1)
    weights = LossConfig(con=1.0, dice=5.0, sigmoid_focal=2.0, cls=3.0, bbox=2.0, giou=0.5)
    criterion = SetCriterion(HungarianMatcher(), num_classes=1, loss=weights)
    losses = criterion(outputs, targets)
    total = criterion.weighted_total(losses)
    by_hand = sum(
        losses[f"{term}{suffix}"] * w
        for suffix in ["", "_0", "_1"]
        for term, w in zip(TERMS, [1.0, 5.0, 2.0, 3.0, 2.0, 0.5])
    )
    torch.testing.assert_close(total, by_hand)
    total.backward()
    for layer in [outputs, *outputs.aux_outputs]:
        for tensor in [layer.pred_masks, layer.pred_cls, layer.pred_boxes, layer.video_queries]:
            assert tensor.grad is not None and torch.isfinite(tensor.grad).all() and tensor.grad.abs().sum() > 0
    assert torch.isfinite(outputs.text_sentence_feature.grad).all()


def test_weights_of_keys_and_unknown_keys_rejected():
    criterion = SetCriterion(HungarianMatcher(), num_classes=1)
    weights = criterion.weight_dict
    assert weights["loss_sigmoid_focal_1"] == 2.0
    assert weights["loss_con"] == 1.0
    assert weights["loss_dice_0"] == 5.0
    with pytest.raises(KeyError, match="loss_mask"):
        criterion.weighted_total({"loss_dice": torch.tensor(1.0), "loss_mask": torch.tensor(1.0)})


def test_layer_count_and_label_range_are_checked():
    outputs, targets = make_batch(1, 2, Q=3, K=1, num_aux=1)
    with pytest.raises(ValueError, match="auxiliary layers"):
        SetCriterion(HungarianMatcher(), num_classes=1)(outputs, targets)
    outputs, targets = make_batch(1, 2, Q=3, K=3)
    targets[0][0].labels = torch.tensor([7])
    with pytest.raises(ValueError, match="out of range"):
        SetCriterion(HungarianMatcher(), num_classes=3)(outputs, targets)


def test_giou_loss_equals_torchvision_values_and_gradients():
    """Overlapping, touching, disjoint, nested, identical and degenerate (all-zero target) pairs."""
    generator = torch.Generator().manual_seed(0)
    corners = torch.rand(64, 2, 2, generator=generator)
    boxes = torch.cat([corners.min(dim=1).values, corners.max(dim=1).values], dim=1)
    targets = boxes.roll(1, dims=0).clone()
    targets[:4] = boxes[:4]  # identical
    targets[4] = 0  # an invisible frame's zero box
    targets[5] = torch.tensor([boxes[5, 2], boxes[5, 1], boxes[5, 2] + 0.1, boxes[5, 3]])  # touching
    ours_input = boxes.clone().requires_grad_()
    reference_input = boxes.clone().requires_grad_()
    ours = giou_loss(ours_input, targets)
    reference = generalized_box_iou_loss(reference_input, targets, reduction="none")
    torch.testing.assert_close(ours, reference)
    ours.sum().backward()
    reference.sum().backward()
    torch.testing.assert_close(ours_input.grad, reference_input.grad)


def test_nonfinite_matching_costs_name_their_decoder_layer():
    outputs, targets = make_batch(2, 2, Q=5, K=1)
    with torch.no_grad():
        outputs.aux_outputs[1].pred_masks[0, 1, 2, 0, 0] = float("nan")
    with pytest.raises(NonFiniteCostError, match=r"\['cost_dice_1'\] for clip 1"):
        SetCriterion(HungarianMatcher(), num_classes=1)(outputs, targets)


def test_nonfinite_outputs_are_named_per_layer():
    outputs, _ = make_batch(2, 2, Q=5, K=1)
    assert outputs.nonfinite() == []
    with torch.no_grad():
        outputs.pred_boxes[0, 0, 0, 0] = float("inf")
        outputs.aux_outputs[0].video_queries[1, 0, 0] = float("nan")
    assert outputs.nonfinite() == ["pred_boxes", "aux_outputs[0].video_queries"]
    expected = r"\['pred_boxes', 'aux_outputs\[0\]\.video_queries'\] .* for clip 7"
    with pytest.raises(NonFiniteOutputError, match=expected):
        outputs.require_finite("clip 7")
