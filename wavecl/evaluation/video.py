"""Evaluators of the video protocols that run window by window over whole videos.

Videos of any length are evaluated in windows of ``window_size`` frames (the datasets split them),
so memory stays bounded; each window picks its own query, as Ref-DAVIS17's 36-frame chunks do.

- :class:`YTVOSEvaluator`: a Ref-YouTube-VOS-layout ``valid`` split; writes the PNGs, then scores
  them with J, F and J&F when the split has ``Annotations/`` (one's own data, the synthetic set), or
  zips them for the evaluation server (the real Ref-YouTube-VOS valid split).
- :class:`RefDAVISEvaluator`: Ref-DAVIS17; writes per-annotator index PNGs and scores them with the
  DAVIS 2017 protocol, averaged over the four annotators.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import torch
from torch import Tensor

from wavecl.data.types import Batch
from wavecl.data.ytvos import YTVOSGroundTruth
from wavecl.distributed import barrier, gather_objects, is_main_process
from wavecl.evaluation.davis import evaluate_ref_davis, write_davis_results
from wavecl.evaluation.ytvos import (
    ANNOTATIONS_FOLDER,
    PER_EXPRESSION_FILENAME,
    score_ytvos_predictions,
    write_ytvos_masks,
    zip_submission,
)
from wavecl.model.output import WaveCLOutput
from wavecl.model.postprocess import video_postprocess, video_probabilities


def clip_masks(outputs: WaveCLOutput, batch: Batch, b: int, orig_size: tuple[int, int]) -> Tensor:
    """Binary masks ``[T, H, W]`` of clip ``b`` at its original size (one query for the window)."""
    T = len(batch.metadata[b]["frame_names"])
    size = tuple(int(v) for v in batch.image_sizes[b])
    _, masks = video_postprocess(
        outputs.pred_cls[:T, b], outputs.pred_masks[:T, b], tuple(batch.frames.shape[-2:]), size, orig_size
    )
    return masks


class YTVOSEvaluator:
    """Ref-YouTube-VOS-layout evaluation: writes ``<out_dir>/Annotations/<video>/<exp_id>/<frame>.png``,
    then scores them when the split has ground truth, or zips them for the evaluation server.

    Args:
        out_dir: receives ``Annotations/`` and, with ground truth, ``per_expression.csv`` (J, F, J&F of
            every expression); without, ``submission.zip``.
        ground_truth: the annotated split (one's own data, the synthetic set), or ``None`` for the real
            valid split, which has no local ground truth.

    With ground truth, :meth:`summarize` returns what
    :func:`~wavecl.evaluation.ytvos.score_ytvos_predictions` returns (J, F, J&F, expressions, frames,
    missing_masks, extra_masks), scored from the PNGs on disk against the ground truth's full list, the
    same computation as ``wavecl evaluate --predictions``; without, ``{"windows"}``.
    """

    def __init__(self, out_dir: str | Path, ground_truth: YTVOSGroundTruth | None = None) -> None:
        self.out_dir = Path(out_dir)
        self.ground_truth = ground_truth
        self.num_windows = 0

    def update(self, outputs: WaveCLOutput, batch: Batch) -> None:
        for b, meta in enumerate(batch.metadata):
            masks = clip_masks(outputs, batch, b, tuple(meta["orig_size"]))
            write_ytvos_masks(self.out_dir, meta["video_id"], meta["exp_id"], meta["frame_names"], masks)
            self.num_windows += 1

    def summarize(self) -> dict[str, float]:
        windows = sum(gather_objects(self.num_windows))
        barrier()  # every rank's PNGs are on disk before rank 0 reads them
        metrics: dict[str, float] = {}
        if is_main_process():
            if self.ground_truth is None:
                zip_submission(self.out_dir / ANNOTATIONS_FOLDER, self.out_dir / "submission.zip")
                metrics = {"windows": float(windows)}
            else:
                per_expression = self.out_dir / PER_EXPRESSION_FILENAME
                metrics = score_ytvos_predictions(self.out_dir, self.ground_truth, per_expression)
        return gather_objects(metrics)[0]


class RefDAVISEvaluator:
    """Ref-DAVIS17 inference and J&F (docs/datasets.md#ref-davis17).

    Probability maps of every object of one (video, annotator, chunk) are merged into one index PNG
    per frame; at the end every annotator's folder is scored against the DAVIS ground truth and the
    four are averaged.

    Args:
        out_dir: receives ``anno_<k>/<video>/<frame>.png`` and the CSV tables.
        davis_root: the raw ``DAVIS`` folder (``Annotations_unsupervised/480p``, ``ImageSets/2017``).
    """

    def __init__(self, out_dir: str | Path, davis_root: str | Path) -> None:
        self.out_dir = Path(out_dir)
        self.davis_root = Path(davis_root)
        self.pending: dict[tuple[str, int, int], dict[int, Tensor]] = defaultdict(dict)
        self.frame_names: dict[tuple[str, int, int], list[str]] = {}
        self.num_objects: dict[tuple[str, int, int], int] = {}

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
            self.pending[key][int(meta["object_index"])] = probabilities.cpu()
            self.frame_names[key] = list(meta["frame_names"])
            self.num_objects[key] = int(meta["num_objects"])
            self._write_complete(key)

    def _write_complete(self, key: tuple[str, int, int]) -> None:
        if len(self.pending[key]) == self.num_objects[key]:
            objects = self.pending.pop(key)
            stacked = torch.stack([objects[k] for k in sorted(objects)])
            write_davis_results(self.out_dir, key[1], key[0], self.frame_names[key], stacked)

    def summarize(self) -> dict[str, float]:
        # Under DDP the objects of one chunk can land on different ranks: rank 0 completes them.
        leftovers = gather_objects(({k: dict(v) for k, v in self.pending.items()}, self.frame_names, self.num_objects))
        metrics: dict[str, float] = {}
        if is_main_process():
            for pending, frame_names, num_objects in leftovers:
                self.frame_names.update(frame_names)
                self.num_objects.update(num_objects)
                for key, objects in pending.items():
                    self.pending[key].update(objects)
            for key in list(self.pending):
                if len(self.pending[key]) != self.num_objects[key]:
                    raise RuntimeError(f"Ref-DAVIS chunk {key} is missing objects")
                self._write_complete(key)
            summary = evaluate_ref_davis(self.out_dir, self.davis_root)
            metrics = {key: float(value) for key, value in summary["mean"].items()}
        return gather_objects(metrics)[0]
