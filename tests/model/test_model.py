"""The whole network: parameter contract (docs/architecture.md), forward/backward, errors, parity switches."""

import dataclasses

import pytest
import torch

from wavecl.config import load_config
from wavecl.model.text import load_text_encoder
from wavecl.model.wavecl import WaveCL
from wavecl.original import convert_state_dict
from wavecl.testing.checkpoints import original_state_dict


def mha(prefix):
    return {
        f"{prefix}.in_proj_weight": (768, 256),
        f"{prefix}.in_proj_bias": (768,),
        f"{prefix}.out_proj.weight": (256, 256),
        f"{prefix}.out_proj.bias": (256,),
    }


def norm(prefix, dim=256):
    return {f"{prefix}.weight": (dim,), f"{prefix}.bias": (dim,)}


def linear(prefix, out_dim, in_dim):
    return {f"{prefix}.weight": (out_dim, in_dim), f"{prefix}.bias": (out_dim,)}


def expected_head_shapes(num_classes):
    """Written out: every key and shape outside the Swin backbone and RoBERTa."""
    shapes = {}
    for level, c_in in enumerate((192, 384, 768)):
        shapes |= {f"input_proj.{level}.0.weight": (256, c_in, 1, 1), f"input_proj.{level}.0.bias": (256,)}
    shapes |= {"input_proj.3.0.weight": (256, 768, 3, 3), "input_proj.3.0.bias": (256,)}
    for level in range(4):
        shapes |= norm(f"input_proj.{level}.1")
        p = f"vlp_projs.{level}"
        shapes |= {f"{p}.vlp.weight": (256, 768), f"{p}.vlp.bias": (256,)}
        shapes |= norm(f"{p}.vlp.bn_s_w") | {
            f"{p}.vlp.bn_s_w.running_mean": (256,),
            f"{p}.vlp.bn_s_w.running_var": (256,),
            f"{p}.vlp.bn_s_w.num_batches_tracked": (),
            f"{p}.vlp.conv_t_w.weight": (1, 1, 3, 3),
            f"{p}.vlp.conv_t_w.bias": (1,),
        }
        shapes |= norm(f"{p}.layer_norm")
    for i in range(2):
        shapes |= {f"convs.{i}.weight": (256, 256, 3, 3), f"convs.{i}.bias": (256,)}
    for name in ("vlf", "lvf", "wavelet_vlf_l"):
        shapes |= mha(f"{name}.multihead_attn")
    shapes |= {
        "wavelet_vlf_h.q_x.weight": (256, 256),
        "wavelet_vlf_h.k_memory.weight": (256, 256),
        "wavelet_vlf_h.v.weight": (256, 256),
        "wavelet_vlf_h.dwc.weight": (32, 1, 5, 5),
        "wavelet_vlf_h.dwc.bias": (32,),
        "wavelet_vlf_h.scale": (1, 1, 256),
    } | linear("wavelet_vlf_h.proj", 256, 256)
    shapes |= linear("txt_proj.fc", 256, 768) | norm("txt_proj.layer_norm")
    shapes |= {"transformer.level_embed": (4, 256)} | linear("transformer.reference_points", 2, 256)

    def msda(prefix):
        return (
            linear(f"{prefix}.sampling_offsets", 256, 256)
            | linear(f"{prefix}.attention_weights", 128, 256)
            | linear(f"{prefix}.value_proj", 256, 256)
            | linear(f"{prefix}.output_proj", 256, 256)
        )

    for i in range(3):
        p = f"transformer.encoder.layers.{i}"
        shapes |= msda(f"{p}.self_attn") | norm(f"{p}.norm1") | norm(f"{p}.norm2")
        shapes |= linear(f"{p}.linear1", 2048, 256) | linear(f"{p}.linear2", 256, 2048)
        p = f"transformer.decoder.layers.{i}"
        shapes |= msda(f"{p}.cross_attn") | mha(f"{p}.self_attn")
        shapes |= norm(f"{p}.norm1") | norm(f"{p}.norm2") | norm(f"{p}.norm3")
        shapes |= linear(f"{p}.linear1", 2048, 256) | linear(f"{p}.linear2", 256, 2048)
    shapes |= {"query_embed.weight": (20, 256)}
    for i in range(3):
        shapes |= linear(f"class_embed.{i}", num_classes, 256)
        prefix = f"bbox_embed.{i}"  # once: the decoder receives the heads, it does not register them
        shapes |= linear(f"{prefix}.layers.0", 256, 256) | linear(f"{prefix}.layers.1", 256, 256)
        shapes |= linear(f"{prefix}.layers.2", 4, 256)
    shapes |= linear("controller.layers.0", 256, 256) | linear("controller.layers.1", 256, 256)
    shapes |= linear("controller.layers.2", 169, 256)
    fpn = {
        "lay1": (256, 256),
        "lay2": (128, 256),
        "lay3": (64, 128),
        "lay4": (32, 64),
        "lay5": (16, 32),
        "out_lay": (8, 16),
    }
    for name, (c_out, c_in) in fpn.items():
        shapes |= {f"spatial_decoder.{name}.weight": (c_out, c_in, 3, 3), f"spatial_decoder.{name}.bias": (c_out,)}
    for i, dim in enumerate((256, 128, 64, 32, 16), start=1):
        shapes |= norm(f"spatial_decoder.gn{i}", dim)
    for i, (c_out, c_in) in enumerate(((128, 256), (64, 256), (32, 96)), start=1):
        shapes |= {
            f"spatial_decoder.adapter{i}.weight": (c_out, c_in, 1, 1),
            f"spatial_decoder.adapter{i}.bias": (c_out,),
        }
    for i in range(3):
        shapes |= mha(f"voc.enc_self_attn.{i}.self_attn") | norm(f"voc.enc_self_attn.{i}.norm")
        shapes |= linear(f"voc.enc_ffn.{i}.linear1", 2048, 256) | linear(f"voc.enc_ffn.{i}.linear2", 256, 2048)
        shapes |= norm(f"voc.enc_ffn.{i}.norm")
        shapes |= mha(f"voc.transformer_cross_attention_layers.{i}.multihead_attn")
        shapes |= norm(f"voc.transformer_cross_attention_layers.{i}.norm")
        shapes |= mha(f"voc.transformer_self_attention_layers.{i}.self_attn")
        shapes |= norm(f"voc.transformer_self_attention_layers.{i}.norm")
        shapes |= linear(f"voc.transformer_ffn_layers.{i}.linear1", 2048, 256)
        shapes |= linear(f"voc.transformer_ffn_layers.{i}.linear2", 256, 2048)
        shapes |= norm(f"voc.transformer_ffn_layers.{i}.norm")
    shapes |= {"voc.fq_pos.weight": (20, 256), "voc.query_embed.weight": (20, 256)} | norm("voc.decoder_norm")
    return shapes


