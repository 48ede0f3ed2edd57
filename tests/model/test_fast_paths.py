"""The optimised network equals the plain computation, and keeps its coordinates in float32 under autocast.

The two are compared in float64, where they agree to rounding (about 1e-15 of the outputs' scale), so
the comparison is tight and does not depend on the thread count that orders float32 sums. The plain
network is the same model with torchvision's own ``ShiftedWindowAttention3d`` in every Swin block and
multi-scale deformable attention computed by one ``grid_sample`` per level followed by the weighted sum
(the formulation before the optimisation), written out here.
"""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch
from support import OperandDtypes, assert_all_close, embedding_bag_operands, make_inputs, perturbed_model, run
from torchvision.models.video.swin_transformer import ShiftedWindowAttention3d

import wavecl.model.deformable as deformable
from wavecl.config import load_config
from wavecl.model.backbone import WindowAttention3d
from wavecl.model.dropout import dropout
from wavecl.model.wavecl import WaveCL

SWITCHES = {
    "defaults": dict(eval_layer="last", fla_order="frame", sep_pooling="masked", sentence_pooling="mean"),
    "reference": dict(
        eval_layer="reference", fla_order="reference", sep_pooling="reference", sentence_pooling="pooler"
    ),
}
"""Every parity switch of the model config, at its default and at its reference value."""


def plain_copy(model: WaveCL) -> WaveCL:
    """A deep copy of ``model`` whose Swin blocks use torchvision's window attention (same weights)."""
    plain = copy.deepcopy(model)
    for stage in plain.backbone.body.features[::2]:
        for block in stage:
            fast = block.attn
            assert isinstance(fast, WindowAttention3d)
            block.attn = ShiftedWindowAttention3d(
                fast.qkv.in_features, list(fast.window_size), list(fast.shift_size), fast.num_heads
            )
            block.attn.load_state_dict(fast.state_dict())
            block.attn.train(fast.training)
    return plain


def tiny_model(switches: str) -> WaveCL:
    """The tiny config with windows of (2, 3, 3) tokens, so that 3 frames and every stage are shifted and
    padded, perturbed away from the zero initialisations so that every path carries a signal."""
    config = load_config("tiny").model
    return perturbed_model(dataclasses.replace(config, backbone_window_size=[2, 3, 3], **SWITCHES[switches]))


@pytest.fixture(scope="module", params=sorted(SWITCHES))
def models(request):
    """The optimised tiny model and its plain copy, both in float64."""
    model = tiny_model(request.param).double()
    return model, plain_copy(model).double()


@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
@pytest.mark.parametrize(
    "T,B", [(1, 1), pytest.param(1, 2, marks=pytest.mark.slow), pytest.param(3, 1, marks=pytest.mark.slow), (3, 2)]
)
def test_optimised_network_equals_plain_computation(models, T, B, train):
    fast, plain = models
    inputs = make_inputs(T, B)
    fast_outputs, fast_gradients = run(fast, inputs, train, plain=False)
    plain_outputs, plain_gradients = run(plain, inputs, train, plain=True)
    assert fast_outputs.keys() == plain_outputs.keys()
    assert_all_close(fast_outputs, plain_outputs)
    assert fast_gradients.keys() == plain_gradients.keys()
    if train:
        assert len(fast_gradients) > 100
        assert_all_close(fast_gradients, plain_gradients)


def test_centre_frame_selection_equals_plain_computation(models):
    fast, plain = models
    inputs = make_inputs(3, 2)
    valid = torch.tensor([1, 3 + 1])
    fast_outputs, _ = run(fast, inputs, train=False, plain=False, valid_indices=valid)
    plain_outputs, _ = run(plain, inputs, train=False, plain=True, valid_indices=valid)
    assert_all_close(fast_outputs, plain_outputs)


