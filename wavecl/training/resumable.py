"""What makes a training epoch resumable at any step, with any number of loader workers.

An interrupted epoch continues from a step checkpoint exactly as it would have run: the same samples
in the same order with the same augmentations. Two things make that hold:

- the order of an epoch is a pure function of ``(seed, epoch)`` (``DistributedSampler``), so a resumed
  epoch takes the same order and skips the batches already trained (:class:`EpochOrder`);
- each sample's random draws (flips, augmentations) are a pure function of ``(seed, epoch, index)``
  (:class:`SeededSamples`), not of which worker loads it or what that worker loaded before, so a
  resumed loader with fresh workers draws what the uninterrupted one drew.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator
from typing import Generic, TypeVar

import numpy as np
import torch
from torch.utils.data import Dataset, DistributedSampler, Sampler

SampleT = TypeVar("SampleT")

_UINT64 = (1 << 64) - 1


class EpochOrder(Sampler[int]):
    """The indices of one epoch of ``sampler``, from position ``start`` on.

    Args:
        sampler: the run's sampler (its order depends only on its seed and epoch).
        epoch: the epoch (numbered from 0); passed to ``sampler.set_epoch``.
        start: indices of this epoch already consumed (batches done x batch size).

    Raises:
        ValueError: ``start`` is negative or beyond the epoch.
    """

    def __init__(self, sampler: DistributedSampler, epoch: int, start: int = 0) -> None:
        if not 0 <= start <= len(sampler):
            raise ValueError(f"cannot start epoch {epoch} at sample {start}: it has {len(sampler)}")
        self.sampler = sampler
        self.epoch = epoch
        self.start = start

    def __iter__(self) -> Iterator[int]:
        self.sampler.set_epoch(self.epoch)
        return itertools.islice(iter(self.sampler), self.start, None)

    def __len__(self) -> int:
        return len(self.sampler) - self.start


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A 63-bit seed for sample ``index`` of ``epoch`` in a run seeded with ``seed`` (well mixed:
    neighbouring indices or epochs give unrelated streams)."""
    words = [seed & _UINT64, epoch & _UINT64, index & _UINT64]
    return int(np.random.SeedSequence(words).generate_state(1, np.uint64)[0]) >> 1


class SeededSamples(Dataset[SampleT], Generic[SampleT]):
    """``dataset`` whose item ``index`` is drawn with the global random generators (torch CPU, Python,
    NumPy) seeded from :func:`sample_seed`; the caller's generator states are restored afterwards, so
    loading in the main process (``num_workers=0``) leaves the training randomness untouched.

    Args:
        dataset: any map-style dataset whose randomness comes from those global generators.
        seed: the run's seed.
        epoch: the epoch being loaded.
    """

    def __init__(self, dataset: Dataset[SampleT], seed: int, epoch: int) -> None:
        self.dataset = dataset
        self.seed = seed
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> SampleT:
        seed = sample_seed(self.seed, self.epoch, index)
        python_state, numpy_state = random.getstate(), np.random.get_state()
        try:
            with torch.random.fork_rng(devices=[]):  # saves and restores the CPU generator only
                torch.default_generator.manual_seed(seed)  # so seed nothing else (torch.manual_seed would reseed CUDA)
                random.seed(seed)
                np.random.seed(seed & 0xFFFFFFFF)
                return self.dataset[index]
        finally:
            random.setstate(python_state)
            np.random.set_state(numpy_state)
