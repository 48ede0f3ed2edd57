"""Whether a referred object's predicted masks keep to one object over a video, and how steady they are.

Windowed inference picks a query in each window of ``window`` frames, so the mask can jump from one
object to a look-alike at the start of a window. Two numbers per expression measure it
(docs/datasets.md#identity-switches-and-temporal-stability):

- **Identity switches.** The windows start at frames ``0, s, 2s, ...`` with ``s = window - overlap``
  (:func:`window_starts`). A new window's start splits the video into segments: segment ``k`` is frames
  ``[start_k, start_{k+1})``, the last one running to the end of the video, so the segments cover every
  frame once even when windows overlap. In each segment the prediction's object is the ground-truth
  object (any object of the video's index masks, referred or not) with the highest IoU between its
  masks and the predicted masks over the segment's frames taken together (``sum of intersections /
  sum of unions``); the lowest id wins a tie, and a segment whose prediction overlaps no object
  (an empty prediction, or one on the background only) has no object (0). The switches are the
  segments whose object differs from that of the nearest earlier segment having one: segments without
  an object are skipped, so losing the object and finding it again is not a switch (J counts the loss),
  while losing it and finding another is one.
- **Temporal stability.** The mean IoU of consecutive frames' predicted masks, minus the same mean for
  the ground-truth masks of the referred object (IoU 1 for two empty masks; a video of one frame has
  mean 1). 0: the mask changes from frame to frame as much as the object does; negative: it flickers
  or jumps more; positive: it changes less than the object (a frozen or empty mask).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

IDENTITY_COLUMNS = ("switches", "stability")
"""Per-expression table columns of :class:`IdentityScore`'s two fields."""


def window_starts(num_frames: int, window: int | None, overlap: int = 0) -> list[int]:
    """First frame of every window over a video: ``0, s, 2s, ...`` with ``s = window - overlap``, as long as
    the previous window leaves frames uncovered (``start + overlap < num_frames``).

    ``window=None`` is one window with the whole video. With ``overlap=0`` these are the starts of
    :func:`wavecl.data.windows.covering_windows`.

    Example: ``window_starts(10, 4, 1) == [0, 3, 6]`` (windows ``0-3``, ``3-6``, ``6-9``).

    Raises:
        ValueError: ``window < 1``, or ``overlap`` outside ``[0, window)``.
    """
    if window is None:
        return [0] if num_frames else []
    if window < 1:
        raise ValueError(f"window must be positive, got {window}")
    if not 0 <= overlap < window:
        raise ValueError(f"overlap must be in [0, window={window}), got {overlap}")
    if num_frames < 1:
        return []
    return list(range(0, max(num_frames - overlap, 1), window - overlap))


def segment_objects(predicted: np.ndarray, labels: np.ndarray, starts: Sequence[int]) -> list[int]:
    """The ground-truth object that best overlaps the prediction in each segment between window starts.

    Args:
        predicted: ``[T, H, W]`` bool predicted masks.
        labels: ``[T, H, W]`` integer object ids of the ground truth (0 = background).
        starts: increasing first frames of the windows, ``starts[0] == 0`` (:func:`window_starts`).

    Returns:
        One object id per segment ``[starts[k], starts[k + 1])`` (the last to frame ``T``): the id with the
        highest IoU over the segment's frames together, the lowest id on a tie, 0 where the prediction
        overlaps no object.

    Raises:
        ValueError: ``predicted`` and ``labels`` differ in shape, or ``labels`` holds negative ids.
    """
    if predicted.shape != labels.shape:
        raise ValueError(f"predicted masks {predicted.shape} and labels {labels.shape} differ in shape")
    if labels.size and labels.min() < 0:
        raise ValueError("labels must be non-negative object ids")
    num_ids = int(labels.max()) + 1 if labels.size else 1
    ends = [*starts[1:], len(labels)]
    objects = []
    for start, end in zip(starts, ends):
        segment_labels, segment_predicted = labels[start:end], predicted[start:end].astype(bool)
        intersections = np.bincount(segment_labels[segment_predicted], minlength=num_ids)
        unions = np.bincount(segment_labels.ravel(), minlength=num_ids) + segment_predicted.sum() - intersections
        intersections[0] = 0  # the background is no object
        if not intersections.any():
            objects.append(0)
            continue
        objects.append(int(np.argmax(intersections / np.maximum(unions, 1))))
    return objects


def count_switches(objects: Sequence[int]) -> int:
    """Changes of object along ``objects`` (one id per segment, 0 = none), segments without an object skipped."""
    switches, previous = 0, 0
    for obj in objects:
        if obj == 0:
            continue
        switches += int(previous != 0 and obj != previous)
        previous = obj
    return switches


def consecutive_iou(masks: np.ndarray) -> float:
    """Mean IoU of frames ``t`` and ``t + 1`` of ``[T, H, W]`` bool masks over ``t < T - 1``; two empty masks
    have IoU 1, and fewer than two frames give 1."""
    if len(masks) < 2:
        return 1.0
    masks = masks.astype(bool)
    intersections = (masks[:-1] & masks[1:]).sum(axis=(1, 2))
    unions = (masks[:-1] | masks[1:]).sum(axis=(1, 2))
    return float(np.mean(np.where(unions == 0, 1.0, intersections / np.maximum(unions, 1))))


@dataclass(frozen=True)
class IdentityScore:
    """Identity measures of one expression.

    Attributes:
        switches: identity switches at window starts (:func:`count_switches` of :func:`segment_objects`).
        stability: temporal stability, consecutive-frame IoU of the prediction minus that of the truth.
    """

    switches: int
    stability: float


def identity_score(
    predicted: np.ndarray, truth: np.ndarray, labels: np.ndarray, window: int | None, overlap: int = 0
) -> IdentityScore:
    """Identity switches and temporal stability of one expression's predicted masks.

    Args:
        predicted: ``[T, H, W]`` bool predicted masks.
        truth: ``[T, H, W]`` bool ground-truth masks of the referred object.
        labels: ``[T, H, W]`` integer ids of every ground-truth object (0 = background).
        window: frames per window (:func:`window_starts`); ``None``: the whole video, no switch possible.
        overlap: frames shared by consecutive windows.

    Raises:
        ValueError: as :func:`window_starts` and :func:`segment_objects`; ``truth`` differs in shape.
    """
    if truth.shape != predicted.shape:
        raise ValueError(f"predicted masks {predicted.shape} and ground truth {truth.shape} differ in shape")
    objects = segment_objects(predicted, labels, window_starts(len(predicted), window, overlap))
    return IdentityScore(count_switches(objects), consecutive_iou(predicted) - consecutive_iou(truth))


def identity_summary(scores: Sequence[IdentityScore]) -> dict[str, float]:
    """``identity_switches`` (the total over expressions) and ``temporal_stability`` (the mean over
    expressions, each weighing the same); empty input gives an empty dict."""
    if not scores:
        return {}
    return {
        "identity_switches": float(sum(score.switches for score in scores)),
        "temporal_stability": float(np.mean([score.stability for score in scores])),
    }
