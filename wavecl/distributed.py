"""Process-group set-up and the few collectives the trainer needs (docs/training.md#distributed-training).

Launching is left to ``torchrun`` (env:// rendezvous on a free port): :func:`init_distributed` reads
``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` from the environment, joins the process group with NCCL on
GPUs and gloo on CPU, and falls back to a plain single process when those variables are absent. Every
helper below is a no-op (or the identity) in a single process, so the trainer calls them
unconditionally.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

_TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in the job.

    Attributes:
        rank: global rank, ``0 <= rank < world_size``.
        world_size: number of processes.
        local_rank: rank on this node (selects the GPU).
        device: the device this process computes on (``cuda:<local_rank>`` or ``cpu``).
    """

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def distributed(self) -> bool:
        """Whether gradients must be synchronised (more than one process)."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Whether this process does the I/O (logging, checkpoints)."""
        return self.rank == 0


def _read_rank_variable(name: str) -> int:
    value = os.environ[name]
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {name}={value!r} is not an integer") from None


def init_distributed(device: str | None = None) -> DistInfo:
    """Join the process group started by ``torchrun``, or describe a single process.

    Args:
        device: ``"cuda"`` or ``"cpu"``; ``None`` picks CUDA when it is available. With CUDA, process
            ``local_rank`` uses ``cuda:<local_rank>`` and the NCCL backend; on CPU the gloo backend.

    Returns:
        The rank, world size, local rank and device of this process. Without the torchrun variables
        (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``) this is ``DistInfo(0, 1, 0, device)`` and no process
        group is created.
    """
    if device not in (None, "cuda", "cpu"):
        raise ValueError(f"device must be 'cuda', 'cpu' or None, got {device!r}")
    use_cuda = torch.cuda.is_available() if device is None else device == "cuda"
    if use_cuda and not torch.cuda.is_available():
        raise ValueError("device='cuda' was requested but CUDA is not available")

    present = [name for name in _TORCHRUN_VARIABLES if name in os.environ]
    if not present:
        return DistInfo(0, 1, 0, torch.device("cuda", 0) if use_cuda else torch.device("cpu"))
    if len(present) != len(_TORCHRUN_VARIABLES):
        missing = sorted(set(_TORCHRUN_VARIABLES) - set(present))
        raise ValueError(f"incomplete torchrun environment: {present} set but {missing} missing")

    rank = _read_rank_variable("RANK")
    world_size = _read_rank_variable("WORLD_SIZE")
    local_rank = _read_rank_variable("LOCAL_RANK")
    if use_cuda:
        compute_device = torch.device("cuda", local_rank)
        torch.cuda.set_device(compute_device)
        dist.init_process_group("nccl", rank=rank, world_size=world_size, device_id=compute_device)
    else:
        compute_device = torch.device("cpu")
        dist.init_process_group("gloo", rank=rank, world_size=world_size)
    return DistInfo(rank, world_size, local_rank, compute_device)


def is_dist_initialized() -> bool:
    """Whether a process group exists."""
    return dist.is_available() and dist.is_initialized()


def get_world_size() -> int:
    """Number of processes (1 without a process group)."""
    return dist.get_world_size() if is_dist_initialized() else 1


def get_rank() -> int:
    """Global rank of this process (0 without a process group)."""
    return dist.get_rank() if is_dist_initialized() else 0


def is_main_process() -> bool:
    """Whether this is rank 0, the process that logs and writes files."""
    return get_rank() == 0


def barrier() -> None:
    """Wait for every process (no-op in a single process)."""
    if not is_dist_initialized():
        return
    if dist.get_backend() == dist.Backend.NCCL:
        dist.barrier(device_ids=[torch.cuda.current_device()])
    else:
        dist.barrier()


def all_reduce_mean(tensor: Tensor) -> Tensor:
    """Average a tensor over processes.

    Args:
        tensor: any shape, on this process's device (a CUDA tensor with NCCL).

    Returns:
        A new detached tensor of the same shape holding the mean over processes; the input is left
        unchanged. Not differentiable: use it for logging and for loss normalisers.
    """
    reduced = tensor.detach().clone()
    if get_world_size() > 1:
        dist.all_reduce(reduced, op=dist.ReduceOp.SUM)
        reduced /= get_world_size()
    return reduced


def reduce_loss_dict(loss_dict: dict[str, Tensor]) -> dict[str, Tensor]:
    """Average scalar losses over processes for logging (one collective for all keys).

    Args:
        loss_dict: name -> scalar tensor, with the same keys on every process.

    Returns:
        name -> detached scalar tensor, the mean over processes.
    """
    if not loss_dict:
        return {}
    names = sorted(loss_dict)
    stacked = all_reduce_mean(torch.stack([loss_dict[name].detach().float() for name in names]))
    return dict(zip(names, stacked.unbind(0)))


def gather_objects(obj: Any) -> list[Any]:
    """Collect one picklable object from every process (e.g. evaluation predictions).

    Returns:
        ``world_size`` objects in rank order (``[obj]`` in a single process).
    """
    if get_world_size() == 1:
        return [obj]
    gathered: list[Any] = [None] * get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def cleanup() -> None:
    """Leave and destroy the process group, if any."""
    if is_dist_initialized():
        dist.destroy_process_group()
