"""Process-group set-up and the few collectives the trainer and the evaluators need
(docs/training.md#distributed-training).

Launching is left to ``torchrun`` (env:// rendezvous on a free port): :func:`init_distributed` reads
``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` from the environment, joins the process group with NCCL on
GPUs and gloo on CPU, and falls back to a plain single process when those variables are absent. Every
helper below is a no-op (or the identity) in a single process, so callers use them unconditionally.

Three rules keep a multi-process job from stalling or running out of memory:

- every collective has the job's explicit timeout (``train.dist_timeout_s``), not a library default;
- Python objects travel over a CPU (gloo) group, so pickled objects are never staged on a GPU, and
  large ones go to rank 0 only (:func:`gather_to_main`), never to every rank;
- a step that one rank does alone (:func:`on_main_process`) or that can fail on any rank
  (:func:`on_every_process`) shares its outcome, so when it fails every rank stops at once with the
  failing rank's message instead of waiting in the next collective.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import Tensor

from wavecl.config import TrainConfig
from wavecl.device import resolve_device

_TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK")
DEFAULT_TIMEOUT_S: float = TrainConfig.dist_timeout_s
"""Collective timeout (seconds) unless configured: long enough for rank 0 to score a Ref-DAVIS17
evaluation while the others wait, short enough that a lost rank ends the job within the half hour."""

T = TypeVar("T")
_object_group: dist.ProcessGroup | None = None  # the gloo group for Python objects under NCCL (else the default)


class RankFailure(RuntimeError):
    """Another rank failed during a step shared with this one; the message is that rank's error."""


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


def init_distributed(device: str | None = None, timeout_s: float = DEFAULT_TIMEOUT_S) -> DistInfo:
    """Join the process group started by ``torchrun``, or describe a single process.

    Args:
        device: the request of :func:`wavecl.device.resolve_device` (``None``/``"auto"``, ``"cpu"``,
            ``"cuda"``). With CUDA, process ``local_rank`` uses ``cuda:<local_rank>`` and the NCCL
            backend (plus a gloo group for Python objects); on the CPU the gloo backend.
        timeout_s: seconds any collective may wait for the other ranks before it fails.

    Returns:
        The rank, world size, local rank and device of this process. Without the torchrun variables
        (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``) this is ``DistInfo(0, 1, 0, device)`` and no process
        group is created.

    Raises:
        ValueError: an incomplete torchrun environment, a non-positive timeout, or a device request
            that cannot be met (CUDA without CUDA, more processes on this node than GPUs).
    """
    global _object_group
    if not timeout_s > 0:
        raise ValueError(f"the collective timeout must be a positive number of seconds, got {timeout_s}")
    present = [name for name in _TORCHRUN_VARIABLES if name in os.environ]
    if not present:
        return DistInfo(0, 1, 0, resolve_device(device))
    if len(present) != len(_TORCHRUN_VARIABLES):
        missing = sorted(set(_TORCHRUN_VARIABLES) - set(present))
        raise ValueError(f"incomplete torchrun environment: {present} set but {missing} missing")

    rank = _read_rank_variable("RANK")
    world_size = _read_rank_variable("WORLD_SIZE")
    local_rank = _read_rank_variable("LOCAL_RANK")
    compute_device = resolve_device(device, local_rank)
    timeout = timedelta(seconds=timeout_s)
    if compute_device.type == "cuda":
        torch.cuda.set_device(compute_device)
        dist.init_process_group("nccl", rank=rank, world_size=world_size, timeout=timeout, device_id=compute_device)
        group = dist.new_group(backend="gloo", timeout=timeout)
        assert isinstance(group, dist.ProcessGroup)  # every rank is a member, so no NON_GROUP_MEMBER
        _object_group = group
    else:
        dist.init_process_group("gloo", rank=rank, world_size=world_size, timeout=timeout)
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


