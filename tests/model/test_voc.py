"""Tests of the video-level object cluster (VOC)."""

from __future__ import annotations

import pytest
import torch

from wavecl.model.voc import VideoObjectCluster

L, T, B, Q, C = 3, 3, 2, 5, 32


def _voc(dropout: float) -> VideoObjectCluster:
    torch.manual_seed(0)
    return VideoObjectCluster(
        d_model=C,
        num_heads=4,
        num_queries=Q,
        num_encoder_layers=2,
        num_decoder_layers=2,
        dim_feedforward=48,
        dropout=dropout,
    )


def _inputs():
    generator = torch.Generator().manual_seed(1)
    return torch.randn(L, T, B, Q, C, generator=generator), torch.randn(B, C, generator=generator)


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_batch_equals_each_clip_alone(mode):
    # eval: dropout is off by mode; train: dropout 0 makes the training path deterministic
    voc = _voc(dropout=0.1).eval() if mode == "eval" else _voc(dropout=0.0).train()
    frame_queries, sentence = _inputs()
    with torch.no_grad():
        together = voc(frame_queries, sentence)
        assert together.shape == ((1 if mode == "eval" else L), B, Q, C)
        for clip in range(B):
            alone = voc(frame_queries[:, :, clip : clip + 1], sentence[clip : clip + 1])
            torch.testing.assert_close(alone, together[:, clip : clip + 1], atol=1e-5, rtol=1e-5)


def test_eval_processes_only_the_last_layer():
    voc = _voc(dropout=0.0)
    frame_queries, sentence = _inputs()
    with torch.no_grad():
        all_layers = voc.train()(frame_queries, sentence)
        voc.eval()
        last = voc(frame_queries, sentence)
        perturbed = frame_queries.clone()
        perturbed[:-1] = torch.randn_like(perturbed[:-1])
        last_perturbed = voc(perturbed, sentence)
    assert last.shape == (1, B, Q, C)
    torch.testing.assert_close(last[0], all_layers[-1], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(last_perturbed, last)


def test_video_queries_see_every_frame_of_their_clip_only():
    voc = _voc(dropout=0.0).eval()
    frame_queries, sentence = _inputs()
    changed = frame_queries.clone()
    changed[-1, 2, 0] += 1.0  # last frame of clip 0
    with torch.no_grad():
        before, after = voc(frame_queries, sentence), voc(changed, sentence)
    assert (after[:, 0] - before[:, 0]).abs().max() > 1e-3
    torch.testing.assert_close(after[:, 1], before[:, 1])


def test_rejects_wrong_query_count_and_sentence_shape():
    voc = _voc(dropout=0.0)
    frame_queries, sentence = _inputs()
    with pytest.raises(ValueError, match="frame_queries"):
        voc(frame_queries[..., :-1, :], sentence)
    with pytest.raises(ValueError, match="sentence"):
        voc(frame_queries, sentence[:1])


def test_full_size_parameter_count_and_names():
    voc = VideoObjectCluster()
    assert sum(p.numel() for p in voc.parameters()) == 8_692_224
    shapes = {k: tuple(v.shape) for k, v in voc.state_dict().items()}
    assert shapes["enc_self_attn.2.self_attn.in_proj_weight"] == (768, 256)
    assert shapes["enc_self_attn.0.norm.weight"] == (256,)
    assert shapes["enc_ffn.1.linear1.weight"] == (2048, 256)
    assert shapes["enc_ffn.1.linear2.weight"] == (256, 2048)
    assert shapes["transformer_cross_attention_layers.0.multihead_attn.out_proj.weight"] == (256, 256)
    assert shapes["transformer_self_attention_layers.2.self_attn.in_proj_bias"] == (768,)
    assert shapes["transformer_ffn_layers.2.norm.bias"] == (256,)
    assert shapes["fq_pos.weight"] == (20, 256)
    assert shapes["query_embed.weight"] == (20, 256)
    assert shapes["decoder_norm.weight"] == (256,)
