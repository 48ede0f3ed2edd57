"""Training losses of WaveCL (docs/training.md#losses).

For every decoder layer (the final one and each auxiliary layer, matched independently) the criterion
computes six unweighted terms over the matched (frame, query) pairs of every clip:

- ``loss_sigmoid_focal`` and ``loss_dice`` on the masks, upsampled bilinearly to the padded target size;
- ``loss_bbox`` (L1) and ``loss_giou`` on the cxcywh boxes;
- ``loss_cls``: sigmoid focal classification where the matched query is positive only on frames
  where the referred object is visible;
- ``loss_con``: cross-entropy over the queries of a clip of ``⟨V_q, s⟩ / C``.

Mask and box terms include frames where the object is invisible (empty mask, zero box), as in the
reference. All terms except ``loss_con`` (normalised by ``B``) are divided by ``num_masks``, the number
of target masks ``T·B`` averaged over processes and clamped at 1.
"""

from __future__ import annotations

from typing import cast

import torch
import torch.nn.functional as F
from einops import einsum, rearrange
from torch import Tensor, nn
from torchvision.ops import box_convert, sigmoid_focal_loss

from wavecl.config import LossConfig
from wavecl.data.types import FrameTarget
from wavecl.distributed import all_reduce_mean
from wavecl.model.output import WaveCLOutput
from wavecl.training.giou import reference_generalized_iou
from wavecl.training.matcher import (
    HungarianMatcher,
    NonFiniteCostError,
    check_targets,
    pad_masks,
    padded_target_size,
)

# The six weighted terms; their weights are the fields of the same names of :class:`LossConfig`.
LOSS_TERMS = ("con", "dice", "sigmoid_focal", "cls", "bbox", "giou")


def dice_loss(mask_logits: Tensor, target_masks: Tensor, num_masks: float | Tensor) -> Tensor:
    """Smoothed dice loss summed over masks and divided by ``num_masks``.

    torchvision has no dice loss, hence this four-line function.

    Args:
        mask_logits: ``[N, P]`` logits (pixels flattened).
        target_masks: ``[N, P]`` float targets in ``{0, 1}``.
        num_masks: normaliser.

    Returns:
        Scalar ``Σ_n [1 - (2 Σ p y + 1) / (Σ p + Σ y + 1)] / num_masks``.
    """
    prob = mask_logits.sigmoid()
    dice = (2 * (prob * target_masks).sum(-1) + 1) / (prob.sum(-1) + target_masks.sum(-1) + 1)
    return (1 - dice).sum() / num_masks


def giou_loss(boxes: Tensor, target_boxes: Tensor, eps: float = 1e-7) -> Tensor:
    """``1 - GIoU`` of paired boxes, as ``torchvision.ops.generalized_box_iou_loss`` computes it.

    torchvision finds the overlapping pairs with boolean indexing, which waits for the GPU four times
    per call; clamping the overlap at zero gives the same values and gradients without waiting.

    Args:
        boxes, target_boxes: ``[N, 4]`` ``(x1, y1, x2, y2)`` boxes, paired row by row.
        eps: added to the union and the enclosing area (torchvision's default).

    Returns:
        ``[N]`` losses.
    """
    x1, y1, x2, y2 = boxes.unbind(-1)
    tx1, ty1, tx2, ty2 = target_boxes.unbind(-1)
    intersection = (torch.min(x2, tx2) - torch.max(x1, tx1)).clamp(min=0) * (
        torch.min(y2, ty2) - torch.max(y1, ty1)
    ).clamp(min=0)
    union = (x2 - x1) * (y2 - y1) + (tx2 - tx1) * (ty2 - ty1) - intersection
    enclosing = (torch.max(x2, tx2) - torch.min(x1, tx1)) * (torch.max(y2, ty2) - torch.min(y1, ty1))
    return 1 - (intersection / (union + eps) - (enclosing - union) / (enclosing + eps))


