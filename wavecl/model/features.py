"""What the two halves of :class:`wavecl.model.wavecl.WaveCL` hand each other.

The network splits into a text-independent part, run once per clip (:class:`VisualFeatures`), a
sentence encoder (:class:`EncodedSentences`), and a text-conditioned part that pairs every sentence
with one clip. Several sentences about one clip therefore share one backbone pass.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from einops import rearrange
from torch import Tensor

from wavecl.model.text import TextFeatures


@dataclass
class VisualFeatures:
    """The text-independent features of ``B`` clips of ``T`` frames, frames batch-major ``(b t)``.

    ``T`` is the clip length, or 1 after valid-frame selection (A2D/JHMDB).

    Attributes:
        stride4: ``[B·T, C0, H/4, W/4]`` backbone stage 0 (the mask decoder's finest skip).
        levels: ``L`` tensors ``[B·T, d, h_l, w_l]``, ``input_proj`` of each feature level.
        masks: ``L`` bool tensors ``[B·T, h_l, w_l]``, True on padding.
        positions: ``L`` tensors ``[B·T, d, h_l, w_l]``, the 2-D sine positions of each level.
        num_frames: ``T``.
        num_clips: ``B``.
    """

    stride4: Tensor
    levels: list[Tensor]
    masks: list[Tensor]
    positions: list[Tensor]
    num_frames: int
    num_clips: int

    def select(self, clip_index: Tensor) -> VisualFeatures:
        """The features of clips ``clip_index`` (``[N]`` long, repeats allowed), as a batch of ``N`` clips.

        Raises:
            ValueError: ``clip_index`` is not a 1-D integer tensor of indices in ``[0, B)``.
        """
        if clip_index.dim() != 1 or clip_index.dtype not in (torch.int32, torch.int64) or clip_index.numel() == 0:
            raise ValueError(
                f"clip_index must be a non-empty 1-D integer tensor, got {clip_index.dtype} {list(clip_index.shape)}"
            )
        low, high = int(clip_index.min()), int(clip_index.max())
        if low < 0 or high >= self.num_clips:
            raise ValueError(f"clip_index must lie in [0, {self.num_clips}), got values from {low} to {high}")
        T = self.num_frames
        offsets = torch.arange(T, device=clip_index.device)
        rows = rearrange(clip_index.long()[:, None] * T + offsets, "n t -> (n t)").to(self.stride4.device)

        def pick(tensors: list[Tensor]) -> list[Tensor]:
            return [tensor.index_select(0, rows) for tensor in tensors]

        return VisualFeatures(
            stride4=self.stride4.index_select(0, rows),
            levels=pick(self.levels),
            masks=pick(self.masks),
            positions=pick(self.positions),
            num_frames=T,
            num_clips=clip_index.numel(),
        )


@dataclass
class EncodedSentences:
    """``N`` encoded referring expressions.

    Attributes:
        text: the text encoder's output: words ``[N, S, D_text]``, pad mask ``[N, S]`` (True = pad),
            sentence ``[N, D_text]``.
        sentence: ``[N, d]`` the sentence feature projected to the model width (``txt_proj``).
        positions: ``[S, N, d]`` the 1-D sine positions of the words.
    """

    text: TextFeatures
    sentence: Tensor
    positions: Tensor

    def __len__(self) -> int:
        return self.sentence.shape[0]
