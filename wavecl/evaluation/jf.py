"""J and F, the region and boundary measures of the DAVIS-2017 protocol, with their per-object statistics;
shared by the Ref-DAVIS17, Ref-YouTube-VOS and MeViS scorers."""

from __future__ import annotations

import math
import warnings

import numpy as np
from scipy.ndimage import binary_dilation

BOUNDARY_THRESHOLD = 0.008


def db_eval_iou(annotation: np.ndarray, segmentation: np.ndarray, void_pixels: np.ndarray | None = None) -> np.ndarray:
    """Region similarity J between ground-truth and predicted masks.

    Args:
        annotation: ``[..., H, W]`` ground-truth masks (cast to bool).
        segmentation: ``[..., H, W]`` predicted masks, broadcastable against ``annotation``.
        void_pixels: ``[..., H, W]`` pixels to ignore, broadcastable; ``None`` for none.

    Returns:
        ``[...]`` float array of ``|A ∧ S| / |A ∨ S|`` over the non-void pixels; 1 where the union is
        empty (a 0-d array for single masks).
    """
    annotation = np.asarray(annotation, dtype=bool)
    segmentation = np.asarray(segmentation, dtype=bool)
    valid = np.ones((1, 1), dtype=bool) if void_pixels is None else ~np.asarray(void_pixels, dtype=bool)
    inter = np.sum(annotation & segmentation & valid, axis=(-2, -1))
    union = np.sum((annotation | segmentation) & valid, axis=(-2, -1))
    with np.errstate(divide="ignore", invalid="ignore"):
        j = inter / union
    return np.where(union == 0, 1.0, j)


def seg2bmap(mask: np.ndarray) -> np.ndarray:
    """The 1-pixel-wide boundary map of a binary mask, as in the DAVIS toolkit.

    A pixel is on the boundary if it differs from its right, lower or lower-right neighbour (pixels
    beyond the image count as 0); on the last row only the right neighbour counts, on the last column
    only the lower one, and the bottom-right pixel is never a boundary.

    Args:
        mask: ``[H, W]`` binary mask.

    Returns:
        ``[H, W]`` bool boundary map.
    """
    m = np.asarray(mask, dtype=bool)
    if m.ndim != 2:
        raise ValueError(f"seg2bmap expects an [H, W] mask, got shape {m.shape}")
    east = np.zeros_like(m)
    south = np.zeros_like(m)
    south_east = np.zeros_like(m)
    east[:, :-1] = m[:, 1:]
    south[:-1, :] = m[1:, :]
    south_east[:-1, :-1] = m[1:, 1:]
    boundary = (m ^ east) | (m ^ south) | (m ^ south_east)
    boundary[-1, :] = m[-1, :] ^ east[-1, :]
    boundary[:, -1] = m[:, -1] ^ south[:, -1]
    boundary[-1, -1] = False
    return boundary


def disk(radius: int) -> np.ndarray:
    """``[2r+1, 2r+1]`` bool disk: the offsets ``(y, x)`` with ``x² + y² <= r²`` (197 pixels for r = 8)."""
    offsets = np.arange(-radius, radius + 1)
    return offsets[:, None] ** 2 + offsets[None, :] ** 2 <= radius**2


def boundary_tolerance(bound_th: float, height: int, width: int) -> int:
    """Boundary matching tolerance in pixels: ``bound_th`` itself if >= 1, else ``ceil(bound_th * diagonal)``.

    8 pixels for 480x854 frames at the default 0.008, 7 for 480x640.
    """
    return int(bound_th) if bound_th >= 1 else int(math.ceil(bound_th * math.hypot(height, width)))


def _dilate_with_disk(boundary: np.ndarray, radius: int) -> np.ndarray:
    """Dilate an ``[H, W]`` bool map with :func:`disk`; only the bounding box of its pixels grown by
    ``radius`` can change, so the dilation runs on that window."""
    dilated = np.zeros_like(boundary)
    rows = np.flatnonzero(boundary.any(axis=1))
    if rows.size == 0:
        return dilated
    cols = np.flatnonzero(boundary.any(axis=0))
    y0, y1 = max(rows[0] - radius, 0), min(rows[-1] + radius + 1, boundary.shape[0])
    x0, x1 = max(cols[0] - radius, 0), min(cols[-1] + radius + 1, boundary.shape[1])
    dilated[y0:y1, x0:x1] = binary_dilation(boundary[y0:y1, x0:x1], structure=disk(radius))
    return dilated


def _boundaries(masks: np.ndarray, void: np.ndarray | None, radius: int) -> tuple[np.ndarray, np.ndarray]:
    """Boundary maps and their disk dilations of ``[N, H, W]`` masks of one frame (void zeroed first).

    Returns:
        ``boundaries`` and ``dilated``, both ``[N, H*W]`` float32 (0/1) ready for counting by matmul.
    """
    boundaries = []
    dilated = []
    for mask in masks:
        mask = mask if void is None else mask & ~void
        boundary = seg2bmap(mask)
        boundaries.append(boundary.ravel())
        dilated.append(_dilate_with_disk(boundary, radius).ravel())
    return np.asarray(boundaries, dtype=np.float32), np.asarray(dilated, dtype=np.float32)


