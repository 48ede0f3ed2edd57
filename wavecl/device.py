"""The one device policy: which device a process computes on, decided from what was asked.

Training, evaluation, prediction and the demo all call :func:`resolve_device`; a request that cannot
be met (``cuda`` without CUDA, a GPU index that does not exist, more processes on a node than GPUs)
is an error that names what was asked and what exists, never a silent fall-back to the CPU.
"""

from __future__ import annotations

import os

import torch

DEVICE_CHOICES = ("auto", "cpu", "cuda")
"""What ``--device`` accepts; ``cuda:<index>`` is accepted too where a single process runs."""


def visible_gpus() -> str:
    """The GPUs this process sees, for error messages: ``2 GPU(s) (CUDA_VISIBLE_DEVICES=0,1)``."""
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    mask = os.environ.get("CUDA_VISIBLE_DEVICES")
    where = f" (CUDA_VISIBLE_DEVICES={mask})" if mask is not None else ""
    if count == 0:
        build = f"built with CUDA {torch.version.cuda}" if torch.version.cuda else "built without CUDA"
        return f"no GPU: CUDA is not available (torch {torch.__version__} {build}){where}"
    return f"{count} GPU(s){where}"


def resolve_device(request: str | torch.device | None = None, local_rank: int | None = None) -> torch.device:
    """The device of this process.

    Args:
        request: ``None`` or ``"auto"`` (CUDA when available, else the CPU), ``"cpu"``, ``"cuda"`` or
            ``"cuda:<index>"`` (or the same as a :class:`torch.device`).
        local_rank: this process's rank on its node when it is one of several (``torchrun``); it picks
            ``cuda:<local_rank>``, so an explicit GPU index is refused. ``None`` in a single process.

    Returns:
        ``cpu``, or ``cuda:<index>`` of a GPU that exists.

    Raises:
        ValueError: an unknown request; CUDA asked for without CUDA; a GPU index (given, or the local
            rank) beyond the visible GPUs; a GPU index together with a local rank. The message names the
            request and the GPUs this process sees.
    """
    text = "auto" if request is None else str(request)
    kind, _, index_text = text.partition(":")
    if kind not in DEVICE_CHOICES or (index_text and kind != "cuda") or (index_text and not index_text.isdigit()):
        raise ValueError(f"device {text!r} is not one of {', '.join(DEVICE_CHOICES)} or cuda:<index>")
    if kind == "cpu" or (kind == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ValueError(f"device {text!r} was requested but this process sees {visible_gpus()}; use --device cpu")
    if index_text and local_rank is not None:
        raise ValueError(
            f"device {text!r} names a GPU, but under torchrun each process uses cuda:<LOCAL_RANK>; use --device cuda"
        )
    index = int(index_text) if index_text else (local_rank or 0)
    count = torch.cuda.device_count()
    if index >= count:
        if local_rank is not None:
            raise ValueError(
                f"process with LOCAL_RANK={local_rank} needs cuda:{local_rank}, but this node has {visible_gpus()}: "
                f"start at most {count} process(es) per node (torchrun --nproc_per_node {count})"
            )
        raise ValueError(f"device {text!r} was requested but this process sees {visible_gpus()}")
    return torch.device("cuda", index)
