"""Hungarian matching of queries to the referred object, once per clip over all its frames (docs/training.md#matcher).

Each clip ``b`` has ``M_b`` target instances (one, the referred object, in every dataset of the paper).
The cost of assigning query ``q`` to instance ``m`` is averaged over the clip's frames, so a query keeps
the same identity through time, and ``scipy.optimize.linear_sum_assignment`` solves the ``[Q, M_b]``
problem per clip. With a single target this is the argmin over queries.

Differences from the reference (docs/differences.md#matcher): costs are computed clip by clip, so clips with
different numbers of visible frames can share a batch, and the class cost of a clip with no visible
frame averages over all frames instead of producing NaN.

A cost matrix holding NaN or inf (diverged predictions, or degenerate boxes whose GIoU is 0/0) is not
handed to ``linear_sum_assignment``, which would fail without saying why: :class:`NonFiniteCostError`
names the cost terms, so the trainer's ``train.nonfinite_loss`` policy can stop or skip the step.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, cast

import numpy as np
import torch
import torch.nn.functional as F
from einops import einsum, rearrange
from scipy.optimize import linear_sum_assignment
from torch import Tensor
from torchvision.ops import box_convert, generalized_box_iou

from wavecl.data.types import FrameTarget
from wavecl.model.output import WaveCLOutput
from wavecl.training.giou import reference_generalized_iou


class NonFiniteCostError(FloatingPointError):
    """A matching cost holds NaN or inf.

    Attributes:
        terms: the non-finite cost terms (``cost_class``, ``cost_dice``, ``cost_bbox``, ``cost_giou``,
            ``cost_con``), suffixed by the caller with the decoder layer (e.g. ``cost_giou_0``).
        clip: the clip of the batch whose costs are non-finite.
    """

    def __init__(self, terms: list[str], clip: int) -> None:
        super().__init__(f"non-finite matching costs {terms} for clip {clip} of the batch")
        self.terms = terms
        self.clip = clip


def check_targets(targets: list[list[FrameTarget]], num_frames: int, batch_size: int, num_classes: int) -> None:
    """Raise ``ValueError`` unless ``targets`` is a complete ``T x B`` grid of consistent frame targets.

    Args:
        targets: ``targets[t][b]`` for ``t < num_frames``, ``b < batch_size``.
        num_frames: ``T`` of the predictions.
        batch_size: ``B`` of the predictions.
        num_classes: ``K`` of the predictions; with ``K > 1`` every label must lie in ``[0, K)``
            (with ``K == 1`` labels are ignored).
    """
    if len(targets) != num_frames:
        raise ValueError(f"targets has {len(targets)} time steps but the predictions have T={num_frames}")
    for t, row in enumerate(targets):
        if len(row) != batch_size:
            raise ValueError(f"targets[{t}] has {len(row)} clips but the predictions have B={batch_size}")
        for b, target in enumerate(row):
            if target is None:
                raise ValueError(f"targets[{t}][{b}] is None: select the annotated frames (Batch.valid_frames) first")
            if target.masks.shape[0] != target.boxes.shape[0] or target.masks.shape[0] != target.labels.shape[0]:
                raise ValueError(
                    f"targets[{t}][{b}] has {target.masks.shape[0]} masks, {target.boxes.shape[0]} boxes "
                    f"and {target.labels.shape[0]} labels; they must agree"
                )
    if num_classes > 1:

        def out_of_range(labels: Tensor) -> Tensor:
            return ((labels < 0) | (labels >= num_classes)).any()

        # One host sync for the whole grid (the labels live on the GPU and this runs for every decoder
        # layer); the frame target to name is looked up only when some label is out of range.
        if out_of_range(torch.cat([target.labels for row in targets for target in row])):
            t, b = next(
                (t, b) for t, row in enumerate(targets) for b, target in enumerate(row) if out_of_range(target.labels)
            )
            raise ValueError(
                f"targets[{t}][{b}].labels {targets[t][b].labels.tolist()} out of range for num_classes={num_classes}"
            )
    for b in range(batch_size):
        counts = {targets[t][b].masks.shape[0] for t in range(num_frames)}
        if len(counts) != 1:
            raise ValueError(f"clip {b} has a different number of target instances per frame: {sorted(counts)}")


def padded_target_size(targets: list[list[FrameTarget]]) -> tuple[int, int]:
    """The largest ``(H', W')`` over all frame targets of the batch, i.e. the padded input size."""
    heights, widths = zip(*(target.masks.shape[-2:] for row in targets for target in row))
    return max(heights), max(widths)


def pad_masks(masks: Tensor, size: tuple[int, int]) -> Tensor:
    """Zero-pad masks at the bottom and right.

    Args:
        masks: ``[..., H', W']`` bool or float.
        size: ``(H, W)`` with ``H >= H'`` and ``W >= W'``.

    Returns:
        ``[..., H, W]`` float.
    """
    height, width = masks.shape[-2:]
    return F.pad(masks.float(), (0, size[1] - width, 0, size[0] - height))


class HungarianMatcher:
    """Assign each clip's target instances to queries by minimum frame-averaged cost.

    The cost of query ``q`` for instance ``m`` of clip ``b`` is

    ``cost_class * class + cost_dice * (-dice) + cost_bbox * L1 + cost_giou * (-GIoU) + cost_con * con``

    where dice, L1 and GIoU are averaged over all ``T`` frames (including frames where the object is
    invisible and the target is empty), the focal-style class cost ``α(1-p)^γ(-log p) - (1-α)p^γ(-log(1-p))``
    is averaged over the frames where the object is visible (over all frames if there are none), and
    ``con = -softmax_q⟨V_q, s⟩`` is the reference's contrastive cost (not divided by ``C``).

    Args:
        cost_class, cost_dice, cost_bbox, cost_giou, cost_con: weights of the cost terms.
        focal_alpha, focal_gamma: parameters of the class cost.
        giou_form: ``"torchvision"`` (``torchvision.ops.generalized_box_iou``, 0/0 for two empty boxes) or
            ``"reference"`` (:func:`~wavecl.training.giou.reference_generalized_iou`, the original's form).
    """

    def __init__(
        self,
        cost_class: float = 2.0,
        cost_dice: float = 5.0,
        cost_bbox: float = 2.0,
        cost_giou: float = 2.0,
        cost_con: float = 0.0,
        focal_alpha: float = 0.25,
        focal_gamma: float = 2.0,
        giou_form: Literal["torchvision", "reference"] = "torchvision",
    ) -> None:
        if giou_form not in ("torchvision", "reference"):
            raise ValueError(f"giou_form must be 'torchvision' or 'reference', got {giou_form!r}")
        self.cost_class = cost_class
        self.cost_dice = cost_dice
        self.cost_bbox = cost_bbox
        self.cost_giou = cost_giou
        self.cost_con = cost_con
        self.focal_alpha = focal_alpha
        self.focal_gamma = focal_gamma
        self.giou_form = giou_form

    @torch.no_grad()
    def __call__(self, outputs: WaveCLOutput, targets: list[list[FrameTarget]]) -> list[tuple[Tensor, Tensor]]:
        """Match one decoder layer.

        Args:
            outputs: ``pred_masks [T, B, Q, h, w]``, ``pred_cls [T, B, Q, K]``, ``pred_boxes [T, B, Q, 4]``,
                ``video_queries [B, Q, C]``, ``text_sentence_feature [B, C]``.
            targets: ``targets[t][b]`` with ``masks [M_b, H', W']``, ``boxes [M_b, 4]`` (cxcywh),
                ``labels [M_b]`` and ``is_visible``.

        Returns:
            One ``(query_indices, target_indices)`` pair of int64 CPU tensors per clip, each of length
            ``min(Q, M_b)`` (the assignment is solved on the host; the costs of all clips come back in
            one copy).
        """
        num_frames, batch_size, _, num_classes = outputs.pred_cls.shape
        check_targets(targets, num_frames, batch_size, num_classes)
        padded_size = padded_target_size(targets)
        similarity = einsum(outputs.video_queries.float(), outputs.text_sentence_feature.float(), "b q c, b c -> b q")
        contrastive_cost = -similarity.softmax(dim=-1)

        terms = []
        for b in range(batch_size):
            clip_terms = self.clip_costs(outputs, b, [targets[t][b] for t in range(num_frames)], padded_size)
            clip_terms["cost_con"] = self.cost_con * contrastive_cost[b, :, None]
            terms.append(clip_terms)
        costs = [cast(Tensor, sum(clip_terms.values())) for clip_terms in terms]  # non-empty sums of tensors
        # One copy to the host for every clip's cost (one wait for the device per layer, not per clip).
        on_host = torch.cat([cost.flatten() for cost in costs]).cpu().split([cost.numel() for cost in costs])
        indices = []
        for b, (cost, values) in enumerate(zip(costs, on_host)):
            cost_matrix = values.view(cost.shape).numpy()
            if not np.isfinite(cost_matrix).all():
                raise NonFiniteCostError([name for name, term in terms[b].items() if not torch.isfinite(term).all()], b)
            query_idx, target_idx = linear_sum_assignment(cost_matrix)
            indices.append(
                (torch.as_tensor(query_idx, dtype=torch.long), torch.as_tensor(target_idx, dtype=torch.long))
            )
        return indices

    def clip_costs(
        self, outputs: WaveCLOutput, b: int, clip: list[FrameTarget], padded_size: tuple[int, int]
    ) -> dict[str, Tensor]:
        """Weighted, frame-averaged class, dice, L1 and GIoU costs of clip ``b`` (the contrastive term,
        computed for the whole batch at once, is added by :meth:`__call__`).

        Args:
            outputs: predictions of one layer (see :meth:`__call__`).
            b: clip index.
            clip: the clip's ``T`` frame targets.
            padded_size: ``(H, W)`` the predicted masks are upsampled to.

        Returns:
            ``{"cost_class", "cost_dice", "cost_bbox", "cost_giou"}``, each ``[Q, M_b]`` float32.
        """
        target_masks = pad_masks(torch.stack([target.masks for target in clip]), padded_size)  # [T, M, H, W]
        target_boxes = torch.stack([target.boxes for target in clip]).float()  # [T, M, 4]
        visible = [target.is_visible for target in clip]
        return {
            "cost_class": self.cost_class * self.class_cost(outputs.pred_cls[:, b].float(), clip[0].labels, visible),
            "cost_dice": self.cost_dice * self.dice_cost(outputs.pred_masks[:, b].float(), target_masks),
            "cost_bbox": self.cost_bbox * self.l1_cost(outputs.pred_boxes[:, b].float(), target_boxes),
            "cost_giou": self.cost_giou * self.giou_cost(outputs.pred_boxes[:, b].float(), target_boxes),
        }

    def class_cost(self, logits: Tensor, labels: Tensor, visible: Sequence[bool]) -> Tensor:
        """Focal-style class cost averaged over the visible frames.

        Args:
            logits: ``[T, Q, K]`` class logits of one clip.
            labels: ``[M]`` class of each instance (ignored when ``K == 1``: column 0 is "referred").
            visible: ``T`` flags (known on the host); when no frame is visible, every frame is used.

        Returns:
            ``[Q, M]``.
        """
        num_classes = logits.shape[-1]
        columns = labels.long() if num_classes > 1 else torch.zeros_like(labels, dtype=torch.long)
        prob = logits[..., columns].sigmoid()  # [T, Q, M]
        positive = self.focal_alpha * (1 - prob) ** self.focal_gamma * -(prob + 1e-8).log()
        negative = (1 - self.focal_alpha) * prob**self.focal_gamma * -(1 - prob + 1e-8).log()
        frames = [t for t, seen in enumerate(visible) if seen] or list(range(len(visible)))
        index = torch.tensor(frames).to(logits.device, non_blocking=True)  # no wait for the device
        return (positive - negative).index_select(0, index).mean(dim=0)

    @staticmethod
    def dice_cost(mask_logits: Tensor, target_masks: Tensor) -> Tensor:
        """Negative smoothed dice, averaged over frames.

        Args:
            mask_logits: ``[T, Q, h, w]`` predicted mask logits.
            target_masks: ``[T, M, H, W]`` float target masks, padded; predictions are upsampled to ``(H, W)``.

        Returns:
            ``[Q, M]``, ``-mean_t (2 Σ σ(x) y + 1) / (Σ σ(x) + Σ y + 1)``.
        """
        prob = F.interpolate(mask_logits, size=target_masks.shape[-2:], mode="bilinear", align_corners=False).sigmoid()
        prob = rearrange(prob, "t q h w -> t q (h w)")
        target = rearrange(target_masks, "t m h w -> t m (h w)")
        intersection = einsum(prob, target, "t q p, t m p -> t q m")
        dice = (2 * intersection + 1) / (prob.sum(-1)[:, :, None] + target.sum(-1)[:, None, :] + 1)
        return -dice.mean(dim=0)

    @staticmethod
    def l1_cost(pred_boxes: Tensor, target_boxes: Tensor) -> Tensor:
        """L1 distance of cxcywh boxes, averaged over frames: ``[T, Q, 4]``, ``[T, M, 4]`` -> ``[Q, M]``."""
        return torch.cdist(pred_boxes, target_boxes, p=1).mean(dim=0)

    def giou_cost(self, pred_boxes: Tensor, target_boxes: Tensor) -> Tensor:
        """Negative generalised IoU in :attr:`giou_form`, averaged over frames.

        Args:
            pred_boxes: ``[T, Q, 4]`` cxcywh.
            target_boxes: ``[T, M, 4]`` cxcywh.

        Returns:
            ``[Q, M]``.
        """
        pred_xyxy = box_convert(pred_boxes, "cxcywh", "xyxy")
        target_xyxy = box_convert(target_boxes, "cxcywh", "xyxy")
        if self.giou_form == "reference":
            giou = reference_generalized_iou(pred_xyxy[:, :, None], target_xyxy[:, None])
        else:
            giou = torch.stack([generalized_box_iou(p, t) for p, t in zip(pred_xyxy, target_xyxy)])
        return -giou.mean(dim=0)
