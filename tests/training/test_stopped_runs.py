"""Runs and evaluations that stop half-way leave something that continues, never something half-written.

- SIGTERM while the first checkpoint is being written (a real ``wavecl train``): no temporary file is
  left, the process says how to continue, and ``--resume`` starts the run again from the beginning in
  its folder, to the same weights as an uninterrupted run;
- SIGKILL inside the checkpoint writer: the next trainer of the run removes what it left, saying so;
- a full disk while writing a checkpoint: one message naming the folder and the space needed and free,
  no partial checkpoint folder, the previous checkpoint still the one that resumes;
- a read-only output folder: refused before anything trains, without a traceback;
- non-finite values under ``nonfinite_loss: stop`` and ``skip``: no traceback, the step and tensors
  named, skips counted, and the run resumes;
- an evaluation interrupted half-way leaves the previous complete output as it was, and a complete one
  replaces it whole.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from support import (
    SINGLE_CPU,
    SIZE_OVERRIDES,
    assert_same_run,
    run_cli,
    skip_evaluation,
    tiny_config,
    tiny_train_arguments,
    write_dataset,
)

import wavecl.checkpoint as checkpoint_module
import wavecl.evaluation.protocols as evaluation_protocols
import wavecl.evaluation.ytvos as evaluation_ytvos
from wavecl.atomic import is_temporary
from wavecl.checkpoint import load_training_state
from wavecl.cli import main as cli_main
from wavecl.evaluation.protocols import evaluate_model
from wavecl.model.wavecl import build_model
from wavecl.run_directory import RunDirectory
from wavecl.training.run_rules import resume_checkpoint
from wavecl.training.trainer import Trainer

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.usefixtures("single_thread")

# Runs `wavecl` with the safetensors writer of checkpoints replaced: once it has written the weights of
# a checkpoint folder, before the folder is complete, it touches $WRITER_STARTED and then either waits
# to be signalled (WRITER_ACTION=wait) or kills its own process (WRITER_ACTION=kill).
DRIVER = """
import os, signal, sys, time
from pathlib import Path

import wavecl.checkpoint as checkpoint
from wavecl.cli import main

write = checkpoint.save_file


def stalled(tensors, filename, metadata=None):
    write(tensors, filename, metadata=metadata)
    if Path(filename).parent.name.lstrip(".").startswith("epoch_"):
        Path(os.environ["WRITER_STARTED"]).touch()
        if os.environ["WRITER_ACTION"] == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(600)


