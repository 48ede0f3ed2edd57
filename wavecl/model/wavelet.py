"""Single-level 2-D Haar wavelet transform on tensors (docs/architecture.md#haar-transform).

The transform is written in closed form instead of calling PyWavelets: ``pywt`` works on NumPy
arrays on the CPU, so it can neither run on the GPU nor propagate gradients, and WIP needs both.
The Haar case is four sums and differences per 2×2 block, so no filter tensors are needed at all
(the reference kept its filters in unregistered Python lists that were copied to the device on
every call). ``tests/model/test_wavelet.py`` checks every band against ``pywt.dwt2(x, "haar")``.

For each 2×2 block ``[[a, b], [c, d]]`` the four coefficients are

* ``LL    = (a + b + c + d) / 2`` (twice the average pool),
* ``band1 = (a + b - c - d) / 2`` (top minus bottom; pywt's ``cH``),
* ``band2 = (a - b + c - d) / 2`` (left minus right; pywt's ``cV``),
* ``band3 = (a - b - c + d) / 2`` (diagonal; pywt's ``cD``).

The 4×4 matrix of these coefficients is symmetric and orthogonal, so the inverse applies the same
sums and differences to the coefficients.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from einops import rearrange
from torch import Tensor


def haar_dwt2(x: Tensor) -> tuple[Tensor, Tensor]:
    """One level of the orthonormal 2-D Haar transform, per channel.

    Odd heights or widths are zero-padded at the bottom or right first (as PyWavelets'
    ``mode="zero"`` does).

    Args:
        x: ``[N, C, H, W]``.

    Returns:
        low: ``[N, C, h, w]``, the LL band, with ``h = ceil(H / 2)`` and ``w = ceil(W / 2)``.
        high: ``[N, C, 3, h, w]``, bands 1-3 in the order of the module docstring.
    """
    if x.dim() != 4:
        raise ValueError(f"haar_dwt2 expects [N, C, H, W], got shape {tuple(x.shape)}")
    height, width = x.shape[-2:]
    x = F.pad(x, (0, width % 2, 0, height % 2))
    a, b, c, d = rearrange(x, "n c (h i) (w j) -> (i j) n c h w", i=2, j=2)
    top, bottom = a + b, c + d
    left_minus_right_top, left_minus_right_bottom = a - b, c - d
    low = (top + bottom) / 2
    high = rearrange(
        [
            (top - bottom) / 2,
            (left_minus_right_top + left_minus_right_bottom) / 2,
            (left_minus_right_top - left_minus_right_bottom) / 2,
        ],
        "band n c h w -> n c band h w",
    )
    return low, high


def haar_idwt2(low: Tensor, high: Tensor, size: Sequence[int] | None = None) -> Tensor:
    """Exact inverse of :func:`haar_dwt2`.

    Args:
        low: ``[N, C, h, w]``, the LL band.
        high: ``[N, C, 3, h, w]``, bands 1-3.
        size: ``(H, W)`` to crop the ``[N, C, 2h, 2w]`` reconstruction to (removing the padding
            that :func:`haar_dwt2` added for odd sizes); no crop when None.

    Returns:
        ``[N, C, 2h, 2w]``, or ``[N, C, H, W]`` when ``size`` is given.
    """
    if low.dim() != 4 or high.shape != (*low.shape[:2], 3, *low.shape[2:]):
        raise ValueError(
            f"haar_idwt2 expects low [N, C, h, w] and high [N, C, 3, h, w], "
            f"got {tuple(low.shape)} and {tuple(high.shape)}"
        )
    band1, band2, band3 = high.unbind(dim=2)
    low_plus_1, low_minus_1 = low + band1, low - band1
    band2_plus_3, band2_minus_3 = band2 + band3, band2 - band3
    blocks = rearrange(
        [
            (low_plus_1 + band2_plus_3) / 2,
            (low_plus_1 - band2_plus_3) / 2,
            (low_minus_1 + band2_minus_3) / 2,
            (low_minus_1 - band2_minus_3) / 2,
        ],
        "(i j) n c h w -> n c (h i) (w j)",
        i=2,
        j=2,
    )
    if size is None:
        return blocks
    height, width = size
    if height > blocks.shape[-2] or width > blocks.shape[-1]:
        raise ValueError(f"crop size {size} exceeds the reconstruction {tuple(blocks.shape[-2:])}")
    return blocks[..., :height, :width]
