"""WIP: wavelet-guided integrity perception (docs/architecture.md#wip).

A two-level Haar decomposition of a feature map whose low band is scaled by the sentence and whose
high bands attend to the (scaled) low band through focused linear attention. The reconstruction is
the gate map that later multiplies the vision-language features of the same level.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from torch import Tensor, nn

from wavecl.model.fusion import MultimodalFusion
from wavecl.model.wavelet import haar_dwt2, haar_idwt2

NUM_HIGH_BANDS = 3


class FocusedLinearAttention(nn.Module):
    """Focused linear cross-attention from wavelet high-band tokens to low-band tokens.

    Queries come from ``x``, keys and values from ``memory``. Queries and keys pass through the
    focusing map ``φ(t) = z³ · ‖z‖ / ‖z³‖`` with ``z = (ReLU(t) + 1e-6) / softplus(scale)`` (on the
    full C-d vector, cube element-wise). Per head, each query attends linearly to every memory
    token of its clip: ``out_i = q_iᵀ mean_j(k_j v_jᵀ) / (q_iᵀ mean_j(k_j) + 1e-6)``. A local
    term, a depthwise convolution of the values shared by all heads, is added before the output
    projection.

    Args:
        dim: token width C.
        num_heads: heads; C must be divisible by it.
        focusing_factor: exponent of the focusing map.
        kernel_size: side of the depthwise convolution of the local term.
        token_order: how the local term is laid out over the query tokens.
            ``"frame"``: the values of each frame are convolved as an ``h × w`` image and the
            result is added to the three bands of the same frame.
            ``"reference"`` (``fla_order: reference``): reproduces the reference, which reads the
            ``(t h w)`` values as one ``h × (w·t)`` image and adds the result, repeated as
            ``(band, token)``, to queries ordered ``(t, band, h, w)``; frames and bands are
            scrambled when T > 1 (docs/differences.md#wavelet-high-band-attention). Both orders agree for T = 1.
    """

    def __init__(
        self,
        dim: int = 256,
        num_heads: int = 8,
        focusing_factor: int = 3,
        kernel_size: int = 5,
        token_order: Literal["frame", "reference"] = "frame",
    ) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        if token_order not in ("frame", "reference"):
            raise ValueError(f"token_order must be 'frame' or 'reference', got {token_order!r}")
        head_dim = dim // num_heads
        self.num_heads = num_heads
        self.focusing_factor = focusing_factor
        self.token_order = token_order
        self.q_x = nn.Linear(dim, dim, bias=False)
        self.k_memory = nn.Linear(dim, dim, bias=False)
        self.v = nn.Linear(dim, dim, bias=False)
        self.proj = nn.Linear(dim, dim)
        self.dwc = nn.Conv2d(head_dim, head_dim, kernel_size, padding=kernel_size // 2, groups=head_dim)
        self.scale = nn.Parameter(torch.zeros(1, 1, dim))

    def forward(self, x: Tensor, memory: Tensor, num_frames: int, size: tuple[int, int]) -> Tensor:
        """Attend from the high-band tokens to the low-band tokens of the same clip.

        Args:
            x: ``[B, T·3·h·w, C]`` high-band tokens in ``(t band h w)`` order.
            memory: ``[B, T·h·w, C]`` low-band tokens in ``(t h w)`` order.
            num_frames: T.
            size: ``(h, w)`` of one band.

        Returns:
            ``[B, T·3·h·w, C]``.
        """
        height, width = size
        num_memory = num_frames * height * width
        if memory.shape[1] != num_memory or x.shape[1] != NUM_HIGH_BANDS * num_memory:
            raise ValueError(
                f"FocusedLinearAttention with T={num_frames}, size={tuple(size)} expects "
                f"{NUM_HIGH_BANDS * num_memory} query and {num_memory} memory tokens, "
                f"got {x.shape[1]} and {memory.shape[1]}"
            )
        query = self._focus(self.q_x(x))
        key = self._focus(self.k_memory(memory))
        value = self.v(memory)
        query, key, value = (
            rearrange(t, "b n (heads d) -> b heads n d", heads=self.num_heads) for t in (query, key, value)
        )
        attended = rearrange(_linear_attention(query, key, value), "b heads n e -> b n (heads e)")
        return self.proj(attended.to(value.dtype) + self._local_term(value, num_frames, size))

    def _focus(self, features: Tensor) -> Tensor:
        """The focusing map on ``[B, N, C]`` features, returned in at least float32.

        Computed in at least float32: the cube of ``1e-6``-sized entries underflows in half
        precision and would turn ``‖z³‖`` into 0.
        """
        dtype = torch.promote_types(features.dtype, torch.float32)
        z = (F.relu(features.to(dtype)) + 1e-6) / F.softplus(self.scale.to(dtype))
        z_focused = z**self.focusing_factor
        return z_focused * (z.norm(dim=-1, keepdim=True) / z_focused.norm(dim=-1, keepdim=True))

    def _local_term(self, value: Tensor, num_frames: int, size: tuple[int, int]) -> Tensor:
        """Depthwise convolution of the per-head values, laid out over the query tokens.

        Args:
            value: ``[B, heads, T·h·w, head_dim]``.

        Returns:
            ``[B, T·3·h·w, C]`` with channel ``head·head_dim + d``.
        """
        height, width = size
        if self.token_order == "frame":
            images = rearrange(value, "b heads (t y x) d -> (b heads t) d y x", t=num_frames, y=height, x=width)
            return repeat(
                self.dwc(images),
                "(b heads t) d y x -> b (t band y x) (heads d)",
                heads=self.num_heads,
                t=num_frames,
                band=NUM_HIGH_BANDS,
            )
        images = rearrange(value, "b heads (y wt) d -> (b heads) d y wt", y=height)
        return repeat(
            self.dwc(images), "(b heads) d y wt -> b (band y wt) (heads d)", heads=self.num_heads, band=NUM_HIGH_BANDS
        )


def _linear_attention(query: Tensor, key: Tensor, value: Tensor) -> Tensor:
    """``out_i = q_iᵀ mean_j(k_j v_jᵀ) / (q_iᵀ mean_j(k_j) + 1e-6)`` per head, in at least float32 with
    autocast off.

    The sums run over every memory token of a clip (7,360 at 8 frames of 23x40 tokens) before the
    mean divides them: in float16 they overflow (``inf``, then NaN) once the features reach a few
    dozen, which autocast would otherwise allow. The result is a weighted mean of the values, so it
    fits the values' dtype again.

    Args:
        query: ``[B, heads, N, d]`` focused queries.
        key: ``[B, heads, M, d]`` focused keys.
        value: ``[B, heads, M, e]``.

    Returns:
        ``[B, heads, N, e]`` in ``float32`` (``float64`` for float64 inputs).
    """
    dtype = torch.promote_types(value.dtype, torch.float32)
    with torch.autocast(value.device.type, enabled=False):
        query, key, value = (tensor.to(dtype) for tensor in (query, key, value))
        key_value = torch.einsum("bhmd,bhme->bhde", key, value) / key.shape[2]
        normaliser = torch.einsum("bhnd,bhd->bhn", query, key.mean(dim=2)) + 1e-6
        return torch.einsum("bhnd,bhde->bhne", query, key_value) / normaliser[..., None]


def wavelet_gate(
    x: Tensor,
    sentence: Tensor,
    num_frames: int,
    low_fusion: MultimodalFusion,
    high_attention: FocusedLinearAttention,
) -> Tensor:
    """The WIP gate map of one feature level (docs/architecture.md#wip).

    Two Haar levels ``x → (A1, H1)``, ``A1 → (A2, H2)``. Coarse to fine, each level's low band is
    scaled per video and channel by the sentence (``low_fusion`` with the sentence as its single
    memory token), its high bands attend to that scaled low band (``high_attention``), and the
    inverse transform, cropped to the size before padding, gives the next finer low band.

    Args:
        x: ``[B·T, C, h, w]`` projected features, frames batch-major.
        sentence: ``[B, C]`` sentence features.
        num_frames: T.
        low_fusion: the MMF shared by both levels and depths (``wavelet_vlf_l``).
        high_attention: the FLA shared by both levels and depths (``wavelet_vlf_h``).

    Returns:
        ``[B·T, C, h, w]``, the gate logits M (the caller applies the sigmoid).
    """
    if x.dim() != 4 or x.shape[0] != sentence.shape[0] * num_frames:
        raise ValueError(
            f"wavelet_gate expects x [B·T, C, h, w] with B={sentence.shape[0]} and T={num_frames}, got {tuple(x.shape)}"
        )
    frame_scale = repeat(low_fusion.single_key_scale(sentence), "b c -> (b t) c 1 1", t=num_frames)
    low1, high1 = haar_dwt2(x)
    low2, high2 = haar_dwt2(low1)
    low1 = _calibrate_and_reconstruct(low2, high2, frame_scale, num_frames, high_attention, low1.shape[-2:])
    return _calibrate_and_reconstruct(low1, high1, frame_scale, num_frames, high_attention, x.shape[-2:])


def _calibrate_and_reconstruct(
    low: Tensor,
    high: Tensor,
    frame_scale: Tensor,
    num_frames: int,
    high_attention: FocusedLinearAttention,
    size: torch.Size,
) -> Tensor:
    """Scale the low band, let the high bands attend to it, and invert the Haar transform.

    Args:
        low: ``[B·T, C, h, w]``.
        high: ``[B·T, C, 3, h, w]``.
        frame_scale: ``[B·T, C, 1, 1]`` sentence scale of each frame's video.
        size: ``(H, W)`` the reconstruction is cropped to.

    Returns:
        ``[B·T, C, H, W]``.
    """
    height, width = low.shape[-2:]
    low = low * frame_scale
    low_tokens = rearrange(low, "(b t) c y x -> b (t y x) c", t=num_frames)
    high_tokens = rearrange(high, "(b t) c band y x -> b (t band y x) c", t=num_frames)
    high_tokens = high_attention(high_tokens, low_tokens, num_frames, (height, width))
    high = rearrange(
        high_tokens, "b (t band y x) c -> (b t) c band y x", t=num_frames, band=NUM_HIGH_BANDS, y=height, x=width
    )
    return haar_idwt2(low, high, size=tuple(size))
