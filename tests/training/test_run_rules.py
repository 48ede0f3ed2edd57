"""Run-directory ownership without a model: the lock, the history, the config rules of a resume."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from wavecl.atomic import write_text
from wavecl.checkpoint import save_checkpoint
from wavecl.config import Config, apply_overrides
from wavecl.run_directory import RunDirectory, RunDirectoryError, RunLock
from wavecl.training.run_rules import (
    config_differences,
    open_run_directory,
    require_fresh_run_directory,
    resume_checkpoint,
    resume_config,
    run_directory_of,
)

LOCK_FILENAME = RunDirectory.LOCK

REPO = Path(__file__).resolve().parents[2]


def dead_pid() -> int:
    """The PID of a process that has exited (and been reaped)."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_second_lock_is_refused_and_released_lock_can_be_taken(tmp_path):
    first = RunLock(tmp_path / "run")
    record = json.loads((tmp_path / "run" / LOCK_FILENAME).read_text())
    assert record["pid"] == os.getpid() and record["host"] == socket.gethostname()
    with pytest.raises(RunDirectoryError, match=rf"in use by process {os.getpid()} on {socket.gethostname()}"):
        RunLock(tmp_path / "run")
    first.release()
    first.release()  # idempotent
    assert not (tmp_path / "run" / LOCK_FILENAME).exists()
    RunLock(tmp_path / "run").release()


def test_lock_of_a_live_process_is_refused_and_taken_over_once_it_is_killed(tmp_path, caplog):
    holder = textwrap.dedent(
        f"""
        import time
        from wavecl.run_directory import RunLock
        lock = RunLock({str(tmp_path / "run")!r})
        print("locked", flush=True)
        time.sleep(120)
        """
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    process = subprocess.Popen([sys.executable, "-c", holder], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert process.stdout.readline().strip() == "locked"
        with pytest.raises(RunDirectoryError, match=rf"in use by process {process.pid} .*delete .*{LOCK_FILENAME}"):
            RunLock(tmp_path / "run")
    finally:
        process.send_signal(signal.SIGKILL)  # dies without releasing: the lock file stays behind
        process.wait()
    assert json.loads((tmp_path / "run" / LOCK_FILENAME).read_text())["pid"] == process.pid
    with caplog.at_level(logging.WARNING, logger="wavecl.train"):
        lock = RunLock(tmp_path / "run")
    assert f"process {process.pid}" in caplog.text and "no longer runs" in caplog.text
    assert json.loads((tmp_path / "run" / LOCK_FILENAME).read_text())["pid"] == os.getpid()
    lock.release()


def test_stale_reused_and_foreign_locks(tmp_path, caplog):
    lock_file = tmp_path / "run" / LOCK_FILENAME
    lock_file.parent.mkdir()
    # A dead PID on this host: taken over.
    lock_file.write_text(json.dumps({"pid": dead_pid(), "host": socket.gethostname(), "command": ["old"]}))
    with caplog.at_level(logging.WARNING, logger="wavecl.train"):
        RunLock(tmp_path / "run").release()
    assert "no longer runs" in caplog.text
    # A live PID whose start time differs from the recorded one: the PID was reused, the owner is gone.
    lock_file.write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "process_start": -5}))
    RunLock(tmp_path / "run").release()
    # An unreadable lock (its writer died mid-write): taken over, said so.
    lock_file.write_text("{")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="wavecl.train"):
        RunLock(tmp_path / "run").release()
    assert "unreadable lock" in caplog.text
    # Another host: liveness cannot be checked, so it is refused with the way out.
    lock_file.write_text(json.dumps({"pid": 1, "host": "other-node-17", "command": ["wavecl", "train"]}))
    with pytest.raises(RunDirectoryError, match=r"process 1 on other-node-17 .*wavecl train.*delete"):
        RunLock(tmp_path / "run")


def write_run(run_dir: Path, config: Config) -> None:
    write_text(run_dir / "config.yaml", config.to_yaml())
    save_checkpoint(run_dir / "checkpoints", 0, {}, {"epoch": 0})


def test_run_directory_of_every_kind_of_resume_argument(tmp_path):
    run = tmp_path / "runs" / "synthetic" / "v1"
    write_run(run, Config())
    for argument in (run, run / "checkpoints", run / "checkpoints" / "epoch_0000", run / "checkpoints" / "last"):
        assert run_directory_of(argument) == run
    save_checkpoint(tmp_path / "loose", 0, {}, {"epoch": 0})  # a checkpoint folder outside a run
    with pytest.raises(RunDirectoryError, match="--pretrained"):
        run_directory_of(tmp_path / "loose" / "epoch_0000")


