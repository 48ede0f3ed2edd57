"""The evaluation loop shared by every protocol: shard, forward, hand each batch to an evaluator.

Evaluation data is split across ranks without padding (:class:`ShardSampler`), so no prediction is
counted twice (the reference's DistributedSampler padded with duplicates, training.md §9.12).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler
from tqdm import tqdm

from wavecl.amp import PrecisionPolicy, decide_precision
from wavecl.data.collate import collate_clips
from wavecl.data.types import Batch
from wavecl.distributed import DistInfo
from wavecl.model.output import WaveCLOutput


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
    precision: PrecisionPolicy | None = None,
) -> dict[str, float]:
    """Run ``model`` (unwrapped, eval mode) over this rank's shard of ``dataset``.

    Batches are pinned and copied to the device without blocking; the evaluator receives the batch as
    the loader produced it (on the host), so nothing is copied back.

    Args:
        precision: the run's precision policy; float32 when ``None``.

    Returns the evaluator's metrics (complete on every rank; evaluators gather across ranks).
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    precision = precision if precision is not None else decide_precision("off", device)
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=ShardSampler(len(dataset), dist.rank, dist.world_size),
        collate_fn=collate_clips,
        num_workers=num_workers,
        pin_memory=device.type == "cuda",
        generator=torch.Generator(),
    )
    for batch in tqdm(loader, desc="evaluate", disable=not dist.is_main, dynamic_ncols=True):
        inputs = batch.to(device, non_blocking=True)
        valid_indices, _ = inputs.valid_frames()
        with precision.autocast():
            outputs = model(inputs.frames, inputs.pad_mask, inputs.texts, inputs.image_sizes, valid_indices)
        evaluator.update(outputs, batch)
    metrics = evaluator.summarize()
    model.train(was_training)
    return metrics
