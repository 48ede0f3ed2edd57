"""Ref-DAVIS17: writing predictions and scoring them with J&F (docs/datasets.md#j-f-and-jf).

Scoring follows the definitions of the official DAVIS-2017 evaluation toolkit, unsupervised task:

* J (region similarity) is the IoU of the two masks outside the void (255) pixels, 1 if both are empty.
* F (boundary measure) compares 1-pixel boundary maps (:func:`seg2bmap`) within a tolerance of
  ``ceil(0.008 * image diagonal)`` pixels, by dilating each map with a disk.
* Predicted objects are matched to the ground-truth objects of a sequence by a Hungarian assignment
  on the mean over frames of ``(J + F) / 2``; the number of ground-truth objects is the largest id of the
  first ground-truth frame.
* Per object: mean, recall (fraction of frames above 0.5) and decay (first-quarter minus last-quarter
  mean) of the per-frame values; the global numbers average over all objects of all sequences.

The toolkit's OpenCV and scikit-image calls are replaced by their exact SciPy/NumPy equivalents: the
disk is the set of offsets with ``x² + y² <= r²`` and the dilation is ``scipy.ndimage.binary_dilation``
with empty outside the image, as ``cv2.dilate`` does with its default border. Each mask's boundary is
dilated once per frame rather than once per (prediction, ground truth) pair, which gives the same
numbers faster. Differences from the toolkit, none of which changes a reported number: per-object rows
are named after the ground-truth object they are matched to (the toolkit names them in prediction
order), results are always recomputed (the toolkit silently reloads stale CSV files), and decay bin
indices are not cast to uint8 (which only matters beyond 256 frames).
"""

from __future__ import annotations

import csv
import math
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from scipy.ndimage import binary_dilation
from scipy.optimize import linear_sum_assignment
from torch import Tensor

from wavecl.atomic import atomic_path
from wavecl.data.davis import davis_result_path, read_split_list
from wavecl.data.palette import save_index_png
from wavecl.data.paths import is_hidden, listed_files
from wavecl.data.ytvos import read_index_mask

BOUNDARY_THRESHOLD = 0.008
MAX_PROPOSALS = 20
VOID_LABEL = 255
BACKGROUND_SCORE = 0.1
PROBABILITY_THRESHOLD = 0.5
NUM_ANNOTATORS = 4
GLOBAL_COLUMNS = ("J&F-Mean", "J-Mean", "J-Recall", "J-Decay", "F-Mean", "F-Recall", "F-Decay")
OBJECT_COLUMNS = ("J-Mean", "J-Recall", "J-Decay", "F-Mean", "F-Recall", "F-Decay")


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


