"""Linked windows: each window of a video chooses its query in agreement with the previous window's choice.

A long video is cut into windows that share ``overlap`` frames with the previous one. Where two objects
fit a sentence, choosing each window's best-scoring query on its own can jump from one to the other at a
window boundary. A linked window instead chooses, per sentence,

    ``argmax_q  score(q) + link_weight * IoU(masks(q), previous)``

where ``score`` is :func:`~wavecl.model.postprocess.video_query_scores` (in ``[0, 1]``), ``masks(q)`` are
query ``q``'s binary masks on the shared frames and ``previous`` the previous window's chosen masks on the
same frames, both at the resized frame size (:func:`~wavecl.model.postprocess.resized_masks`), the IoU taken
over the pixels of all shared frames together. The term is 0 in the first window and wherever the previous
masks are empty on the shared frames (nothing to follow). Ties go to the lowest query index, so
``link_weight=0`` chooses exactly as :func:`~wavecl.model.postprocess.select_video_query`.

Frames shared by two windows keep the masks of the earlier window, which already gave them out; the later
window reads them only to choose. Query embeddings are not compared: query slots are not tied to objects
across clips, and the masks on the same frames say directly whether two choices are one object.
"""

from __future__ import annotations

from torch import Tensor

from wavecl.model.postprocess import MASK_THRESHOLD, resized_masks, video_query_scores


def mask_agreement(candidates: Tensor, previous: Tensor) -> Tensor:
    """The IoU of each candidate's masks with the previous choice's, over all shared frames together.

    Args:
        candidates: ``[Q, S, H, W]`` bool masks of ``Q`` queries on ``S`` shared frames.
        previous: ``[S, H, W]`` bool masks of the previous window's choice on the same frames.

    Returns:
        ``[Q]`` float IoU in ``[0, 1]``; all 0 where ``previous`` is empty.
    """
    if candidates.shape[1:] != previous.shape:
        raise ValueError(f"candidate masks {tuple(candidates.shape)} do not cover previous {tuple(previous.shape)}")
    intersection = (candidates & previous).flatten(1).sum(dim=1).float()
    union = (candidates | previous).flatten(1).sum(dim=1).float()
    return intersection / union.clamp(min=1.0)


class LinkedQueries:
    """The choices of one sentence over the consecutive windows of one video.

    Holds the chosen masks of the last ``overlap`` frames of the previous window, so memory is bounded by
    the window whatever the video's length.

    Args:
        overlap: frames shared by consecutive windows.
        link_weight: weight of the agreement with the previous choice (``>= 0``; 0: no link).
        threshold: mask probability above which a pixel is in the mask.
    """

    def __init__(self, overlap: int, link_weight: float, threshold: float = MASK_THRESHOLD) -> None:
        if overlap < 0 or link_weight < 0:
            raise ValueError(f"overlap and link_weight must be >= 0, got {overlap} and {link_weight}")
        self.overlap = overlap
        self.link_weight = link_weight
        self.threshold = threshold
        self.previous: Tensor | None = None
        """``[overlap, H', W']`` bool masks of the last choice on the frames the next window shares."""

    def choose(self, pred_cls: Tensor, pred_masks: Tensor, padded_size: tuple[int, int], size: tuple[int, int]) -> int:
        """Choose this window's query and remember its masks on the frames the next window shares.

        Args:
            pred_cls: ``[T, Q, K]`` class logits of the window, whose first ``overlap`` frames are the
                previous window's last ones (the first window of a video: after :meth:`reset`).
            pred_masks: ``[T, Q, h, w]`` stride-4 mask logits of the padded input.
            padded_size, size: ``(Hp, Wp)`` of the padded input and ``(H', W')`` of the resized frames.

        Returns:
            The chosen query index.
        """
        scores = video_query_scores(pred_cls)
        if self.previous is not None and self.link_weight > 0:
            shared = len(self.previous)
            candidates = resized_masks(pred_masks[:shared].flatten(0, 1), padded_size, size, self.threshold)
            candidates = candidates.unflatten(0, (shared, -1)).transpose(0, 1)
            scores = scores + self.link_weight * mask_agreement(candidates, self.previous.to(candidates.device))
        query = int(scores.argmax())
        if self.overlap and self.link_weight > 0:
            tail = pred_masks[len(pred_masks) - min(self.overlap, len(pred_masks)) :, query]
            self.previous = resized_masks(tail, padded_size, size, self.threshold)
        return query

    def reset(self) -> None:
        """Forget the previous choice (a new video begins)."""
        self.previous = None
