"""The original's GIoU form (loss.giou_form: reference): values and gradients against a naive scalar loop,
and its use by the matcher and the criterion."""

from __future__ import annotations

import pytest
import torch
from support import make_batch
from torchvision.ops import box_convert

from wavecl.config import Config, LossConfig
from wavecl.training.criterion import SetCriterion
from wavecl.training.giou import reference_generalized_iou
from wavecl.training.matcher import HungarianMatcher, NonFiniteCostError
from wavecl.training.trainer import build_criterion

EPS = 1e-6


def naive_giou(a: list[float], b: list[float]) -> float:
    """The original's GIoU of two xyxy boxes, one Python float at a time."""
    overlap = max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - overlap
    hull = max(0.0, max(a[2], b[2]) - min(a[0], b[0])) * max(0.0, max(a[3], b[3]) - min(a[1], b[1]))
    return (overlap + EPS) / (union + EPS) - (hull - union + EPS) / (hull + EPS)


def numeric_gradient(a: list[float], b: list[float], step: float = 1e-9) -> list[float]:
    """Central differences of :func:`naive_giou` with respect to ``a``."""
    gradient = []
    for i in range(4):
        up, down = list(a), list(a)
        up[i] += step
        down[i] -= step
        gradient.append((naive_giou(up, b) - naive_giou(down, b)) / (2 * step))
    return gradient


def box_pairs() -> tuple[torch.Tensor, torch.Tensor]:
    """xyxy pairs (float64): random, identical, nested, disjoint, touching, tiny and empty boxes."""
    generator = torch.Generator().manual_seed(3)
    corners = torch.rand(24, 2, 2, generator=generator, dtype=torch.float64)
    boxes = torch.cat([corners.min(dim=1).values, corners.max(dim=1).values], dim=1)
    targets = boxes.roll(1, dims=0).clone()
    special = [
        ([0.2, 0.2, 0.6, 0.6], [0.2, 0.2, 0.6, 0.6]),  # identical
        ([0.3, 0.3, 0.4, 0.4], [0.1, 0.1, 0.9, 0.9]),  # nested
        ([0.0, 0.0, 0.2, 0.2], [0.5, 0.5, 0.7, 0.8]),  # disjoint
        ([0.1, 0.1, 0.3, 0.3], [0.3, 0.1, 0.5, 0.3]),  # touching
        ([0.5, 0.5, 0.5 + 1e-4, 0.5 + 1e-4], [0.0, 0.0, 0.0, 0.0]),  # tiny box, an absent object's zero box
        ([0.5, 0.5, 0.5 + 3e-3, 0.5 + 2e-3], [0.0, 0.0, 0.0, 0.0]),  # small box, zero box
        ([0.4, 0.4, 0.4, 0.7], [0.1, 0.1, 0.3, 0.3]),  # zero width
        ([0.5, 0.5, 0.5, 0.5], [0.0, 0.0, 0.0, 0.0]),  # two empty boxes
    ]
    boxes = torch.cat([boxes, torch.tensor([p for p, _ in special], dtype=torch.float64)])
    targets = torch.cat([targets, torch.tensor([t for _, t in special], dtype=torch.float64)])
    return boxes, targets


def test_values_and_gradients_equal_the_naive_formula():
    boxes, targets = box_pairs()
    boxes.requires_grad_()
    giou = reference_generalized_iou(boxes, targets)
    giou.sum().backward()
    checked = []
    for i, (a, b) in enumerate(zip(boxes.tolist(), targets.tolist())):
        assert giou[i].item() == pytest.approx(naive_giou(a, b), rel=1e-12, abs=1e-12), (a, b)
        # Central differences across a kink (touching or clamped edges) are one-sided averages: skip those.
        if all(abs(a[k] - b[j]) > 1e-8 for k in range(4) for j in range(4)):
            assert boxes.grad[i].tolist() == pytest.approx(numeric_gradient(a, b), rel=1e-5, abs=1e-5), (a, b)
            checked.append(i)
    assert set(range(len(boxes) - 4, len(boxes))) <= set(checked)  # the tiny, zero-width and empty boxes


def test_pairwise_matrix_equals_the_pairs():
    boxes, targets = box_pairs()
    matrix = reference_generalized_iou(boxes[:, None], targets[None])
    assert matrix.shape == (len(boxes), len(targets))
    for i in range(0, len(boxes), 5):
        for j in range(0, len(targets), 7):
            assert matrix[i, j].item() == pytest.approx(naive_giou(boxes[i].tolist(), targets[j].tolist()), abs=1e-12)


