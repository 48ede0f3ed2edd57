"""MultimodalFusion against a hand-written cross-attention and its single-key closed form."""

import math

import torch

from wavecl.model.fusion import MultimodalFusion


def _naive_fusion(
    fusion: MultimodalFusion,
    tgt: torch.Tensor,
    memory: torch.Tensor,
    pad: torch.Tensor,
    pos: torch.Tensor,
    query_pos: torch.Tensor,
) -> torch.Tensor:
    attention = fusion.multihead_attn
    heads, width = attention.num_heads, attention.embed_dim
    head_dim = width // heads
    w_q, w_k, w_v = attention.in_proj_weight.chunk(3)
    b_q, b_k, b_v = attention.in_proj_bias.chunk(3)
    out = torch.empty_like(tgt)
    for b in range(tgt.shape[1]):
        q = (tgt[:, b] + query_pos[:, b]) @ w_q.T + b_q
        k = (memory[:, b] + pos[:, b]) @ w_k.T + b_k
        v = memory[:, b] @ w_v.T + b_v
        per_head = []
        for h in range(heads):
            channels = slice(h * head_dim, (h + 1) * head_dim)
            logits = q[:, channels] @ k[:, channels].T / math.sqrt(head_dim)
            logits = logits.masked_fill(pad[b][None, :], float("-inf"))
            per_head.append(logits.softmax(dim=-1) @ v[:, channels])
        attended = torch.cat(per_head, dim=-1) @ attention.out_proj.weight.T + attention.out_proj.bias
        out[:, b] = tgt[:, b] * attended
    return out


def test_forward_matches_naive_cross_attention() -> None:
    torch.manual_seed(0)
    fusion = MultimodalFusion(d_model=16, num_heads=4).double()
    torch.nn.init.normal_(fusion.multihead_attn.in_proj_bias)
    torch.nn.init.normal_(fusion.multihead_attn.out_proj.bias)
    tgt, query_pos = torch.randn(2, 5, 2, 16, dtype=torch.float64)
    memory, pos = torch.randn(2, 7, 2, 16, dtype=torch.float64)
    pad = torch.zeros(2, 7, dtype=torch.bool)
    pad[1, 4:] = True
    expected = _naive_fusion(fusion, tgt, memory, pad, pos, query_pos)
    actual = fusion(tgt, memory, memory_key_padding_mask=pad, pos=pos, query_pos=query_pos)
    torch.testing.assert_close(actual, expected)


def test_single_key_scale_is_the_exact_one_token_attention() -> None:
    torch.manual_seed(0)
    fusion = MultimodalFusion(d_model=32, num_heads=8).double()
    torch.nn.init.normal_(fusion.multihead_attn.in_proj_bias)
    torch.nn.init.normal_(fusion.multihead_attn.out_proj.bias)
    tgt = torch.randn(11, 3, 32, dtype=torch.float64)
    sentence = torch.randn(3, 32, dtype=torch.float64)
    torch.testing.assert_close(fusion(tgt, sentence[None]), tgt * fusion.single_key_scale(sentence)[None])


def test_single_key_scale_ignores_query_and_key_projections() -> None:
    fusion = MultimodalFusion(d_model=16, num_heads=4)
    sentence = torch.randn(2, 16)
    fusion.single_key_scale(sentence).sum().backward()
    grad = fusion.multihead_attn.in_proj_weight.grad
    assert grad[:32].abs().sum() == 0
    assert grad[32:].abs().sum() > 0
    assert fusion.multihead_attn.out_proj.weight.grad.abs().sum() > 0


def test_parameter_names_and_count() -> None:
    fusion = MultimodalFusion()
    shapes = {name: tuple(p.shape) for name, p in fusion.state_dict().items()}
    assert shapes == {
        "multihead_attn.in_proj_weight": (768, 256),
        "multihead_attn.in_proj_bias": (768,),
        "multihead_attn.out_proj.weight": (256, 256),
        "multihead_attn.out_proj.bias": (256,),
    }
    assert sum(p.numel() for p in fusion.parameters()) == 263_168