def _f_measure_matrix(
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
        _f_measure_matrix(gt[None], pred[None], v, bound_th)[0, 0] for gt, pred, v in zip(frames, predictions, voids)
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


def evaluate_sequence(
    gt_labels: np.ndarray,
    result_labels: np.ndarray,
    bound_th: float = BOUNDARY_THRESHOLD,
    max_proposals: int = MAX_PROPOSALS,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame J and F of every ground-truth object of one sequence (unsupervised protocol).

    Args:
        gt_labels: ``[T, H, W]`` ground-truth ids (0 background, 255 void); the number of objects is the
            largest id in frame 0, larger ids are ignored.
        result_labels: ``[T, H, W]`` predicted ids (0 background); ids 1..max are the proposals.
        bound_th: boundary tolerance, see :func:`boundary_tolerance`.
        max_proposals: more predicted ids than this is an error (20 in the toolkit).

    Returns:
        ``J`` and ``F``, each ``[G, T]`` with row ``g`` the ground-truth object ``g + 1``, after the
        Hungarian matching of proposals to objects that maximises the summed mean ``(J + F) / 2``.
        Proposals are padded with empty ones when there are fewer than ``G``.
    """
    gt_labels = np.asarray(gt_labels)
    result_labels = np.asarray(result_labels)
    if gt_labels.shape != result_labels.shape or gt_labels.ndim != 3:
        raise ValueError(
            f"expected [T, H, W] ground truth and results of one shape, got {gt_labels.shape} and {result_labels.shape}"
        )
    void = gt_labels == VOID_LABEL
    gt_clean = np.where(void, 0, gt_labels)
    num_objects = int(gt_clean[0].max())
    num_proposals = int(result_labels.max())
    if num_proposals > max_proposals:
        raise ValueError(f"{num_proposals} predicted object ids exceed the maximum of {max_proposals} proposals")
    num_frames = gt_labels.shape[0]
    if num_objects == 0:
        return np.zeros((0, num_frames)), np.zeros((0, num_frames))
    gt_ids = np.arange(1, num_objects + 1)[:, None, None]
    proposal_ids = np.arange(1, max(num_proposals, num_objects) + 1)[:, None, None]
    j = np.empty((len(proposal_ids), num_objects, num_frames))
    f = np.empty_like(j)
    for t in range(num_frames):
        gt_masks = gt_clean[t][None] == gt_ids
        pred_masks = result_labels[t][None] == proposal_ids
        j[:, :, t] = db_eval_iou(gt_masks[None], pred_masks[:, None], void[t])
        f[:, :, t] = _f_measure_matrix(gt_masks, pred_masks, void[t], bound_th)
    proposal_index, object_index = linear_sum_assignment(-(j.mean(axis=2) + f.mean(axis=2)) / 2)
    by_object = np.argsort(object_index)
    rows, cols = proposal_index[by_object], object_index[by_object]
    return j[rows, cols], f[rows, cols]


@dataclass
class DavisResult:
    """J&F of one results folder.

    Attributes:
        global_metrics: ``J&F-Mean``, ``J-Mean``, ``J-Recall``, ``J-Decay``, ``F-Mean``, ``F-Recall``,
            ``F-Decay``, each averaged over all objects of all sequences.
        per_object: ``<sequence>_<object id>`` -> the six per-object statistics (``J-Mean`` ... ``F-Decay``).
    """

    global_metrics: dict[str, float]
    per_object: dict[str, dict[str, float]]


def write_csv(path: Path, header: Sequence[str], rows: Sequence[Sequence[object]], decimals: int = 5) -> None:
    """Write a CSV file atomically; floats with ``decimals`` decimals (5, as the DAVIS toolkit prints them)."""
    with atomic_path(path) as temporary, open(temporary, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        for row in rows:
            writer.writerow([f"{v:.{decimals}f}" if isinstance(v, float) else v for v in row])


def evaluate_davis_folder(
    results_dir: str | os.PathLike[str],
    gt_dir: str | os.PathLike[str],
    sequences: Sequence[str] | None = None,
    subset: str = "val",
    bound_th: float = BOUNDARY_THRESHOLD,
    max_proposals: int = MAX_PROPOSALS,
) -> DavisResult:
    """Score a folder of predicted index PNGs against DAVIS ground truth and write the CSV tables.

    Args:
        results_dir: ``<results_dir>/<sequence>/<frame>.png`` index masks for every ground-truth frame.
        gt_dir: ``<gt_dir>/<sequence>/<frame>.png`` palette ground truth
            (``DAVIS/Annotations_unsupervised/480p``).
        sequences: sequences to score; ``None`` for every sub-folder of ``gt_dir``.
        subset: only names the CSV files.
        bound_th: boundary tolerance, see :func:`boundary_tolerance`.
        max_proposals: see :func:`evaluate_sequence`.

    Writes ``global_results-<subset>.csv`` (columns :data:`GLOBAL_COLUMNS`) and
    ``per-sequence_results-<subset>.csv`` (``Sequence``, ``J-Mean``, ``F-Mean``) into ``results_dir``.
    """
    results_dir, gt_dir = Path(results_dir), Path(gt_dir)
    if not gt_dir.is_dir():
        raise FileNotFoundError(f"ground-truth folder not found: {gt_dir}")
    if not results_dir.is_dir():
        raise FileNotFoundError(f"results folder not found: {results_dir}")
    if sequences is None:
        sequences = sorted(p.name for p in gt_dir.iterdir() if p.is_dir() and not is_hidden(p.name))
    per_object: dict[str, dict[str, float]] = {}
    for sequence in sequences:
        gt_paths = listed_files(gt_dir / sequence, (".png",))
        if not gt_paths:
            raise FileNotFoundError(f"no ground-truth PNGs in {gt_dir / sequence}")
        gt_labels = np.stack([read_index_mask(p) for p in gt_paths])
        result_labels = np.stack([read_index_mask(results_dir / sequence / p.name) for p in gt_paths])
        if result_labels.shape != gt_labels.shape:
            raise ValueError(
                f"{results_dir / sequence}: predicted masks {result_labels.shape[1:]} differ in size from the "
                f"ground truth {gt_labels.shape[1:]}"
            )
        j, f = evaluate_sequence(gt_labels, result_labels, bound_th, max_proposals)
        for index, (j_object, f_object) in enumerate(zip(j, f)):
            statistics = db_statistics(j_object) + db_statistics(f_object)
            per_object[f"{sequence}_{index + 1}"] = dict(zip(OBJECT_COLUMNS, statistics))
    if not per_object:
        raise ValueError(f"no ground-truth objects found in {gt_dir} for sequences {list(sequences)[:5]}")
    means = {name: float(np.mean([o[name] for o in per_object.values()])) for name in OBJECT_COLUMNS}
    global_metrics = {"J&F-Mean": (means["J-Mean"] + means["F-Mean"]) / 2, **means}
    write_csv(
        results_dir / f"global_results-{subset}.csv", GLOBAL_COLUMNS, [[global_metrics[c] for c in GLOBAL_COLUMNS]]
    )
    write_csv(
        results_dir / f"per-sequence_results-{subset}.csv",
        ("Sequence", "J-Mean", "F-Mean"),
        [[name, o["J-Mean"], o["F-Mean"]] for name, o in per_object.items()],
    )
    return DavisResult(global_metrics, per_object)


def read_sequence_list(davis_root: str | os.PathLike[str], subset: str = "val") -> list[str]:
    """Sequence names listed in ``<davis_root>/ImageSets/2017/<subset>.txt`` (:func:`read_split_list`)."""
    path = Path(davis_root) / "ImageSets" / "2017" / f"{subset}.txt"
    if not path.is_file():
        raise FileNotFoundError(f"DAVIS sequence list not found: {path}")
    return read_split_list(path)


def evaluate_ref_davis(
    results_root: str | os.PathLike[str],
    davis_root: str | os.PathLike[str],
    subset: str = "val",
    num_annotators: int = NUM_ANNOTATORS,
) -> dict[str, dict[str, float]]:
    """Ref-DAVIS17 J&F: score each annotator's folder and average the four.

    Args:
        results_root: holds ``anno_0`` .. ``anno_<num_annotators - 1>``, each in the layout of
            :func:`evaluate_davis_folder`.
        davis_root: the ``DAVIS`` folder with ``Annotations_unsupervised/480p`` and ``ImageSets/2017``.
        subset: DAVIS subset (``val``).
        num_annotators: number of expression slots.

    Returns:
        ``anno_<k>`` -> global metrics of that slot, and ``mean`` -> their average; also written to
        ``<results_root>/global_results-<subset>.csv`` (one row per slot plus the mean).
    """
    results_root = Path(results_root)
    sequences = read_sequence_list(davis_root, subset)
    gt_dir = Path(davis_root) / "Annotations_unsupervised" / "480p"
    per_annotator = {
        f"anno_{k}": evaluate_davis_folder(results_root / f"anno_{k}", gt_dir, sequences, subset).global_metrics
        for k in range(num_annotators)
    }
    summary = dict(per_annotator)
    summary["mean"] = {c: float(np.mean([m[c] for m in per_annotator.values()])) for c in GLOBAL_COLUMNS}
    write_csv(
        results_root / f"global_results-{subset}.csv",
        ("annotator", *GLOBAL_COLUMNS),
        [[name, *(metrics[c] for c in GLOBAL_COLUMNS)] for name, metrics in summary.items()],
    )
    return summary


def ref_davis_metrics(results_root: str | os.PathLike[str], davis_root: str | os.PathLike[str]) -> dict[str, float]:
    """The reported Ref-DAVIS17 numbers: the ``mean`` of :func:`evaluate_ref_davis` over the annotators
    (``J&F-Mean``, ``J-Mean``, ...), and the counts behind them (:mod:`wavecl.evaluation.counts`):
    ``videos`` scored (every sequence of the ``val`` list) and ``annotators`` averaged."""
    summary = evaluate_ref_davis(results_root, davis_root)
    counts = {"videos": float(len(read_sequence_list(davis_root, "val"))), "annotators": float(NUM_ANNOTATORS)}
    return {key: float(value) for key, value in summary["mean"].items()} | counts


class ObjectMerge:
    """The merge of :func:`davis_labels`, one object at a time and in any order.

    Instead of every object's probabilities it holds one id map and the winning probability of each
    pixel, so a chunk waiting for its last objects keeps one float map whatever its object count.
    Adding an object: where its probability is at least 0.5 and beats the current winner (or ties
    with a higher id), it becomes the winner; the background (id 0) scores a constant 0.1. The
    result is exactly the argmax of :func:`davis_labels`, ties to the lower id.

    Args:
        shape: ``(T, H, W)`` of the chunk.
        device: where the maps live (the probabilities' device).
    """

    def __init__(self, shape: Sequence[int], device: torch.device | str = "cpu") -> None:
        self.labels = torch.zeros(tuple(shape), dtype=torch.uint8, device=device)
        self.best = torch.full(tuple(shape), BACKGROUND_SCORE, dtype=torch.float32, device=device)

    def add(self, object_index: int, probabilities: Tensor) -> None:
        """Merge object ``object_index`` (id ``object_index + 1``), probabilities ``[T, H, W]``."""
        if probabilities.shape != self.labels.shape:
            raise ValueError(
                f"object {object_index}: probabilities {tuple(probabilities.shape)} differ from the chunk's "
                f"{tuple(self.labels.shape)}"
            )
        if not 0 <= object_index < VOID_LABEL - 1:
            raise ValueError(f"at most {VOID_LABEL - 1} objects fit an index PNG, got object index {object_index}")
        score = probabilities.float()
        object_id = object_index + 1
        wins = (score >= PROBABILITY_THRESHOLD) & (
            (score > self.best) | ((score == self.best) & (object_id < self.labels))
        )
        self.labels = self.labels.masked_fill(wins, object_id)
        self.best = torch.where(wins, score, self.best)


def davis_labels(probabilities: Tensor) -> Tensor:
    """Merge per-object probability maps into one id map per frame.

    Args:
        probabilities: ``[N, T, H, W]`` probability of each of the ``N`` referred objects.

    Returns:
        ``[T, H, W]`` uint8 ids: the argmax over a constant 0.1 background plane (id 0) and the object
        maps (id ``k + 1``) after zeroing values below 0.5; ties go to the lower id.
    """
    if probabilities.ndim != 4:
        raise ValueError(f"probabilities must be [N, T, H, W], got shape {tuple(probabilities.shape)}")
    if probabilities.shape[0] >= VOID_LABEL:
        raise ValueError(f"at most {VOID_LABEL - 1} objects fit an index PNG, got {probabilities.shape[0]}")
    merge = ObjectMerge(probabilities.shape[1:], probabilities.device)
    for object_index, object_probabilities in enumerate(probabilities):
        merge.add(object_index, object_probabilities)
    return merge.labels


def write_davis_labels(
    output_root: str | os.PathLike[str],
    annotator: int,
    video: str,
    frame_names: Sequence[str],
    labels: Tensor,
    palette: list[int] | None = None,
) -> list[Path]:
    """Write one annotator slot's merged ids of one video (or a chunk of it) as index PNGs.

    Args:
        output_root: run folder; files go to ``<output_root>/anno_<annotator>/<video>/<frame>.png``.
        annotator: expression slot, 0..3.
        video: DAVIS sequence name.
        frame_names: ``T`` frame names without extension (``00000``, ...).
        labels: ``[T, H, W]`` uint8 ids (:func:`davis_labels`, :class:`ObjectMerge`), on any device.
        palette: flat 768-int palette; the DAVIS colour map when ``None``.

    Returns:
        The written paths, in frame order.
    """
    if labels.ndim != 3 or labels.shape[0] != len(frame_names):
        raise ValueError(f"labels {tuple(labels.shape)} must be [T, H, W] with T = {len(frame_names)} frame names")
    paths = []
    for name, frame_labels in zip(frame_names, labels.cpu().numpy()):
        path = davis_result_path(output_root, annotator, video, name)
        save_index_png(frame_labels, path, palette)
        paths.append(path)
    return paths
