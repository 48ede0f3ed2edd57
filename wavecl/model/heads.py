"""Prediction heads (docs/architecture.md#heads): box/controller MLPs, the FPN mask-feature decoder and the
CondInst-style dynamic mask head."""

from __future__ import annotations

from typing import cast

import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from torch import Tensor, nn

from wavecl.model.deformable import coordinate_dtype


class MLP(nn.Module):
    """DETR's multi-layer perceptron: ``num_layers`` Linear layers with ReLU between them.

    Hand-written rather than :class:`torchvision.ops.MLP` because the reference checkpoints name the
    linears ``layers.{i}`` (torchvision's Sequential interleaves activation modules, which shifts the
    indices) and this MLP has no activation after its last layer.

    Args:
        input_dim, hidden_dim, output_dim: widths.
        num_layers: number of Linear layers (``num_layers - 1`` hidden layers of ``hidden_dim``).
    """

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int, num_layers: int) -> None:
        super().__init__()
        hidden = [hidden_dim] * (num_layers - 1)
        self.layers = nn.ModuleList(
            nn.Linear(n_in, n_out) for n_in, n_out in zip([input_dim] + hidden, hidden + [output_dim])
        )

    def forward(self, x: Tensor) -> Tensor:
        """``[..., input_dim]`` → ``[..., output_dim]``."""
        for index, layer in enumerate(self.layers):
            x = layer(x)
            if index < len(self.layers) - 1:
                x = F.relu(x)
        return x