def f_measure_matrix(
    gt_masks: np.ndarray, pred_masks: np.ndarray, void: np.ndarray | None, bound_th: float
) -> np.ndarray:
    """Boundary F of every (prediction, ground truth) pair in one frame.

    Args:
        gt_masks: ``[G, H, W]`` bool.
        pred_masks: ``[P, H, W]`` bool.
        void: ``[H, W]`` bool or ``None``.
        bound_th: tolerance, see :func:`boundary_tolerance`.

    Returns:
        ``[P, G]`` F values. Precision/recall conventions: no predicted boundary and some ground-truth
        boundary gives P = 1, R = 0; the reverse P = 0, R = 1; both empty P = R = 1; F = 0 if P + R = 0.
    """
    radius = boundary_tolerance(bound_th, *gt_masks.shape[-2:])
    gt_boundary, gt_dilated = _boundaries(gt_masks, void, radius)
    pred_boundary, pred_dilated = _boundaries(pred_masks, void, radius)
    pred_matched = pred_boundary @ gt_dilated.T  # [P, G]: predicted boundary pixels near the GT boundary
    gt_matched = (gt_boundary @ pred_dilated.T).T  # [P, G]: GT boundary pixels near the predicted boundary
    n_pred = pred_boundary.sum(axis=1)[:, None]
    n_gt = gt_boundary.sum(axis=1)[None, :]
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(n_pred > 0, pred_matched / n_pred, 1.0)
        recall = np.where(n_gt > 0, gt_matched / n_gt, 1.0)
        precision = np.where((n_pred > 0) & (n_gt == 0), 0.0, precision)
        recall = np.where((n_pred == 0) & (n_gt > 0), 0.0, recall)
        f = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    return f.astype(np.float64)


def db_eval_boundary(
    annotation: np.ndarray,
    segmentation: np.ndarray,
    void_pixels: np.ndarray | None = None,
    bound_th: float = BOUNDARY_THRESHOLD,
) -> np.ndarray:
    """Boundary measure F between ground-truth and predicted masks.

    Args:
        annotation: ``[H, W]`` or ``[T, H, W]`` ground-truth masks.
        segmentation: same shape, predicted masks.
        void_pixels: same shape, pixels zeroed in both masks before extracting boundaries; ``None`` for none.
        bound_th: tolerance as a fraction of the image diagonal (or pixels if >= 1).

    Returns:
        F per frame: ``[T]``, or a 0-d array for ``[H, W]`` inputs.
    """
    annotation = np.asarray(annotation, dtype=bool)
    segmentation = np.asarray(segmentation, dtype=bool)
    if annotation.shape != segmentation.shape or annotation.ndim not in (2, 3):
        raise ValueError(
            f"expected two [H, W] or [T, H, W] masks of one shape, got {annotation.shape} and {segmentation.shape}"
        )
    void = None if void_pixels is None else np.broadcast_to(np.asarray(void_pixels, dtype=bool), annotation.shape)
    frames = annotation.reshape(-1, *annotation.shape[-2:])
    predictions = segmentation.reshape(frames.shape)
    voids = [None] * len(frames) if void is None else void.reshape(frames.shape)
    values = [
        f_measure_matrix(gt[None], pred[None], v, bound_th)[0, 0] for gt, pred, v in zip(frames, predictions, voids)
    ]
    return np.asarray(values).reshape(annotation.shape[:-2])


def db_statistics(per_frame: np.ndarray) -> tuple[float, float, float]:
    """Mean, recall and decay of one object's per-frame J or F values.

    Args:
        per_frame: ``[n]`` values; NaN frames are left out of the means.

    Returns:
        ``(M, O, D)``: ``M = nanmean(v)``; ``O = mean(v > 0.5)`` where NaN counts as a miss;
        ``D = nanmean(bin 0) - nanmean(bin 3)`` over 4 bins cut at ``ids = round(linspace(1, n, 5)) - 1``,
        bin ``i`` being ``v[ids[i] : ids[i+1] + 1]`` so that neighbouring bins share a frame
        (n = 50 gives ids 0, 12, 25, 37, 49).
    """
    values = np.asarray(per_frame, dtype=np.float64)
    if values.ndim != 1 or values.size == 0:
        raise ValueError(f"expected a non-empty 1-D series, got shape {values.shape}")
    ids = (np.round(np.linspace(1, values.size, 5) + 1e-10) - 1).astype(np.int64)
    bins = [values[ids[i] : ids[i + 1] + 1] for i in range(4)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=RuntimeWarning)
        mean = float(np.nanmean(values))
        decay = float(np.nanmean(bins[0]) - np.nanmean(bins[3]))
    recall = float(np.mean(values > 0.5))
    return mean, recall, decay
