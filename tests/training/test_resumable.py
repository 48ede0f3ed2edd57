"""The pieces that make an epoch resumable at any step: the epoch's order from a position on, and
per-sample randomness that depends only on (seed, epoch, index)."""

from __future__ import annotations

import os
import random
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from wavecl.training.resumable import EpochOrder, SeededSamples, sample_seed


class RandomDraws(Dataset):
    """Item ``i`` is ``(i, torch draw, python draw, numpy draw)`` from the global generators."""

    def __len__(self) -> int:
        return 10

    def __getitem__(self, index: int):
        return index, float(torch.rand(1)), random.random(), float(np.random.rand())


def draws(dataset, order, num_workers: int) -> dict[int, tuple]:
    loader = DataLoader(dataset, batch_size=None, sampler=order, num_workers=num_workers)
    return {int(item[0]): tuple(float(v) for v in item[1:]) for item in loader}


def test_epoch_order_continues_the_epoch_from_a_position():
    sampler = DistributedSampler(range(11), num_replicas=2, rank=1, shuffle=True, seed=3)
    sampler.set_epoch(4)
    full = list(sampler)
    sampler.set_epoch(0)  # whatever epoch the sampler was last set to
    order = EpochOrder(sampler, 4, start=4)
    assert list(order) == full[4:] and len(order) == len(full) - 4
    assert list(EpochOrder(sampler, 5)) != full
    with pytest.raises(ValueError, match="epoch 4 at sample 7"):
        EpochOrder(sampler, 4, start=7)


@pytest.mark.parametrize("num_workers", [0, 2])
def test_seeded_samples_draw_by_seed_epoch_and_index_only(num_workers):
    """The same item draws the same numbers whether loaded first or last, by any worker, from any
    position; another epoch or seed draws others; the caller's generators are left as they were."""
    sampler = DistributedSampler(range(10), num_replicas=1, rank=0, shuffle=True, seed=0)
    full = draws(SeededSamples(RandomDraws(), seed=7, epoch=2), EpochOrder(sampler, 2), num_workers)
    resumed = draws(SeededSamples(RandomDraws(), seed=7, epoch=2), EpochOrder(sampler, 2, start=6), num_workers)
    assert len(full) == 10 and len(resumed) == 4
    assert all(resumed[index] == full[index] for index in resumed)
    in_order = draws(SeededSamples(RandomDraws(), seed=7, epoch=2), range(10), 0)
    assert in_order == full
    other_epoch = draws(SeededSamples(RandomDraws(), seed=7, epoch=3), range(10), 0)
    other_seed = draws(SeededSamples(RandomDraws(), seed=8, epoch=2), range(10), 0)
    assert all(other_epoch[i] != full[i] and other_seed[i] != full[i] for i in range(10))

    torch.manual_seed(0)
    random.seed(0)
    np.random.seed(0)
    SeededSamples(RandomDraws(), seed=7, epoch=2)[3]
    after = (float(torch.rand(1)), random.random(), float(np.random.rand()))
    torch.manual_seed(0)
    random.seed(0)
    np.random.seed(0)
    assert after == (float(torch.rand(1)), random.random(), float(np.random.rand()))


def test_sample_seed_is_spread():
    seeds = {sample_seed(42, epoch, index) for epoch in range(5) for index in range(200)}
    assert len(seeds) == 1000 and all(0 <= seed < 2**63 for seed in seeds)
    assert sample_seed(-1, 0, 0) != sample_seed(1, 0, 0)  # negative seeds are valid and distinct


def test_sample_seed_is_the_same_in_another_process():
    """A resumed run and a loader worker are other processes: the seeds must depend on nothing of the process
    (such as Python's per-process string hashing, set apart here by another ``PYTHONHASHSEED``)."""
    code = "from wavecl.training.resumable import sample_seed; print(sample_seed(42, 1, 7), sample_seed(-1, 3, 0))"
    environment = os.environ | {"PYTHONHASHSEED": "12345"}
    printed = subprocess.run(
        [sys.executable, "-c", code], env=environment, capture_output=True, text=True, check=True
    ).stdout.split()
    assert [int(seed) for seed in printed] == [sample_seed(42, 1, 7), sample_seed(-1, 3, 0)]


def test_seeded_samples_leave_the_gpu_generators_alone(monkeypatch):
    """Loading in the main process must not reseed CUDA (dropout and drop-path draw there): only the CPU
    generator is seeded and restored. ``torch.manual_seed`` would call ``torch.cuda.manual_seed_all``."""
    calls = []
    monkeypatch.setattr(torch.cuda, "manual_seed_all", lambda seed: calls.append(seed))
    monkeypatch.setattr(torch.cuda, "manual_seed", lambda seed: calls.append(seed))
    torch.manual_seed(123)  # the test's own seeding reaches the stand-in: it can observe a reseed
    assert calls == [123]
    before = torch.random.get_rng_state()
    item = SeededSamples(RandomDraws(), seed=7, epoch=2)[3]
    assert calls == [123] and torch.equal(torch.random.get_rng_state(), before)
    assert item == SeededSamples(RandomDraws(), seed=7, epoch=2)[3]
