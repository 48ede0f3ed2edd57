"""From raw model outputs to per-sample predictions at the original frame resolution.

The model predicts mask logits at stride 4 of the zero-padded input (``[.., h, w]`` with
``h = ceil(Hp / 4)``). Every protocol maps them back the same way (docs/architecture.md#post-processing):
bilinear upsampling of the logits, sigmoid > 0.5, crop of the padding (keep ``[:H', :W']``, the resized
frame), then nearest resizing to the original ``(H, W)``. The protocols differ in how queries are
scored and selected:

* A2D / JHMDB: every query is kept, scored by the sigmoid of its class-0 logit.
* Ref-YouTube-VOS: one query for the whole video, the argmax over queries of the time-averaged
  sigmoid scores (max over classes).
* RefCOCO: every query, sorted by score, with absolute ``xyxy`` boxes; logits are upsampled by
  exactly 4 rather than to the padded size.
* Ref-DAVIS: like Ref-YouTube-VOS but as probability maps, merged over objects by the writer in
  :mod:`wavecl.evaluation.davis`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.ops import box_convert

MASK_THRESHOLD = 0.5


def _check_mask_logits(pred_masks: Tensor, name: str) -> None:
    if pred_masks.ndim != 4:
        raise ValueError(f"{name} must be [N, Q, h, w] (or [T, Q, h, w]), got shape {tuple(pred_masks.shape)}")


def _cropped_logits(mask_logits: Tensor, upsampled_size: tuple[int, int], size: tuple[int, int]) -> Tensor:
    """Stride-4 mask logits of one sample, bilinearly upsampled and cropped to the resized frame.

    Args:
        mask_logits: ``[N, h, w]`` logits of ``N`` masks (queries or frames) of one sample.
        upsampled_size: ``(Hu, Wu)`` the logits are bilinearly resized to (the padded input size, or
            ``4 * (h, w)`` for RefCOCO), with ``Hu >= H'`` and ``Wu >= W'``.
        size: ``(H', W')`` the resized, unpadded frame inside the padded input.

    Returns:
        ``[1, N, H', W']`` float logits.
    """
    height, width = int(size[0]), int(size[1])
    if height > upsampled_size[0] or width > upsampled_size[1]:
        raise ValueError(f"frame size {(height, width)} exceeds the upsampled mask size {tuple(upsampled_size)}")
    upsampled = F.interpolate(
        mask_logits[None].float(), size=tuple(upsampled_size), mode="bilinear", align_corners=False
    )
    return upsampled[:, :, :height, :width]


def _masks_at_original_size(
    mask_logits: Tensor,
    upsampled_size: tuple[int, int],
    size: tuple[int, int],
    orig_size: tuple[int, int],
    threshold: float = MASK_THRESHOLD,
) -> Tensor:
    """Binarise stride-4 mask logits of one sample at its original resolution.

    Args:
        mask_logits, upsampled_size, size: see :func:`_cropped_logits`.
        orig_size: ``(H, W)`` of the original frame.
        threshold: a pixel is in the mask when its sigmoid probability exceeds this.

    Returns:
        ``[N, H, W]`` bool masks.
    """
    binary = resized_masks(mask_logits, upsampled_size, size, threshold)[None].float()
    resized = F.interpolate(binary, size=(int(orig_size[0]), int(orig_size[1])), mode="nearest")
    return resized[0] > 0.5


def a2d_postprocess(
    pred_cls: Tensor,
    pred_masks: Tensor,
    padded_size: tuple[int, int],
    sizes: Sequence[tuple[int, int]],
    orig_sizes: Sequence[tuple[int, int]],
) -> list[dict[str, Tensor]]:
    """A2D-Sentences / JHMDB-Sentences post-processing: every query of the annotated frame.

    Args:
        pred_cls: ``[B, Q, K]`` class logits of the annotated frame (T = 1 after valid-frame selection).
        pred_masks: ``[B, Q, h, w]`` mask logits at stride 4 of the padded input.
        padded_size: ``(Hp, Wp)`` of the padded input frames.
        sizes: ``B`` resized, unpadded sizes ``(H', W')``.
        orig_sizes: ``B`` original sizes ``(H, W)``.

    Returns:
        ``B`` dicts with ``scores`` ``[Q]`` float (sigmoid of the class-0 logit) and ``masks``
        ``[Q, H, W]`` bool at the original size of that sample.
    """
    _check_mask_logits(pred_masks, "pred_masks")
    batch_size = pred_masks.shape[0]
    if pred_cls.ndim != 3 or pred_cls.shape[:2] != pred_masks.shape[:2]:
        raise ValueError(
            f"pred_cls must be [B, Q, K] matching pred_masks {tuple(pred_masks.shape)}, got {tuple(pred_cls.shape)}"
        )
    if len(sizes) != batch_size or len(orig_sizes) != batch_size:
        raise ValueError(f"expected {batch_size} sizes and orig_sizes, got {len(sizes)} and {len(orig_sizes)}")
    scores = pred_cls[..., 0].float().sigmoid()
    return [
        {"scores": scores[b], "masks": _masks_at_original_size(pred_masks[b], padded_size, sizes[b], orig_sizes[b])}
        for b in range(batch_size)
    ]


def video_query_scores(pred_cls: Tensor) -> Tensor:
    """How well each query fits the sentence over a video (or one window of it).

    Args:
        pred_cls: ``[T, Q, K]`` class logits.

    Returns:
        ``[Q]`` float32 ``max_k mean_t sigmoid(pred_cls[t, q, k])``, in ``[0, 1]``.
    """
    if pred_cls.ndim != 3:
        raise ValueError(f"pred_cls must be [T, Q, K], got shape {tuple(pred_cls.shape)}")
    return pred_cls.float().sigmoid().mean(dim=0).amax(dim=-1)


def select_video_query(pred_cls: Tensor) -> int:
    """The query that follows the referred object through a video: the argmax of
    :func:`video_query_scores` over ``pred_cls [T, Q, K]``; ties go to the lowest query index."""
    return int(video_query_scores(pred_cls).argmax())


def _video_query_logits(pred_cls: Tensor, pred_masks: Tensor, query: int | None) -> tuple[int, Tensor]:
    """``query`` (:func:`select_video_query`'s when ``None``) and its mask logits ``[T, h, w]``."""
    _check_mask_logits(pred_masks, "pred_masks")
    if pred_cls.shape[:2] != pred_masks.shape[:2]:
        raise ValueError(
            f"pred_cls {tuple(pred_cls.shape)} and pred_masks {tuple(pred_masks.shape)} disagree on [T, Q]"
        )
    if query is None:
        query = select_video_query(pred_cls)
    return query, pred_masks[:, query]


def resized_masks(
    mask_logits: Tensor, padded_size: tuple[int, int], size: tuple[int, int], threshold: float = MASK_THRESHOLD
) -> Tensor:
    """Binary masks at the resized frame size, before the way back to the original size.

    Args:
        mask_logits: ``[N, h, w]`` stride-4 logits of ``N`` masks of one clip.
        padded_size, size: see :func:`_cropped_logits`.
        threshold: mask probability above which a pixel is in the mask.

    Returns:
        ``[N, H', W']`` bool.
    """
    return _cropped_logits(mask_logits, padded_size, size)[0].sigmoid() > threshold


def video_postprocess(
    pred_cls: Tensor,
    pred_masks: Tensor,
    padded_size: tuple[int, int],
    size: tuple[int, int],
    orig_size: tuple[int, int],
    threshold: float = MASK_THRESHOLD,
    query: int | None = None,
) -> tuple[int, Tensor]:
    """Ref-YouTube-VOS post-processing of one video: one query, binary masks for every frame.

    Args:
        pred_cls: ``[T, Q, K]`` class logits.
        pred_masks: ``[T, Q, h, w]`` mask logits at stride 4 of the padded input.
        padded_size: ``(Hp, Wp)`` of the padded input frames.
        size: ``(H', W')`` resized, unpadded frame size.
        orig_size: ``(H, W)`` original frame size.
        threshold: mask probability above which a pixel is in the mask (0.5 in every protocol).
        query: the query to keep; :func:`select_video_query`'s when ``None`` (a linked window's choice,
            :mod:`wavecl.model.linking`, otherwise).

    Returns:
        The selected query index and its ``[T, H, W]`` bool masks.
    """
    query, logits = _video_query_logits(pred_cls, pred_masks, query)
    return query, _masks_at_original_size(logits, padded_size, size, orig_size, threshold)


def video_probabilities(
    pred_cls: Tensor,
    pred_masks: Tensor,
    padded_size: tuple[int, int],
    size: tuple[int, int],
    orig_size: tuple[int, int],
) -> tuple[int, Tensor]:
    """Ref-DAVIS post-processing of one video chunk: one query, probability maps for every frame.

    The reference resizes the stride-4 logits straight to ``(H, W)``, which misaligns them by up to
    3 input pixels when ``H'`` or ``W'`` is not a multiple of 4. Here the logits go to the padded size
    first, the padding is cropped, and the result is resized bilinearly to ``(H, W)`` before the
    sigmoid, consistently with :func:`video_postprocess`.

    Args:
        pred_cls: ``[T, Q, K]`` class logits of the chunk.
        pred_masks: ``[T, Q, h, w]`` mask logits at stride 4 of the padded input.
        padded_size: ``(Hp, Wp)`` of the padded input frames.
        size: ``(H', W')`` resized, unpadded frame size.
        orig_size: ``(H, W)`` original frame size.

    Returns:
        The selected query index and its ``[T, H, W]`` float probabilities.
    """
    query, logits = _video_query_logits(pred_cls, pred_masks, None)
    cropped = _cropped_logits(logits, padded_size, size)
    resized = F.interpolate(cropped, size=(int(orig_size[0]), int(orig_size[1])), mode="bilinear", align_corners=False)
    return query, resized[0].sigmoid()


def refcoco_postprocess(
    pred_cls: Tensor,
    pred_boxes: Tensor,
    pred_masks: Tensor,
    sizes: Sequence[tuple[int, int]],
    orig_sizes: Sequence[tuple[int, int]],
) -> list[dict[str, Tensor]]:
    """RefCOCO post-processing: all queries sorted by score, absolute boxes, binary masks.

    As in the reference, the top ``Q`` entries of the flattened ``Q * K`` sigmoid scores are kept
    (with ``K = 1`` this is simply every query, best first), and the mask logits are upsampled by
    exactly 4, which keeps each stride-4 cell aligned with the 4x4 input pixels it covers.

    Args:
        pred_cls: ``[B, Q, K]`` class logits (T = 1).
        pred_boxes: ``[B, Q, 4]`` normalised ``(cx, cy, w, h)`` relative to the unpadded frame.
        pred_masks: ``[B, Q, h, w]`` mask logits at stride 4 of the padded input.
        sizes: ``B`` resized, unpadded sizes ``(H', W')``.
        orig_sizes: ``B`` original sizes ``(H, W)``.

    Returns:
        ``B`` dicts, entries in descending score order: ``scores`` ``[Q]``, ``queries`` ``[Q]`` long
        (the query each entry comes from), ``boxes`` ``[Q, 4]`` absolute ``(x1, y1, x2, y2)`` in
        original pixels, ``masks`` ``[Q, H, W]`` bool at the original size.
    """
    _check_mask_logits(pred_masks, "pred_masks")
    batch_size, num_queries, num_classes = pred_cls.shape
    if pred_boxes.shape != (batch_size, num_queries, 4) or pred_masks.shape[:2] != (batch_size, num_queries):
        raise ValueError(
            f"pred_cls {tuple(pred_cls.shape)}, pred_boxes {tuple(pred_boxes.shape)} and pred_masks "
            f"{tuple(pred_masks.shape)} disagree on [B, Q]"
        )
    if len(sizes) != batch_size or len(orig_sizes) != batch_size:
        raise ValueError(f"expected {batch_size} sizes and orig_sizes, got {len(sizes)} and {len(orig_sizes)}")
    flat_scores = pred_cls.float().sigmoid().flatten(1)
    scores, flat_indices = flat_scores.topk(num_queries, dim=1)
    queries = flat_indices // num_classes
    upsampled_size = (pred_masks.shape[-2] * 4, pred_masks.shape[-1] * 4)
    predictions = []
    for b in range(batch_size):
        height, width = (float(v) for v in orig_sizes[b])
        scale = torch.tensor([width, height, width, height], device=pred_boxes.device)
        boxes = box_convert(pred_boxes[b, queries[b]].float(), in_fmt="cxcywh", out_fmt="xyxy") * scale
        masks = _masks_at_original_size(pred_masks[b, queries[b]], upsampled_size, sizes[b], orig_sizes[b])
        predictions.append({"scores": scores[b], "queries": queries[b], "boxes": boxes, "masks": masks})
    return predictions