@pytest.fixture(scope="module")
def full_a2d_model():
    config = load_config("a2d_sentences").model
    config.backbone_pretrained_path = None
    return WaveCL(config, *load_text_encoder("random:roberta-base"))


def test_full_a2d_parameter_counts(full_a2d_model):
    parameters = list(full_a2d_model.parameters())
    assert sum(p.numel() for p in parameters) == 176_621_888
    assert sum(p.numel() for p in parameters if p.requires_grad) == 51_976_256
    assert len(full_a2d_model.state_dict()) == 738  # 756 in the original, whose 18 box-head tensors appear twice


def test_full_a2d_state_dict_keys_and_shapes(full_a2d_model):
    state = full_a2d_model.state_dict()
    heads = {k: tuple(v.shape) for k, v in state.items() if not k.startswith(("backbone.", "text_encoder."))}
    assert heads == expected_head_shapes(num_classes=1)
    assert state["backbone.body.patch_embed.proj.weight"].shape == (96, 3, 1, 4, 4)
    assert state["text_encoder.embeddings.word_embeddings.weight"].shape == (50265, 768)
    assert state["text_encoder.pooler.dense.weight"].shape == (768, 768)


def test_reference_checkpoint_loads_after_documented_renames(tiny_config, tiny_model):
    ours = tiny_model.state_dict()
    reference = original_state_dict({k: v.clone() + 1 for k, v in ours.items()})
    reference["text_encoder.embeddings.position_ids"] = torch.arange(8)[None]
    assert any(k.startswith("backbone.0.body.layers.0.blocks.0.mlp.fc1") for k in reference)
    assert any(k.startswith("transformer.decoder.bbox_embed.") for k in reference)
    converted = convert_state_dict(reference)
    assert sorted(converted) == sorted(ours), "renamed back, the second box-head copy and position_ids dropped"
    model = WaveCL(tiny_config)
    model.load_state_dict(converted, strict=True)
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, ours[key] + 1)


