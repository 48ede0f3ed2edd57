"""Deformable transformer (Deformable-DETR style) run independently on every frame (docs/architecture.md).

The encoder refines the flattened multi-scale tokens of each frame with multi-scale deformable
self-attention; the decoder turns ``Q`` learned queries into per-frame object embeddings with
iterative box refinement. Frames never attend to each other here: the batch dimension ``N`` is
``B·T`` frames.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from wavecl.model.dropout import Dropout
from wavecl.model.linear import relu_feed_forward
from wavecl.model.recompute import run_block
from wavecl.model.shape_cache import cached_per_shape


def coordinate_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype in which reference points, sampling locations and the samples are computed: ``dtype``
    promoted to at least float32, so that under bf16/fp16 autocast coordinates keep float32 precision
    (bf16 spaces values near 640 px by 4 px) while a float64 model stays float64."""
    return torch.promote_types(dtype, torch.float32)


LevelShapes = tuple[tuple[int, int], ...]
"""``(H_l, W_l)`` of every feature level, as Python integers (read from the maps' shapes once per forward,
so that no layer has to copy a shape tensor back from the device)."""


def ms_deform_attn(
    value: Tensor, level_shapes: LevelShapes, sampling_locations: Tensor, attention_weights: Tensor
) -> Tensor:
    """Multi-scale deformable attention core: a weighted sum of bilinear samples of every level.

    Written in pure PyTorch instead of the custom CUDA kernel of Deformable DETR: nothing has to be
    compiled, it runs on CPU, CUDA and MPS, supports every dtype and autograd, and computes the same
    function as the kernel. Two exact formulations of it are used:

    * the four bilinear corners of every sample are gathered straight from ``value`` by
      :func:`torch.nn.functional.embedding_bag` with the bilinear times attention weights as per-sample
      weights (:func:`_sample_by_gather`), in inference on every device and, with its backward pass
      written out (:class:`_GatherWithGradient`), in eager training on the CPU;
    * :func:`torch.nn.functional.grid_sample` per level, then the attention-weighted sum of the samples
      (:func:`_sample_by_grid`): for training on other devices, under ``torch.compile`` (whose generated
      code fuses the weighted sum) and for ONNX export (standard operators).

    grid_sample is not used for the rest because it writes every sample of every channel
    (``[N·M, D, Lq, P]`` per level) before the weighted sum reads it back: on one CPU thread at the encoder
    size of 8x256x448 (2,380 queries per frame, 8 heads, 4 levels, 4 points), the gather takes 93 ms
    against 454 ms per layer, and a training layer's forward and backward 0.50 s against 0.93 s.

    Both sample in the dtype of ``sampling_locations`` (``value`` is cast to it): under autocast the
    coordinates stay float32 and so do the samples.

    Args:
        value: ``[N, Len, M, D]`` values of the ``M`` heads, the levels concatenated along ``Len``
            (``Len = Σ_l H_l·W_l``, each level flattened row-major).
        level_shapes: ``(H_l, W_l)`` of every level.
        sampling_locations: ``[N, Lq, M, L, P, 2]`` normalised ``(x, y)``; ``(x + 0.5) / W_l`` hits
            the centre of pixel column ``x``. Samples outside the map read zeros.
        attention_weights: ``[N, Lq, M, L, P]`` weights of the samples (softmax-normalised by the caller).

    Returns:
        ``[N, Lq, M·D]`` in the dtype of ``sampling_locations``: the heads' outputs concatenated.

    Raises:
        ValueError: ``value`` does not hold ``Σ_l H_l·W_l`` tokens.
    """
    length = value.shape[1]
    level_lengths = [h * w for h, w in level_shapes]
    if sum(level_lengths) != length:
        raise ValueError(f"value has {length} tokens but level shapes {level_shapes} describe {sum(level_lengths)}")
    attention_weights = attention_weights.to(sampling_locations.dtype)
    needs_grad = torch.is_grad_enabled() and any(
        tensor.requires_grad for tensor in (value, sampling_locations, attention_weights)
    )
    compiled = torch.compiler.is_compiling()
    if torch.compiler.is_exporting() or (needs_grad and (value.device.type != "cpu" or compiled)):
        return _sample_by_grid(value, level_shapes, sampling_locations, attention_weights)
    if needs_grad:
        return _GatherWithGradient.apply(value, level_shapes, sampling_locations, attention_weights)
    return _sample_by_gather(value, level_shapes, sampling_locations, attention_weights)


