"""The typed output of :class:`wavecl.model.wavecl.WaveCL` (docs/architecture.md#outputs)."""

from __future__ import annotations

from dataclasses import dataclass, field, fields

import torch
from torch import Tensor


class NonFiniteOutputError(FloatingPointError):
    """The model produced NaN or infinite values; the message names the tensors and where."""


@dataclass
class WaveCLOutput:
    """Predictions of one decoder layer.

    Attributes:
        pred_masks: ``[T, B, Q, Hp/4, Wp/4]`` mask logits at stride 4 of the padded input.
        pred_cls: ``[T, B, Q, K]`` class logits (sigmoid semantics; K = 1 means "is the referred object").
        pred_boxes: ``[T, B, Q, 4]`` normalised ``(cx, cy, w, h)``.
        video_queries: ``[B, Q, C]`` the VOC video-query embeddings of this layer (their dot products with
            ``text_sentence_feature`` are the contrastive logits).
        text_sentence_feature: ``[B, C]`` masked mean of the level-2 language-vision fusion output.
        aux_outputs: the earlier decoder layers (training only; empty in eval mode).
    """

    pred_masks: Tensor
    pred_cls: Tensor
    pred_boxes: Tensor
    video_queries: Tensor
    text_sentence_feature: Tensor
    aux_outputs: list[WaveCLOutput] = field(default_factory=list)

    def nonfinite_flags(self) -> tuple[list[str], Tensor]:
        """The name of every output tensor (``"pred_boxes"``, ``"aux_outputs[1].pred_masks"``, ...) and a
        ``[K]`` bool tensor on their device, True where that tensor holds a NaN or an infinity; nothing
        is read back to the host, so a caller can add its own flags and read them all at once."""
        names, flags = [], []
        layers = [("", self)] + [(f"aux_outputs[{i}].", aux) for i, aux in enumerate(self.aux_outputs)]
        for prefix, layer in layers:
            for item in fields(layer):
                value = getattr(layer, item.name)
                if isinstance(value, Tensor):
                    names.append(prefix + item.name)
                    flags.append(~torch.isfinite(value).all())
        return names, torch.stack(flags)

    def nonfinite(self) -> list[str]:
        """Names of the tensors holding a NaN or an infinity (empty when all are finite); one host
        synchronisation."""
        names, flags = self.nonfinite_flags()
        return [name for name, bad in zip(names, flags.tolist()) if bad]

    def require_finite(self, where: str) -> None:
        """Raise :class:`NonFiniteOutputError` naming the non-finite tensors and ``where`` (e.g. the
        samples of the batch): thresholds and argmaxes of NaN give plausible-looking empty masks.

        Args:
            where: what the outputs were computed for, for the message.
        """
        bad = self.nonfinite()
        if bad:
            raise NonFiniteOutputError(
                f"the model's outputs {bad} hold NaN or infinite values for {where} "
                "(with amp fp16, try bf16 or off; otherwise the weights may have diverged)"
            )