def reduce_loss_dict(loss_dict: dict[str, Tensor]) -> dict[str, float]:
    """Average scalar losses over processes for logging: one collective and one copy to the host for
    all keys (a ``.item()`` per key would wait for the device once per key).

    Args:
        loss_dict: name -> scalar tensor, with the same keys on every process.

    Returns:
        name -> the mean over processes, as a Python float (NaN or infinite where any process's is).
    """
    if not loss_dict:
        return {}
    names = sorted(loss_dict)
    stacked = all_reduce_mean(torch.stack([loss_dict[name].detach().float() for name in names]))
    return dict(zip(names, stacked.tolist()))


def gather_objects(obj: Any) -> list[Any]:
    """Give every process one small picklable object of every process (counts, messages, metrics).

    Objects travel over the CPU group. For large objects (predictions) use :func:`gather_to_main`,
    which does not copy them to every rank.

    Returns:
        ``world_size`` objects in rank order (``[obj]`` in a single process).
    """
    if get_world_size() == 1:
        return [obj]
    gathered: list[Any] = [None] * get_world_size()
    dist.all_gather_object(gathered, obj, group=_object_group)
    return gathered


def gather_to_main(obj: Any) -> list[Any] | None:
    """Collect one picklable object of every process on rank 0 only (over the CPU group).

    Returns:
        On rank 0, ``world_size`` objects in rank order (``[obj]`` in a single process); ``None`` on
        the other ranks, which keep nothing but their own object.
    """
    if get_world_size() == 1:
        return [obj]
    gathered: list[Any] | None = [None] * get_world_size() if is_main_process() else None
    dist.gather_object(obj, gathered, dst=0, group=_object_group)
    return gathered


def broadcast_from_main(obj: Any) -> Any:
    """Rank 0's ``obj`` on every process (over the CPU group); the others' ``obj`` is ignored."""
    if get_world_size() == 1:
        return obj
    holder = [obj]
    dist.broadcast_object_list(holder, src=0, group=_object_group)
    return holder[0]


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"


def on_main_process(step: Callable[[], T], what: str) -> T:
    """Run ``step`` on rank 0 alone and give its result to every rank; a failure stops every rank.

    The other ranks wait in one broadcast (subject to the job's timeout). When ``step`` raises on rank
    0, rank 0 re-raises its error and every other rank raises :class:`RankFailure` carrying that
    error's message, at once.

    Args:
        step: the work of rank 0 (metric computation, writing a checkpoint); its result must pickle.
        what: what the step does, for the other ranks' message (``"scoring Ref-DAVIS17"``).

    Returns:
        ``step()``'s result, on every rank.
    """
    if get_world_size() == 1:
        return step()
    outcome: tuple[bool, Any] | None = None
    error: BaseException | None = None
    if is_main_process():
        try:
            outcome = (True, step())
        except BaseException as caught:  # shared before re-raising, so the other ranks stop too
            error = caught
            outcome = (False, _describe(caught))
    succeeded, value = broadcast_from_main(outcome)
    if error is not None:
        raise error
    if not succeeded:
        raise RankFailure(f"rank 0 failed while {what}: {value}")
    return value


def on_every_process(step: Callable[[], T], what: str) -> T:
    """Run ``step`` on every rank, then stop every rank if it failed on any.

    After ``step``, the ranks exchange one short status (a collective, so this also waits for every
    rank). The rank whose ``step`` raised re-raises its own error; the others raise
    :class:`RankFailure` with the lowest failing rank's message.

    Returns:
        This rank's ``step()`` result.
    """
    error: BaseException | None = None
    try:
        value = step()
    except BaseException as caught:
        if get_world_size() == 1:
            raise
        error = caught
    statuses = gather_objects(None if error is None else _describe(error))
    if error is not None:
        raise error
    for rank, status in enumerate(statuses):
        if status is not None:
            raise RankFailure(f"rank {rank} failed while {what}: {status}")
    return value


def cleanup() -> None:
    """Leave and destroy the process group (and the object group), if any."""
    global _object_group
    _object_group = None
    if is_dist_initialized():
        dist.destroy_process_group()