def test_text_encoder_without_its_tokenizer_is_refused(tiny_config):
    encoder, tokenizer = load_text_encoder("random:tiny")
    with pytest.raises(ValueError, match="both text_encoder and tokenizer"):
        WaveCL(tiny_config, text_encoder=encoder)
    with pytest.raises(ValueError, match="both text_encoder and tokenizer"):
        WaveCL(tiny_config, tokenizer=tokenizer)


def make_inputs(T, B, H, W, texts=None):
    generator = torch.Generator().manual_seed(T * 100 + B)
    frames = torch.randn(T, B, 3, H, W, generator=generator)
    pad_mask = torch.zeros(T, B, H, W, dtype=torch.bool)
    sizes = torch.tensor([[H, W]] * B)
    if B > 1:  # the second clip is shorter: its bottom rows are padding
        pad_mask[:, 1, H - 6 :] = True
        frames[:, 1, :, H - 6 :] = 0
        sizes[1, 0] = H - 6
    texts = texts or ["the red circle on the left", "a small blue square moving up quickly"][:B]
    return frames, pad_mask, texts, sizes


def perturb_zero_initialised(model):
    """Zero-initialised layers (box MLP outputs, MSDA offsets) block gradients to the layers before
    them at initialisation; a small random step away from it makes every path live."""
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.requires_grad:
                parameter.add_(0.02 * torch.randn(parameter.shape, generator=generator))


# The first decoder self-attention sees identical queries (tgt = 0 plus the same bias), so its
# projections receive (numerically) no gradient; the reference behaves the same.
GRADIENT_FREE = ("transformer.decoder.layers.0.self_attn.in_proj_weight",)


@pytest.mark.parametrize("T,B", [(1, 1), (1, 2), (3, 1), (3, 2)])
def test_forward_backward_shapes_and_gradients(tiny_config, T, B):
    torch.manual_seed(0)
    # Stochastic depth drops whole Swin blocks per clip, which would leave them without a gradient.
    model = WaveCL(dataclasses.replace(tiny_config, backbone_drop_path=0.0))
    perturb_zero_initialised(model)
    H, W = 45, 61
    frames, pad_mask, texts, sizes = make_inputs(T, B, H, W)
    model.train()
    out = model(frames, pad_mask, texts, sizes)
    Q, K, C = tiny_config.num_queries, tiny_config.num_classes, tiny_config.d_model
    assert out.pred_masks.shape == (T, B, Q, 12, 16)
    assert out.pred_cls.shape == (T, B, Q, K)
    assert out.pred_boxes.shape == (T, B, Q, 4)
    assert out.video_queries.shape == (B, Q, C)
    assert out.text_sentence_feature.shape == (B, C)
    assert len(out.aux_outputs) == tiny_config.dec_layers - 1
    layers = [out, *out.aux_outputs]
    loss = sum(
        o.pred_masks.sigmoid().mean()
        + o.pred_cls.mean()
        + o.pred_boxes.mean()
        + (o.video_queries * o.text_sentence_feature[:, None]).mean()
        for o in layers
    )
    assert torch.isfinite(loss)
    loss.backward()
    for name, parameter in model.named_parameters():
        if name.startswith("text_encoder."):
            assert parameter.grad is None, name
            continue
        assert parameter.grad is not None, name
        assert torch.isfinite(parameter.grad).all(), name
        if name not in GRADIENT_FREE:
            assert parameter.grad.abs().sum() > 0, name

    model.eval()
    with torch.no_grad():
        out = model(frames, pad_mask, texts, sizes)
    assert out.pred_masks.shape == (T, B, Q, 12, 16) and out.aux_outputs == []
    assert torch.isfinite(out.pred_masks).all()