checkpoint.save_file = stalled
main(sys.argv[1:])
"""


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("synthetic"))


def train_arguments(output_dir: Path, data_root: Path, **settings) -> list[str]:
    """``wavecl train`` on the tiny config and the 32x48 clips: 1 epoch of 2 steps unless ``settings`` say."""
    values = {**SIZE_OVERRIDES, "train.max_steps_per_epoch": 2, **settings}
    return ["train", *tiny_train_arguments(1, output_dir, data_root, values)]


def stop_in_checkpoint_writer(tmp_path: Path, argv: list[str], action: str) -> subprocess.CompletedProcess:
    """Run ``wavecl argv`` through :data:`DRIVER`; once the first checkpoint's writer has started, send
    SIGTERM (``action="wait"``) or let it SIGKILL itself (``"kill"``). Returns the finished process."""
    driver, started = tmp_path / "driver.py", tmp_path / "writer_started"
    driver.write_text(DRIVER)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    env.update(WRITER_STARTED=str(started), WRITER_ACTION=action)
    process = subprocess.Popen(
        [sys.executable, str(driver), *argv], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 300
        while not started.exists() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert started.exists(), "the checkpoint writer never started"
        if action == "wait":
            process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def temporaries(folder: Path) -> list[Path]:
    return [path for path in folder.rglob("*") if is_temporary(path)]


def test_sigterm_during_the_first_checkpoint_leaves_a_run_that_starts_again(data_root, tmp_path, caplog):
    """Before, SIGTERM left the temporary files (87 MiB on a real model), then ``--resume`` found no
    checkpoint and a new start found the folder already holding a run."""
    output = tmp_path / "stopped"
    run_dir = output / "synthetic" / "tiny"
    stopped = stop_in_checkpoint_writer(tmp_path, train_arguments(output, data_root), "wait")

    assert stopped.returncode == 128 + signal.SIGTERM, stopped.stderr
    assert "Traceback" not in stopped.stderr
    assert "stopped by SIGTERM" in stopped.stderr
    assert f"`wavecl train --resume {run_dir}` starts it again from the beginning" in stopped.stderr
    assert temporaries(run_dir) == []
    assert not (run_dir / RunDirectory.LOCK).exists()
    assert not [path for path in (run_dir / "checkpoints").iterdir() if path.name.startswith("epoch_")]

    with caplog.at_level(logging.WARNING, logger="wavecl.train"):
        cli_main(["train", "--resume", str(run_dir), "--device", "cpu"])
    assert "stopped before its first checkpoint: starting it again from the beginning" in caplog.text
    cli_main([*train_arguments(tmp_path / "straight", data_root)])
    assert_same_run(run_dir, tmp_path / "straight" / "synthetic" / "tiny", steps=2)
    info = json.loads((run_dir / "run_info.json").read_text())
    assert [entry["checkpoint"] for entry in info["resumes"]] == [None]


def test_leftovers_of_a_killed_checkpoint_writer_are_removed_by_the_next_start(data_root, tmp_path, caplog):
    output = tmp_path / "killed"
    run_dir = output / "synthetic" / "tiny"
    killed = stop_in_checkpoint_writer(tmp_path, train_arguments(output, data_root), "kill")
    assert killed.returncode == -signal.SIGKILL
    # the checkpoint folder being assembled, holding the temporary file of its weights
    (leftover, weights) = temporaries(run_dir)
    assert leftover.parent == run_dir / "checkpoints" and leftover.name.startswith(".epoch_0000.")
    assert weights.parent == leftover and weights.name.startswith(".model.safetensors.")
    assert weights.stat().st_size > 0

    config = tiny_config(data_root, output, "tiny", train__epochs=1)
    with caplog.at_level(logging.WARNING, logger="wavecl.train"):
        trainer = Trainer(config, SINGLE_CPU, resume=run_dir)  # takes over the dead process's lock, too
    trainer.close()
    assert f"removed {leftover}, left unfinished by an interrupted process" in caplog.text
    assert temporaries(run_dir) == []


# ----------------------------------------------------------------------------------------- disk full


def tensor_bytes(checkpoint: Path) -> int:
    """Bytes of the tensors a checkpoint folder holds (weights and training state), read back from disk."""
    weights = sum(tensor.nbytes for tensor in load_file(checkpoint / "model.safetensors").values())

    def state_bytes(value) -> int:
        if isinstance(value, torch.Tensor):
            return value.nbytes
        items = value.values() if isinstance(value, dict) else value if isinstance(value, (list, tuple)) else []
        return sum(state_bytes(item) for item in items)

    return weights + state_bytes(torch.load(checkpoint / "state.pt", weights_only=True))


def test_disk_full_while_writing_a_checkpoint(data_root, tmp_path, monkeypatch, capsys, caplog):
    """The writer of the second checkpoint writes part of its file, then the disk is full."""
    skip_evaluation(monkeypatch)
    write, calls = checkpoint_module.save_file, []

    def fill_the_disk(tensors, filename, metadata=None):
        if Path(filename).parent.name.lstrip(".").startswith("epoch_"):  # a checkpoint folder's weights
            calls.append(filename)
            if len(calls) == 2:
                Path(filename).write_bytes(b"\0" * 4096)
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(filename))
        write(tensors, filename, metadata=metadata)

    monkeypatch.setattr(checkpoint_module, "save_file", fill_the_disk)
    output = tmp_path / "full"
    checkpoints = output / "synthetic" / "tiny" / "checkpoints"
    argv = train_arguments(output, data_root, **{"train.epochs": 2})
    with caplog.at_level(logging.WARNING, logger="wavecl.train"):
        code, _, err = run_cli(argv, capsys)

    assert code == 2 and "Traceback" not in err
    message = " ".join(err.split())  # the console may wrap
    needed = tensor_bytes(checkpoints / "epoch_0000") / 2**20  # the same tensors, one epoch later
    match = re.search(
        r"no space left on the device of (\S+) while writing checkpoint epoch_0001: it needs about "
        r"([\d.]+) MiB, and ([\d.]+) MiB are free there",
        message,
    )
    assert match, message
    assert match[1] == str(checkpoints)
    assert float(match[2]) == pytest.approx(needed, abs=0.06)
    assert float(match[3]) == pytest.approx(shutil.disk_usage(checkpoints).free / 2**20, rel=0.05)
    assert "continues from its last complete checkpoint epoch_0000" in caplog.text
    assert sorted(path.name for path in checkpoints.iterdir() if not path.name.startswith("frozen-")) == [
        "epoch_0000",
        "last",
    ]
    assert resume_checkpoint(checkpoints.parent) == checkpoints / "epoch_0000"
    assert load_training_state(checkpoints.parent)["epoch"] == 0


# ------------------------------------------------------------------------------------- read-only folder


@pytest.fixture
def read_only(monkeypatch):
    """``read_only(folder)``: creating files or folders inside ``folder`` fails as on a read-only mount
    (EROFS; a chmod would not stop the root user the tests may run as)."""

    def make(folder: Path) -> None:
        folder = folder.absolute()
        mkdir, open_ = os.mkdir, os.open

        def inside(path) -> bool:
            return folder in Path(os.fsdecode(path)).absolute().parents

        def refuse(path):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), os.fsdecode(path))

        def guarded_mkdir(path, *args, **kwargs):
            return refuse(path) if inside(path) else mkdir(path, *args, **kwargs)

        def guarded_open(path, flags, *args, **kwargs):
            return refuse(path) if flags & os.O_CREAT and inside(path) else open_(path, flags, *args, **kwargs)

        monkeypatch.setattr(os, "mkdir", guarded_mkdir)
        monkeypatch.setattr(os, "open", guarded_open)

    return make


def test_read_only_output_folder_is_refused_before_training(data_root, tmp_path, monkeypatch, capsys, read_only):
    trained = []
    monkeypatch.setattr(Trainer, "train_one_epoch", lambda self, epoch: trained.append(epoch))
    output = tmp_path / "read_only"
    output.mkdir()
    read_only(output)
    code, _, err = run_cli(train_arguments(output, data_root), capsys)
    assert code == 2 and "Traceback" not in err and trained == []
    message = " ".join(err.split())
    assert f"cannot write the run directory {output / 'synthetic' / 'tiny'}: Read-only file system" in message
    assert "--output-dir" in message
    assert list(output.iterdir()) == []


def test_read_only_checkpoints_folder_is_refused_before_a_resume(data_root, tmp_path, monkeypatch, capsys, read_only):
    """The run directory is writable, its ``checkpoints`` folder is not."""
    skip_evaluation(monkeypatch)
    output = tmp_path / "runs"
    run_dir = output / "synthetic" / "tiny"
    assert run_cli(train_arguments(output, data_root, **{"train.max_steps_per_epoch": 1}), capsys)[0] == 0
    read_only(run_dir / "checkpoints")
    code, _, err = run_cli(["train", "--resume", str(run_dir), "--device", "cpu", "--epochs", "2"], capsys)
    assert code == 2 and "Traceback" not in err
    assert f"cannot write into {run_dir / 'checkpoints'} (Read-only file system)" in " ".join(err.split())
    assert not (run_dir / RunDirectory.LOCK).exists()


# ------------------------------------------------------------------------------------ non-finite values


def diverging_arguments(output: Path, data_root: Path, policy: str) -> list[str]:
    """Learning rate 1e4 without clipping: after the first update the model outputs NaN."""
    settings = {f"train.{name}": 1e4 for name in ("lr", "lr_backbone", "text_encoder_lr")}
    settings.update({"train.clip_max_norm": 0.0, "train.max_steps_per_epoch": 3, "train.nonfinite_loss": policy})
    return train_arguments(output, data_root, **settings)


def test_nonfinite_stop_ends_with_a_message_and_the_run_resumes(data_root, tmp_path, monkeypatch, capsys, caplog):
    skip_evaluation(monkeypatch)
    output = tmp_path / "stop"
    run_dir = output / "synthetic" / "tiny"
    with caplog.at_level(logging.WARNING, logger="wavecl.train"):
        code, _, err = run_cli(diverging_arguments(output, data_root, "stop"), capsys)
    assert code == 1 and "Traceback" not in err
    message = " ".join(err.split())
    assert "stopped: non-finite values at epoch 0 step 1: ['pred_masks'," in message
    assert "'cost_giou'" in message and "train.nonfinite_loss: stop" in message
    assert f"`wavecl train --resume {run_dir}` starts it again from the beginning" in caplog.text
    assert not (run_dir / RunDirectory.LOCK).exists()

    rates = ["--lr", "1e-4", "--lr-backbone", "1e-5", "--text-encoder-lr", "5e-6"]
    code, _, err = run_cli(["train", "--resume", str(run_dir), "--device", "cpu", *rates], capsys)
    assert code == 0, err
    (record,) = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    assert record["epoch"] == 0 and record["train_skipped_batches"] == 0 and math.isfinite(record["train_loss"])


def test_nonfinite_skip_counts_the_skips_and_ends_without_a_traceback(data_root, tmp_path, capsys, caplog):
    """Every step after the first is skipped; the evaluation then refuses the diverged model's NaN outputs."""
    output = tmp_path / "skip"
    run_dir = output / "synthetic" / "tiny"
    with caplog.at_level(logging.WARNING, logger="wavecl.train"):
        code, _, err = run_cli(diverging_arguments(output, data_root, "skip"), capsys)
    assert code == 1 and "Traceback" not in err
    for step in (1, 2):
        assert f"non-finite values at epoch 0 step {step}: ['pred_masks'" in caplog.text
    assert caplog.text.count("skipping the batch") == 2
    assert "stopped:" in err and "hold NaN" in " ".join(err.split())
    assert load_training_state(run_dir)["epoch_totals"]["skipped_batches"] == 2
    assert "continues from its last complete checkpoint epoch_0000" in caplog.text


