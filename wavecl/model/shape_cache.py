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
    a result first built during inference can be saved for backward by a later training step.

    Under ``torch.compile`` the function is not traced: TorchDynamo calls it while tracing and puts its
    tensors into the graph as constants (:func:`torch.compiler.assume_constant_result`). Its Python loops
    and host reads therefore break no graph, and the compiled code reads the tensors instead of building
    them on every call. That needs arguments dynamo knows as Python constants, i.e. static shapes, which
    is how :func:`wavecl.model.compile.compile_model` compiles. ``torch.export`` (the ONNX export) traces
    the function itself instead, so the exported graph builds the tensors from its symbolic shapes.
    """
    cached = functools.lru_cache(maxsize=64)(torch.inference_mode(False)(function))

    @functools.wraps(function)
    def shape_cached(*args: P.args, **kwargs: P.kwargs) -> R:
        if torch.compiler.is_exporting():
            return function(*args, **kwargs)
        # lru_cache types its arguments Hashable; the decorated functions take only hashable ones (docstring).
        return cached(*args, **kwargs)  # type: ignore[arg-type]

    return torch.compiler.assume_constant_result(shape_cached)
