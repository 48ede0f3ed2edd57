"""Evaluators of the video protocols that run window by window over whole videos.

Videos of any length are evaluated in windows of ``window_size`` frames (the datasets split them),
so memory stays bounded; each window picks its own query, as Ref-DAVIS17's 36-frame chunks do.

- :class:`YTVOSSubmissionEvaluator`: Ref-YouTube-VOS ``valid``; writes the PNGs and the zip the
  evaluation server accepts. No local metric exists.
- :class:`SyntheticJFEvaluator`: held-out synthetic clips (ground truth on disk); region similarity J
  and boundary F with the DAVIS definitions.
- :class:`RefDAVISEvaluator`: Ref-DAVIS17; writes per-annotator index PNGs and scores them with the
  DAVIS 2017 protocol, averaged over the four annotators.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from wavecl.data.synthetic import expression_ground_truth
from wavecl.data.types import Batch
from wavecl.distributed import barrier, gather_objects, is_main_process
from wavecl.evaluation.davis import db_eval_boundary, db_eval_iou, evaluate_ref_davis, write_davis_results
from wavecl.evaluation.ytvos import write_ytvos_masks, zip_submission
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


def jf_summary(per_expression: list[tuple[float, float]]) -> dict[str, float]:
    """``J``, ``F``, ``J&F`` and the count from each expression's frame-averaged ``(J, F)``: every
    expression weighs the same, whatever its length."""
    j, f = np.mean(per_expression, axis=0).tolist()
    return {"J": j, "F": f, "J&F": (j + f) / 2, "expressions": float(len(per_expression))}


class YTVOSSubmissionEvaluator:
    """Writes ``<out_dir>/Annotations/<video>/<exp_id>/<frame>.png`` and ``<out_dir>/submission.zip``."""

    def __init__(self, out_dir: str | Path) -> None:
        self.out_dir = Path(out_dir)
        self.num_windows = 0

    def update(self, outputs: WaveCLOutput, batch: Batch) -> None:
        for b, meta in enumerate(batch.metadata):
            masks = clip_masks(outputs, batch, b, tuple(meta["orig_size"]))
            write_ytvos_masks(self.out_dir, meta["video_id"], meta["exp_id"], meta["frame_names"], masks)
            self.num_windows += 1

    def summarize(self) -> dict[str, float]:
        windows = sum(gather_objects(self.num_windows))
        barrier()  # every rank's PNGs are on disk before rank 0 zips them
        if is_main_process():
            zip_submission(self.out_dir / "Annotations", self.out_dir / "submission.zip")
        return {"windows": float(windows)}


class SyntheticJFEvaluator:
    """Mean J, F and J&F over the expressions of a synthetic held-out split (ground truth on disk).

    Args:
        root: the synthetic dataset root (written by :func:`wavecl.data.synthetic.write_synthetic_ytvos`).
        split: the held-out split, ``valid``.
        out_dir: if given, the predicted masks are also written as
            ``<out_dir>/Annotations/<video>/<exp_id>/<frame>.png`` (the Ref-YouTube-VOS submission layout),
            so that ``wavecl evaluate --predictions`` can score them again.
    """

    def __init__(self, root: str | Path, split: str = "valid", out_dir: str | Path | None = None) -> None:
        self.root = root
        self.split = split
        self.out_dir = None if out_dir is None else Path(out_dir)
        self.per_frame: dict[tuple[str, str], list[tuple[float, float]]] = defaultdict(list)
        self._ground_truth: dict[tuple[str, str], np.ndarray] = {}

    def ground_truth(self, video_id: str, exp_id: str) -> np.ndarray:
        key = (video_id, exp_id)
        if key not in self._ground_truth:
            self._ground_truth[key] = expression_ground_truth(self.root, self.split, video_id, exp_id)
        return self._ground_truth[key]

    def update(self, outputs: WaveCLOutput, batch: Batch) -> None:
        for b, meta in enumerate(batch.metadata):
            masks = clip_masks(outputs, batch, b, tuple(meta["orig_size"])).cpu()
            if self.out_dir is not None:
                write_ytvos_masks(self.out_dir, meta["video_id"], meta["exp_id"], meta["frame_names"], masks)
            masks = masks.numpy()
            start = int(meta["window_start"])
            truth = self.ground_truth(meta["video_id"], meta["exp_id"])[start : start + len(masks)]
            j = db_eval_iou(truth, masks)
            f = db_eval_boundary(truth, masks)
            self.per_frame[(meta["video_id"], meta["exp_id"])].extend(zip(j.tolist(), f.tolist()))

    def summarize(self) -> dict[str, float]:
        merged: dict[tuple[str, str], list[tuple[float, float]]] = defaultdict(list)
        for part in gather_objects(dict(self.per_frame)):
            for key, values in part.items():
                merged[key].extend(values)
        if not merged:
            return {}
        return jf_summary([tuple(np.mean(values, axis=0)) for values in merged.values()])


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
