"""Tests of the MLP, the FPN spatial decoder and the dynamic mask head."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from wavecl.model.heads import MLP, FPNSpatialDecoder, dynamic_mask_logits, dynamic_param_count


def naive_dynamic_masks(mask_features, params, reference_points, image_sizes, layout, rel_coord, stride=4):
    """Loop over instances; ``layout`` lists the (out, in) shape of every conv in parameter order."""
    b_size, t_size, _, h, w = mask_features.shape
    q_size = params.shape[2]
    out = torch.zeros(b_size, t_size, q_size, h, w, dtype=params.dtype)
    for b in range(b_size):
        img_h, img_w = image_sizes[b].tolist()
        for t in range(t_size):
            features = mask_features[b, t].reshape(mask_features.shape[2], h * w)
            for q in range(q_size):
                p = params[b, t, q]
                offset, weights, biases = 0, [], []
                for n_out, n_in in layout:
                    weights.append(p[offset : offset + n_out * n_in].reshape(n_out, n_in))
                    offset += n_out * n_in
                for n_out, _ in layout:
                    biases.append(p[offset : offset + n_out])
                    offset += n_out
                assert offset == p.numel()
                x = features
                if rel_coord:
                    cx = reference_points[b, t, q, 0].item() * img_w
                    cy = reference_points[b, t, q, 1].item() * img_h
                    rel = torch.zeros(2, h, w, dtype=params.dtype)
                    for i in range(h):
                        for j in range(w):
                            rel[0, i, j] = cx - (stride * j + stride // 2)
                            rel[1, i, j] = cy - (stride * i + stride // 2)
                    x = torch.cat([features, rel.reshape(2, h * w)], dim=0)
                for index, (weight, bias) in enumerate(zip(weights, biases)):
                    x = weight @ x + bias[:, None]
                    if index < len(layout) - 1:
                        x = torch.relu(x)
                out[b, t, q] = x.reshape(h, w)
    return out


def _mask_head_inputs(cm: int, num_params: int):
    generator = torch.Generator().manual_seed(0)
    b, t, q, h, w = 2, 2, 3, 5, 7
    mask_features = torch.randn(b, t, cm, h, w, generator=generator, dtype=torch.float64)
    params = torch.randn(b, t, q, num_params, generator=generator, dtype=torch.float64) * 0.3
    reference_points = torch.rand(b, t, q, 2, generator=generator, dtype=torch.float64)
    image_sizes = torch.tensor([[18, 26], [20, 23]])  # unpadded (H', W') inside a 20×28 padded input
    return mask_features, params, reference_points, image_sizes


def test_dynamic_mask_logits_matches_naive_loop_reference_config():
    # reference layout: w0 (8×10), w1 (8×8), w2 (1×8), then b0 (8), b1 (8), b2 (1)
    mask_features, params, reference_points, image_sizes = _mask_head_inputs(cm=8, num_params=169)
    expected = naive_dynamic_masks(
        mask_features, params, reference_points, image_sizes, [(8, 10), (8, 8), (1, 8)], True
    )
    actual = dynamic_mask_logits(mask_features, params, reference_points, image_sizes)
    assert actual.shape == (2, 2, 3, 5, 7)
    torch.testing.assert_close(actual, expected, rtol=1e-10, atol=1e-10)


def test_dynamic_mask_logits_without_coordinates_and_two_layers():
    mask_features, params, reference_points, image_sizes = _mask_head_inputs(cm=6, num_params=33)
    expected = naive_dynamic_masks(mask_features, params, reference_points, image_sizes, [(4, 6), (1, 4)], False)
    actual = dynamic_mask_logits(
        mask_features, params, reference_points, image_sizes, rel_coord=False, channels=4, num_layers=2
    )
    torch.testing.assert_close(actual, expected, rtol=1e-10, atol=1e-10)


def test_dynamic_mask_logits_rejects_wrong_parameter_count():
    mask_features, params, reference_points, image_sizes = _mask_head_inputs(cm=8, num_params=168)
    with pytest.raises(ValueError, match="dynamic_params"):
        dynamic_mask_logits(mask_features, params, reference_points, image_sizes)


def test_dynamic_param_count():
    assert dynamic_param_count(10, 8, 3) == 169
    assert dynamic_param_count(8, 8, 3) == 153
    assert dynamic_param_count(6, 4, 2) == 33


def test_mlp_is_linear_relu_linear_relu_linear():
    torch.manual_seed(0)
    mlp = MLP(5, 7, 3, 3)
    x = torch.randn(4, 5)
    l0, l1, l2 = mlp.layers
    expected = l2(torch.relu(l1(torch.relu(l0(x)))))
    torch.testing.assert_close(mlp(x), expected)
    assert (mlp(x) < 0).any()  # no activation after the last layer


def test_mlp_parameter_counts():
    bbox = MLP(256, 256, 4, 3)
    controller = MLP(256, 256, 169, 3)
    assert 3 * sum(p.numel() for p in bbox.parameters()) == 397_836
    assert sum(p.numel() for p in controller.parameters()) == 175_017
    assert [tuple(layer.weight.shape) for layer in controller.layers] == [(256, 256), (256, 256), (169, 256)]


def _small_fpn():
    torch.manual_seed(0)
    return FPNSpatialDecoder(context_dim=128, fpn_dims=(128, 64, 24), mask_kernels_dim=8)


def _fpn_inputs():
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(2, 128, 3, 4, generator=generator)
    skips = [
        torch.randn(2, 128, 5, 7, generator=generator),
        torch.randn(2, 64, 9, 13, generator=generator),
        torch.randn(2, 24, 17, 25, generator=generator),
    ]
    return x, skips


def test_fpn_output_shape_for_odd_sizes():
    fpn = _small_fpn()
    x, skips = _fpn_inputs()
    out = fpn(x, skips)
    assert out.shape == (2, 8, 17, 25)
    assert torch.isfinite(out).all()


def test_fpn_frames_are_independent_and_stride4_skip_acts_locally():
    # the stride-4 skip goes through lay5 (3×3) and out_lay (3×3): a change at one pixel acts directly on
    # its 5×5 neighbourhood, and elsewhere only through the GroupNorm statistics of its own frame
    fpn = _small_fpn().eval()
    x, skips = _fpn_inputs()
    changed = [s.clone() for s in skips]
    changed[2][1, :, 8, 12] += 5.0
    with torch.no_grad():
        difference = (fpn(x, changed) - fpn(x, skips)).abs().amax(dim=1)
    assert not difference[0].any()
    row, col = divmod(int(difference[1].argmax()), difference.shape[-1])
    assert abs(row - 8) <= 2 and abs(col - 12) <= 2
    outside = difference[1].clone()
    outside[6:11, 10:15] = 0
    assert outside.max() < 0.5 * difference[1].max()


def test_fpn_initialisation_and_validation():
    fpn = _small_fpn()
    for module in fpn.modules():
        if isinstance(module, nn.Conv2d):
            fan_in = module.weight[0].numel()
            assert module.weight.abs().max() <= math.sqrt(3.0 / fan_in)  # Kaiming-uniform, a = 1
            assert torch.count_nonzero(module.bias) == 0
    with pytest.raises(ValueError, match="multiple of 128"):
        FPNSpatialDecoder(context_dim=96)
    x, skips = _fpn_inputs()
    with pytest.raises(ValueError, match="skip"):
        fpn(x, skips[:2])


def test_fpn_full_size_parameter_count_and_names():
    fpn = FPNSpatialDecoder(256, (256, 256, 96), 8)
    assert sum(p.numel() for p in fpn.parameters()) == 1_036_600
    shapes = {k: tuple(v.shape) for k, v in fpn.state_dict().items()}
    assert shapes["lay1.weight"] == (256, 256, 3, 3)
    assert shapes["lay2.weight"] == (128, 256, 3, 3)
    assert shapes["adapter1.weight"] == (128, 256, 1, 1)
    assert shapes["lay3.weight"] == (64, 128, 3, 3)
    assert shapes["adapter2.weight"] == (64, 256, 1, 1)
    assert shapes["lay4.weight"] == (32, 64, 3, 3)
    assert shapes["adapter3.weight"] == (32, 96, 1, 1)
    assert shapes["lay5.weight"] == (16, 32, 3, 3)
    assert shapes["gn5.weight"] == (16,)
    assert shapes["out_lay.weight"] == (8, 16, 3, 3)
