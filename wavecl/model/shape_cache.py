"""Small index and size tensors built once per input shape and device, for the network's hot paths.

Building a tensor from Python numbers costs a host-to-device copy on a GPU, which waits for the device
when it runs on every call; the window attention's gather indices and the deformable attention's level
tables depend only on shapes, so they are built once and reused.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import ParamSpec, TypeVar

import torch

P = ParamSpec("P")
R = TypeVar("R")


def cached_per_shape(function: Callable[P, R]) -> Callable[P, R]:
    """Decorate a pure function of hashable shape arguments (and a device) whose result holds tensors.

    Results are kept (the 64 most recent argument sets) and built outside ``torch.inference_mode``, so
    a result first built during inference can be saved for backward by a later training step. Under
    ``torch.compile`` the function is traced instead: a cache means nothing to a trace (and dynamo warns
    about ``functools.lru_cache``).
    """
    build = torch.inference_mode(False)(function)
    cached = functools.lru_cache(maxsize=64)(build)

    @functools.wraps(function)
    def shape_cached(*args: P.args, **kwargs: P.kwargs) -> R:
        return build(*args, **kwargs) if torch.compiler.is_compiling() else cached(*args, **kwargs)

    return shape_cached