def test_valid_frame_selection_keeps_inputs_and_equals_single_frames(tiny_model):
    tiny_model.eval()
    T, B = 3, 2
    frames, pad_mask, texts, sizes = make_inputs(T, B, 40, 56)
    frames_before, mask_before = frames.clone(), pad_mask.clone()
    valid = torch.tensor([1, 3 + 2])  # clip 0 frame 1, clip 1 frame 2 in (b t) order
    with torch.no_grad():
        out = tiny_model(frames, pad_mask, texts, sizes, valid_indices=valid)
    assert out.pred_masks.shape[0] == 1
    assert torch.equal(frames, frames_before) and torch.equal(pad_mask, mask_before)


def test_frozen_text_encoder_stays_in_eval_mode(tiny_model):
    tiny_model.train()
    assert tiny_model.training and not tiny_model.text_encoder.training
    assert all(not p.requires_grad for p in tiny_model.text_encoder.parameters())


def test_eval_layer_switch(tiny_config):
    """eval_layer="last": heads of the last layer on hs[-1] + VOC(hs[-1]); "reference": heads of layer 0
    on hs[0] + VOC(hs[-1]) (the reference's zip truncation)."""
    torch.manual_seed(0)
    model = WaveCL(tiny_config)
    perturb_zero_initialised(model)
    model.eval()
    captured = {}
    model.transformer.register_forward_hook(lambda m, i, o: captured.__setitem__("hs", o.hs))
    model.voc.register_forward_hook(lambda m, i, o: captured.__setitem__("voc", o))
    frames, pad_mask, texts, sizes = make_inputs(1, 1, 40, 56)
    with torch.no_grad():
        last = model(frames, pad_mask, texts, sizes)
        hs, voc = captured["hs"], captured["voc"]
        expected_last = model.class_embed[-1](hs[-1] + voc[0])
        expected_reference = model.class_embed[0](hs[0] + voc[0])
        model.config.eval_layer = "reference"
        reference = model(frames, pad_mask, texts, sizes)
        model.config.eval_layer = "last"
    torch.testing.assert_close(last.pred_cls[0], expected_last)
    torch.testing.assert_close(reference.pred_cls[0], expected_reference)
    assert not torch.allclose(last.pred_cls, reference.pred_cls)


def test_input_errors(tiny_model):
    frames, pad_mask, texts, sizes = make_inputs(2, 2, 32, 32)
    with pytest.raises(ValueError, match="empty"):
        tiny_model(frames, pad_mask, ["the red circle", "   "], sizes)
    with pytest.raises(ValueError, match="2 clips, got 1 sentences"):
        tiny_model(frames, pad_mask, ["the red circle"], sizes)
    with pytest.raises(ValueError, match=r"frames must be \[T, B, 3, H, W\]"):
        tiny_model(frames[0], pad_mask, texts, sizes)
    with pytest.raises(ValueError, match="pad_mask"):
        tiny_model(frames, pad_mask[:, :, :16], texts, sizes)
    with pytest.raises(ValueError, match="image_sizes"):
        tiny_model(frames, pad_mask, texts, sizes[:1])
