"""The evaluation loop shared by every protocol: shard, forward, hand each batch to an evaluator.

Evaluation data is split across ranks without padding (:class:`ShardSampler`), so no prediction is
counted twice (the reference's DistributedSampler padded with duplicates, docs/differences.md#evaluation).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler

from wavecl.amp import AmpMode, autocast
from wavecl.data.collate import collate_clips
from wavecl.data.types import Batch
from wavecl.distributed import DistInfo
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
    """Every ``world_size``-th index starting at ``rank``: each sample is seen by exactly one rank."""

    def __init__(self, length: int, rank: int, world_size: int) -> None:
        self.indices = range(rank, length, world_size)

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


@torch.inference_mode()
def run_evaluation(
    model: nn.Module,
    dataset: Dataset,
    evaluator: Evaluator,
    dist: DistInfo,
    batch_size: int = 1,
    num_workers: int = 0,
    amp: AmpMode = "off",
) -> dict[str, float]:
    """Run ``model`` (unwrapped, eval mode, autocast ``amp`` on CUDA) over this rank's shard of ``dataset``.

    Returns the evaluator's metrics (complete on rank 0; evaluators gather across ranks).

    Raises:
        NonFiniteOutputError: the model's outputs for a batch hold NaN or inf (thresholded they would
            pass for empty masks); the message names the tensors and the batch's samples.
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=ShardSampler(len(dataset), dist.rank, dist.world_size),
        collate_fn=collate_clips,
        num_workers=num_workers,
        generator=torch.Generator(),
    )
    for batch in progress_bar(loader, desc="evaluate", disable=not dist.is_main):
        batch = batch.to(device)
        valid_indices, _ = batch.valid_frames()
        with autocast(device, amp):
            outputs = model(batch.frames, batch.pad_mask, batch.texts, batch.image_sizes, valid_indices)
        outputs.require_finite(f"the samples {batch.metadata} (amp {amp})")
        evaluator.update(outputs, batch.to("cpu"))
    metrics = evaluator.summarize()
    model.train(was_training)
    return metrics
