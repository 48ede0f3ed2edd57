"""Distributed helpers: single-process fallbacks and a real two-process gloo group.

This module imports only torch and :mod:`wavecl.distributed`, so the spawned ranks start fast.
"""

from __future__ import annotations

import socket

import pytest
import torch
import torch.multiprocessing as mp

from wavecl import distributed

TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def two_rank_worker(rank: int, port: int, results: str) -> None:
    """One rank of a two-process gloo job, configured as torchrun would."""
    import os

    os.environ.update(
        RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port)
    )
    info = distributed.init_distributed("cpu")
    try:
        mean = distributed.all_reduce_mean(torch.tensor([rank + 1.0, 10.0 * rank]))
        losses = distributed.reduce_loss_dict({"loss_b": torch.tensor(2.0 * rank), "loss_a": torch.tensor(float(rank))})
        gathered = distributed.gather_objects({"rank": rank, "text": f"clip {rank}"})
        distributed.barrier()
        torch.save(
            {
                "info": (info.rank, info.world_size, info.local_rank, str(info.device), info.distributed, info.is_main),
                "helpers": (distributed.get_rank(), distributed.get_world_size(), distributed.is_main_process()),
                "mean": mean,
                "losses": losses,
                "gathered": gathered,
            },
            f"{results}/rank{rank}.pt",
        )
    finally:
        distributed.cleanup()


def test_two_gloo_processes(tmp_path):
    mp.spawn(two_rank_worker, args=(free_port(), str(tmp_path)), nprocs=2, join=True)
    for rank in range(2):
        result = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        assert result["info"] == (rank, 2, rank, "cpu", True, rank == 0)
        assert result["helpers"] == (rank, 2, rank == 0)
        torch.testing.assert_close(result["mean"], torch.tensor([1.5, 5.0]))
        assert {k: v.item() for k, v in result["losses"].items()} == {"loss_a": 0.5, "loss_b": 1.0}
        assert result["gathered"] == [{"rank": 0, "text": "clip 0"}, {"rank": 1, "text": "clip 1"}]


def test_single_process_without_torchrun_environment(monkeypatch):
    for name in TORCHRUN_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    info = distributed.init_distributed("cpu")
    assert info == distributed.DistInfo(0, 1, 0, torch.device("cpu"))
    assert not info.distributed and info.is_main
    assert not distributed.is_dist_initialized()
    values = torch.tensor([1.0, 2.0], requires_grad=True)
    reduced = distributed.all_reduce_mean(values)
    assert torch.equal(reduced, values.detach()) and not reduced.requires_grad
    assert distributed.gather_objects({"a": 1}) == [{"a": 1}]
    assert distributed.reduce_loss_dict({"loss": torch.tensor(3.0)}) == {"loss": torch.tensor(3.0)}
    assert distributed.get_world_size() == 1 and distributed.get_rank() == 0 and distributed.is_main_process()
    distributed.barrier()
    distributed.cleanup()


def test_incomplete_or_invalid_environment_is_rejected(monkeypatch):
    for name in TORCHRUN_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(ValueError, match="LOCAL_RANK"):
        distributed.init_distributed("cpu")
    monkeypatch.setenv("WORLD_SIZE", "two")
    monkeypatch.setenv("LOCAL_RANK", "0")
    with pytest.raises(ValueError, match="WORLD_SIZE='two'"):
        distributed.init_distributed("cpu")
    monkeypatch.setenv("WORLD_SIZE", "1")
    with pytest.raises(ValueError, match="device 'tpu' is not one of"):
        distributed.init_distributed("tpu")
    assert not distributed.is_dist_initialized()
