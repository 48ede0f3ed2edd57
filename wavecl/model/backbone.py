"""Video-Swin backbone with per-frame multi-scale outputs (docs/architecture.md#backbone).

The network is torchvision's :class:`~torchvision.models.video.swin_transformer.SwinTransformer3d` built with
patch size ``[1, 4, 4]`` instead of the classification model's ``[2, 4, 4]``, so time is never downsampled:
every input frame keeps its own feature map at every stage. The classifier parts (final ``norm``,
``avgpool``, ``head``) are removed, so the module holds exactly the parameters WaveCL uses.

Pretrained weights come from Kinetics-400 checkpoints whose patch kernel spans 2 frames. Loading sums that
kernel over its temporal axis, so a static clip gets the same patch response as in the original model.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn
from torchvision.models.swin_transformer import SwinTransformerBlock
from torchvision.models.video.swin_transformer import ShiftedWindowAttention3d, SwinTransformer3d

from wavecl.checkpoint import safe_torch_load
from wavecl.model.dropout import dropout as dropout_function
from wavecl.model.linear import linear
from wavecl.model.recompute import run_block
from wavecl.model.shape_cache import cached_per_shape
from wavecl.original import swin_key

VIDEO_SWIN_VARIANTS: dict[str, dict] = {
    "video-swin-t": {"embed_dim": 96, "depths": (2, 2, 6, 2), "num_heads": (3, 6, 12, 24)},
    "video-swin-s": {"embed_dim": 96, "depths": (2, 2, 18, 2), "num_heads": (3, 6, 12, 24)},
    "video-swin-b": {"embed_dim": 128, "depths": (2, 2, 18, 2), "num_heads": (4, 8, 16, 32)},
}
"""Constructor arguments of the published Video-Swin sizes (Liu et al., 2022), by name."""


_SHIFT_MASK_VALUE = -100.0
"""What torchvision adds to the scores of token pairs from different regions of a shifted window."""


@dataclass(frozen=True)
class WindowLayout:
    """Where every token of a clip goes in the (padded, shifted) attention windows, for one input shape.

    The windows are ordered by *group*: windows whose tokens fall into the same shift regions share one
    shift mask (all interior windows have none; the last window along a shifted axis splits into two
    regions there). Inside a group the order is clip, then window raster order; inside a window, the
    token raster order ``(t, h, w)``, as torchvision's window partition.

    Attributes:
        gather: ``[B * nW * N]`` long, the row of ``[B * T * H * W (+ 1)]`` tokens read into every
            window position; padding reads row ``B * T * H * W``, a zero row appended by the caller.
        scatter: ``[B * T * H * W]`` long, the window position of every token (the inverse of ``gather``).
        padded: whether any window position is padding (the zero row is needed).
        groups: ``(first window, number of windows, shift mask [N, N] or None)`` per group; the mask is
            0 within a region and ``-100`` across regions, as torchvision's.
    """

    gather: Tensor
    scatter: Tensor
    padded: bool
    groups: tuple[tuple[int, int, Tensor | None], ...]


@cached_per_shape
def window_layout(
    batch: int,
    size: tuple[int, int, int],
    window: tuple[int, int, int],
    shift: tuple[int, int, int],
    device: torch.device,
) -> WindowLayout:
    """The :class:`WindowLayout` of ``batch`` clips of ``size = (T, H, W)`` tokens (computed once per shape).

    ``window`` and ``shift`` are the effective sizes (already shrunk to the input where it is smaller). The
    clip is padded at the end to multiples of ``window`` and rolled by ``-shift``, then cut into windows,
    which is what torchvision's ``shifted_window_attention_3d`` does with three copies of the tensor.
    """
    length = size[0] * size[1] * size[2]
    counts = [-(-size[axis] // window[axis]) for axis in range(3)]
    # source coordinate of every (window index, offset) position along each axis, after pad and roll
    sources = []
    for axis in range(3):
        padded = counts[axis] * window[axis]
        sources.append((torch.arange(padded) + shift[axis]) % padded)
    t = sources[0].reshape(counts[0], 1, 1, window[0], 1, 1)
    h = sources[1].reshape(1, counts[1], 1, 1, window[1], 1)
    w = sources[2].reshape(1, 1, counts[2], 1, 1, window[2])
    valid = (t < size[0]) & (h < size[1]) & (w < size[2])
    flat = torch.where(valid, (t * size[1] + h) * size[2] + w, length)  # [nWt, nWh, nWw, wt, wh, ww]
    flat = flat.reshape(-1, window[0] * window[1] * window[2])  # [nW, N], padding = length

    # group windows by the regions their tokens belong to: (is last along t, h, w) for shifted axes
    grid = torch.stack(torch.meshgrid(*(torch.arange(count) for count in counts), indexing="ij"), dim=-1).reshape(-1, 3)
    keys = [tuple(shift[a] > 0 and index[a] == counts[a] - 1 for a in range(3)) for index in grid.tolist()]
    offsets = torch.stack(torch.meshgrid(*(torch.arange(size) for size in window), indexing="ij"), dim=-1).reshape(
        -1, 3
    )
    gathers, groups, start = [], [], 0
    for key in sorted(set(keys)):
        members = torch.tensor([index for index, other in enumerate(keys) if other == key])
        rows = flat[members][None]  # [1, n, N]
        clips = torch.where(rows == length, batch * length, torch.arange(batch)[:, None, None] * length + rows)
        gathers.append(clips.reshape(-1))
        mask = None
        if any(key):
            label = torch.zeros(offsets.shape[0], dtype=torch.long)
            for axis in range(3):
                if key[axis]:
                    label = label * 2 + (offsets[:, axis] >= window[axis] - shift[axis]).long()
            different = label[:, None] != label[None, :]
            mask = torch.zeros(different.shape).masked_fill(different, _SHIFT_MASK_VALUE).to(device)
        groups.append((start, batch * len(members), mask))
        start += batch * len(members)
    gather = torch.cat(gathers)
    real = gather < batch * length
    scatter = torch.empty(batch * length, dtype=torch.long)
    scatter[gather[real]] = torch.arange(gather.numel())[real]
    return WindowLayout(gather.to(device), scatter.to(device), bool((~real).any()), tuple(groups))


def masked_attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor, dropout: float) -> Tensor:
    """``softmax(q kᵀ / √d + mask) v`` of ``q, k, v [windows, heads, N, d]`` and ``mask [1 | windows, heads, N, N]``
    (float32 under autocast: SDPA gets it in the dtype of ``q``, the plain path keeps it).

    :func:`torch.nn.functional.scaled_dot_product_attention`, except on the CPU where ``mask`` needs a
    gradient (the relative-position bias in training): no fused CPU kernel returns the mask's gradient, so
    torch falls back to its math path, whose softmax also tests every row for ``-inf`` (``isneginf``,
    ``all``, ``where`` over the ``[windows, heads, N, N]`` scores: 0.55 s of a 32 s training step at
    8x256x448 on one thread) and which scales both ``q`` and ``k``. Here the scores are written once, the
    mask added in place, and the plain softmax runs (no row of a window's mask is all ``-inf``). Like the
    math path, it computes bfloat16 and float16 inputs in float32 (logits rounded to bfloat16 err by up to
    0.06 at a magnitude of 8, and the probabilities by as much relative): the output is cast back. On
    CUDA the memory-efficient kernel does return the mask's gradient, without keeping the scores. Under
    ``torch.compile`` SDPA is kept too: inductor generates the math path's code itself.
    """
    plain = q.device.type == "cpu" and torch.is_grad_enabled() and mask.requires_grad
    if not plain or torch.compiler.is_compiling():
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask.to(q.dtype), dropout_p=dropout)
    dtype = q.dtype
    with torch.autocast("cpu", enabled=False):
        q, k, v, mask = (tensor.to(torch.promote_types(dtype, torch.float32)) for tensor in (q, k, v, mask))
        scores = torch.matmul(q * q.shape[-1] ** -0.5, k.transpose(-2, -1)).add_(mask)
        return dropout_function(scores.softmax(dim=-1), dropout, training=True).matmul(v).to(dtype)


class WindowAttention3d(ShiftedWindowAttention3d):
    """torchvision's shifted-window attention computed with fused attention and one gather each way.

    Same parameters, buffers, state-dict keys and function as
    :class:`~torchvision.models.video.swin_transformer.ShiftedWindowAttention3d` (the torchvision quirks
    included: padding tokens take part as zero vectors, the bias of a window shrunk to the input reads
    the top-left block of the full window's index, regions of a shifted window are separated by
    ``-100``). torchvision's version is not used as it is because, measured on one CPU thread at stage 0
    of Video-Swin-T (8x90x160 tokens), it spends most of its time outside the matmuls: it materialises
    the ``[windows, heads, N, N]`` scores (N = 392), adds the bias and the shift mask in two more passes,
    runs softmax, and copies the tokens six times (pad, roll, partition and back). One such attention
    took 1.7 to 2.8 s of CPU time (plain and shifted windows) against 0.65 s for this module; the
    whole eval forward at 8x360x640 went from 29.1 to about 18.5 CPU seconds with this and the
    deformable attention's gather.

    Here the relative-position bias plus the group's shift mask is the additive mask of one fused
    attention call per group of windows sharing a mask (the shift mask itself, the gather and scatter
    indices are built once per input shape by :func:`window_layout`); pad, roll and partition are one
    ``index_select``, and their inverse another.
    """

    def forward(self, x: Tensor) -> Tensor:
        """``x [B, T, H, W, C]`` (normalised tokens) → ``[B, T, H, W, C]``."""
        if torch.compiler.is_exporting():
            return self.forward_any_size(x)
        b, t, h, w, c = x.shape
        window, shift = list(self.window_size), list(self.shift_size)
        for axis, extent in enumerate((t, h, w)):
            if extent <= window[axis]:
                window[axis], shift[axis] = extent, 0
        layout = window_layout(b, (t, h, w), tuple(window), tuple(shift), x.device)
        tokens = x.reshape(b * t * h * w, c)
        if layout.padded:
            tokens = F.pad(tokens, (0, 0, 0, 1))
        windows = tokens.index_select(0, layout.gather)
        size = window[0] * window[1] * window[2]
        heads = self.num_heads
        qkv = linear(windows, self.qkv.weight, self.qkv.bias).view(-1, size, 3, heads, c // heads)
        bias = self.get_relative_position_bias(window)  # [1, heads, N, N]; a 4-D mask keeps the fused kernel
        dropout = self.attention_dropout if self.training else 0.0
        attended = []
        for start, count, shift_mask in layout.groups:
            q, k, v = (part.transpose(1, 2) for part in qkv[start : start + count].unbind(2))
            mask = bias if shift_mask is None else bias + shift_mask
            attended.append(masked_attention(q, k, v, mask, dropout).transpose(1, 2))
        out = torch.cat(attended).reshape(-1, c).index_select(0, layout.scatter)
        out = F.dropout(linear(out, self.proj.weight, self.proj.bias), p=self.dropout, training=self.training)
        return out.view(b, t, h, w, c)

    def forward_any_size(self, x: Tensor) -> Tensor:
        """The same attention with no branch on the height and width, for a graph that serves every frame size.

        torchvision chooses per input size whether a spatial window shrinks to the input (an axis of at
        most ``window`` tokens: one window of that size, no shift), which a traced graph would freeze to
        the example's size. Here every window keeps ``window`` slots per spatial axis; the choice is data:
        the shift is ``0`` on a shrunk axis, the slots past the input of a shrunk window are *absent*
        (``-inf`` as keys, their outputs dropped) whereas the padding of an unshrunk window takes part as
        zero vectors (torchvision's padding), and the relative-position bias is read at the positions a
        shrunk window has in torchvision (the top-left block of the full window's index, flattened with
        the shrunk sizes). The time axis is one window of all ``T`` frames, torchvision's rule for ``T`` up
        to the temporal window, the most the export takes.
        Slower than :meth:`forward` (it builds the ``[windows, heads, N, N]`` scores), and equal to it.

        ``x [B, T, H, W, C]`` → ``[B, T, H, W, C]``.

        Raises:
            ValueError: ``T`` is larger than the temporal window.
        """
        b, t, h, w, c = x.shape
        if t > self.window_size[0]:
            raise ValueError(f"forward_any_size takes at most {self.window_size[0]} frames, got {t}")
        window_h, window_w = self.window_size[1], self.window_size[2]
        rows_h, count_h, labels_h, absent_h, kept_h, back_h = _window_axis(h, window_h, self.shift_size[1], x.device)
        rows_w, count_w, labels_w, absent_w, kept_w, back_w = _window_axis(w, window_w, self.shift_size[2], x.device)
        # gather: pad to whole windows, roll by the shift, cut into [windows, N] with N = T * window_h * window_w
        padded = F.pad(x, (0, 0, 0, count_w * window_w - w, 0, count_h * window_h - h))
        rolled = padded.index_select(2, rows_h).index_select(3, rows_w)
        windows = rearrange(rolled, "b t (nh wh) (nw ww) c -> (b nh nw) (t wh ww) c", wh=window_h, ww=window_w)
        size = windows.shape[1]
        heads = self.num_heads
        qkv = rearrange(linear(windows, self.qkv.weight, self.qkv.bias), "n s (k m d) -> k n m s d", k=3, m=heads)
        q, k, v = qkv[0] * (c // heads) ** -0.5, qkv[1], qkv[2]
        scores = q.matmul(k.transpose(-2, -1)) + self._bias_any_size(t, kept_h, kept_w, absent_h, absent_w)
        if self.shift_size[1] > 0 or self.shift_size[2] > 0:  # a block that never shifts has one region
            # shift regions: -100 between slots of different regions (torchvision's value), per window
            labels = (
                (labels_h.view(count_h, 1, 1, window_h, 1) * 3 + labels_w.view(1, count_w, 1, 1, window_w))
                .expand(count_h, count_w, t, window_h, window_w)
                .reshape(count_h * count_w, 1, size)
            )
            apart, together = scores.new_tensor(_SHIFT_MASK_VALUE), scores.new_tensor(0.0)
            regions = torch.where(labels.transpose(1, 2) != labels, apart, together)  # [nW, N, N]
            scores = (scores.view(b, count_h * count_w, heads, size, size) + regions[None, :, None]).view(
                -1, heads, size, size
            )
        attention = F.dropout(scores.softmax(dim=-1), p=self.attention_dropout, training=self.training)
        out = rearrange(attention.matmul(v), "n m s d -> n s (m d)")
        out = F.dropout(linear(out, self.proj.weight, self.proj.bias), p=self.dropout, training=self.training)
        out = rearrange(
            out, "(b nh nw) (t wh ww) c -> b t (nh wh) (nw ww) c", b=b, nh=count_h, nw=count_w, t=t, wh=window_h
        )
        return out.index_select(2, back_h).index_select(3, back_w)

    def _bias_any_size(self, frames: int, kept_h: Tensor, kept_w: Tensor, absent_h: Tensor, absent_w: Tensor) -> Tensor:
        """The relative-position bias plus ``-inf`` at absent keys, ``[1, heads, N, N]``, of :meth:`forward_any_size`.

        ``kept_h``, ``kept_w`` are the effective window sizes (0-d tensors); ``absent_h``, ``absent_w``
        ``[window]`` flag the slots past a shrunk window.
        """
        window_h, window_w = self.window_size[1], self.window_size[2]
        slot_t = torch.arange(frames, device=kept_h.device).view(-1, 1, 1)
        slot_h = torch.arange(window_h, device=kept_h.device).view(1, -1, 1)
        slot_w = torch.arange(window_w, device=kept_h.device).view(1, 1, -1)
        absent = (absent_h.view(1, -1, 1) | absent_w.view(1, 1, -1)).expand(frames, window_h, window_w).reshape(-1)
        position = ((slot_t * kept_h + slot_h) * kept_w + slot_w).reshape(-1).masked_fill(absent, 0)
        index = self.relative_position_index[position[:, None], position[None, :]]  # [N, N]
        bias = rearrange(self.relative_position_bias_table[index], "q k m -> 1 m q k")
        return bias.masked_fill(absent.view(1, 1, 1, -1), float("-inf"))


def _window_axis(
    extent: int, window: int, shift: int, device: torch.device
) -> tuple[Tensor, int, Tensor, Tensor, Tensor, Tensor]:
    """One spatial axis of :meth:`WindowAttention3d.forward_any_size`, with no branch on ``extent`` (tokens).

    Returns:
        ``rows [count * window]``: the padded row each window slot reads (after the roll by the shift);
        ``count``: the number of windows, ``ceil(extent / window)``;
        ``labels [count * window]``: the shift region of each slot (0, 1, 2; all 0 without a shift);
        ``absent [window]``: the slots past a shrunk window (extent < window);
        ``kept``: the effective window size, ``min(extent, window)``, a 0-d tensor;
        ``back [extent]``: the slot each token's output is read from (the inverse roll).
    """
    count = (extent + window - 1) // window
    padded = count * window
    full = torch.tensor(window, device=device)
    unshrunk = (full < extent).long()
    effective_shift = unshrunk * shift
    slots = torch.arange(padded, device=device)
    rows = slots + effective_shift  # the roll, wrapped with where: ONNX has no remainder by a symbolic size
    rows = torch.where(rows >= padded, rows - padded, rows)
    region = (slots >= padded - window).long() + (slots >= padded - shift).long()
    labels = region * unshrunk if shift > 0 else torch.zeros_like(slots)
    absent = torch.arange(window, device=device) >= extent
    kept = full - (full - extent).clamp(min=0)
    back = torch.arange(extent, device=device) - effective_shift
    back = torch.where(back < 0, back + padded, back)
    return rows, count, labels, absent, kept, back


def _swin_block(*args: Any, attn_layer: type[nn.Module], **kwargs: Any) -> SwinTransformerBlock:
    """torchvision's Swin block with :class:`WindowAttention3d` in place of the ``attn_layer`` it is given."""
    return SwinTransformerBlock(*args, attn_layer=WindowAttention3d, **kwargs)


class VideoSwinBackbone(nn.Module):
    """Video-Swin with patch ``[1, 4, 4]`` returning the four stage outputs of every frame.

    Args:
        embed_dim: channels C of stage 0; stage i has ``C * 2**i``.
        depths: Swin blocks per stage.
        num_heads: attention heads per stage.
        window_size: attention window ``(time, height, width)`` in tokens; it shrinks to the input where the
            input is smaller (torchvision's rule, identical to the official one).
        drop_path: stochastic-depth rate of the last block, increasing linearly from 0 at the first.
        activation_checkpointing: in training, keep only the input of every Swin block and patch merging
            and recompute the rest in the backward pass (:func:`wavecl.model.recompute.run_block`).

    Attributes:
        body: the torchvision ``SwinTransformer3d`` without ``norm``, ``avgpool`` and ``head``;
            ``body.features`` alternates stages (even indices) and patch merging (odd indices).
        channels: ``(C, 2C, 4C, 8C)``, the channels of the four outputs.
    """

    def __init__(
        self,
        embed_dim: int = 96,
        depths: Sequence[int] = (2, 2, 6, 2),
        num_heads: Sequence[int] = (3, 6, 12, 24),
        window_size: Sequence[int] = (8, 7, 7),
        drop_path: float = 0.2,
        activation_checkpointing: bool = False,
    ) -> None:
        super().__init__()
        self.activation_checkpointing = activation_checkpointing
        if len(depths) != 4 or len(num_heads) != 4:
            raise ValueError(f"depths and num_heads need 4 stages, got depths={depths}, num_heads={num_heads}")
        self.body = SwinTransformer3d(
            patch_size=[1, 4, 4],
            embed_dim=embed_dim,
            depths=list(depths),
            num_heads=list(num_heads),
            window_size=list(window_size),
            stochastic_depth_prob=drop_path,
            block=_swin_block,
        )
        del self.body.norm, self.body.avgpool, self.body.head
        self.channels: tuple[int, int, int, int] = tuple(embed_dim * 2**i for i in range(4))

    @classmethod
    def from_name(cls, name: str, drop_path: float = 0.2, **overrides: Any) -> VideoSwinBackbone:
        """Build a published size by name (a key of :data:`VIDEO_SWIN_VARIANTS`), optionally with some
        constructor arguments replaced (``embed_dim``, ``depths``, ``num_heads``, ``window_size``), e.g.
        for the reduced models of the tests and the demo, or set (``activation_checkpointing``)."""
        if name not in VIDEO_SWIN_VARIANTS:
            raise ValueError(f"unknown Video-Swin variant {name!r}; choose one of {sorted(VIDEO_SWIN_VARIANTS)}")
        return cls(**{**VIDEO_SWIN_VARIANTS[name], **overrides}, drop_path=drop_path)

    def forward(self, frames: Tensor) -> list[Tensor]:
        """Run the clip and return the stage outputs taken before each patch merging.

        Args:
            frames: ``[B, T, 3, H, W]`` normalised frames.

        Returns:
            Four tensors ``[(B T), C_i, H_i, W_i]`` (batch-major) with ``C_i = channels[i]`` and strides
            4, 8, 16, 32; odd sizes round up (``H_0 = ceil(H / 4)``, ``H_{i+1} = ceil(H_i / 2)``).
        """
        if frames.ndim != 5 or frames.shape[2] != 3:
            raise ValueError(f"frames must be [B, T, 3, H, W], got shape {tuple(frames.shape)}")
        tokens = self.body.pos_drop(self.body.patch_embed(rearrange(frames, "b t c h w -> b c t h w")))
        stage_outputs = []
        checkpointing = self.activation_checkpointing and self.training
        for index, layer in enumerate(self.body.features):
            for block in layer if index % 2 == 0 else [layer]:  # a stage's Swin blocks, or a patch merging
                tokens = run_block(block, checkpointing, tokens)
            if index % 2 == 0:
                stage_outputs.append(rearrange(tokens, "b t h w c -> (b t) c h w"))
        return stage_outputs


@dataclass
class KeyReport:
    """Outcome of a non-strict weight load.

    Attributes:
        missing: parameters and buffers of the backbone (``body.*`` names) that the file did not provide.
        unexpected: keys of the file (as written there) that the backbone has no place for.
    """

    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)


_PATCH_KERNEL = "patch_embed.proj.weight"
_CLASSIFIER_PREFIXES = ("norm.", "head.", "cls_head.")


def _read_state_dict(path: str | os.PathLike) -> dict[str, Tensor]:
    """Load a checkpoint file safely and return its tensor dict (``state_dict`` entry when present)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Video-Swin checkpoint not found: {os.fspath(path)}")
    checkpoint = safe_torch_load(path)
    if isinstance(checkpoint, dict) and isinstance(checkpoint.get("state_dict"), dict):
        checkpoint = checkpoint["state_dict"]
    if not isinstance(checkpoint, dict) or not all(isinstance(value, Tensor) for value in checkpoint.values()):
        raise ValueError(f"{os.fspath(path)} is not a Video-Swin checkpoint: it holds no dict of tensors")
    return checkpoint


def _to_backbone_layout(state: dict[str, Tensor], path: str | os.PathLike) -> dict[str, tuple[str, Tensor]]:
    """Convert either Kinetics layout to the ``body.*`` names of :class:`VideoSwinBackbone`.

    Returns ``{backbone name: (key in the file, tensor)}`` for every key of the file except the classifier
    (final ``norm``, ``head``, ``cls_head``), which is dropped. The patch kernel is summed over time.
    """
    official = any(key.startswith("backbone.") for key in state)
    converted: dict[str, tuple[str, Tensor]] = {}
    for key, value in state.items():
        name = swin_key(key.removeprefix("backbone.")) if official else key
        if name.startswith(_CLASSIFIER_PREFIXES):
            continue
        if name == _PATCH_KERNEL:
            value = value.sum(dim=2, keepdim=True)
        converted["body." + name] = (key, value)
    if "body." + _PATCH_KERNEL not in converted:
        raise ValueError(
            f"{os.fspath(path)} is not a Video-Swin checkpoint: it has no {_PATCH_KERNEL} "
            "(expected the official Kinetics layout or torchvision's swin3d layout)"
        )
    return converted


def load_video_swin_weights(backbone: VideoSwinBackbone, path: str | os.PathLike, strict: bool = True) -> KeyReport:
    """Load Kinetics-pretrained Video-Swin weights into ``backbone``.

    Accepted files (read with :func:`wavecl.checkpoint.safe_torch_load`):
      - the official Video-Swin checkpoint: ``{'state_dict': {'backbone.*': ..., 'cls_head.*': ...}}``,
        converted with :func:`wavecl.original.swin_key`;
      - torchvision's swin3d weight file (``swin3d_t-7615ae03.pth``): a plain state dict in torchvision's key
        names.
    In both, the patch kernel ``[C, 3, 2, 4, 4]`` is summed over time to ``[C, 3, 1, 4, 4]`` and the
    classifier (final ``norm``, ``head`` / ``cls_head``) is dropped.

    Args:
        backbone: the module to fill in place.
        path: the checkpoint file.
        strict: raise when any backbone key is missing from the file or any file key is left over.

    Returns:
        The missing and unexpected keys (both empty after a strict load).

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file is unreadable, is not a Video-Swin checkpoint, has a tensor of the wrong shape,
            or (strict) does not match the backbone key for key. The message names the file.
    """
    converted = _to_backbone_layout(_read_state_dict(path), path)
    expected = backbone.state_dict()
    mismatched = [
        f"{key}: file {tuple(value.shape)} vs model {tuple(expected[name].shape)}"
        for name, (key, value) in converted.items()
        if name in expected and value.shape != expected[name].shape
    ]
    if mismatched:
        raise ValueError(f"{os.fspath(path)} does not fit this Video-Swin size: " + "; ".join(mismatched))
    report = KeyReport(
        missing=[name for name in expected if name not in converted],
        unexpected=[key for name, (key, _) in converted.items() if name not in expected],
    )
    if strict and (report.missing or report.unexpected):
        raise ValueError(
            f"{os.fspath(path)} does not match the Video-Swin backbone: "
            f"missing keys {report.missing}, unexpected keys {report.unexpected}"
        )
    backbone.load_state_dict({name: value for name, (_, value) in converted.items() if name in expected}, strict=False)
    return report
