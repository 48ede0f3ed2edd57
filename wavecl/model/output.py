"""The typed output of :class:`wavecl.model.wavecl.WaveCL` (architecture.md §3.11)."""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import Tensor


@dataclass
class WaveCLOutput:
    """Predictions of one decoder layer.

    Attributes:
        pred_masks: ``[T, B, Q, Hp/4, Wp/4]`` mask logits at stride 4 of the padded input.
        pred_cls: ``[T, B, Q, K]`` class logits (sigmoid semantics; K = 1 means "is the referred object").
        pred_boxes: ``[T, B, Q, 4]`` normalised ``(cx, cy, w, h)``.
        pred_logit: ``[B, Q, C]`` VOC video-query embeddings of this layer (contrastive loss).
        text_sentence_feature: ``[B, C]`` masked mean of the level-2 language-vision fusion output.
        aux_outputs: the earlier decoder layers (training only; empty in eval mode).
    """

    pred_masks: Tensor
    pred_cls: Tensor
    pred_boxes: Tensor
    pred_logit: Tensor
    text_sentence_feature: Tensor
    aux_outputs: list[WaveCLOutput] = field(default_factory=list)
