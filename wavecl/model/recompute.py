"""Activation checkpointing (``model.activation_checkpointing``): keep a block's inputs, recompute the rest.

A checkpointed block saves nothing for the backward pass but its inputs; the backward pass runs its forward
once more (with the same random draws: dropout and stochastic depth are replayed) to get what it needs.
``benchmarks/memory_estimate.py`` shows what this saves per recipe.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.utils import checkpoint


def run_block(block: Callable[..., Any], enabled: bool, *args: Any) -> Any:
    """``block(*args)``, checkpointed when ``enabled`` and gradients are being recorded.

    Uses ``torch.utils.checkpoint.checkpoint(..., use_reentrant=False)``, which supports keyword and
    non-tensor arguments and inputs that do not require gradients; outputs and gradients equal those of
    ``block(*args)``. In evaluation (no gradients) it is a plain call.
    """
    if enabled and torch.is_grad_enabled():
        return checkpoint.checkpoint(block, *args, use_reentrant=False)
    return block(*args)
