"""The one device policy (:func:`wavecl.device.resolve_device`) with a mocked ``torch.cuda``."""

from __future__ import annotations

import pytest
import torch

from wavecl import distributed
from wavecl.device import resolve_device


def fake_cuda(monkeypatch: pytest.MonkeyPatch, count: int) -> None:
    """Make ``torch.cuda`` report ``count`` GPUs (0: CUDA not available)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: count > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)


@pytest.mark.parametrize(
    ("count", "request_", "local_rank", "expected"),
    [
        (0, None, None, "cpu"),
        (0, "auto", None, "cpu"),
        (0, "cpu", None, "cpu"),
        (2, "cpu", 1, "cpu"),
        (2, None, None, "cuda:0"),
        (2, "auto", 1, "cuda:1"),
        (2, "cuda", None, "cuda:0"),
        (2, "cuda", 1, "cuda:1"),
        (2, "cuda:1", None, "cuda:1"),
        (2, torch.device("cuda", 1), None, "cuda:1"),
    ],
)
def test_requests_that_can_be_met(monkeypatch, count, request_, local_rank, expected):
    fake_cuda(monkeypatch, count)
    assert resolve_device(request_, local_rank) == torch.device(expected)


def test_cuda_without_cuda_names_the_request_and_what_exists(monkeypatch):
    fake_cuda(monkeypatch, 0)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    with pytest.raises(ValueError, match=r"device 'cuda' was requested but this process sees no GPU.*CUDA_VISIBLE"):
        resolve_device("cuda")
    with pytest.raises(ValueError, match="'cuda:0' was requested"):
        resolve_device("cuda:0", None)


def test_more_processes_than_gpus(monkeypatch):
    fake_cuda(monkeypatch, 2)
    for request in ("cuda", "auto"):
        with pytest.raises(
            ValueError, match=r"LOCAL_RANK=2 needs cuda:2, but this node has 2 GPU\(s\).*nproc_per_node 2"
        ):
            resolve_device(request, local_rank=2)
    with pytest.raises(ValueError, match=r"'cuda:3' was requested but this process sees 2 GPU\(s\)"):
        resolve_device("cuda:3")
    with pytest.raises(ValueError, match="each process uses cuda:<LOCAL_RANK>"):
        resolve_device("cuda:1", local_rank=0)


@pytest.mark.parametrize("request_", ["tpu", "cuda:x", "cpu:0", "gpu"])
def test_unknown_requests(request_):
    with pytest.raises(ValueError, match="is not one of auto, cpu, cuda"):
        resolve_device(request_)


def test_init_distributed_applies_the_policy_under_torchrun(monkeypatch):
    """Three torchrun processes on a node with two GPUs: the third fails before joining any group."""
    fake_cuda(monkeypatch, 2)
    monkeypatch.setenv("RANK", "2")
    monkeypatch.setenv("WORLD_SIZE", "3")
    monkeypatch.setenv("LOCAL_RANK", "2")
    with pytest.raises(ValueError, match="LOCAL_RANK=2 needs cuda:2"):
        distributed.init_distributed("cuda")
    assert not distributed.is_dist_initialized()
    with pytest.raises(ValueError, match="positive number of seconds"):
        distributed.init_distributed("cpu", timeout_s=0)