class FPNSpatialDecoder(nn.Module):
    """Top-down FPN turning the stride-32/16/8 encoder memories and the stride-4 backbone features into
    per-frame mask features at stride 4.

    Every stage is conv 3×3 → GroupNorm(8) → ReLU; the coarser map is nearest-upsampled and added to a
    1×1 adapter of the skip connection. The widths halve at each stage: ``C, C/2, C/4, C/8, C/16``.

    Args:
        context_dim: ``C``, channels of the stride-32 input (a multiple of 128, for GroupNorm(8) at C/16).
        fpn_dims: channels of the three skips: stride-16 memory, stride-8 memory, backbone stage 0
            (96 for Swin-T/S, 128 for Swin-B).
        mask_kernels_dim: output channels ``Cm``.
    """

    def __init__(
        self, context_dim: int = 256, fpn_dims: tuple[int, int, int] = (256, 256, 96), mask_kernels_dim: int = 8
    ) -> None:
        super().__init__()
        if context_dim % 128 != 0:
            raise ValueError(
                f"context_dim must be a multiple of 128 (GroupNorm(8, context_dim // 16)), got {context_dim}"
            )
        if len(fpn_dims) != 3:
            raise ValueError(f"fpn_dims must give the channels of 3 skip connections, got {fpn_dims}")
        dims = [context_dim // 2**i for i in range(5)]
        self.lay1 = nn.Conv2d(context_dim, dims[0], 3, padding=1)
        self.gn1 = nn.GroupNorm(8, dims[0])
        self.lay2 = nn.Conv2d(dims[0], dims[1], 3, padding=1)
        self.gn2 = nn.GroupNorm(8, dims[1])
        self.lay3 = nn.Conv2d(dims[1], dims[2], 3, padding=1)
        self.gn3 = nn.GroupNorm(8, dims[2])
        self.lay4 = nn.Conv2d(dims[2], dims[3], 3, padding=1)
        self.gn4 = nn.GroupNorm(8, dims[3])
        self.lay5 = nn.Conv2d(dims[3], dims[4], 3, padding=1)
        self.gn5 = nn.GroupNorm(8, dims[4])
        self.out_lay = nn.Conv2d(dims[4], mask_kernels_dim, 3, padding=1)
        self.adapter1 = nn.Conv2d(fpn_dims[0], dims[1], 1)
        self.adapter2 = nn.Conv2d(fpn_dims[1], dims[2], 1)
        self.adapter3 = nn.Conv2d(fpn_dims[2], dims[3], 1)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_uniform_(module.weight, a=1)
                nn.init.zeros_(cast(Tensor, module.bias))  # every convolution here has a bias

    def forward(self, x: Tensor, skips: list[Tensor]) -> Tensor:
        """Decode one batch of frames.

        Args:
            x: ``[N, C, h32, w32]`` encoder memory at stride 32.
            skips: ``[memory s16 [N, fpn_dims[0], h16, w16], memory s8 [N, fpn_dims[1], h8, w8],
                backbone stage 0 [N, fpn_dims[2], h4, w4]]``.

        Returns:
            ``[N, mask_kernels_dim, h4, w4]`` mask features.
        """
        if len(skips) != 3:
            raise ValueError(f"expected 3 skip connections (s16, s8, s4), got {len(skips)}")
        x = F.relu(self.gn1(self.lay1(x)))
        x = F.relu(self.gn2(self.lay2(x)))
        stages = [
            (self.adapter1, self.lay3, self.gn3),
            (self.adapter2, self.lay4, self.gn4),
            (self.adapter3, self.lay5, self.gn5),
        ]
        for skip, (adapter, conv, norm) in zip(skips, stages):
            lateral = adapter(skip)
            x = lateral + F.interpolate(x, size=lateral.shape[-2:], mode="nearest")
            x = F.relu(norm(conv(x)))
        return self.out_lay(x)


def _dynamic_layer_shapes(in_channels: int, channels: int, num_layers: int) -> list[tuple[int, int]]:
    """``(in, out)`` channels of the dynamic 1×1 convs: ``in_channels → channels → … → 1``."""
    if num_layers < 1:
        raise ValueError(f"the dynamic mask head needs at least one layer, got num_layers={num_layers}")
    widths = [in_channels] + [channels] * (num_layers - 1) + [1]
    return list(zip(widths[:-1], widths[1:]))


def dynamic_param_count(in_channels: int, channels: int, num_layers: int) -> int:
    """Number of parameters the controller generates per instance.

    Args:
        in_channels: channels seen by the first dynamic conv (mask features, plus 2 with relative
            coordinates).
        channels: width of the hidden dynamic convs.
        num_layers: number of dynamic 1×1 convs (the last one outputs one channel).

    Returns:
        Weights plus biases; 169 for ``(10, 8, 3)``.
    """
    return sum(n_in * n_out + n_out for n_in, n_out in _dynamic_layer_shapes(in_channels, channels, num_layers))


def dynamic_mask_logits(
    mask_features: Tensor,
    dynamic_params: Tensor,
    reference_points: Tensor,
    image_sizes: Tensor,
    mask_stride: int = 4,
    rel_coord: bool = True,
    channels: int = 8,
    num_layers: int = 3,
) -> Tensor:
    """CondInst-style dynamic mask head: a per-instance stack of 1×1 convs on the frame's mask features.

    Each instance's parameters are laid out weights first, then biases, each conv's weight row-major as
    ``(out, in)``. With ``rel_coord``, the instance's centre minus every pixel location, in unnormalised
    input pixels ``(x, y)``, is appended to the features; location ``(i, j)`` is
    ``(mask_stride·j + mask_stride//2, mask_stride·i + mask_stride//2)``. All instances run as one
    grouped convolution.

    The coordinates and the dynamic convolutions run in at least float32 with autocast off, whatever the
    dtype of the features: the relative coordinates reach several hundred pixels, where bf16 is spaced 2
    to 4 pixels apart, and the convolutions are too small (``Cm + 2 → channels → … → 1`` per pixel) to
    gain from lower precision.

    Args:
        mask_features: ``[B, T, Cm, h, w]`` at stride ``mask_stride``.
        dynamic_params: ``[B, T, Q, P]``, ``P = dynamic_param_count(Cm + 2·rel_coord, channels, num_layers)``.
        reference_points: ``[B, T, Q, 2]`` normalised ``(x, y)`` instance centres (detached by the caller).
        image_sizes: ``[B, 2]`` unpadded input sizes ``(H', W')`` that normalise the centres.
        mask_stride: stride of ``mask_features`` with respect to the input.
        rel_coord: append relative coordinates.
        channels: width of the hidden dynamic convs.
        num_layers: number of dynamic convs.

    Returns:
        ``[B, T, Q, h, w]`` mask logits at stride ``mask_stride``, in ``coordinate_dtype`` of the inputs.
    """
    b, t, cm, h, w = mask_features.shape
    q = dynamic_params.shape[2]
    in_channels = cm + 2 if rel_coord else cm
    layer_shapes = _dynamic_layer_shapes(in_channels, channels, num_layers)
    num_params = dynamic_param_count(in_channels, channels, num_layers)
    if dynamic_params.shape != (b, t, q, num_params):
        raise ValueError(f"dynamic_params must be [{b}, {t}, Q, {num_params}], got {tuple(dynamic_params.shape)}")
    if reference_points.shape != (b, t, q, 2):
        raise ValueError(f"reference_points must be [{b}, {t}, {q}, 2], got {tuple(reference_points.shape)}")
    if image_sizes.shape != (b, 2):
        raise ValueError(f"image_sizes must be [{b}, 2] (H', W'), got {tuple(image_sizes.shape)}")

    dtype = coordinate_dtype(torch.promote_types(mask_features.dtype, dynamic_params.dtype))
    device = mask_features.device
    inputs = repeat(mask_features.to(dtype), "b t c h w -> b t q c h w", q=q)
    if rel_coord:
        xs = torch.arange(w, dtype=dtype, device=device) * mask_stride + mask_stride // 2
        ys = torch.arange(h, dtype=dtype, device=device) * mask_stride + mask_stride // 2
        centres = reference_points.to(dtype) * image_sizes.flip(-1).to(dtype)[:, None, None, :]  # pixels (x, y)
        rel_x = centres[..., 0, None, None] - xs  # [B, T, Q, 1, w]
        rel_y = centres[..., 1, None, None] - ys[:, None]  # [B, T, Q, h, 1]
        relative = torch.stack(torch.broadcast_tensors(rel_x, rel_y), dim=3)  # [B, T, Q, 2, h, w]
        inputs = torch.cat([inputs, relative], dim=3)

    instances = b * t * q
    params = dynamic_params.to(dtype).reshape(instances, num_params)
    splits = params.split([n_in * n_out for n_in, n_out in layer_shapes] + [n_out for _, n_out in layer_shapes], dim=1)
    if torch.compiler.is_exporting():
        # ONNX's Conv needs a constant group count: the same 1x1 convs as one batched matmul per layer
        x = rearrange(inputs, "b t q c h w -> (b t q) c (h w)")
        for index, (n_in, n_out) in enumerate(layer_shapes):
            weight = splits[index].reshape(instances, n_out, n_in)
            x = torch.baddbmm(splits[len(layer_shapes) + index][:, :, None], weight, x)
            if index < len(layer_shapes) - 1:
                x = F.relu(x)
        return rearrange(x, "(b t q) 1 (h w) -> b t q h w", b=b, t=t, h=h)
    x = rearrange(inputs, "b t q c h w -> 1 (b t q c) h w")
    with torch.autocast(device.type, enabled=False):
        for index, (n_in, n_out) in enumerate(layer_shapes):
            weight = splits[index].reshape(instances * n_out, n_in, 1, 1)
            bias = splits[len(layer_shapes) + index].reshape(instances * n_out)
            x = F.conv2d(x, weight, bias, groups=instances)
            if index < len(layer_shapes) - 1:
                x = F.relu(x)
    return rearrange(x, "1 (b t q) h w -> b t q h w", b=b, t=t)
