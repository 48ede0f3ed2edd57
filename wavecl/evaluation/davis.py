"""Ref-DAVIS17: the evaluator, which writes predictions and scores them with J&F, and the scorer of saved
predictions (docs/datasets.md#j-f-and-jf).

Scoring follows the definitions of the official DAVIS-2017 evaluation toolkit, unsupervised task:

* J (region similarity) is the IoU of the two masks outside the void (255) pixels, 1 if both are empty.
* F (boundary measure) compares 1-pixel boundary maps (:func:`~wavecl.evaluation.jf.seg2bmap`) within a tolerance of
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

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor
from torch.utils.data import Dataset

from wavecl.config import Config
from wavecl.data.davis import davis_result_path, find_davis_folder, read_split_list
from wavecl.data.index_png import read_index_mask, save_index_png
from wavecl.data.paths import is_hidden, listed_files
from wavecl.data.types import Batch, ClipSample, DavisMetadata
from wavecl.distributed import on_every_process, on_main_process
from wavecl.evaluation.jf import BOUNDARY_THRESHOLD, db_eval_iou, db_statistics, f_measure_matrix
from wavecl.evaluation.tables import write_csv
from wavecl.model.output import WaveCLOutput
from wavecl.model.postprocess import video_probabilities

MAX_PROPOSALS = 20
VOID_LABEL = 255
BACKGROUND_SCORE = 0.1
PROBABILITY_THRESHOLD = 0.5
NUM_ANNOTATORS = 4
GLOBAL_COLUMNS = ("J&F-Mean", "J-Mean", "J-Recall", "J-Decay", "F-Mean", "F-Recall", "F-Decay")
OBJECT_COLUMNS = ("J-Mean", "J-Recall", "J-Decay", "F-Mean", "F-Recall", "F-Decay")


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
        bound_th: boundary tolerance, see :func:`~wavecl.evaluation.jf.boundary_tolerance`.
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
        f[:, :, t] = f_measure_matrix(gt_masks, pred_masks, void[t], bound_th)
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
        bound_th: boundary tolerance, see :func:`~wavecl.evaluation.jf.boundary_tolerance`.
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


def evaluate_davis_predictions(results_dir: str | Path, davis_root: str | Path) -> dict[str, float]:
    """Ref-DAVIS17 J&F of a results folder (``anno_<k>/<video>/<frame>.png``), averaged over the annotators.

    Args:
        results_dir: the folder holding ``anno_0`` .. ``anno_3``.
        davis_root: the Ref-DAVIS root (holding ``DAVIS/``) or its parent.

    Returns:
        The mean over the annotators of ``J&F-Mean``, ``J-Mean``, ``J-Recall``, ``J-Decay``, ``F-Mean``,
        ``F-Recall``, ``F-Decay``, with the ``videos`` and ``annotators`` counts (the keys of
        :class:`RefDAVISEvaluator`).
    """
    return ref_davis_metrics(results_dir, find_davis_folder(davis_root))


@dataclass
class _OpenChunk:
    """A (video, annotator, chunk) whose objects are still arriving: their merge so far."""

    merge: ObjectMerge
    frame_names: list[str]
    num_objects: int
    seen: set[int] = field(default_factory=set)


class RefDAVISEvaluator:
    """Ref-DAVIS17 inference and J&F (docs/datasets.md#ref-davis17).

    The probability maps of the objects of one (video, annotator, chunk) are merged as they arrive
    (:class:`~wavecl.evaluation.davis.ObjectMerge`: one id map and one probability map per chunk,
    on the device of the predictions) and written as one index PNG per frame when the chunk's last
    object arrives. Evaluation keeps each chunk's objects on one rank and in a row (the chunk's frames
    are the clip of every annotator's objects, :meth:`wavecl.data.davis.RefDAVIS17.clip_key`), so a
    rank holds at most one open chunk whatever the world size, and nothing but a status is exchanged
    between ranks. At the end rank 0 scores every annotator's folder against the DAVIS ground truth
    and averages the four.

    Args:
        out_dir: receives ``anno_<k>/<video>/<frame>.png`` and the CSV tables.
        davis_root: the raw ``DAVIS`` folder (``Annotations_unsupervised/480p``, ``ImageSets/2017``).

    Attributes:
        open_chunks: the chunks still waiting for objects, by ``(video, annotator, chunk_index)``.
        peak_open_chunks: the most chunks that were open at once.
    """

    def __init__(self, out_dir: str | Path, davis_root: str | Path) -> None:
        self.out_dir = Path(out_dir)
        self.davis_root = Path(davis_root)
        self.open_chunks: dict[tuple[str, int, int], _OpenChunk] = {}
        self.peak_open_chunks = 0

    def update(self, outputs: WaveCLOutput, batch: Batch) -> None:
        padded_size = (batch.frames.shape[-2], batch.frames.shape[-1])
        for b, meta in enumerate(batch.metadata_as(DavisMetadata)):
            T = len(meta.frame_names)
            size = (int(batch.image_sizes[b, 0]), int(batch.image_sizes[b, 1]))
            _, probabilities = video_probabilities(
                outputs.pred_cls[:T, b], outputs.pred_masks[:T, b], padded_size, size, meta.orig_size
            )
            key = (meta.video_id, meta.annotator, meta.chunk_index)
            self.add_object(key, meta.object_index, meta.num_objects, list(meta.frame_names), probabilities)

    def add_object(
        self,
        key: tuple[str, int, int],
        object_index: int,
        num_objects: int,
        frame_names: list[str],
        probabilities: Tensor,
    ) -> None:
        """Merge one object's ``[T, H, W]`` probabilities into chunk ``key`` (video, annotator, chunk
        index); the chunk's PNGs are written when all ``num_objects`` objects are in."""
        chunk = self.open_chunks.get(key)
        if chunk is None:
            chunk = _OpenChunk(ObjectMerge(probabilities.shape, probabilities.device), list(frame_names), num_objects)
            self.open_chunks[key] = chunk
            self.peak_open_chunks = max(self.peak_open_chunks, len(self.open_chunks))
        if object_index in chunk.seen:
            raise ValueError(f"Ref-DAVIS chunk {key}: object {object_index} was predicted twice")
        chunk.merge.add(object_index, probabilities)
        chunk.seen.add(object_index)
        if len(chunk.seen) == chunk.num_objects:
            del self.open_chunks[key]
            write_davis_labels(self.out_dir, key[1], key[0], chunk.frame_names, chunk.merge.labels)

    def _check_complete(self) -> None:
        if self.open_chunks:
            missing = {key: sorted(set(range(c.num_objects)) - c.seen) for key, c in self.open_chunks.items()}
            raise RuntimeError(f"Ref-DAVIS chunks miss objects (chunk: missing object indices): {missing}")

    def summarize(self) -> dict[str, float]:
        on_every_process(self._check_complete, "writing the Ref-DAVIS17 predictions")  # every PNG is on disk

        def score() -> dict[str, float]:
            return ref_davis_metrics(self.out_dir, self.davis_root)

        return on_main_process(score, "scoring Ref-DAVIS17")


def build_davis_evaluator(config: Config, dataset: Dataset[ClipSample], out_dir: Path) -> RefDAVISEvaluator:
    """The Ref-DAVIS17 evaluator of a run: writes into ``out_dir``, scores against ``data.root``'s ``DAVIS``."""
    return RefDAVISEvaluator(out_dir, find_davis_folder(config.data.root))


def score_saved_davis(config: Config, path: Path, out_dir: Path | None) -> dict[str, float]:
    """:func:`evaluate_davis_predictions` of the folder ``path`` against ``data.root``."""
    return evaluate_davis_predictions(path, config.data.root)
