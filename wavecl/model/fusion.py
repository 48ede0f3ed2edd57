"""MMF: the multiplicative multi-modal cross-attention fusion (docs/architecture.md#mmf).

WaveCL uses one such module for vision-language fusion (``vlf``), one for language-vision fusion
(``lvf``) and one for the sentence modulation of the wavelet low band (``wavelet_vlf_l``).
"""

from __future__ import annotations

from torch import Tensor, nn

from wavecl.model.linear import linear


class MultimodalFusion(nn.Module):
    """A bare cross-attention whose output multiplies the query stream.

    ``MMF(tgt, memory) = tgt ⊙ MHA(q = tgt + query_pos, k = memory + pos, v = memory)``, with no
    residual, normalisation or feed-forward. Tensors are sequence-first, as in
    :class:`torch.nn.MultiheadAttention` with ``batch_first=False``.

    Args:
        d_model: token width C.
        num_heads: attention heads.
        dropout: dropout on the attention weights (0 in every WaveCL config).
    """

    def __init__(self, d_model: int = 256, num_heads: int = 8, dropout: float = 0.0) -> None:
        super().__init__()
        self.multihead_attn = nn.MultiheadAttention(d_model, num_heads, dropout=dropout)

    def forward(
        self,
        tgt: Tensor,
        memory: Tensor,
        memory_key_padding_mask: Tensor | None = None,
        pos: Tensor | None = None,
        query_pos: Tensor | None = None,
    ) -> Tensor:
        """Fuse ``memory`` into ``tgt``.

        Args:
            tgt: ``[Nq, B, C]`` query tokens.
            memory: ``[Nm, B, C]`` key/value tokens.
            memory_key_padding_mask: ``[B, Nm]``, True where a memory token is padding.
            pos: ``[Nm, B, C]`` position embedding added to the keys.
            query_pos: ``[Nq, B, C]`` position embedding added to the queries.

        Returns:
            ``[Nq, B, C]``.
        """
        query = tgt if query_pos is None else tgt + query_pos
        key = memory if pos is None else memory + pos
        attended, _ = self.multihead_attn(
            query, key, memory, key_padding_mask=memory_key_padding_mask, need_weights=False
        )
        return tgt * attended

    def single_key_scale(self, memory: Tensor) -> Tensor:
        """The attention output for a memory of exactly one token, in closed form.

        With a single key the softmax is identically 1, so every query receives the projected
        value ``out_proj(v_proj(memory))`` and ``forward(tgt, memory[None])`` equals
        ``tgt * single_key_scale(memory)``: a per-sample, per-channel scale (docs/architecture.md#mmf).
        The query and key projections play no part. Attention dropout is not applied
        (it would drop the single weight as a whole; WaveCL sets it to 0).

        Args:
            memory: ``[B, C]``, the one memory token of each sample.

        Returns:
            ``[B, C]``.
        """
        attention = self.multihead_attn
        _, _, value_weight = attention.in_proj_weight.chunk(3)
        _, _, value_bias = attention.in_proj_bias.chunk(3)
        value = linear(memory, value_weight, value_bias)
        return attention.out_proj(value)
