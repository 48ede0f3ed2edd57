"""The evaluation loop shared by every protocol: shard, forward, hand each batch to an evaluator.

Evaluation data is split across ranks without padding (:class:`~wavecl.evaluation.sharing.SharedClipBatchSampler`),
so no prediction is counted twice (the reference's DistributedSampler padded with duplicates,
docs/differences.md#evaluation), and the samples of one clip (among them the objects of a Ref-DAVIS17
chunk, whose masks are merged) stay on one rank, in consecutive batches, so no rank holds another's.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sized
from typing import Protocol, cast

import torch
from torch import Tensor
from torch.utils.data import ConcatDataset, DataLoader, Dataset

from wavecl.amp import PrecisionPolicy, decide_precision
from wavecl.data.collate import collate_clips
from wavecl.data.types import Batch, ClipSample
from wavecl.distributed import DistInfo, on_every_process
from wavecl.evaluation.sharing import SharedClipBatchSampler, VisualFeatureCache, clip_keys, group_by_key
from wavecl.model.features import VisualFeatures
from wavecl.model.linear import Bfloat16Weights
from wavecl.model.output import WaveCLOutput
from wavecl.model.wavecl import WaveCL
from wavecl.progress import progress_bar


class Evaluator(Protocol):
    """Accumulates predictions batch by batch and computes a protocol's metrics.

    The metric that selects the best checkpoint is the dataset's, in
    :data:`wavecl.evaluation.protocols.PROTOCOLS`.
    """

    def update(self, outputs: WaveCLOutput, batch: Batch) -> None: ...

    def summarize(self) -> dict[str, float]: ...


def dataset_sentences(dataset: Dataset) -> Iterator[tuple[str, str]]:
    """``(text, where)`` of every sample's sentence, from each dataset's ``sentence(index)`` (through a
    :class:`~torch.utils.data.ConcatDataset` too); a dataset without that method yields nothing, and its
    sentences are checked as they are encoded."""
    if isinstance(dataset, ConcatDataset):
        for child in dataset.datasets:
            yield from dataset_sentences(child)
    elif hasattr(dataset, "sentence"):
        for index in range(len(cast(Sized, dataset))):  # evaluation datasets are map-style, with a length
            yield dataset.sentence(index)


def check_dataset_sentences(model: WaveCL, dataset: Dataset) -> None:
    """Refuse, before any sample is read or any prediction written, a dataset whose sentences the text
    encoder cannot take (:meth:`~wavecl.model.wavecl.WaveCL.check_sentences`, each distinct text once).

    Raises:
        ValueError: naming the file and the expression of the first sentence that is too long.
    """
    first_source: dict[str, str] = {}
    for text, where in dataset_sentences(dataset):
        first_source.setdefault(text, where)
    model.check_sentences(list(first_source), [f"the expression at {where}" for where in first_source.values()])


def collate_by_length(samples: list[ClipSample]) -> list[Batch]:
    """The loader's samples as one batch per clip length (:func:`collate_clips` of each group, groups in order
    of first appearance).

    Padding a clip in time changes its outputs: Video-Swin attends across frames, and the padding frames
    take part. Batched with a window of 3 frames, a window of 1 frame had its mask logits moved by up to 34
    (its largest was 57) on the tiny model. Clips of different frame sizes do share a batch, padded on the
    bottom and right with the pad mask, as in training and in the reference's batched evaluation (RefCOCO,
    ``eval_batch_size: 8``).
    """
    lengths = [sample.frames.shape[0] for sample in samples]
    return [collate_clips([samples[index] for index in group]) for group in group_by_key(lengths)]


@torch.inference_mode()
def run_evaluation(
    model: WaveCL,
    dataset: Dataset,
    evaluator: Evaluator,
    dist: DistInfo,
    batch_size: int = 1,
    num_workers: int = 0,
    precision: PrecisionPolicy | None = None,
    sentences_per_pass: int = 1,
) -> dict[str, float]:
    """Run ``model`` (unwrapped, eval mode) over this rank's shard of ``dataset``.

    The sentences about one clip share one backbone pass (:mod:`wavecl.evaluation.sharing`): each
    distinct clip goes through :meth:`~wavecl.model.wavecl.WaveCL.encode_video` once, and its
    sentences through :meth:`~wavecl.model.wavecl.WaveCL.segment`, at most
    ``max(batch_size, sentences_per_pass)`` at a time. Each sentence's output is the one it gets
    alone in its batch. Clips of different lengths never share a backbone pass
    (:func:`collate_by_length`); clips of different frame sizes may, when ``batch_size`` is above 1.

    Only the distinct clips of a batch and its sentences go to the device (pinning the whole batch would
    be wasted: the clips are selected into a new tensor); the evaluator receives the batch as the
    loader collated it (on the host), so nothing is copied back. When the loop fails on one rank,
    every rank raises once its own shard is done, with that rank's message.

    Args:
        precision: the run's precision policy; float32 when ``None``.

    Returns the evaluator's metrics (complete on every rank; evaluators gather across ranks).

    Raises:
        NonFiniteOutputError: the model's outputs for a batch hold NaN or inf (thresholded they would
            pass for empty masks); the message names the tensors and the batch's samples.
        ValueError: a sentence longer than the text encoder accepts, before any batch
            (:func:`check_dataset_sentences`).
    """
    check_dataset_sentences(model, dataset)
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    precision = precision if precision is not None else decide_precision("off", device)
    sampler = SharedClipBatchSampler(
        clip_keys(dataset), dist.rank, dist.world_size, batch_size=batch_size, sentences_per_pass=sentences_per_pass
    )
    loader = DataLoader(
        dataset,
        batch_sampler=sampler,
        collate_fn=collate_by_length,
        num_workers=num_workers,
        generator=torch.Generator(),
    )
    cache = VisualFeatureCache()
    weights = Bfloat16Weights()  # the weights are constant until the evaluation ends

    def encode(frames: Tensor, pad_mask: Tensor, valid_indices: Tensor | None) -> VisualFeatures:
        valid_indices = None if valid_indices is None else valid_indices.to(device)
        return model.encode_video(frames.to(device), pad_mask.to(device), valid_indices)

    def predict_shard() -> None:
        batches = itertools.chain.from_iterable(progress_bar(loader, desc="evaluate", disable=not dist.is_main))
        for batch in batches:
            shared = batch.shared_clips()
            with precision.autocast(), weights:
                visual = cache.get(
                    encode, batch.frames[:, shared.clips], batch.pad_mask[:, shared.clips], shared.valid_indices
                )
                outputs = model.segment(
                    visual,
                    model.encode_sentences(batch.texts, device),
                    batch.image_sizes.to(device),
                    shared.clip_index,  # on the host: checking its range reads nothing back from the device
                )
            outputs.require_finite(f"the samples {batch.metadata} (amp {precision.effective})")
            evaluator.update(outputs, batch)

    on_every_process(predict_shard, "evaluating its shard")
    metrics = evaluator.summarize()
    model.train(was_training)
    return metrics