@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
def test_coordinates_stay_float32_under_bf16_autocast(train):
    """Reference points, sampling locations and samples, the mask head's coordinates: float32 under CPU bf16
    autocast, while the network's matmuls do run in bf16."""
    model = tiny_model("defaults")
    model.train(train)
    reference_dtypes = []
    for module in model.modules():
        if isinstance(module, deformable.MSDeformAttn):
            module.register_forward_pre_hook(lambda m, args: reference_dtypes.append(args[1].dtype))
    decoded = {}
    model.transformer.register_forward_hook(lambda m, i, o: decoded.__setitem__("out", o))
    value_proj = model.transformer.encoder.layers[0].self_attn.value_proj
    value_proj.register_forward_hook(lambda m, i, o: decoded.__setitem__("value", o))

    def dynamic_conv(name: str, named: dict) -> bool:  # the mask head's grouped 1x1 convs, one group per instance
        return name != "convolution" or (named["groups"] > 1 and named["weight"].shape[-2:] == (1, 1))

    # the deformable sampling (the gather, which the CPU runs) and the dynamic mask head's convolutions
    operands = {**embedding_bag_operands("embedding_bag"), "convolution": ("dynamic_conv", ("input", "weight"))}
    recorder = OperandDtypes(operands, keep=dynamic_conv)
    with torch.autocast("cpu", dtype=torch.bfloat16), torch.set_grad_enabled(train), recorder:
        output = model(*make_inputs(3, 2, dtype=torch.float32))
    assert decoded["value"].dtype == torch.bfloat16  # autocast is really on
    assert decoded["out"].init_reference.dtype == torch.float32
    assert decoded["out"].inter_references.dtype == torch.float32
    layers = model.config.enc_layers + model.config.dec_layers
    assert reference_dtypes == [torch.float32] * layers
    assert recorder.seen["embedding_bag"] and set(recorder.seen["embedding_bag"]) == {torch.float32}
    assert recorder.seen["dynamic_conv"] and set(recorder.seen["dynamic_conv"]) == {torch.float32}
    assert output.pred_masks.dtype == torch.float32


@pytest.mark.parametrize("shift", [(0, 0, 0), (4, 3, 3)])
@pytest.mark.parametrize(
    ("T", "H", "W"),
    [(2, 5, 9), (3, 7, 7), (1, 8, 15), (4, 3, 20), (8, 14, 6), (2, 1, 2), (2, 22, 11)],
)
def test_window_attention_for_any_size_equals_torchvision(shift, T, H, W):
    """The export's branch-free attention against torchvision's on token grids where the 7x7 window
    shrinks along no, one or both spatial axes (sizes at, under and over the window, padded or not)."""
    torch.manual_seed(0)
    attention = WindowAttention3d(16, [8, 7, 7], list(shift), 2).eval()
    with torch.no_grad():
        attention.relative_position_bias_table.normal_()  # a bias that differs per relative position
        tokens = torch.randn(2, T, H, W, 16)
        expected = ShiftedWindowAttention3d.forward(attention, tokens)
        torch.testing.assert_close(attention.forward_any_size(tokens), expected, rtol=1e-5, atol=1e-5)


def test_window_attention_for_any_size_refuses_long_windows():
    attention = WindowAttention3d(16, [8, 7, 7], [4, 3, 3], 2)
    with pytest.raises(ValueError, match="at most 8 frames, got 9"):
        attention.forward_any_size(torch.randn(1, 9, 7, 7, 16))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
def test_dropout_draws_bernoulli_masks(dtype):
    """wavecl's dropout: the kept fraction is 1 - p within 5 standard errors, kept values are scaled by
    1 / (1 - p) in the input's dtype, and outside training (or with p = 0) the input comes back."""
    torch.manual_seed(0)
    x = torch.rand(200_000, dtype=torch.float64).add_(0.5).to(dtype)
    p = 0.1
    out = dropout(x, p, training=True)
    kept = out != 0
    assert out.dtype == dtype and abs(kept.double().mean().item() - (1 - p)) < 5 * (p * (1 - p) / x.numel()) ** 0.5
    torch.testing.assert_close(out[kept], x[kept] * torch.tensor(1 / (1 - p), dtype=dtype), rtol=0, atol=0)
    assert dropout(x, p, training=False) is x and dropout(x, 0.0, training=True) is x
    with pytest.raises(ValueError, match="must be in \\[0, 1\\], got 1.5"):
        dropout(x, 1.5, training=True)
