"""Random streams of a training job: one shared seed for what must agree across ranks, one per rank
for what must not.

The initial weights and the dataset's sample list are built under ``seed`` on every rank (DDP would
broadcast rank 0's weights anyway, but a run is then reproducible rank by rank). After that every
rank draws from its own streams, seeded with ``seed + rank`` as in the original implementation, so
dropout and stochastic depth differ between GPUs instead of repeating. Augmentation needs no rank:
each sample's draws depend on ``(seed, epoch, index)`` (:class:`wavecl.training.resumable.SeededSamples`)
and every rank loads other samples.
"""

from __future__ import annotations

import random

import numpy as np
import torch


def seed_process(seed: int) -> None:
    """Seed Python's ``random``, NumPy's global generator and torch (the CPU and every CUDA device)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rank_seed(seed: int, rank: int) -> int:
    """The seed of rank ``rank``'s own streams: ``seed + rank``."""
    return seed + rank