def test_resume_config_is_the_runs_own_with_explicit_changes(tmp_path):
    run = tmp_path / "run"
    recorded = apply_overrides(Config(), {"train.lr": 1e-4, "data.root": "/data/a"})
    write_run(run, recorded)
    assert resume_config(run, None, {}) == recorded
    assert resume_config(run, recorded, {}) == recorded

    other = apply_overrides(recorded, {"train.lr": 3e-4, "train.epochs": 7})
    with pytest.raises(RunDirectoryError, match=r"train\.epochs: 40 -> 7; train\.lr: 0\.0001 -> 0\.0003") as error:
        resume_config(run, other, {}, "-c other.yaml")
    assert "-c other.yaml" in str(error.value) and "--set" in str(error.value)
    # Explicitly set fields are exempt from the agreement and applied.
    resumed = resume_config(run, other, {"train.lr": 3e-4, "train.epochs": 7})
    assert config_differences(recorded, resumed) == {"train.epochs": (40, 7), "train.lr": (1e-4, 3e-4)}
    with pytest.raises(RunDirectoryError, match=r"train\.version: 'default' -> 'v2'"):
        resume_config(run, None, {"train.version": "v2"})


def test_history_only_grows_and_fresh_runs_refuse_an_existing_run(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    require_fresh_run_directory(run)  # empty: fine
    RunDirectory(run).start_history({"command": ["wavecl", "train", "-c", "a.yaml"]})
    RunDirectory(run).append_resume(
        {"command": ["wavecl", "train", "--resume", "run"], "changed": {"train.epochs": [2, 3]}}
    )
    RunDirectory(run).append_resume({"command": ["again"]})
    info = json.loads((run / "run_info.json").read_text())
    assert info["command"] == ["wavecl", "train", "-c", "a.yaml"]
    assert [entry["command"][-1] for entry in info["resumes"]] == ["run", "again"]

    (run / "log.jsonl").write_text('{"epoch": 0, "train_loss": 2.0}\n{"epoch": 1}\n{"epoch": 0, "train_loss": 1.0}\n')
    assert RunDirectory(run).logged_epochs() == {0: {"epoch": 0, "train_loss": 1.0}, 1: {"epoch": 1}}
    with pytest.raises(RunDirectoryError, match=r"--resume .*run.*--version"):
        require_fresh_run_directory(run)
    (run / "log.jsonl").write_text('{"epoch": 0}\nnot json\n')
    with pytest.raises(RunDirectoryError, match=r"log\.jsonl line 2"):
        RunDirectory(run).logged_epochs()


def test_a_run_stopped_before_its_first_checkpoint_resumes_from_the_beginning_or_starts_afresh(tmp_path, caplog):
    """What such a run holds (its config, history, the frozen weights and a killed writer's temporary
    folder) is no checkpoint: --resume finds the run and no checkpoint, a new run may take its place,
    and opening it removes the temporaries, naming them."""
    run = tmp_path / "runs" / "synthetic" / "v1"
    write_text(run / "config.yaml", Config().to_yaml())
    RunDirectory(run).start_history({"command": ["wavecl", "train"]})
    write_text(run / "checkpoints" / "frozen-0123456789abcdef.safetensors", "weights")
    unfinished = run / "checkpoints" / ".epoch_0000.0123456789ab.tmp"
    write_text(unfinished / ".model.safetensors.ba9876543210.tmp", "half")
    half_config = run / ".config.yaml.00112233aabb.tmp"
    write_text(half_config, "half")
    evaluation = run / ".evaluation.445566778899.tmp"  # `wavecl evaluate` may be writing it now
    evaluation.mkdir()

    assert resume_checkpoint(run) is None and run_directory_of(run) == run
    with caplog.at_level(logging.WARNING, logger="wavecl.train"):
        lock = open_run_directory(run, fresh=True)
    lock.release()
    assert "holds a run stopped before its first checkpoint: starting a new run in its place" in caplog.text
    for leftover in (unfinished, half_config):
        assert f"removed {leftover}, left unfinished by an interrupted process" in caplog.text
        assert not leftover.exists()
    assert evaluation.is_dir() and (run / "checkpoints" / "frozen-0123456789abcdef.safetensors").is_file()

    save_checkpoint(run / "checkpoints", 0, {}, {"epoch": 0})
    assert resume_checkpoint(run) == run / "checkpoints" / "epoch_0000"
    with pytest.raises(RunDirectoryError, match=r"already holds a run \(checkpoints/\)"):
        open_run_directory(run, fresh=True)
    assert not (run / LOCK_FILENAME).exists()
