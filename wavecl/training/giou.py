"""Generalised IoU in the original repository's form (docs/differences.md#giou).

The original's box ops add ``ε = 1e-6`` to the numerator and the denominator of both ratios,

``IoU = (I + ε) / (U + ε)``, ``GIoU = IoU - (C - U + ε) / (C + ε)``,

where ``I`` is the intersection, ``U`` the union and ``C`` the enclosing box's area; its criterion and its
matcher both use this form. torchvision's form (wavecl's default) has no ``ε`` in the numerators. The two
agree for boxes of ordinary size and differ for empty or tiny ones: against the zero box of a frame where
the object is absent, ``(I + ε) / (U + ε) = ε / (a + ε)`` for a predicted box of area ``a`` tends to 1 as
the box shrinks, so the original's loss pulls tiny boxes towards zero area, and torchvision's does not.
"""

from __future__ import annotations

import torch
from torch import Tensor

REFERENCE_EPS = 1e-6
"""The constant the original adds to the numerators and denominators of its IoU and GIoU ratios."""


def reference_generalized_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """GIoU of ``(x1, y1, x2, y2)`` boxes as the original's box ops compute it (formula in the module docstring).

    Args:
        boxes1, boxes2: ``[..., 4]`` boxes with ``x2 >= x1`` and ``y2 >= y1``, broadcast against each other
            (``boxes1[:, None]`` and ``boxes2[None]`` give the pairwise ``[N, M]`` matrix, equal shapes the
            row-by-row pairs).

    Returns:
        ``[...]`` GIoU in ``(-1, 1]``; finite for empty boxes too (the IoU of two empty boxes is 1, their
        GIoU 0 when the enclosing box is empty as well).
    """
    x1, y1, x2, y2 = boxes1.unbind(-1)
    u1, v1, u2, v2 = boxes2.unbind(-1)
    overlap_w = (torch.minimum(x2, u2) - torch.maximum(x1, u1)).clamp(min=0)
    overlap_h = (torch.minimum(y2, v2) - torch.maximum(y1, v1)).clamp(min=0)
    intersection = overlap_w * overlap_h
    union = (x2 - x1) * (y2 - y1) + (u2 - u1) * (v2 - v1) - intersection
    enclosing_w = (torch.maximum(x2, u2) - torch.minimum(x1, u1)).clamp(min=0)
    enclosing_h = (torch.maximum(y2, v2) - torch.minimum(y1, v1)).clamp(min=0)
    enclosing = enclosing_w * enclosing_h
    iou = (intersection + REFERENCE_EPS) / (union + REFERENCE_EPS)
    return iou - (enclosing - union + REFERENCE_EPS) / (enclosing + REFERENCE_EPS)