def _sample_by_grid(
    value: Tensor, level_shapes: LevelShapes, sampling_locations: Tensor, attention_weights: Tensor
) -> Tensor:
    """:func:`ms_deform_attn` through one ``grid_sample`` per level (differentiable in every input)."""
    value = value.to(sampling_locations.dtype)
    n, _, heads, _ = value.shape
    values_per_level = value.split([h * w for h, w in level_shapes], dim=1)
    grids = 2 * sampling_locations - 1  # grid_sample coordinates in [-1, 1]
    output = None
    for level, (h, w) in enumerate(level_shapes):
        level_value = rearrange(values_per_level[level], "n (h w) m d -> (n m) d h w", h=h, w=w)
        # points before queries, so that the weighted sum adds rows of Lq contiguous samples instead of
        # reducing a last axis of P: in ONNX Runtime (one thread) the largest level of the encoder at
        # 8x320x576 took 87 ms instead of 94, sampling included
        level_grid = rearrange(grids[:, :, :, level], "n q m p xy -> (n m) p q xy")
        samples = F.grid_sample(level_value, level_grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        level_weights = rearrange(attention_weights[:, :, :, level], "n q m p -> (n m) 1 p q")
        weighted = (samples * level_weights).sum(dim=2)  # [(n m), d, q]
        output = weighted if output is None else output + weighted
    assert output is not None  # level_shapes is not empty
    return rearrange(output, "(n m) d q -> n q (m d)", n=n, m=heads)


@cached_per_shape
def offset_scales(level_shapes: LevelShapes, points: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    """``[L·P·2]`` the ``(1 / W_l, 1 / H_l)`` of every level repeated for its ``P`` points, in the
    ``(level, point, xy)`` order of the sampling offsets, in ``dtype`` on ``device`` (built once per shapes)."""
    sizes = torch.tensor([(w, h) for h, w in level_shapes], dtype=dtype, device=device)
    return repeat(sizes.reciprocal(), "l xy -> (l p xy)", p=points)


GATHER_PAD = (1, 2)
"""Zero rows and columns :func:`_sample_by_gather` adds before and after every level map: a pixel coordinate
clamped to ``[-1, W]`` then has both bilinear corners, ``x0`` and ``x0 + 1``, inside the padded map."""


@dataclass(frozen=True)
class GatherTables:
    """Constants of :func:`_sample_by_gather` for one input shape; the index tensors are int32 (int64 for a
    table of 2³¹ rows or more).

    The gather table holds every level map padded by :data:`GATHER_PAD`, ``(H_l + 3)·(W_l + 3)`` rows per
    level and frame, each row split into the ``M`` heads' rows. Every constant is materialised over the
    points ``P`` so that the element-wise passes over ``[N, Lq, M, L, P]`` run along 16 or more contiguous
    elements instead of broadcasting along a dimension of 2 or 4 (several times slower on the CPU).

    Attributes:
        padded_starts: the first row of each padded level, in map positions (Python integers).
        padded_length: map positions per frame, ``Σ_l (H_l + 3)·(W_l + 3)``.
        sizes: ``[2, 1, 1, 1, L, P]`` ``W_l`` then ``H_l``, in the coordinate dtype.
        half, minus_one: ``-0.5`` and ``-1`` as 0-dimensional tensors in the coordinate dtype.
        row_strides: ``[L, P]`` table rows from one map row to the next, ``(W_l + 3)·M``.
        origins: ``[N, 1, M, L, P]`` the table row of pixel ``(0, 0)`` of level ``l``, head ``m``, frame ``n``.
        corners: ``[4, L, P]`` the row offsets of the corners ``(x0, y0), (x0 + 1, y0), (x0, y0 + 1),
            (x0 + 1, y0 + 1)``.
    """

    padded_starts: tuple[int, ...]
    padded_length: int
    sizes: Tensor
    half: Tensor
    minus_one: Tensor
    row_strides: Tensor
    origins: Tensor
    corners: Tensor


@cached_per_shape
def gather_tables(
    level_shapes: LevelShapes, frames: int, heads: int, points: int, device: torch.device, dtype: torch.dtype
) -> GatherTables:
    """:class:`GatherTables` for ``frames`` frames of ``heads`` heads sampling ``points`` points per level;
    int32 indices while the table has fewer than 2³¹ rows (half the memory traffic of int64), else int64."""
    before, after = GATHER_PAD
    padded = [(h + before + after) * (w + before + after) for h, w in level_shapes]
    padded_starts = tuple(sum(padded[:level]) for level in range(len(padded)))
    padded_length = sum(padded)
    index_dtype = torch.int32 if frames * padded_length * heads < 2**31 else torch.int64
    widths = torch.tensor([w for _, w in level_shapes], device=device)
    heights = torch.tensor([h for h, _ in level_shapes], device=device)
    sizes = torch.stack([widths, heights]).to(dtype)[:, None, None, None, :, None].expand(-1, -1, -1, -1, -1, points)
    row_strides = ((widths + before + after) * heads)[:, None].expand(-1, points)
    pixel_zero = torch.tensor(padded_starts, device=device) + before * (widths + before + after) + before
    frame_starts = torch.arange(frames, device=device)[:, None, None] * padded_length
    origins = (frame_starts + pixel_zero) * heads + torch.arange(heads, device=device)[:, None]  # [N, M, L]
    origins = origins[:, None, :, :, None].expand(-1, -1, -1, -1, points)
    corners = torch.stack([torch.zeros_like(row_strides), torch.full_like(row_strides, heads)])
    corners = torch.cat([corners, corners + row_strides])
    return GatherTables(
        padded_starts,
        padded_length,
        sizes.contiguous(),
        torch.tensor(-0.5, dtype=dtype, device=device),
        torch.tensor(-1.0, dtype=dtype, device=device),
        row_strides.to(index_dtype).contiguous(),
        origins.to(index_dtype).contiguous(),
        corners.to(index_dtype).contiguous(),
    )


def _padded_table(value: Tensor, level_shapes: LevelShapes, tables: GatherTables, dtype: torch.dtype) -> Tensor:
    """``[N, Σ_l (H_l + 3)·(W_l + 3), M, D]`` every level map of ``value [N, Len, M, D]`` inside its
    :data:`GATHER_PAD` zeros, in ``dtype`` (the copy casts)."""
    n, _, heads, dim = value.shape
    table = value.new_zeros(n, tables.padded_length, heads, dim, dtype=dtype)
    for level_value, interior, (h, w) in zip(
        value.split([h * w for h, w in level_shapes], dim=1), _interiors(table, level_shapes, tables), level_shapes
    ):
        interior.copy_(level_value.unflatten(1, (h, w)))
    return table


def _interiors(table: Tensor, level_shapes: LevelShapes, tables: GatherTables) -> list[Tensor]:
    """Views ``[N, H_l, W_l, M, D]`` of every level map inside its :data:`GATHER_PAD` zeros in ``table``."""
    before, after = GATHER_PAD
    views = []
    for start, (h, w) in zip(tables.padded_starts, level_shapes):
        padded_map = table[:, start : start + (h + before + after) * (w + before + after)]
        padded_map = padded_map.unflatten(1, (h + before + after, w + before + after))
        views.append(padded_map[:, before : before + h, before : before + w])
    return views


def _corners(
    tables: GatherTables, sampling_locations: Tensor, attention_weights: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """The table rows and weights of the four bilinear corners of every sample.

    A pixel coordinate is clamped to ``[-1, W]`` (``[-1, H]``) first: a sample beyond it lies wholly outside
    the map, and so does the clamped one, whose weight falls on padding; a NaN coordinate counts as outside,
    as in Deformable DETR's kernel. No corner then needs a bounds test, and no index can leave the table.

    Returns:
        ``rows [N, Lq, M, 4, L, P]`` (corners ``(x0, y0), (x0 + 1, y0), (x0, y0 + 1), (x0 + 1, y0 + 1)``),
        ``fractions [2, N, Lq, M, L, P]`` (``x - x0`` then ``y - y0``, in pixels) and ``weights
        [N, Lq, M, 2, 2, L, P]`` (bilinear weight times attention weight, ``y`` corner then ``x`` corner).
    """
    heads = sampling_locations.shape[2]
    xy_planes = rearrange(sampling_locations, "n q m l p xy -> xy n q m l p")
    pixels = torch.addcmul(tables.half, xy_planes, tables.sizes)  # [2, N, Lq, M, L, P]
    pixels = pixels.nan_to_num_(nan=-1.0).clamp_(min=tables.minus_one, max=tables.sizes)
    corners = pixels.floor()
    fractions = pixels.sub_(corners)
    x0, y0 = corners.to(tables.origins.dtype)
    rows = y0.mul_(tables.row_strides).add_(x0, alpha=heads).add_(tables.origins)
    rows = rows[:, :, :, None] + tables.corners
    fx, fy = fractions
    lower = fy * attention_weights
    weights_y = torch.stack([attention_weights - lower, lower], dim=3)
    weights_x = torch.stack([1 - fx, fx], dim=3)
    return rows, fractions, weights_y[:, :, :, :, None] * weights_x[:, :, :, None]


@dataclass(frozen=True)
class _Gathered:
    """The output of :func:`_gather` and what it was computed from (what the backward pass needs).

    Attributes:
        output: ``[N, Lq, M·D]``.
        tables: the shape's :class:`GatherTables`.
        table: ``[N, Σ_l (H_l + 3)·(W_l + 3), M, D]`` the padded maps (:func:`_padded_table`).
        rows, fractions, weights: as :func:`_corners` returns them.
    """

    output: Tensor
    tables: GatherTables
    table: Tensor
    rows: Tensor
    fractions: Tensor
    weights: Tensor


def _gather(
    value: Tensor, level_shapes: LevelShapes, sampling_locations: Tensor, attention_weights: Tensor
) -> _Gathered:
    """:func:`ms_deform_attn` as one ``embedding_bag`` sum over the rows of the zero-padded maps: bag
    ``(n, q, m)`` adds the ``4·L·P`` corner rows (:func:`_corners`) of head ``m`` of frame ``n``, each
    weighted by its bilinear weight times the sample's attention weight."""
    n, _, heads, dim = value.shape
    _, queries, _, levels, points, _ = sampling_locations.shape
    dtype = sampling_locations.dtype
    tables = gather_tables(level_shapes, n, heads, points, value.device, dtype)
    table = _padded_table(value, level_shapes, tables, dtype)
    rows, fractions, weights = _corners(tables, sampling_locations, attention_weights)
    bag = 4 * levels * points
    summed = F.embedding_bag(
        rows.view(-1, bag), table.view(-1, dim), per_sample_weights=weights.view(-1, bag), mode="sum"
    )
    return _Gathered(summed.view(n, queries, heads * dim), tables, table, rows, fractions, weights)


def _sample_by_gather(
    value: Tensor, level_shapes: LevelShapes, sampling_locations: Tensor, attention_weights: Tensor
) -> Tensor:
    """:func:`ms_deform_attn` by :func:`_gather`, without autograd."""
    return _gather(value, level_shapes, sampling_locations, attention_weights).output


class _GatherWithGradient(torch.autograd.Function):
    """:func:`_sample_by_gather` with its backward pass written out, for training on the CPU.

    Autograd through :func:`_sample_by_gather` is slow in the backward of ``embedding_bag`` (a sort of all
    ``4·L·P`` corner rows of every bag, then a scatter), and :func:`_sample_by_grid` writes, multiplies and
    sums every sample of every channel in both passes (``[N·M, D, Lq, P]`` per level). Here:

    * the value gradient is the transposed gather: the samples are sorted by their ``(x0, y0)`` corner
      row only (a quarter of the rows), then one ``embedding_bag`` per corner sums the output gradients of
      the samples at each row, and the four sums are added at their corner offsets;
    * the gradient of every corner weight is the dot product of its row with the bag's output gradient
      (torch's own ``embedding_bag`` per-sample-weight backward), from which the attention weights' and
      the locations' gradients follow by the product rule (a clamped or NaN coordinate has none).

    One encoder layer at 8x256x448 on one thread: forward and backward 0.50 s against 0.93 s for
    :func:`_sample_by_grid`.
    """

    @staticmethod
    def forward(
        ctx: Any, value: Tensor, level_shapes: LevelShapes, sampling_locations: Tensor, attention_weights: Tensor
    ) -> Tensor:
        """See :func:`ms_deform_attn`."""
        gathered = _gather(value, level_shapes, sampling_locations, attention_weights)
        ctx.save_for_backward(
            gathered.table, gathered.rows, gathered.fractions, gathered.weights, sampling_locations, attention_weights
        )
        ctx.level_shapes, ctx.tables, ctx.value_dtype = level_shapes, gathered.tables, value.dtype
        return gathered.output

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_output: Tensor) -> tuple[Tensor | None, None, Tensor | None, Tensor | None]:
        """Gradients of ``value``, the locations and the attention weights (``None`` where not needed)."""
        table, rows, fractions, weights, sampling_locations, attention_weights = ctx.saved_tensors
        tables: GatherTables = ctx.tables
        n, queries, heads, _, levels, points = rows.shape
        dim = table.shape[-1]
        grad = grad_output.reshape(n * queries * heads, dim).to(table.dtype)
        grad_value = grad_locations = grad_attention = None
        if ctx.needs_input_grad[0]:
            grad_table = _transposed_gather(grad, rows, weights, tables, ctx.level_shapes).view_as(table)
            grad_value = _unpadded(grad_table, ctx.level_shapes, tables).to(ctx.value_dtype)
        if ctx.needs_input_grad[2] or ctx.needs_input_grad[3]:
            bag = 4 * levels * points
            offsets = torch.arange(0, rows.numel(), bag, dtype=rows.dtype, device=rows.device)
            corner_grads = torch.ops.aten._embedding_bag_per_sample_weights_backward(
                grad, table.view(-1, dim), rows.view(-1), offsets, rows.new_empty(0), 0, -1
            ).view(n, queries, heads, 2, 2, levels, points)
            fx, fy = fractions
            a0, a1 = corner_grads[:, :, :, 0].unbind(3)
            b0, b1 = corner_grads[:, :, :, 1].unbind(3)
            top, bottom = torch.lerp(a0, a1, fx), torch.lerp(b0, b1, fx)
            grad_attention = torch.lerp(top, bottom, fy)
            grad_fx = torch.lerp(a1 - a0, b1 - b0, fy).mul_(attention_weights)
            grad_fy = bottom.sub_(top).mul_(attention_weights)
            pixels = torch.addcmul(
                tables.half, rearrange(sampling_locations, "n q m l p xy -> xy n q m l p"), tables.sizes
            )
            inside = (pixels >= tables.minus_one) & (pixels <= tables.sizes)
            grad_pixels = torch.stack([grad_fx, grad_fy]).mul_(tables.sizes).mul_(inside)
            grad_locations = rearrange(grad_pixels, "xy n q m l p -> n q m l p xy")
        return grad_value, None, grad_locations, grad_attention


def _transposed_gather(
    grad: Tensor, rows: Tensor, weights: Tensor, tables: GatherTables, level_shapes: LevelShapes
) -> Tensor:
    """The gradient of the gather table, ``[N·Σ_l (H_l + 3)·(W_l + 3)·M, D]``: every corner row receives
    the output gradient ``grad [N·Lq·M, D]`` of each bag that read it, times the corner's weight.

    The samples are sorted by their ``(x0, y0)`` row; then one ``embedding_bag`` per corner sums, for each
    table row, the weighted gradients of the samples whose ``(x0, y0)`` is that row, and each sum is added at
    its corner's offset from ``(x0, y0)`` (``+M`` one column right, ``+(W_l + 3)·M`` one row down).
    """
    n, _, heads, _, levels, points = rows.shape
    base = rows[:, :, :, 0].reshape(-1)
    order = torch.argsort(base, stable=True)  # a fixed summation order: the same gradients run after run
    total_rows = n * tables.padded_length * heads
    counts = torch.bincount(base, minlength=total_rows)
    offsets = counts.cumsum(0) - counts
    bags = order.div(levels * points, rounding_mode="floor")
    corner_weights = rearrange(weights, "n q m y x l p -> (y x) (n q m l p)")[:, order]
    own, right, below, below_right = (
        F.embedding_bag(bags, grad, offsets, mode="sum", per_sample_weights=corner_weights[corner])
        for corner in range(4)
    )
    own[heads:] += right[:-heads]
    below[heads:] += below_right[:-heads]
    own_frames, below_frames = own.view(n, -1, grad.shape[1]), below.view(n, -1, grad.shape[1])
    before, after = GATHER_PAD
    for start, (h, w) in zip(tables.padded_starts, level_shapes):
        first, end, down = (
            start * heads,
            (start + (h + before + after) * (w + before + after)) * heads,
            (w + before + after) * heads,
        )
        own_frames[:, first + down : end] += below_frames[:, first : end - down]
    return own


def _unpadded(table: Tensor, level_shapes: LevelShapes, tables: GatherTables) -> Tensor:
    """The inverse of :func:`_padded_table`: ``[N, Σ_l (H_l + 3)·(W_l + 3), M, D]`` → ``[N, Len, M, D]``."""
    return torch.cat([interior.flatten(1, 2) for interior in _interiors(table, level_shapes, tables)], dim=1)


class MSDeformAttn(nn.Module):
    """Multi-scale deformable attention (Zhu et al., 2021).

    Every query predicts ``n_points`` sampling offsets and attention weights per head and level
    around its reference point; the output is the weighted sum of the bilinearly sampled values.

    Args:
        d_model: channel width ``C``.
        n_levels: number of feature levels ``L``.
        num_heads: attention heads ``M`` (``C`` must be divisible by it).
        n_points: sampling points ``P`` per head and level.
    """

    def __init__(self, d_model: int = 256, n_levels: int = 4, num_heads: int = 8, n_points: int = 4) -> None:
        super().__init__()
        if d_model % num_heads != 0:
            raise ValueError(f"d_model ({d_model}) must be divisible by num_heads ({num_heads})")
        self.d_model = d_model
        self.n_levels = n_levels
        self.num_heads = num_heads
        self.n_points = n_points
        self.sampling_offsets = nn.Linear(d_model, num_heads * n_levels * n_points * 2)
        self.attention_weights = nn.Linear(d_model, num_heads * n_levels * n_points)
        self.value_proj = nn.Linear(d_model, d_model)
        self.output_proj = nn.Linear(d_model, d_model)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Offsets start on a ring of 8 directions (one per head) at distances 1..P; uniform attention."""
        nn.init.zeros_(self.sampling_offsets.weight)
        angles = torch.arange(self.num_heads, dtype=torch.float32) * (2.0 * math.pi / self.num_heads)
        directions = torch.stack([angles.cos(), angles.sin()], dim=-1)  # [M, 2]
        directions = directions / directions.abs().max(dim=-1, keepdim=True).values
        distances = torch.arange(1, self.n_points + 1, dtype=torch.float32)
        offsets = directions[:, None, None, :] * distances[None, None, :, None]  # [M, 1, P, 2]
        offsets = offsets.expand(self.num_heads, self.n_levels, self.n_points, 2)
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(offsets.reshape(-1))
        nn.init.zeros_(self.attention_weights.weight)
        nn.init.zeros_(self.attention_weights.bias)
        nn.init.xavier_uniform_(self.value_proj.weight)
        nn.init.zeros_(self.value_proj.bias)
        nn.init.xavier_uniform_(self.output_proj.weight)
        nn.init.zeros_(self.output_proj.bias)

    def forward(
        self,
        query: Tensor,
        reference_points: Tensor,
        input_flatten: Tensor,
        level_shapes: LevelShapes,
        input_padding_mask: Tensor | None = None,
    ) -> Tensor:
        """Attend from every query to the multi-scale input.

        Args:
            query: ``[N, Lq, C]`` (content plus position).
            reference_points: ``[N, Lq, L, 2]`` normalised ``(x, y)``, or ``[N, Lq, L, 4]`` boxes
                ``(cx, cy, w, h)`` whose size scales the offsets.
            input_flatten: ``[N, Len, C]`` the flattened levels.
            level_shapes: ``(H_l, W_l)`` of every level.
            input_padding_mask: ``[N, Len]``, True at padding; padded values are zeroed.

        Returns:
            ``[N, Lq, C]``.
        """
        if reference_points.shape[2] != self.n_levels:
            raise ValueError(f"reference_points has {reference_points.shape[2]} levels, expected {self.n_levels}")
        value = self.value_proj(input_flatten)
        if input_padding_mask is not None:
            value = value.masked_fill(input_padding_mask[..., None], 0.0)
        value = rearrange(value, "n s (m d) -> n s m d", m=self.num_heads)
        # coordinates in at least float32, whatever the autocast dtype of the projections
        dtype = coordinate_dtype(reference_points.dtype)
        reference_points = reference_points.to(dtype)
        offsets = rearrange(self.sampling_offsets(query).to(dtype), "n q (m lpxy) -> n q m lpxy", m=self.num_heads)
        weights = rearrange(self.attention_weights(query).to(dtype), "n q (m lp) -> n q m lp", m=self.num_heads)
        weights = rearrange(weights.softmax(dim=-1), "n q m (l p) -> n q m l p", l=self.n_levels)
        if reference_points.shape[-1] == 2:
            # Broadcasts over runs of L·P·2 values, not over [L, P, 2] with a last axis of 2, which PyTorch
            # and ONNX Runtime walk two values at a time: at 8x320x576 (one thread) an encoder layer's
            # locations took 32 ms in PyTorch and 90 ms in ONNX Runtime that way, 5 and 7 ms this way.
            scales = offset_scales(level_shapes, self.n_points, offsets.device, dtype)
            starts = repeat(reference_points, "n q l xy -> n q 1 (l p xy)", p=self.n_points)
            locations = torch.addcmul(starts, offsets, scales)
            locations = rearrange(locations, "n q m (l p xy) -> n q m l p xy", l=self.n_levels, xy=2)
        elif reference_points.shape[-1] == 4:
            offsets = rearrange(offsets, "n q m (l p xy) -> n q m l p xy", l=self.n_levels, xy=2)
            centres = reference_points[:, :, None, :, None, :2]
            sizes = reference_points[:, :, None, :, None, 2:]
            locations = centres + offsets / self.n_points * sizes * 0.5
        else:
            raise ValueError(f"reference_points must end in 2 or 4 coordinates, got {tuple(reference_points.shape)}")
        return self.output_proj(ms_deform_attn(value, level_shapes, locations, weights))


class DeformableEncoderLayer(nn.Module):
    """Post-norm encoder layer: deformable self-attention over all levels, then a ReLU FFN."""

    def __init__(
        self, d_model: int, dim_feedforward: int, dropout: float, n_levels: int, num_heads: int, n_points: int
    ) -> None:
        super().__init__()
        self.self_attn = MSDeformAttn(d_model, n_levels, num_heads, n_points)
        self.dropout1 = Dropout(dropout)
        self.norm1 = nn.LayerNorm(d_model)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.dropout2 = Dropout(dropout)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.dropout3 = Dropout(dropout)
        self.norm2 = nn.LayerNorm(d_model)

    def forward(
        self,
        src: Tensor,
        pos: Tensor,
        reference_points: Tensor,
        level_shapes: LevelShapes,
        padding_mask: Tensor,
    ) -> Tensor:
        """``src``, ``pos``: ``[N, Len, C]``; ``reference_points``: ``[N, Len, L, 2]`` → ``[N, Len, C]``."""
        attended = self.self_attn(src + pos, reference_points, src, level_shapes, padding_mask)
        src = self.norm1(src + self.dropout1(attended))
        ffn = relu_feed_forward(src, self.linear1, self.dropout2, self.linear2)
        return self.norm2(src + self.dropout3(ffn))


class DeformableEncoder(nn.Module):
    """A stack of :class:`DeformableEncoderLayer`; every token samples around its own pixel centre.

    With ``activation_checkpointing``, training keeps only each layer's inputs and recomputes the rest
    in the backward pass (:func:`wavecl.model.recompute.run_block`): the full model's three layers keep
    half the activations of a training step (30 of 61 GiB per GPU for 8 clips x 8 frames x 360x640 in bf16).
    """

    def __init__(self, layer_kwargs: dict, num_layers: int, activation_checkpointing: bool = False) -> None:
        super().__init__()
        self.activation_checkpointing = activation_checkpointing
        self.layers = nn.ModuleList(DeformableEncoderLayer(**layer_kwargs) for _ in range(num_layers))

    @staticmethod
    def token_reference_points(level_shapes: LevelShapes, valid_ratios: Tensor) -> Tensor:
        """Pixel centres of every token, normalised to the valid region of its own level.

        Args:
            level_shapes: ``(H_l, W_l)`` of every level.
            valid_ratios: ``[N, L, 2]`` valid fraction ``(w, h)`` of each level.

        Returns:
            ``[N, Len, L, 2]`` ``(x, y)`` reference of every token, rescaled to every level.
        """
        per_level = []
        for level, (h, w) in enumerate(level_shapes):
            ys, xs = torch.meshgrid(
                torch.arange(h, dtype=valid_ratios.dtype, device=valid_ratios.device) + 0.5,
                torch.arange(w, dtype=valid_ratios.dtype, device=valid_ratios.device) + 0.5,
                indexing="ij",
            )
            xs = xs.reshape(1, -1) / (valid_ratios[:, level, 0:1] * w)
            ys = ys.reshape(1, -1) / (valid_ratios[:, level, 1:2] * h)
            per_level.append(torch.stack([xs, ys], dim=-1))
        references = torch.cat(per_level, dim=1)  # [N, Len, 2]
        return references[:, :, None] * valid_ratios[:, None]

    def forward(
        self,
        src: Tensor,
        level_shapes: LevelShapes,
        valid_ratios: Tensor,
        pos: Tensor,
        padding_mask: Tensor,
    ) -> Tensor:
        """``src``, ``pos``: ``[N, Len, C]``; ``padding_mask``: ``[N, Len]`` → memory ``[N, Len, C]``."""
        reference_points = self.token_reference_points(level_shapes, valid_ratios)
        checkpointing = self.activation_checkpointing and self.training
        for layer in self.layers:
            src = run_block(layer, checkpointing, src, pos, reference_points, level_shapes, padding_mask)
        return src


class DeformableDecoderLayer(nn.Module):
    """Post-norm decoder layer: query self-attention, deformable cross-attention, ReLU FFN."""

    def __init__(
        self, d_model: int, dim_feedforward: int, dropout: float, n_levels: int, num_heads: int, n_points: int
    ) -> None:
        super().__init__()
        self.cross_attn = MSDeformAttn(d_model, n_levels, num_heads, n_points)
        self.dropout1 = Dropout(dropout)
        self.norm1 = nn.LayerNorm(d_model)
        self.self_attn = nn.MultiheadAttention(d_model, num_heads, dropout=dropout, batch_first=True)
        self.dropout2 = Dropout(dropout)
        self.norm2 = nn.LayerNorm(d_model)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.dropout3 = Dropout(dropout)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.dropout4 = Dropout(dropout)
        self.norm3 = nn.LayerNorm(d_model)

    def forward(
        self,
        tgt: Tensor,
        query_pos: Tensor,
        reference_points: Tensor,
        memory: Tensor,
        level_shapes: LevelShapes,
        memory_padding_mask: Tensor,
    ) -> Tensor:
        """``tgt``, ``query_pos``: ``[N, Q, C]``; ``reference_points``: ``[N, Q, L, 2|4]``;
        ``memory``: ``[N, Len, C]`` → ``[N, Q, C]``."""
        q = k = tgt + query_pos
        attended = self.self_attn(q, k, tgt, need_weights=False)[0]
        tgt = self.norm2(tgt + self.dropout2(attended))
        attended = self.cross_attn(tgt + query_pos, reference_points, memory, level_shapes, memory_padding_mask)
        tgt = self.norm1(tgt + self.dropout1(attended))
        ffn = relu_feed_forward(tgt, self.linear1, self.dropout3, self.linear2)
        return self.norm3(tgt + self.dropout4(ffn))


class DeformableDecoder(nn.Module):
    """A stack of :class:`DeformableDecoderLayer` with iterative box refinement.

    The box MLPs (one per layer) belong to the top-level model, which passes them to :meth:`forward`;
    the decoder holds no reference to them, so each box weight appears once in the state dict (the
    reference registered them a second time as ``transformer.decoder.bbox_embed``).
    """

    def __init__(self, layer_kwargs: dict, num_layers: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(DeformableDecoderLayer(**layer_kwargs) for _ in range(num_layers))

    def forward(
        self,
        tgt: Tensor,
        reference_points: Tensor,
        memory: Tensor,
        level_shapes: LevelShapes,
        valid_ratios: Tensor,
        query_pos: Tensor,
        memory_padding_mask: Tensor,
        bbox_embed: Sequence[nn.Module],
    ) -> tuple[Tensor, Tensor]:
        """Decode the queries, refining the reference box after every layer.

        Args:
            tgt: ``[N, Q, C]`` initial content (zeros).
            reference_points: ``[N, Q, 2]`` initial normalised centres.
            memory: ``[N, Len, C]`` encoder output.
            level_shapes: ``(H_l, W_l)`` of every level.
            valid_ratios: ``[N, L, 2]``.
            query_pos: ``[N, Q, C]``.
            memory_padding_mask: ``[N, Len]``.
            bbox_embed: one box MLP per layer, ``[N, Q, C] -> [N, Q, 4]`` logit offsets.

        Returns:
            ``hs [num_layers, N, Q, C]`` and the refined, detached references
            ``[num_layers, N, Q, 4]`` ``(cx, cy, w, h)`` after every layer.

        Raises:
            ValueError: ``bbox_embed`` does not hold one MLP per layer.
        """
        if len(bbox_embed) != len(self.layers):
            raise ValueError(f"bbox_embed has {len(bbox_embed)} box MLPs for {len(self.layers)} decoder layers")
        point_ratios = valid_ratios[:, None]  # [N, 1, L, 2] (w, h)
        box_ratios = torch.cat([point_ratios, point_ratios], dim=-1)  # (w, h, w, h)
        states, references = [], []
        for layer, box_mlp in zip(self.layers, bbox_embed):
            ratios = box_ratios if reference_points.shape[-1] == 4 else point_ratios
            level_references = reference_points[:, :, None] * ratios
            tgt = layer(tgt, query_pos, level_references, memory, level_shapes, memory_padding_mask)
            logits = torch.logit(reference_points, eps=1e-5)
            if logits.shape[-1] == 2:
                logits = F.pad(logits, (0, 2))  # the first box predicts w, h from scratch
            # the references keep their dtype (float32 under autocast)
            reference_points = (box_mlp(tgt).to(logits.dtype) + logits).sigmoid().detach()
            states.append(tgt)
            references.append(reference_points)
        return torch.stack(states), torch.stack(references)


@dataclass
class DeformableOutput:
    """Output of :class:`DeformableTransformer` (``N`` frames, ``Q`` queries, ``L`` decoder layers).

    Attributes:
        hs: ``[L, N, Q, C]`` query embeddings after every decoder layer.
        init_reference: ``[N, Q, 2]`` initial normalised centres ``sigmoid(reference_points(query_pos))``.
        inter_references: ``[L, N, Q, 4]`` refined ``(cx, cy, w, h)`` after every layer (detached).
        memory: encoder output of every level but the coarsest (strides 8, 16, 32), each ``[N, C, h_l, w_l]``.
    """

    hs: Tensor
    init_reference: Tensor
    inter_references: Tensor
    memory: list[Tensor]


def _valid_ratios(mask: Tensor) -> Tensor:
    """``mask [N, h, w]`` (True = pad) → ``[N, 2]`` valid fraction ``(w, h)``, read off the first row/column."""
    _, h, w = mask.shape
    valid_h = (~mask[:, :, 0]).sum(dim=1)
    valid_w = (~mask[:, 0, :]).sum(dim=1)
    return torch.stack([valid_w / w, valid_h / h], dim=-1)


class DeformableTransformer(nn.Module):
    """Deformable-DETR encoder-decoder, applied per frame (no two-stage, box refinement on).

    Args:
        d_model: width ``C``.
        num_heads: attention heads.
        num_encoder_layers, num_decoder_layers: depths.
        dim_feedforward: FFN width.
        dropout: dropout everywhere.
        num_feature_levels: number of input levels ``L``.
        enc_n_points, dec_n_points: deformable sampling points per head and level.
        activation_checkpointing: recompute the encoder layers in the backward pass (:class:`DeformableEncoder`).
    """

    def __init__(
        self,
        d_model: int = 256,
        num_heads: int = 8,
        num_encoder_layers: int = 3,
        num_decoder_layers: int = 3,
        dim_feedforward: int = 2048,
        dropout: float = 0.1,
        num_feature_levels: int = 4,
        enc_n_points: int = 4,
        dec_n_points: int = 4,
        activation_checkpointing: bool = False,
    ) -> None:
        super().__init__()
        self.d_model = d_model
        self.num_heads = num_heads
        self.num_feature_levels = num_feature_levels
        common = dict(
            d_model=d_model,
            dim_feedforward=dim_feedforward,
            dropout=dropout,
            n_levels=num_feature_levels,
            num_heads=num_heads,
        )
        self.encoder = DeformableEncoder(
            dict(common, n_points=enc_n_points), num_encoder_layers, activation_checkpointing
        )
        self.decoder = DeformableDecoder(dict(common, n_points=dec_n_points), num_decoder_layers)
        self.level_embed = nn.Parameter(torch.empty(num_feature_levels, d_model))
        self.reference_points = nn.Linear(d_model, 2)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Xavier on every matrix, then the deformable-attention init, Xavier/0 for the reference-point head
        and N(0, 1) for the level embedding."""
        for parameter in self.parameters():
            if parameter.dim() > 1:
                nn.init.xavier_uniform_(parameter)
        for module in self.modules():
            if isinstance(module, MSDeformAttn):
                module.reset_parameters()
        nn.init.xavier_uniform_(self.reference_points.weight)
        nn.init.zeros_(self.reference_points.bias)
        nn.init.normal_(self.level_embed)

    def forward(
        self,
        srcs: list[Tensor],
        masks: list[Tensor],
        pos_embeds: list[Tensor],
        query_embed: Tensor,
        bbox_embed: Sequence[nn.Module],
    ) -> DeformableOutput:
        """Encode the levels of every frame and decode the queries.

        Args:
            srcs: per level ``[N, C, h_l, w_l]`` (N = frames).
            masks: per level ``[N, h_l, w_l]``, True at padding.
            pos_embeds: per level ``[N, C, h_l, w_l]`` position encodings (level embedding added here).
            query_embed: ``[Q, C]`` query positions, shared by every frame.
            bbox_embed: the model's box MLPs, one per decoder layer (iterative box refinement).

        Returns:
            A :class:`DeformableOutput`.
        """
        if not len(srcs) == len(masks) == len(pos_embeds) == self.num_feature_levels:
            raise ValueError(
                f"expected {self.num_feature_levels} levels of srcs/masks/pos_embeds, "
                f"got {len(srcs)}/{len(masks)}/{len(pos_embeds)}"
            )
        level_shapes = tuple((src.shape[-2], src.shape[-1]) for src in srcs)
        src_flatten = torch.cat([rearrange(src, "n c h w -> n (h w) c") for src in srcs], dim=1)
        mask_flatten = torch.cat([rearrange(mask, "n h w -> n (h w)") for mask in masks], dim=1)
        pos_flatten = torch.cat(
            [rearrange(pos, "n c h w -> n (h w) c") + self.level_embed[level] for level, pos in enumerate(pos_embeds)],
            dim=1,
        )
        valid_ratios = torch.stack([_valid_ratios(mask) for mask in masks], dim=1)
        valid_ratios = valid_ratios.to(coordinate_dtype(src_flatten.dtype))

        memory = self.encoder(src_flatten, level_shapes, valid_ratios, pos_flatten, mask_flatten)

        n = src_flatten.shape[0]
        query_pos = query_embed[None].expand(n, -1, -1)
        tgt = torch.zeros_like(query_pos)
        with torch.autocast(query_pos.device.type, enabled=False):  # a coordinate: in query_embed's float32
            init_reference = self.reference_points(query_pos).sigmoid()
        hs, inter_references = self.decoder(
            tgt, init_reference, memory, level_shapes, valid_ratios, query_pos, mask_flatten, bbox_embed
        )

        memory_per_level = memory.split([h * w for h, w in level_shapes], dim=1)
        memory_maps = [
            rearrange(level_memory, "n (h w) c -> n c h w", h=src.shape[-2], w=src.shape[-1])
            for level_memory, src in zip(memory_per_level[:-1], srcs[:-1])
        ]
        return DeformableOutput(
            hs=hs, init_reference=init_reference, inter_references=inter_references, memory=memory_maps
        )
