"""SEP: semantic-calibrated entity perception (docs/architecture.md#sep).

Each feature level projects the 768-d word features to the 256-d model width with its own SEP,
whose projection weight is gated, per clip, by the outer product of a visual and a textual context.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from wavecl.model.dropout import Dropout


def masked_mean_plus_max(tokens: Tensor, pad_mask: Tensor | None) -> Tensor:
    """``mean + max`` over the token axis, skipping padding.

    Args:
        tokens: ``[B, N, D]``.
        pad_mask: ``[B, N]`` bool, True at padding; None pools over every position.

    Returns:
        ``[B, D]``. A sample with no valid token pools to zeros.
    """
    if pad_mask is None:
        return tokens.mean(dim=1) + tokens.amax(dim=1)
    valid = ~pad_mask[..., None]
    count = valid.sum(dim=1).clamp(min=1)
    mean = tokens.masked_fill(~valid, 0).sum(dim=1) / count
    maximum = tokens.masked_fill(~valid, float("-inf")).amax(dim=1)
    maximum = torch.where(valid.any(dim=1), maximum, torch.zeros_like(maximum))
    return mean + maximum


class GatedProjection(nn.Module):
    """A linear projection whose weight is gated per sample by a video-text context map.

    ``G = σ(conv_t_w(ReLU(bn_s_w(v uᵀ))))`` and ``y_j = (G ⊙ W) e_j + bias`` (docs/architecture.md#sep).

    Args:
        in_features: text width D (768).
        out_features: model width C (256).
    """

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        self.bias = nn.Parameter(torch.empty(out_features))
        self.bn_s_w = nn.BatchNorm1d(out_features)
        self.conv_t_w = nn.Conv2d(1, 1, kernel_size=3, padding=1)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The ``nn.Linear`` initialisation for ``weight`` and ``bias``."""
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        bound = 1 / math.sqrt(self.weight.shape[1])
        nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, words: Tensor, visual_context: Tensor, text_context: Tensor) -> Tensor:
        """Project the words with the context-gated weight.

        Args:
            words: ``[B, S, D]``.
            visual_context: ``[B, C]``.
            text_context: ``[B, D]``.

        Returns:
            ``[B, S, C]``.
        """
        context = torch.einsum("bc,bd->bcd", visual_context, text_context)
        gate_logits = self.conv_t_w(F.relu(self.bn_s_w(context)).unsqueeze(1)).squeeze(1)
        gated_weight = torch.sigmoid(gate_logits) * self.weight
        return torch.einsum("bcd,bsd->bsc", gated_weight, words) + self.bias


class SemanticEntityPerception(nn.Module):
    """Video-conditioned projection of the word features for one feature level.

    Args:
        text_dim: width D of the text encoder's hidden states.
        d_model: model width C.
        dropout: dropout after the layer norm.
        pooling: ``"masked"`` pools the visual and text contexts over valid tokens only;
            ``"reference"`` pools over every position, padding included, as the reference does
            (``sep_pooling: reference``).
    """

    def __init__(
        self,
        text_dim: int = 768,
        d_model: int = 256,
        dropout: float = 0.1,
        pooling: Literal["masked", "reference"] = "masked",
    ) -> None:
        super().__init__()
        if pooling not in ("masked", "reference"):
            raise ValueError(f"pooling must be 'masked' or 'reference', got {pooling!r}")
        self.pooling = pooling
        self.vlp = GatedProjection(text_dim, d_model)
        self.layer_norm = nn.LayerNorm(d_model, eps=1e-12)
        self.dropout = Dropout(dropout)

    def forward(
        self,
        visual: Tensor,
        visual_pad_mask: Tensor,
        words: Tensor,
        text_pad_mask: Tensor,
        pool_text_padding: bool = True,
    ) -> Tensor:
        """Project the words of each clip, gated by the clip's visual and text contexts.

        Args:
            visual: ``[N, B, C]`` visual tokens of the clip, N = T·h·w in ``(t h w)`` order.
            visual_pad_mask: ``[B, N]`` bool, True at padded pixels.
            words: ``[B, S, D]`` word features.
            text_pad_mask: ``[B, S]`` bool, True at pad tokens.
            pool_text_padding: with ``pooling="reference"`` only: whether the text context pools the
                pad tokens of the shorter sentences too (the reference's batches), or only each
                sentence's own tokens (what the reference computes for a sentence alone in its batch).

        Returns:
            ``[S, B, C]`` text memory for this level.
        """
        visual = rearrange(visual, "n b c -> b n c")
        if visual_pad_mask.shape != visual.shape[:2] or text_pad_mask.shape != words.shape[:2]:
            raise ValueError(
                f"SEP masks must be [B, N] and [B, S]: got visual {tuple(visual_pad_mask.shape)} for "
                f"{tuple(visual.shape[:2])} tokens and text {tuple(text_pad_mask.shape)} for "
                f"{tuple(words.shape[:2])} words"
            )
        masked = self.pooling == "masked"
        visual_context = masked_mean_plus_max(visual, visual_pad_mask if masked else None)
        text_context = masked_mean_plus_max(words, text_pad_mask if masked or not pool_text_padding else None)
        projected = self.vlp(words, visual_context, text_context)
        projected = self.dropout(self.layer_norm(projected))
        return rearrange(projected, "b s c -> s b c")
