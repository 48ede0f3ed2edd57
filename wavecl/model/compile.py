"""Optional ``torch.compile`` of the network, with a clean fall-back to eager mode.

The heavy, text-free-of-Python parts (:data:`COMPILED_PARTS`) are compiled one by one, in place:
each module's ``forward`` is replaced by a guarded compiled version, so parameter names, state
dicts, forward hooks and every entry point (``forward``, ``encode_video``, ``segment``) stay as
they are. The text encoder and the tokenizer stay eager (Python string handling, one shape per
sentence length).

Shapes are static: each part compiles once per input shape (frames, height and width of the clip), and
the window layouts and level tables of that shape are constants of its graph
(:mod:`wavecl.model.shape_cache`), so the backbone and the deformable attention compile to one graph each
with no break. Clips resized to a fixed short side come in a handful of shapes (one per aspect ratio, plus
a shorter last window); past TorchDynamo's recompile limit (:data:`RECOMPILE_LIMIT` here) a further shape
runs eagerly, with dynamo's own warning.

Compilation can be unavailable (an old torch, a Python version TorchDynamo does not support, an
unknown backend) or fail when it first runs (no C++ compiler for inductor on the CPU, an
unsupported operator). Either way the model runs eagerly and one warning line names why.
"""

from __future__ import annotations

import logging
import platform
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

log = logging.getLogger(__name__)

COMPILED_PARTS = ("backbone", "transformer", "voc", "spatial_decoder")
"""The submodules of :class:`wavecl.model.wavecl.WaveCL` that :func:`compile_model` compiles."""

RECOMPILE_LIMIT = 16
"""Compiled shapes kept per part (TorchDynamo's ``recompile_limit``, raised from its default of 8 when lower)."""

Backend = str | Callable[..., Any]


def compile_unavailable(backend: Backend = "inductor") -> str | None:
    """Why ``torch.compile`` with ``backend`` cannot run here, or ``None`` when it can be tried."""
    if not hasattr(torch, "compile"):
        return f"torch {torch.__version__} has no torch.compile"
    import torch._dynamo as dynamo

    if not dynamo.is_dynamo_supported():
        return f"TorchDynamo does not support Python {platform.python_version()} on {platform.system()}"
    if isinstance(backend, str) and backend not in dynamo.list_backends(exclude_tags=()):
        return f"unknown torch.compile backend {backend!r}"
    return None


def describe_error(error: BaseException) -> str:
    """``Type: first line`` of ``error``, naming the original error when others wrap it (on one line)."""
    root = error
    # TorchDynamo wraps a backend's error as ``inner_exception`` (BackendCompilerFailed), others chain it.
    while (inner := getattr(root, "inner_exception", None) or root.__cause__) is not None:
        root = inner
    lines = str(root).strip().splitlines()
    text = f"{type(root).__name__}: {lines[0]}" if lines else type(root).__name__
    return text if root is error else f"{type(error).__name__} from {text}"


class GuardedCompiled:
    """A compiled callable that falls back to its eager version for good if compiling it fails.

    When the compiled call raises, the eager call runs on the same inputs: if it raises too, the
    error is the caller's (bad inputs) and propagates; if it succeeds, compilation is what failed,
    one warning line says so and every later call is eager.

    Args:
        name: how the warning names the compiled part.
        eager: the original callable.
        compiled: ``torch.compile(eager)``.
    """

    def __init__(self, name: str, eager: Callable[..., Any], compiled: Callable[..., Any]) -> None:
        self.name = name
        self.eager = eager
        self.compiled: Callable[..., Any] | None = compiled

    @property
    def active(self) -> bool:
        """Whether calls still go through the compiled version."""
        return self.compiled is not None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.compiled is None:
            return self.eager(*args, **kwargs)
        try:
            return self.compiled(*args, **kwargs)
        except Exception as error:
            result = self.eager(*args, **kwargs)
            log.warning("torch.compile of %s failed (%s); running it eagerly", self.name, describe_error(error))
            self.compiled = None
            return result


def compile_model(
    model: nn.Module, backend: Backend = "inductor", parts: Sequence[str] = COMPILED_PARTS, **options: Any
) -> list[GuardedCompiled]:
    """Compile ``parts`` of ``model`` in place (``torch.compile(module.forward, backend=..., **options)``).

    Args:
        model: a :class:`~wavecl.model.wavecl.WaveCL` (or any module holding ``parts``).
        backend: a ``torch.compile`` backend name (``"inductor"``; ``"aot_eager"`` traces without
            generating code) or a backend callable.
        parts: dotted names of the submodules to compile.
        options: further ``torch.compile`` keywords (``mode``, ...); ``dynamic`` is ``False`` unless given
            (the shape caches need static shapes, see the module docstring).

    Returns:
        The guarded ``forward`` of each compiled part (empty when compilation is unavailable: then one
        warning line names the reason and the model stays eager).

    Raises:
        AttributeError: a name in ``parts`` is not a submodule of ``model``.
    """
    modules = [(name, model.get_submodule(name)) for name in parts]
    reason = compile_unavailable(backend)
    if reason is not None:
        log.warning("torch.compile unavailable (%s); running eagerly", reason)
        return []
    import torch._dynamo as dynamo

    dynamo.config.recompile_limit = max(dynamo.config.recompile_limit, RECOMPILE_LIMIT)
    options = {"dynamic": False, **options}
    guards = []
    for name, module in modules:
        eager = module.forward
        guard = GuardedCompiled(name, eager, torch.compile(eager, backend=backend, **options))
        module.forward = guard
        guards.append(guard)
    return guards