# ------------------------------------------------------------------------------- evaluation outputs


def snapshot(folder: Path) -> dict[str, str]:
    """Relative path -> SHA-256 of every file below ``folder``."""
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def test_interrupted_evaluation_leaves_the_previous_output_whole(data_root, tmp_path, monkeypatch):
    config = tiny_config(data_root, tmp_path, "eval")
    torch.manual_seed(0)
    model = build_model(config.model)
    out_dir = tmp_path / "evaluation"
    evaluate_model(model, config, out_dir, SINGLE_CPU, record={"dataset": "synthetic", "run": 1})
    stale = out_dir / "Annotations" / "video_of_an_older_run" / "0" / "00000.png"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"older")
    before = snapshot(out_dir)
    assert json.loads((out_dir / "metrics.json").read_text())["run"] == 1
    assert len([name for name in before if name.endswith(".png")]) > 2

    with torch.no_grad():  # other weights: other masks
        for parameter in model.parameters():
            parameter.add_(0.05)
    write, calls = evaluation_ytvos.write_ytvos_masks, []

    def interrupt_midway(*args, **kwargs):
        calls.append(args)
        if len(calls) == 2:
            raise KeyboardInterrupt
        write(*args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(evaluation_ytvos, "write_ytvos_masks", interrupt_midway)
        with pytest.raises(KeyboardInterrupt):
            evaluate_model(model, config, out_dir, SINGLE_CPU, record={"run": 2})
    assert snapshot(out_dir) == before
    assert temporaries(tmp_path) == []

    evaluate_model(model, config, out_dir, SINGLE_CPU, record={"dataset": "synthetic", "run": 3})
    after = snapshot(out_dir)
    assert json.loads((out_dir / "metrics.json").read_text())["run"] == 3
    assert str(stale.relative_to(out_dir)) not in after  # nothing of the older output is left beside the new
    changed = [name for name in after if name.endswith(".png") and after[name] != before.get(name)]
    assert changed, "the new weights wrote other masks"
    assert temporaries(tmp_path) == []


def test_evaluate_refuses_an_out_dir_that_is_not_an_evaluation(tmp_path, capsys):
    out_dir = tmp_path / "notes"
    out_dir.mkdir()
    (out_dir / "mine.txt").write_text("keep me")
    argv = ["evaluate", "-c", "tiny", "--checkpoint", str(tmp_path / "missing")]
    code, _, err = run_cli([*argv, "--out-dir", str(out_dir)], capsys)
    assert code == 2 and "holds files but no metrics.json" in " ".join(err.split())
    assert (out_dir / "mine.txt").read_text() == "keep me"


def test_scoring_saved_predictions_removes_the_old_metrics_first(tmp_path, monkeypatch, capsys):
    """An interrupted scoring must not leave the previous ``metrics.json`` beside the new tables."""
    out_dir = tmp_path / "scores"
    out_dir.mkdir()
    (out_dir / "metrics.json").write_text(json.dumps({"metrics": {"J&F": 0.9}}))

    def interrupted(config, path, out_dir):
        (Path(out_dir) / "per_expression.csv").write_text("video,expression\n")
        raise ValueError("scoring interrupted")

    monkeypatch.setattr(evaluation_protocols, "evaluate_saved_predictions", interrupted)
    argv = ["evaluate", "-c", "tiny", "--predictions", str(tmp_path)]
    code, _, err = run_cli([*argv, "--out-dir", str(out_dir)], capsys)
    assert code == 2 and "scoring interrupted" in err
    assert sorted(path.name for path in out_dir.iterdir()) == ["per_expression.csv"]
