"""Evaluators of the video protocols that run window by window over whole videos.

Videos of any length are evaluated in windows of ``window_size`` frames (the datasets split them),
so memory stays bounded; each window picks its own query, as Ref-DAVIS17's 36-frame chunks do, or, in
the Ref-YouTube-VOS layout with ``data.eval_overlap`` and ``data.eval_link_weight``, a query linked to
the previous window's choice (:mod:`wavecl.model.linking`).

- :class:`YTVOSEvaluator`: a Ref-YouTube-VOS-layout ``valid`` split; writes the PNGs, then scores
  them with J, F and J&F when the split has ``Annotations/`` (one's own data, the synthetic set), or
  zips them for the evaluation server (the real Ref-YouTube-VOS valid split).
- :class:`RefDAVISEvaluator`: Ref-DAVIS17; writes per-annotator index PNGs and scores them with the
  DAVIS 2017 protocol, averaged over the four annotators.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from torch import Tensor

from wavecl.data.types import Batch
from wavecl.distributed import gather_objects, on_every_process, on_main_process
from wavecl.evaluation.davis import ObjectMerge, ref_davis_metrics, write_davis_labels
from wavecl.evaluation.ytvos import (
    ANNOTATIONS_FOLDER,
    PER_EXPRESSION_FILENAME,
    ExpressionGroundTruth,
    score_ytvos_predictions,
    write_ytvos_masks,
    zip_submission,
)
from wavecl.inference_settings import InferenceSettings
from wavecl.model.linking import LinkedQueries
from wavecl.model.output import WaveCLOutput
from wavecl.model.postprocess import video_postprocess, video_probabilities


def clip_masks(
    outputs: WaveCLOutput, batch: Batch, b: int, orig_size: tuple[int, int], link: LinkedQueries | None = None
) -> Tensor:
    """Binary masks ``[T, H, W]`` of clip ``b`` at its original size: one query for the window, the best-scoring
    one, or the one ``link`` chooses (which it then remembers)."""
    T = len(batch.metadata[b]["frame_names"])
    size = (int(batch.image_sizes[b][0]), int(batch.image_sizes[b][1]))
    padded_size = (int(batch.frames.shape[-2]), int(batch.frames.shape[-1]))
    pred_cls, pred_masks = outputs.pred_cls[:T, b], outputs.pred_masks[:T, b]
    query = None if link is None else link.choose(pred_cls, pred_masks, padded_size, size)
    _, masks = video_postprocess(pred_cls, pred_masks, padded_size, size, orig_size, query=query)
    return masks


@dataclass
class _OpenExpression:
    """An expression whose next window is still to come: its choices so far and where that window starts."""

    link: LinkedQueries
    next_start: int


class YTVOSEvaluator:
    """Ref-YouTube-VOS-layout evaluation: writes ``<out_dir>/Annotations/<video>/<exp_id>/<frame>.png``,
    then scores them when the split has ground truth, or zips them for the evaluation server.

    Args:
        out_dir: receives ``Annotations/`` and, with ground truth, ``per_expression.csv`` (J, F, J&F of
            every expression); without, ``submission.zip``.
        ground_truth: the annotated split (one's own data, the synthetic set, MeViS ``valid_u``), or ``None``
            for a split without local ground truth (the real Ref-YouTube-VOS valid split, MeViS ``valid``).
        zip_folder: the top-level folder of ``submission.zip`` (:func:`~wavecl.evaluation.ytvos.zip_submission`):
            ``Annotations`` for Ref-YouTube-VOS, ``None`` for MeViS (``<video>/<exp_id>/<frame>.png`` at the top).
        settings: the windows' ``overlap`` and ``link_weight`` (:meth:`InferenceSettings.of_evaluation`), as
            the dataset's windows were cut; ``None``: disjoint windows, each choosing its own query.

    Linked windows: an expression's windows must arrive in order, as evaluation batches them in one process
    (:mod:`wavecl.evaluation.sharing`); a window whose predecessor went to another process chooses on its
    own. Frames a window shares with the previous one keep the masks the previous one wrote. One expression
    is open (its last choice held) per expression of the videos being evaluated.

    With ground truth, :meth:`summarize` returns what
    :func:`~wavecl.evaluation.ytvos.score_ytvos_predictions` returns (J, F, J&F, expressions, videos, frames,
    missing_masks, extra_masks), scored from the PNGs on disk against the ground truth's full list, the
    same computation as ``wavecl evaluate --predictions``; without, the counts of what was written:
    ``{"windows", "videos", "expressions", "frames"}`` (over every rank).
    """

    def __init__(
        self,
        out_dir: str | Path,
        ground_truth: ExpressionGroundTruth | None = None,
        zip_folder: str | None = ANNOTATIONS_FOLDER,
        settings: InferenceSettings | None = None,
    ) -> None:
        self.out_dir = Path(out_dir)
        self.ground_truth = ground_truth
        self.zip_folder = zip_folder
        self.overlap = 0 if settings is None else settings.overlap
        self.link_weight = 0.0 if settings is None else settings.link_weight
        self.open: dict[tuple[str, str], _OpenExpression] = {}
        self.num_windows = 0
        self.num_frames = 0
        self.expressions: set[tuple[str, str]] = set()

    def update(self, outputs: WaveCLOutput, batch: Batch) -> None:
        for b, meta in enumerate(batch.metadata):
            key = (meta["video_id"], meta["exp_id"])
            start, frames = int(meta["window_start"]), meta["frame_names"]
            link = self._link(key, start)
            masks = clip_masks(outputs, batch, b, tuple(meta["orig_size"]), link)
            shared = self.overlap if start > 0 else 0  # written with the previous window
            write_ytvos_masks(self.out_dir, *key, frames[shared:], masks[shared:])
            end = start + len(frames)
            if end < int(meta["num_video_frames"]):
                self.open[key] = _OpenExpression(link, end - self.overlap)
            self.num_windows += 1
            self.num_frames += len(frames) - shared
            self.expressions.add(key)

    def _link(self, key: tuple[str, str], start: int) -> LinkedQueries:
        """The choices of expression ``key`` so far when its window starting at ``start`` follows them,
        else fresh ones."""
        opened = self.open.pop(key, None)
        if opened is not None and opened.next_start == start:
            return opened.link
        return LinkedQueries(self.overlap, self.link_weight)

    def summarize(self) -> dict[str, float]:
        # a collective: every rank's PNGs are on disk
        shards = gather_objects((self.num_windows, self.num_frames, self.expressions))
        windows = sum(windows for windows, _, _ in shards)
        expressions = set().union(*(expressions for _, _, expressions in shards))
        written = {
            "windows": float(windows),
            "videos": float(len({video_id for video_id, _ in expressions})),
            "expressions": float(len(expressions)),
            "frames": float(sum(frames for _, frames, _ in shards)),
        }

        def finish() -> dict[str, float]:
            if self.ground_truth is None:
                zip_submission(self.out_dir / ANNOTATIONS_FOLDER, self.out_dir / "submission.zip", self.zip_folder)
                return written
            per_expression = self.out_dir / PER_EXPRESSION_FILENAME
            return score_ytvos_predictions(self.out_dir, self.ground_truth, per_expression)

        what = "zipping the submission" if self.ground_truth is None else "scoring J&F"
        return on_main_process(finish, what)


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
        for b, meta in enumerate(batch.metadata):
            T = len(meta["frame_names"])
            size = tuple(int(v) for v in batch.image_sizes[b])
            _, probabilities = video_probabilities(
                outputs.pred_cls[:T, b],
                outputs.pred_masks[:T, b],
                tuple(batch.frames.shape[-2:]),
                size,
                tuple(meta["original_frame_size"]),
            )
            key = (meta["video_id"], int(meta["annotator"]), int(meta["chunk_index"]))
            self.add_object(
                key, int(meta["object_index"]), int(meta["num_objects"]), meta["frame_names"], probabilities
            )

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
