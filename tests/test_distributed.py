"""Distributed helpers: single-process fallbacks and a real two-process gloo group.

This module imports only torch and :mod:`wavecl.distributed`, so the spawned ranks start fast.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from wavecl import distributed
from wavecl.testing.serve import free_port

TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


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
        assert result["losses"] == {"loss_a": 0.5, "loss_b": 1.0}
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
    assert distributed.reduce_loss_dict({"loss": torch.tensor(3.0), "nan": torch.tensor(float("nan"))}) == {
        "loss": 3.0,
        "nan": pytest.approx(float("nan"), nan_ok=True),
    }
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


# A rank of a two-process gloo job started without torchrun's agent (nothing kills the other rank
# when one fails), so only the job's own error handling can end it. argv: scenario, rank, port.
# "STEP <time>" marks when a rank enters the step under test.
RANK_SCRIPT = """
import os, sys, time
import torch
from wavecl import distributed

scenario, rank, port = sys.argv[1], int(sys.argv[2]), sys.argv[3]
os.environ.update(RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1", MASTER_PORT=port)
distributed.init_distributed("cpu", timeout_s=3 if scenario == "timeout" else 300)
if scenario == "metrics fail on rank 0":
    from wavecl.evaluation.a2d import A2DEvaluator

    evaluator = A2DEvaluator(os.path.join(os.getcwd(), "missing_ground_truth.json"), results_path=None)
distributed.barrier()
print("STEP", time.time(), flush=True)
try:
    if scenario == "metrics fail on rank 0":
        evaluator.summarize()  # rank 0 alone reads the ground truth and computes the metrics
    elif scenario == "rank 1 fails":
        distributed.on_every_process(lambda: 1 / (1 - rank), "dividing")
    elif scenario == "helpers":
        gathered = distributed.gather_to_main({"rank": rank})
        shared = distributed.broadcast_from_main(f"from rank {rank}")
        value = distributed.on_main_process(lambda: 40 + 2 * (rank + 1), "answering")
        print("RESULT", gathered, shared, value, flush=True)
    elif scenario == "timeout":
        if rank == 0:
            time.sleep(30)
        distributed.barrier()
finally:
    distributed.cleanup()
"""


@dataclass
class RankRun:
    returncode: int
    stdout: str
    stderr: str
    step_started: float | None  # when the rank entered the step under test (time.time())
    ended: float  # when the process ended (time.time())


def run_two_ranks(tmp_path: Path, scenario: str, deadline_s: float = 300) -> tuple[RankRun, RankRun]:
    """Start both ranks as plain processes and wait for both; kill them after ``deadline_s``."""
    script = tmp_path / "rank.py"
    script.write_text(RANK_SCRIPT)
    port = str(free_port())
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    logs = [(tmp_path / f"rank{rank}.out", tmp_path / f"rank{rank}.err") for rank in range(2)]
    processes = []
    for rank, (out, err) in enumerate(logs):
        with open(out, "w") as stdout, open(err, "w") as stderr:
            command = [sys.executable, str(script), scenario, str(rank), port]
            processes.append(subprocess.Popen(command, cwd=tmp_path, env=env, stdout=stdout, stderr=stderr))
    ended: dict[int, float] = {}
    deadline = time.time() + deadline_s
    while len(ended) < 2:
        for rank, process in enumerate(processes):
            if rank not in ended and process.poll() is not None:
                ended[rank] = time.time()
        if time.time() > deadline:
            for process in processes:
                process.kill()
            raise AssertionError(f"{scenario}: the ranks were still running after {deadline_s} s")
        time.sleep(0.05)
    runs = []
    for rank, (out, err) in enumerate(logs):
        stdout = out.read_text()
        step = re.search(r"^STEP ([0-9.]+)$", stdout, re.MULTILINE)
        step_started = float(step.group(1)) if step else None
        runs.append(RankRun(processes[rank].returncode, stdout, err.read_text(), step_started, ended[rank]))
    return runs[0], runs[1]


def test_helpers_on_two_processes(tmp_path):
    rank0, rank1 = run_two_ranks(tmp_path, "helpers")
    assert rank0.returncode == rank1.returncode == 0, rank0.stderr + rank1.stderr
    assert "RESULT [{'rank': 0}, {'rank': 1}] from rank 0 42" in rank0.stdout
    assert "RESULT None from rank 0 42" in rank1.stdout  # gathered on rank 0 only; rank 0's result everywhere


def test_a_metric_failure_on_rank_0_ends_both_ranks_with_its_message(tmp_path):
    """Rank 0 computes the A2D metrics alone and fails (no ground truth); the collective timeout is
    300 s, yet both ranks end within seconds of the failure, and rank 1 reports rank 0's error."""
    rank0, rank1 = run_two_ranks(tmp_path, "metrics fail on rank 0")
    assert rank0.returncode != 0 and rank1.returncode != 0
    assert "FileNotFoundError: COCO-format ground-truth file not found" in rank0.stderr
    expected = (
        "RankFailure: rank 0 failed while computing the A2D / JHMDB metrics: FileNotFoundError: "
        f"COCO-format ground-truth file not found: {tmp_path / 'missing_ground_truth.json'}"
    )
    assert expected in rank1.stderr
    assert max(rank0.ended, rank1.ended) - rank0.step_started < 10


def test_a_failure_on_rank_1_ends_rank_0_with_its_message(tmp_path):
    rank0, rank1 = run_two_ranks(tmp_path, "rank 1 fails")
    assert rank1.returncode != 0 and "ZeroDivisionError: division by zero" in rank1.stderr
    assert rank0.returncode != 0
    assert "RankFailure: rank 1 failed while dividing: ZeroDivisionError: division by zero" in rank0.stderr
    assert max(rank0.ended, rank1.ended) - rank1.step_started < 10


def test_collectives_use_the_configured_timeout(tmp_path):
    """With a 3 s timeout, rank 1 waiting at a barrier for a rank 0 that sleeps 30 s gives up long
    before rank 0 wakes up (gloo's own default is 30 minutes)."""
    rank0, rank1 = run_two_ranks(tmp_path, "timeout")
    assert rank1.returncode != 0 and "Timed out waiting 3000ms" in rank1.stderr, rank1.stderr[-2000:]
    assert rank1.ended - rank1.step_started < 15
    assert rank1.ended < rank0.step_started + 30