class SetCriterion(nn.Module):
    """Match queries to targets and compute the WaveCL losses for every decoder layer.

    Args:
        matcher: assigns queries to target instances per clip.
        num_classes: ``K`` of ``pred_cls`` (1: "is the referred object"; 65 for Ref-YouTube-VOS).
        loss: loss weights (used by :meth:`weighted_total` and :attr:`weight_dict`), the focal
            ``focal_alpha``, ``focal_gamma`` of both focal losses and the ``giou_form`` of the box loss
            (:func:`giou_loss`, or the original's :func:`~wavecl.training.giou.reference_generalized_iou`);
            the published values by default.
        num_aux_layers: number of auxiliary decoder layers in the outputs (decoder layers - 1).
    """

    def __init__(
        self,
        matcher: HungarianMatcher,
        num_classes: int,
        loss: LossConfig | None = None,
        num_aux_layers: int = 2,
    ) -> None:
        super().__init__()
        loss = loss if loss is not None else LossConfig()
        self.matcher = matcher
        self.num_classes = num_classes
        self.weights = {term: getattr(loss, term) for term in LOSS_TERMS}
        self.focal_alpha = loss.focal_alpha
        self.focal_gamma = loss.focal_gamma
        self.giou_form = loss.giou_form
        self.num_aux_layers = num_aux_layers

    @property
    def weight_dict(self) -> dict[str, float]:
        """Weight of every key :meth:`forward` returns (final layer and ``_0.._{num_aux_layers-1}``)."""
        suffixes = [""] + [f"_{i}" for i in range(self.num_aux_layers)]
        return {f"loss_{term}{suffix}": weight for suffix in suffixes for term, weight in self.weights.items()}

    def forward(self, outputs: WaveCLOutput, targets: list[list[FrameTarget]]) -> dict[str, Tensor]:
        """Compute every unweighted loss term of every layer.

        Args:
            outputs: final-layer predictions with ``aux_outputs`` (see :class:`WaveCLOutput`).
            targets: ``targets[t][b]``, a complete ``T x B`` grid (after valid-frame selection).

        Returns:
            Scalar tensors ``loss_con, loss_dice, loss_sigmoid_focal, loss_cls, loss_bbox, loss_giou``
            for the final layer and the same keys with suffix ``_i`` for auxiliary layer ``i``.

        Raises:
            NonFiniteCostError: a layer's matching costs hold NaN or inf; its ``terms`` carry the same
                layer suffix as the loss keys (``cost_giou_0``). Collective work (``num_masks``) is
                done before any layer is matched, so every process reaches the same collectives.
        """
        num_frames, batch_size, _, num_classes = outputs.pred_cls.shape
        if num_classes != self.num_classes:
            raise ValueError(f"pred_cls has K={num_classes} classes but the criterion was built for {self.num_classes}")
        check_targets(targets, num_frames, batch_size, num_classes)
        if len(outputs.aux_outputs) != self.num_aux_layers:
            raise ValueError(
                f"outputs have {len(outputs.aux_outputs)} auxiliary layers but the criterion was built with "
                f"num_aux_layers={self.num_aux_layers}"
            )
        num_masks = self.num_masks(targets, outputs.pred_masks.device)
        losses = {}
        for suffix, layer in [("", outputs), *((f"_{i}", aux) for i, aux in enumerate(outputs.aux_outputs))]:
            try:
                layer_losses = self.layer_losses(layer, targets, num_masks)
            except NonFiniteCostError as error:
                raise NonFiniteCostError([term + suffix for term in error.terms], error.clip) from error
            losses.update({key + suffix: value for key, value in layer_losses.items()})
        return losses

    def weighted_total(self, loss_dict: dict[str, Tensor]) -> Tensor:
        """``Σ_k weight(k) · loss_dict[k]``: the scalar to back-propagate.

        Raises:
            KeyError: a key of ``loss_dict`` is not one of :attr:`weight_dict`.
        """
        weights = self.weight_dict
        unknown = sorted(set(loss_dict) - set(weights))
        if unknown:
            raise KeyError(
                f"{unknown} are not loss keys of this criterion (expected keys of weight_dict: {sorted(weights)})"
            )
        return cast(Tensor, sum(weights[key] * value for key, value in loss_dict.items()))  # loss_dict is never empty

    @staticmethod
    def num_masks(targets: list[list[FrameTarget]], device: torch.device) -> Tensor:
        """Number of target masks of the batch (``T·B`` with one instance per clip), averaged over
        processes and clamped at 1: a float scalar tensor."""
        count = sum(target.masks.shape[0] for row in targets for target in row)
        return all_reduce_mean(torch.tensor(float(count)).to(device, non_blocking=True)).clamp(min=1.0)

    def layer_losses(
        self, outputs: WaveCLOutput, targets: list[list[FrameTarget]], num_masks: Tensor
    ) -> dict[str, Tensor]:
        """Match one layer and compute its six terms (keys without layer suffix)."""
        host_indices = self.matcher(outputs, targets)
        # The matches are known on the host; one copy each, without waiting for the device.
        device = outputs.pred_masks.device
        indices = [
            (query.to(device, non_blocking=True), instance.to(device, non_blocking=True))
            for query, instance in host_indices
        ]
        clip_idx = torch.cat([torch.full_like(query, b) for b, (query, _) in enumerate(indices)])
        query_idx = torch.cat([query for query, _ in indices])
        instance_idx = [instance for _, instance in indices]
        mask_losses = self.mask_losses(outputs, targets, clip_idx, query_idx, instance_idx, num_masks)
        box_losses = self.box_losses(outputs, targets, clip_idx, query_idx, instance_idx, num_masks)
        return {
            "loss_con": self.contrastive_loss(outputs, host_indices),
            "loss_dice": mask_losses["loss_dice"],
            "loss_sigmoid_focal": mask_losses["loss_sigmoid_focal"],
            "loss_cls": self.classification_loss(outputs, targets, indices, num_masks),
            "loss_bbox": box_losses["loss_bbox"],
            "loss_giou": box_losses["loss_giou"],
        }

    def mask_losses(
        self,
        outputs: WaveCLOutput,
        targets: list[list[FrameTarget]],
        clip_idx: Tensor,
        query_idx: Tensor,
        instance_idx: list[Tensor],
        num_masks: Tensor,
    ) -> dict[str, Tensor]:
        """Sigmoid focal (mean over padded pixels) and dice over all matched (frame, query) pairs.

        Args:
            outputs: ``pred_masks [T, B, Q, h, w]``.
            targets: ``targets[t][b].masks [M_b, H', W']``.
            clip_idx, query_idx: ``[N]`` clip and query of each matched pair (``N = Σ_b min(Q, M_b)``).
            instance_idx: per clip, the matched target instances in the order of ``query_idx`` (on the
                targets' device).
            num_masks: normaliser.
        """
        padded_size = padded_target_size(targets)
        pred = outputs.pred_masks[:, clip_idx, query_idx].float()  # [T, N, h, w]
        target = torch.stack(
            [
                torch.cat([pad_masks(row[b].masks[instances], padded_size) for b, instances in enumerate(instance_idx)])
                for row in targets
            ]
        )  # [T, N, H, W]
        pred = F.interpolate(pred, size=padded_size, mode="bilinear", align_corners=False)
        pred = rearrange(pred, "t n h w -> (t n) (h w)")
        target = rearrange(target, "t n h w -> (t n) (h w)")
        focal = sigmoid_focal_loss(pred, target, alpha=self.focal_alpha, gamma=self.focal_gamma, reduction="none")
        return {
            "loss_sigmoid_focal": focal.mean(dim=1).sum() / num_masks,
            "loss_dice": dice_loss(pred, target, num_masks),
        }

    def box_losses(
        self,
        outputs: WaveCLOutput,
        targets: list[list[FrameTarget]],
        clip_idx: Tensor,
        query_idx: Tensor,
        instance_idx: list[Tensor],
        num_masks: Tensor,
    ) -> dict[str, Tensor]:
        """L1 and ``1 - GIoU`` over all matched (frame, query) pairs, zero boxes of invisible frames included.

        Arguments as in :meth:`mask_losses`, with ``pred_boxes [T, B, Q, 4]`` and
        ``targets[t][b].boxes [M_b, 4]`` (normalised cxcywh).
        """
        pred = outputs.pred_boxes[:, clip_idx, query_idx].float().flatten(0, 1)  # [T*N, 4]
        target = torch.cat(
            [row[b].boxes[instances].float() for row in targets for b, instances in enumerate(instance_idx)]
        )  # [T*N, 4]
        pred_xyxy, target_xyxy = box_convert(pred, "cxcywh", "xyxy"), box_convert(target, "cxcywh", "xyxy")
        if self.giou_form == "reference":
            giou = (1 - reference_generalized_iou(pred_xyxy, target_xyxy)).sum()
        else:
            giou = giou_loss(pred_xyxy, target_xyxy).sum()
        return {
            "loss_bbox": F.l1_loss(pred, target, reduction="sum") / num_masks,
            "loss_giou": giou / num_masks,
        }

    def classification_loss(
        self,
        outputs: WaveCLOutput,
        targets: list[list[FrameTarget]],
        indices: list[tuple[Tensor, Tensor]],
        num_masks: Tensor,
    ) -> Tensor:
        """Sigmoid focal loss over all ``T·B·Q·K`` class logits, summed and divided by ``num_masks``.

        The matched query of an instance is a positive (at column 0 when ``K == 1``, at the instance's
        label in that frame otherwise) on the frames where the object is visible, and a negative
        elsewhere; every unmatched query is a negative.

        Args:
            outputs: ``pred_cls [T, B, Q, K]``.
            targets: ``targets[t][b]`` with ``labels [M_b]`` and ``is_visible``.
            indices: the matcher's ``(query_idx, instance_idx)`` per clip.
            num_masks: normaliser.
        """
        logits = outputs.pred_cls.float()
        one_hot = torch.zeros_like(logits)
        for t, row in enumerate(targets):
            for b, (queries, instances) in enumerate(indices):
                if not row[b].is_visible:
                    continue
                labels = row[b].labels[instances].long().to(logits.device)
                if self.num_classes == 1:
                    labels = torch.zeros_like(labels)
                one_hot[t, b, queries, labels] = 1.0
        focal = sigmoid_focal_loss(logits, one_hot, alpha=self.focal_alpha, gamma=self.focal_gamma, reduction="sum")
        return focal / num_masks

    @staticmethod
    def contrastive_loss(outputs: WaveCLOutput, indices: list[tuple[Tensor, Tensor]]) -> Tensor:
        """Cross-entropy over queries of ``⟨V_q, s⟩ / C``, averaged over clips.

        Args:
            outputs: ``video_queries [B, Q, C]`` video queries and ``text_sentence_feature [B, C]``.
            indices: the matcher's ``(query_idx, instance_idx)`` per clip, on the host; the target of
                clip ``b`` is the query matched to instance 0, the referred object.

        Returns:
            Scalar ``-(1/B) Σ_b log softmax_q(⟨V_{b,q}, s_b⟩ / C)[q*_b]``.
        """
        video_queries = outputs.video_queries.float()
        channels = video_queries.shape[-1]
        logits = einsum(video_queries, outputs.text_sentence_feature.float(), "b q c, b c -> b q") / channels
        referred = []
        for b, (queries, instances) in enumerate(indices):
            matched = queries[instances == 0]
            if matched.numel() != 1:
                raise ValueError(
                    f"clip {b}: the referred instance 0 is matched to {matched.numel()} queries, expected 1"
                )
            referred.append(matched)
        return F.cross_entropy(logits, torch.cat(referred).to(logits.device, non_blocking=True))