def test_tiny_box_against_an_absent_object_gets_gradients_of_opposite_sign():
    """docs/differences.md#giou: the original's loss shrinks a tiny box on a frame without the object."""
    target = torch.zeros(1, 4, dtype=torch.float64)
    box = torch.tensor([[0.5, 0.5, 1e-4, 1e-4]], dtype=torch.float64, requires_grad=True)  # cxcywh
    losses = {}
    for form in ("torchvision", "reference"):
        criterion = SetCriterion(HungarianMatcher(), num_classes=1, loss=LossConfig(giou_form=form))
        (gradient,) = torch.autograd.grad(_giou_term(criterion, box, target), box)
        losses[form] = gradient[0, 2].item()  # d loss / d width
    assert losses["reference"] > 0 > losses["torchvision"]


def _giou_term(criterion: SetCriterion, box: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The criterion's loss_giou for one frame, one clip, one query matched to the target."""
    outputs, targets = make_batch(1, 1, Q=1, K=1, num_aux=0)
    targets[0][0].boxes = target
    outputs.pred_boxes = box.reshape(1, 1, 1, 4)
    first = torch.tensor([0])
    return criterion.box_losses(outputs, targets, first, first, [first], 1.0)["loss_giou"]


def test_criterion_loss_giou_uses_the_switch():
    outputs, targets = make_batch(3, 2, Q=4, K=1)
    for row in targets:  # a tiny predicted box facing every absent object
        for b, target in enumerate(row):
            if not target.is_visible:
                outputs.pred_boxes.data[:, b, :, 2:] = 1e-3
    criterion = SetCriterion(HungarianMatcher(giou_form="reference"), 1, LossConfig(giou_form="reference"))
    losses = criterion(outputs, targets)
    for suffix, layer in [("", outputs), ("_0", outputs.aux_outputs[0]), ("_1", outputs.aux_outputs[1])]:
        indices = criterion.matcher(layer, targets)
        expected = 0.0
        for t, row in enumerate(targets):
            for b, target in enumerate(row):
                q = int(indices[b][0][0])
                pred = box_convert(layer.pred_boxes[t, b, q].double(), "cxcywh", "xyxy").tolist()
                expected += 1 - naive_giou(pred, box_convert(target.boxes[0].double(), "cxcywh", "xyxy").tolist())
        assert losses["loss_giou" + suffix].item() == pytest.approx(expected / 6, rel=1e-5)
    default = SetCriterion(HungarianMatcher(), 1)(outputs, targets)
    assert default["loss_giou"].item() != pytest.approx(losses["loss_giou"].item(), rel=1e-3)


def test_matcher_giou_cost_uses_the_switch():
    outputs, targets = make_batch(2, 1, Q=3, K=1)
    pred = outputs.pred_boxes.detach()[:, 0]
    target_boxes = torch.stack([row[0].boxes for row in targets])
    cost = HungarianMatcher(giou_form="reference").giou_cost(pred, target_boxes)
    for q in range(3):
        naive = [
            naive_giou(
                box_convert(pred[t, q].double(), "cxcywh", "xyxy").tolist(),
                box_convert(target_boxes[t, 0].double(), "cxcywh", "xyxy").tolist(),
            )
            for t in range(2)
        ]
        assert cost[q, 0].item() == pytest.approx(-sum(naive) / 2, rel=1e-5)


def test_matcher_reference_form_is_finite_for_empty_boxes():
    """Two empty boxes are 0/0 in torchvision's form (the matcher refuses the step); finite in the original's."""
    outputs, targets = make_batch(1, 1, Q=2, K=1, num_aux=0)
    targets[0][0].boxes = torch.zeros(1, 4)
    outputs.pred_boxes.data[0, 0, 0] = torch.tensor([0.0, 0.0, 0.0, 0.0])
    with pytest.raises(NonFiniteCostError, match="cost_giou"):
        HungarianMatcher()(outputs, targets)
    matcher = HungarianMatcher(giou_form="reference")
    matcher(outputs, targets)
    cost = matcher.giou_cost(outputs.pred_boxes[:, 0].detach(), torch.zeros(1, 1, 4))
    assert cost[0, 0].item() == pytest.approx(-naive_giou([0.0] * 4, [0.0] * 4))


def test_config_switch_reaches_matcher_and_criterion():
    config = Config()
    config.loss.giou_form = "reference"
    criterion = build_criterion(config)
    assert criterion.giou_form == criterion.matcher.giou_form == "reference"
    assert build_criterion(Config()).matcher.giou_form == "torchvision"
    with pytest.raises(ValueError, match="giou_form"):
        HungarianMatcher(giou_form="detr")
