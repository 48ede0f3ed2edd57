"""VOC: the video-level object cluster (docs/architecture.md#voc).

The per-frame object queries of a clip attend to each other across time (encoder), then ``Q`` video
queries, each starting as the sentence feature, gather them (decoder). Video query ``q`` is later added
back to frame-query slot ``q`` of every frame. Every ``nn.MultiheadAttention`` is sequence-first
(``[S, batch, C]``), as in the reference.
"""

from __future__ import annotations

from einops import rearrange, repeat
from torch import Tensor, nn

from wavecl.model.dropout import Dropout
from wavecl.model.linear import relu_feed_forward


def _xavier_matrices(module: nn.Module) -> None:
    """Xavier-uniform on every parameter with more than one dimension; biases keep their defaults."""
    for parameter in module.parameters():
        if parameter.dim() > 1:
            nn.init.xavier_uniform_(parameter)


class SelfAttentionLayer(nn.Module):
    """Post-norm self-attention: ``x ← LN(x + Drop(MHA(x + pos, x + pos, x)))``."""

    def __init__(self, d_model: int, num_heads: int, dropout: float) -> None:
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, num_heads, dropout=dropout)
        self.norm = nn.LayerNorm(d_model)
        self.dropout = Dropout(dropout)
        _xavier_matrices(self)

    def forward(self, tgt: Tensor, query_pos: Tensor | None = None) -> Tensor:
        """``tgt``, ``query_pos``: ``[S, N, C]`` → ``[S, N, C]``."""
        q = k = tgt if query_pos is None else tgt + query_pos
        attended = self.self_attn(q, k, tgt, need_weights=False)[0]
        return self.norm(tgt + self.dropout(attended))


class CrossAttentionLayer(nn.Module):
    """Post-norm cross-attention: ``x ← LN(x + Drop(MHA(x + qpos, mem + pos, mem)))``."""

    def __init__(self, d_model: int, num_heads: int, dropout: float) -> None:
        super().__init__()
        self.multihead_attn = nn.MultiheadAttention(d_model, num_heads, dropout=dropout)
        self.norm = nn.LayerNorm(d_model)
        self.dropout = Dropout(dropout)
        _xavier_matrices(self)

    def forward(self, tgt: Tensor, memory: Tensor, pos: Tensor, query_pos: Tensor) -> Tensor:
        """``tgt``, ``query_pos``: ``[Sq, N, C]``; ``memory``, ``pos``: ``[Sk, N, C]`` → ``[Sq, N, C]``."""
        attended = self.multihead_attn(tgt + query_pos, memory + pos, memory, need_weights=False)[0]
        return self.norm(tgt + self.dropout(attended))


class FFNLayer(nn.Module):
    """Post-norm ReLU feed-forward layer: ``x ← LN(x + Drop(W2 Drop(ReLU(W1 x))))``."""

    def __init__(self, d_model: int, dim_feedforward: int, dropout: float) -> None:
        super().__init__()
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm = nn.LayerNorm(d_model)
        self.dropout = Dropout(dropout)
        _xavier_matrices(self)

    def forward(self, tgt: Tensor) -> Tensor:
        """``[..., C]`` → ``[..., C]``."""
        hidden = relu_feed_forward(tgt, self.linear1, self.dropout, self.linear2)
        return self.norm(tgt + self.dropout(hidden))


class VideoObjectCluster(nn.Module):
    """Clusters the frame queries of a clip into ``Q`` sentence-initialised video queries.

    Args:
        d_model: width ``C``.
        num_heads: attention heads.
        num_queries: ``Q``, both the number of frame-query slots and of video queries.
        num_encoder_layers: temporal self-attention layers over all frame queries of a clip.
        num_decoder_layers: cross → self → FFN layers of the video queries.
        dim_feedforward: FFN width.
        dropout: dropout of every attention and FFN.
    """

    def __init__(
        self,
        d_model: int = 256,
        num_heads: int = 8,
        num_queries: int = 20,
        num_encoder_layers: int = 3,
        num_decoder_layers: int = 3,
        dim_feedforward: int = 2048,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.num_queries = num_queries
        self.enc_self_attn = nn.ModuleList(
            SelfAttentionLayer(d_model, num_heads, dropout) for _ in range(num_encoder_layers)
        )
        self.enc_ffn = nn.ModuleList(FFNLayer(d_model, dim_feedforward, dropout) for _ in range(num_encoder_layers))
        self.transformer_cross_attention_layers = nn.ModuleList(
            CrossAttentionLayer(d_model, num_heads, dropout) for _ in range(num_decoder_layers)
        )
        self.transformer_self_attention_layers = nn.ModuleList(
            SelfAttentionLayer(d_model, num_heads, dropout) for _ in range(num_decoder_layers)
        )
        self.transformer_ffn_layers = nn.ModuleList(
            FFNLayer(d_model, dim_feedforward, dropout) for _ in range(num_decoder_layers)
        )
        self.fq_pos = nn.Embedding(num_queries, d_model)
        self.query_embed = nn.Embedding(num_queries, d_model)
        self.decoder_norm = nn.LayerNorm(d_model)

    def forward(self, frame_queries: Tensor, sentence: Tensor) -> Tensor:
        """Cluster every decoder layer's frame queries (only the last one in eval mode).

        Args:
            frame_queries: ``[L, T, B, Q, C]`` deformable-decoder outputs (layers, frames, clips).
            sentence: ``[B, C]`` sentence feature; every video query starts from it.

        Returns:
            ``[L, B, Q, C]`` video queries in training, ``[1, B, Q, C]`` in eval mode.
        """
        if frame_queries.dim() != 5 or frame_queries.shape[3] != self.num_queries:
            raise ValueError(
                f"frame_queries must be [L, T, B, {self.num_queries}, C], got {tuple(frame_queries.shape)}"
            )
        if sentence.shape != (frame_queries.shape[2], frame_queries.shape[4]):
            raise ValueError(
                f"sentence must be [B, C] = {tuple(frame_queries.shape[2::2])}, got {tuple(sentence.shape)}"
            )
        if not self.training:
            frame_queries = frame_queries[-1:]
        layers, frames, clips = frame_queries.shape[:3]

        # every (layer, clip) pair is an independent sequence of T·Q frame queries
        src = rearrange(frame_queries, "l t b q c -> (t q) (l b) c")
        for self_attn, ffn in zip(self.enc_self_attn, self.enc_ffn):
            src = ffn(self_attn(src))

        memory_pos = repeat(self.fq_pos.weight, "q c -> (t q) n c", t=frames, n=layers * clips)
        query_pos = repeat(self.query_embed.weight, "q c -> q n c", n=layers * clips)
        out = repeat(sentence, "b c -> q (l b) c", q=self.num_queries, l=layers)
        for cross_attn, self_attn, ffn in zip(
            self.transformer_cross_attention_layers, self.transformer_self_attention_layers, self.transformer_ffn_layers
        ):
            out = cross_attn(out, src, pos=memory_pos, query_pos=query_pos)
            out = self_attn(out, query_pos=query_pos)
            out = ffn(out)
        return rearrange(self.decoder_norm(out), "q (l b) c -> l b q c", l=layers)
