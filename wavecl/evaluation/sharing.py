"""Evaluation batches in which the sentences about one clip share one backbone pass.

Evaluation datasets hold one sample per (sentence, clip); a clip is often the subject of several
sentences (the expressions of a Ref-YouTube-VOS window, every annotator and object of a Ref-DAVIS17
chunk, the instances of an A2D frame, the expressions of a RefCOCO image). A dataset that names the
clip of each sample (``clip_key(index)``) has its samples grouped by clip: every group goes to one
rank and into consecutive batches, and :class:`VisualFeatureCache` reuses the visual features of
the previous batch when its clips come again. Whether two entries really hold the same clip is
decided on their values (:meth:`wavecl.data.types.Batch.shared_clips`), never on the keys alone.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterator, Sequence, Sized
from dataclasses import dataclass
from typing import cast

import torch
from torch import Tensor
from torch.utils.data import ConcatDataset, Dataset, Sampler

from wavecl.model.features import VisualFeatures


def clip_keys(dataset: Dataset) -> list[Hashable]:
    """The clip of every sample of ``dataset``: its ``clip_key(index)`` where it has one (through a
    :class:`~torch.utils.data.ConcatDataset` too), else a key of its own per sample (nothing shared)."""
    if isinstance(dataset, ConcatDataset):
        return [(part, key) for part, child in enumerate(dataset.datasets) for key in clip_keys(child)]
    size = len(cast(Sized, dataset))  # evaluation datasets are map-style, with a length
    if hasattr(dataset, "clip_key"):
        return [dataset.clip_key(index) for index in range(size)]
    return [("sample", index) for index in range(size)]


def group_by_key(keys: Sequence[Hashable]) -> list[list[int]]:
    """Indices grouped by equal key, groups in order of first appearance, indices in order."""
    groups: dict[Hashable, list[int]] = {}
    for index, key in enumerate(keys):
        groups.setdefault(key, []).append(index)
    return list(groups.values())


def deal_groups(groups: list[list[int]], rank: int, world_size: int) -> list[list[int]]:
    """Rank ``rank``'s share of ``groups``: each group, in order, goes whole to the rank with the fewest
    samples so far (the lowest such rank on a tie). Groups of one sample are dealt round-robin, rank ``r``
    getting samples ``r, r + W, ...``; larger groups are balanced by samples, not by groups."""
    loads = [0] * world_size
    share: list[list[int]] = []
    for group in groups:
        owner = loads.index(min(loads))
        loads[owner] += len(group)
        if owner == rank:
            share.append(group)
    return share


class SharedClipBatchSampler(Sampler[list[int]]):
    """This rank's evaluation batches, the samples of one clip kept together.

    Groups of samples with one clip (:func:`group_by_key` of the clip keys) are dealt whole to the ranks
    (:func:`deal_groups`: no sample on two ranks, none left out, samples balanced) and visited one
    after another. A batch holds at most ``batch_size`` distinct clips and at most
    ``max(batch_size, sentences_per_pass)`` sentences; a group with more sentences than that fills
    consecutive batches of its own, which :class:`VisualFeatureCache` serves from one backbone pass.
    Without shared clips this is the plain sharding of every ``world_size``-th sample, in batches of
    ``batch_size``.

    Args:
        keys: the clip key of every sample (:func:`clip_keys`).
        rank, world_size: this process's place among the evaluating processes.
        batch_size: distinct clips per batch (``data.eval_batch_size``).
        sentences_per_pass: sentences per batch (``data.eval_sentences_per_pass``); bounds the memory
            of the text-conditioned part.
    """

    def __init__(
        self, keys: list[Hashable], rank: int, world_size: int, batch_size: int = 1, sentences_per_pass: int = 1
    ) -> None:
        if batch_size < 1 or sentences_per_pass < 1:
            raise ValueError(
                f"batch_size and sentences_per_pass must be positive, got {batch_size} and {sentences_per_pass}"
            )
        groups = deal_groups(group_by_key(keys), rank, world_size)
        capacity = max(batch_size, sentences_per_pass)
        self.batches: list[list[int]] = []
        current: list[int] = []
        clips = 0
        for group in groups:
            if current and (clips == batch_size or len(current) + len(group) > capacity):
                self.batches.append(current)
                current, clips = [], 0
            if len(group) > capacity:
                self.batches.extend(group[start : start + capacity] for start in range(0, len(group), capacity))
                continue
            current.extend(group)
            clips += 1
        if current:
            self.batches.append(current)

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


@dataclass
class _Entry:
    frames: Tensor
    pad_mask: Tensor
    valid_indices: Tensor | None
    features: VisualFeatures


class VisualFeatureCache:
    """The visual features of the last clips encoded, reused while the same clips come again.

    Keeps one entry: the clips of one batch (inputs on the CPU, as compared) and their features.
    """

    def __init__(self) -> None:
        self._entry: _Entry | None = None
        self.encoded = 0
        """How many times the encoder ran (batches whose clips were not those of the previous one)."""

    def get(self, encode, frames: Tensor, pad_mask: Tensor, valid_indices: Tensor | None) -> VisualFeatures:
        """The features of ``frames [T, U, 3, H, W]``, ``pad_mask [T, U, H, W]`` with ``valid_indices``
        (``[U]`` or None): the cached ones if these inputs equal the last ones, else ``encode(...)`` of them
        (``encode`` receives the CPU tensors; it moves them where it needs them)."""
        entry = self._entry
        if (
            entry is not None
            and _equal(entry.valid_indices, valid_indices)
            and _equal(entry.pad_mask, pad_mask)
            and _equal(entry.frames, frames)
        ):
            return entry.features
        self._entry = None  # free the old features before computing the new ones
        features = encode(frames, pad_mask, valid_indices)
        self._entry = _Entry(frames, pad_mask, valid_indices, features)
        self.encoded += 1
        return features


def _equal(a: Tensor | None, b: Tensor | None) -> bool:
    if a is None or b is None:
        return a is b
    return a.shape == b.shape and a.dtype == b.dtype and torch.equal(a, b)
