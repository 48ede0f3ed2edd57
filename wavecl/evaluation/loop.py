"""The evaluation loop shared by every protocol: shard, forward, hand each batch to an evaluator.

Evaluation data is split across ranks without padding (:class:`ShardSampler`), so no prediction is
counted twice (the reference's DistributedSampler padded with duplicates, docs/differences.md#evaluation),
and samples that must be merged (the objects of one Ref-DAVIS17 chunk) stay on one rank, so no rank
waits for another's.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterator, Sequence
from typing import Protocol

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler

from wavecl.amp import PrecisionPolicy, decide_precision
from wavecl.data.collate import collate_clips
from wavecl.data.types import Batch
from wavecl.distributed import DistInfo, on_every_process
from wavecl.model.output import WaveCLOutput
from wavecl.progress import progress_bar


class Evaluator(Protocol):
    """Accumulates predictions batch by batch and computes a protocol's metrics.

    The metric that selects the best checkpoint is the dataset's, in
    :data:`wavecl.evaluation.datasets.DATASETS`.
    """

    def update(self, outputs: WaveCLOutput, batch: Batch) -> None: ...

    def summarize(self) -> dict[str, float]: ...


class ShardSampler(Sampler[int]):
    """This rank's share of an evaluation set: every sample is seen by exactly one rank.

    Samples of one group stay together: they go to the same rank and are visited one after another
    (Ref-DAVIS17 groups the objects of one video chunk, so a rank completes a chunk before it starts
    the next and never holds another rank's objects). Groups are dealt in order of first appearance,
    each to the rank with the fewest samples so far (the lowest such rank on a tie). Without groups
    every sample is its own group, which deals them round-robin: rank ``r`` gets ``r, r + W, ...``.

    Args:
        length: number of samples.
        rank, world_size: this process's place in the job.
        groups: one hashable key per sample, or ``None``.
    """

    def __init__(self, length: int, rank: int, world_size: int, groups: Sequence[Hashable] | None = None) -> None:
        if groups is not None and len(groups) != length:
            raise ValueError(f"got {len(groups)} group keys for {length} samples")
        members: dict[Hashable, list[int]] = {}
        for index in range(length):
            members.setdefault(index if groups is None else groups[index], []).append(index)
        loads = [0] * world_size
        self.indices: list[int] = []
        for group in members.values():
            owner = loads.index(min(loads))
            loads[owner] += len(group)
            if owner == rank:
                self.indices.extend(group)

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def evaluation_groups(dataset: Dataset) -> Sequence[Hashable] | None:
    """The dataset's ``evaluation_groups()`` (one key per sample whose samples must be evaluated
    together, on one rank), or ``None`` where it defines none."""
    groups = getattr(dataset, "evaluation_groups", None)
    return groups() if groups is not None else None


@torch.inference_mode()
def run_evaluation(
    model: nn.Module,
    dataset: Dataset,
    evaluator: Evaluator,
    dist: DistInfo,
    batch_size: int = 1,
    num_workers: int = 0,
    precision: PrecisionPolicy | None = None,
) -> dict[str, float]:
    """Run ``model`` (unwrapped, eval mode) over this rank's shard of ``dataset``.

    Batches are pinned and copied to the device without blocking; the evaluator receives the batch as
    the loader produced it (on the host), so nothing is copied back. When the loop fails on one rank,
    every rank raises once its own shard is done, with that rank's message.

    Args:
        precision: the run's precision policy; float32 when ``None``.

    Returns the evaluator's metrics (complete on every rank; evaluators gather across ranks).

    Raises:
        NonFiniteOutputError: the model's outputs for a batch hold NaN or inf (thresholded they would
            pass for empty masks); the message names the tensors and the batch's samples.
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    precision = precision if precision is not None else decide_precision("off", device)
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=ShardSampler(len(dataset), dist.rank, dist.world_size, evaluation_groups(dataset)),
        collate_fn=collate_clips,
        num_workers=num_workers,
        pin_memory=device.type == "cuda",
        generator=torch.Generator(),
    )

    def predict_shard() -> None:
        for batch in progress_bar(loader, desc="evaluate", disable=not dist.is_main):
            inputs = batch.to(device, non_blocking=True)
            valid_indices, _ = inputs.valid_frames()
            with precision.autocast():
                outputs = model(inputs.frames, inputs.pad_mask, inputs.texts, inputs.image_sizes, valid_indices)
            outputs.require_finite(f"the samples {batch.metadata} (amp {precision.effective})")
            evaluator.update(outputs, batch)

    on_every_process(predict_shard, "evaluating its shard")
    metrics = evaluator.summarize()
    model.train(was_training)
    return metrics
