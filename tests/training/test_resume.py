"""Runs that can be interrupted anywhere and resumed in their own directory, on the tiny model.

- a run stopped mid-epoch (an exception in a step, or SIGKILL of a real ``wavecl train``) resumes from
  its step checkpoint to the same losses, log lines and weights as an uninterrupted run, bit for bit,
  with and without loader workers and gradient accumulation;
- ``--resume RUN`` writes into RUN with RUN's config; a disagreeing ``-c`` is refused naming the
  fields; explicit changes are applied (the learning rate after a new milestone) and recorded;
- a second trainer on the same run directory is refused;
- an epoch whose evaluation crashed is evaluated and logged on resume, and ``best`` considers it;
- frozen parameters are stored once per run and every reader still loads them; ``keep_checkpoints``;
- one epoch numbering (from 0) on the progress bar, in the log, the folders and the resume message.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from support import (
    SINGLE_CPU,
    SIZE_OVERRIDES,
    TINY_CONFIG,
    assert_same_run,
    read_log,
    read_scalars,
    tiny_config,
    write_dataset,
)

import wavecl.evaluation.protocols as evaluation_protocols
from wavecl.checkpoint import latest_checkpoint, load_training_state, read_state_dict
from wavecl.cli import main as cli_main
from wavecl.config import Config, apply_overrides, load_config
from wavecl.model.wavecl import WaveCL
from wavecl.run_directory import RunDirectory, RunDirectoryError
from wavecl.training.trainer import Trainer

REPO = Path(__file__).resolve().parents[2]


pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("synthetic"))


def script_evaluation(monkeypatch, values) -> list[int]:
    """Replace the evaluation pass by scripted J&F values (an Exception value is raised); returns the
    list of calls made, which grows as the run evaluates."""
    scripted, calls = iter(values), []

    def run_evaluation(*args, **kwargs):
        calls.append(len(calls))
        value = next(scripted)
        if isinstance(value, Exception):
            raise value
        return {"J&F": value}

    monkeypatch.setattr(evaluation_protocols, "run_evaluation", run_evaluation)
    return calls


class Interrupted(Exception):
    """Stands for Ctrl-C, a node failure or a time limit in the middle of a step."""


def interrupt_at_call(monkeypatch, call: int) -> None:
    """Raise :class:`Interrupted` in the ``call``-th training forward pass (0-based, counted over the run)."""
    original, calls = Trainer._forward_loss, itertools.count()

    def forward_loss(self, batch):
        if next(calls) == call:
            raise Interrupted(f"interrupted in forward pass {call}")
        return original(self, batch)

    monkeypatch.setattr(Trainer, "_forward_loss", forward_loss)


# ------------------------------------------------------------------------------- mid-epoch resume


@pytest.mark.parametrize(("num_workers", "accumulate"), [(0, 1), (2, 2)])
def test_mid_epoch_resume_is_exact(data_root, tmp_path, monkeypatch, num_workers, accumulate):
    """2 epochs of 6 steps with a checkpoint every 2 steps; the run is interrupted in step 5 of epoch 1
    (after its step-3 checkpoint) and resumed by a new Trainer. Dropout, drop path and flips are on, so
    equality needs the sampler position, the per-sample and training random streams, the optimizer,
    the accumulation window and the epoch's loss totals restored."""
    script_evaluation(monkeypatch, [0.5, 0.6, 0.5, 0.6])

    def config(version: str) -> Config:
        return tiny_config(
            data_root,
            tmp_path,
            version,
            train__max_steps_per_epoch=6,
            train__checkpoint_every_steps=2,
            train__grad_accum_steps=accumulate,
            train__batch_size=1,
            data__num_workers=num_workers,
        )

    Trainer(config("straight"), SINGLE_CPU).fit()

    interrupted = Trainer(config("interrupted"), SINGLE_CPU)
    with monkeypatch.context() as patch:
        interrupt_at_call(patch, 6 + 5)
        with pytest.raises(Interrupted):
            interrupted.fit()
    run_dir = interrupted.run_dir
    checkpoints = run_dir / "checkpoints"
    assert (checkpoints / "last").read_text().strip() == "epoch_0001_step_000003"
    assert sorted(p.name for p in checkpoints.iterdir() if p.is_dir()) == ["epoch_0000", "epoch_0001_step_000003"]
    assert not (run_dir / RunDirectory.LOCK).exists()  # released on the way out
    assert [record["epoch"] for record in read_log(run_dir)] == [0]

    resumed = Trainer(config("interrupted"), SINGLE_CPU, resume=run_dir)
    assert (resumed.start_epoch, resumed.start_step) == (1, 4)
    resumed.fit()
    assert_same_run(run_dir, tmp_path / "synthetic" / "straight", steps=12)
    # The step checkpoint was only a resume point: gone once the epoch's own checkpoint exists.
    assert sorted(p.name for p in checkpoints.iterdir() if p.is_dir()) == ["epoch_0000", "epoch_0001"]


def test_killed_training_process_resumes_exactly(data_root, tmp_path, caplog):
    """A real ``wavecl train`` is killed with SIGKILL once it has written a step checkpoint; ``wavecl train
    --resume RUN`` (no -c) takes over its stale lock and finishes the run as if it had never stopped."""
    argv = ["train", "-c", str(TINY_CONFIG), "--device", "cpu", "--data-root", str(data_root), "--epochs", "1"]
    argv += ["--set", "train.max_steps_per_epoch=8", "--set", "train.checkpoint_every_steps=1"]
    argv += ["--set", "train.batch_size=1"]
    for key, value in SIZE_OVERRIDES.items():
        argv += ["--set", f"{key}={value}"]
    cli_main([*argv, "--output-dir", str(tmp_path / "straight")])

    killed_output = tmp_path / "killed"
    run_dir = killed_output / "synthetic" / "tiny"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "wavecl", *argv, "--output-dir", str(killed_output)]
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and process.poll() is None:
            last = run_dir / "checkpoints" / "last"
            if last.is_file() and last.read_text().strip() >= "epoch_0000_step_000002":
                break
            time.sleep(0.02)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    stopped_at = (run_dir / "checkpoints" / "last").read_text().strip()
    assert stopped_at.startswith("epoch_0000_step_"), f"the run was not killed mid-epoch: {stopped_at}"
    assert (run_dir / RunDirectory.LOCK).is_file()  # SIGKILL left it behind

    with caplog.at_level(logging.INFO, logger="wavecl.train"):
        cli_main(["train", "--resume", str(run_dir), "--device", "cpu"])
    assert "no longer runs" in caplog.text
    step = int(stopped_at.rsplit("_", 1)[1])
    assert f"continuing with epoch 0, step {step + 1} (numbered from 0)" in caplog.text
    assert_same_run(run_dir, tmp_path / "straight" / "synthetic" / "tiny", steps=8)
    info = json.loads((run_dir / "run_info.json").read_text())
    assert info["command"][1:3] == ["train", "-c"]  # the original command is kept
    assert len(info["resumes"]) == 1 and info["resumes"][0]["continues_at"] == {"epoch": 0, "step": step + 1}


# ------------------------------------------------------------------------- the run's own settings


def test_resume_writes_into_the_run_with_its_config_and_applies_explicit_changes(
    data_root, tmp_path, monkeypatch, capsys, caplog
):
    """Run created with -c tiny.yaml and flags; resumed from another working directory with -c tiny.yaml
    alone (refused: the flags' fields differ), then with no -c and a new --epochs and --lr-drop: the
    resumed epoch lands in the run, and its learning rate is the new schedule's."""
    monkeypatch.chdir(tmp_path)
    script_evaluation(monkeypatch, [0.1, 0.2, 0.3, 0.4, 0.5])
    output_dir = tmp_path / "elsewhere"
    argv = ["train", "-c", str(TINY_CONFIG), "--device", "cpu", "--data-root", str(data_root)]
    argv += ["--output-dir", str(output_dir), "--set", "train.max_steps_per_epoch=2"]
    for key, value in SIZE_OVERRIDES.items():
        argv += ["--set", f"{key}={value}"]
    cli_main(argv)
    run_dir = output_dir / "synthetic" / "tiny"
    recorded = load_config(run_dir / "config.yaml")
    assert recorded.train.lr_drop == [20] and recorded.train.epochs == 2

    with pytest.raises(SystemExit) as exit_info:
        cli_main(["train", "-c", str(TINY_CONFIG), "--resume", str(run_dir), "--epochs", "3"])
    assert exit_info.value.code == 2
    message = capsys.readouterr().err.replace("\n", "")
    for field in ("data.root", "data.train_short_size", "train.output_dir", "train.max_steps_per_epoch"):
        assert field in message
    assert "train.epochs" not in message  # set explicitly: not a disagreement

    with caplog.at_level(logging.INFO, logger="wavecl.train"):
        cli_main(["train", "--resume", str(run_dir), "--device", "cpu", "--epochs", "3", "--lr-drop", "1"])
    assert not (tmp_path / "runs").exists()  # nothing went to a directory derived from a config
    assert [record["epoch"] for record in read_log(run_dir)] == [0, 1, 2]
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir() if p.is_dir()) == [
        "epoch_0000",
        "epoch_0001",
        "epoch_0002",
    ]
    config = load_config(run_dir / "config.yaml")
    assert (config.train.epochs, config.train.lr_drop) == (3, [1])  # recorded ...
    learning_rates = read_scalars(run_dir / "tensorboard")["lr/rest"]
    base = recorded.train.lr
    assert learning_rates == pytest.approx({0: base, 1: base, 2: base, 3: base, 4: base * 0.1, 5: base * 0.1})
    state = load_training_state(run_dir)  # ... and what ran: the scheduler holds the new milestone
    assert list(state["scheduler"]["milestones"]) == [1]
    assert "train.lr_drop" in caplog.text
    info = json.loads((run_dir / "run_info.json").read_text())
    assert info["explicit_overrides"]["train.output_dir"] == str(output_dir)  # the start's record is kept
    (resume,) = info["resumes"]
    assert resume["changed"] == {"train.epochs": [2, 3], "train.lr_drop": [[20], [1]]}
    assert resume["explicit_overrides"] == {"train.epochs": 3, "train.lr_drop": [1]}

    # Evaluating the run: its own config when no -c is given; a -c with another network is refused.
    cli_main(["evaluate", "--checkpoint", str(run_dir), "--device", "cpu"])
    evaluation = run_dir / "evaluation" / latest_checkpoint(run_dir).name  # named after the checkpoint evaluated
    result = json.loads((evaluation / "metrics.json").read_text())
    assert result["metrics"] == {"J&F": 0.4} and result["config"] == str(run_dir / "config.yaml")
    other = tmp_path / "other.yaml"
    other.write_text(config.to_yaml().replace("num_queries: 5", "num_queries: 7"))
    with pytest.raises(SystemExit):
        cli_main(["evaluate", "-c", str(other), "--checkpoint", str(run_dir), "--device", "cpu"])
    assert "model.num_queries: 5 -> 7" in capsys.readouterr().err.replace("\n", "")
    # Fields that shape training only may differ (a Ref-DAVIS17 config evaluating a finetune that trained
    # its text encoder): the run's network is evaluated.
    training_only = dataclasses.replace(
        config.model, freeze_text_encoder=not config.model.freeze_text_encoder, dropout=0.3, backbone_drop_path=0.0
    )
    other.write_text(dataclasses.replace(config, model=training_only).to_yaml())
    cli_main(["evaluate", "-c", str(other), "--checkpoint", str(run_dir), "--device", "cpu"])
    assert json.loads((evaluation / "metrics.json").read_text())["metrics"] == {"J&F": 0.5}


def test_mid_epoch_resume_refuses_a_change_of_position(data_root, tmp_path, monkeypatch):
    script_evaluation(monkeypatch, [])
    config = tiny_config(
        data_root, tmp_path, "position", train__epochs=1, train__max_steps_per_epoch=4, train__checkpoint_every_steps=2
    )
    trainer = Trainer(config, SINGLE_CPU)
    with monkeypatch.context() as patch:
        interrupt_at_call(patch, 3)
        with pytest.raises(Interrupted):
            trainer.fit()
    changed = tiny_config(
        data_root, tmp_path, "position", train__epochs=1, train__max_steps_per_epoch=4, train__batch_size=1
    )
    with pytest.raises(RunDirectoryError, match=r"inside epoch 0 \(after step 1\).*train\.batch_size: 2 -> 1"):
        Trainer(changed, SINGLE_CPU, resume=trainer.run_dir)
    assert not (trainer.run_dir / RunDirectory.LOCK).exists()  # a refused resume releases the directory
    with pytest.raises(RunDirectoryError, match=r"train\.pretrained_weights \(--pretrained\)"):
        Trainer(apply_overrides(config, {"train.pretrained_weights": "elsewhere"}), SINGLE_CPU, resume=trainer.run_dir)
    with pytest.raises(ValueError, match="train.checkpoint_every_steps must be a positive multiple"):
        Trainer(
            tiny_config(data_root, tmp_path, "bad", train__checkpoint_every_steps=3, train__grad_accum_steps=2),
            SINGLE_CPU,
        )


def test_second_trainer_and_second_fresh_run_are_refused(data_root, tmp_path, monkeypatch):
    script_evaluation(monkeypatch, [0.5])
    config = tiny_config(data_root, tmp_path, "owned", train__epochs=1, train__max_steps_per_epoch=1)
    first = Trainer(config, SINGLE_CPU)
    with pytest.raises(RunDirectoryError, match=rf"in use by process {os.getpid()}"):
        Trainer(config, SINGLE_CPU)
    first.fit()
    with pytest.raises(RunDirectoryError, match=r"already holds a run \(log\.jsonl, checkpoints/\).*--resume"):
        Trainer(config, SINGLE_CPU)
    assert [record["epoch"] for record in read_log(first.run_dir)] == [0]  # nothing was appended


# --------------------------------------------------------------------- an epoch left unfinished


def test_epoch_whose_evaluation_crashed_is_completed_on_resume(data_root, tmp_path, monkeypatch):
    """Evaluation crashes after epoch 0's checkpoint; the resume evaluates epoch 0, writes its log line
    (training totals identical to an uninterrupted run's) and lets it compete for ``best``."""

    def config(version: str) -> Config:
        return tiny_config(data_root, tmp_path, version)

    script_evaluation(monkeypatch, [0.9, 0.4])
    Trainer(config("straight"), SINGLE_CPU).fit()

    calls = script_evaluation(monkeypatch, [RuntimeError("evaluation crashed"), 0.9, 0.4])
    crashed = Trainer(config("crashed"), SINGLE_CPU)
    with pytest.raises(RuntimeError, match="evaluation crashed"):
        crashed.fit()
    assert not (crashed.run_dir / "log.jsonl").exists()
    assert (crashed.run_dir / "checkpoints" / "last").read_text().strip() == "epoch_0000"

    resumed = Trainer(config("crashed"), SINGLE_CPU, resume=crashed.run_dir)
    assert resumed.start_epoch == 1
    resumed.fit()
    assert len(calls) == 3  # the crashed one, epoch 0 again, epoch 1
    records = read_log(crashed.run_dir)
    assert [(record["epoch"], record["eval_J&F"]) for record in records] == [(0, 0.9), (1, 0.4)]
    straight = read_log(tmp_path / "synthetic" / "straight")
    for record, expected in zip(records, straight):
        assert {k: v for k, v in record.items() if k != "train_seconds"} == {
            k: v for k, v in expected.items() if k != "train_seconds"
        }
    assert (crashed.run_dir / "checkpoints" / "best").read_text().strip() == "epoch_0000"


# -------------------------------------------------------------------------------- checkpoint disk


def test_frozen_text_encoder_is_stored_once_and_every_reader_loads_it(data_root, tmp_path, monkeypatch):
    """The frozen MiniLM encoder is shifted by 0.5 before training (it then stays constant), so a reader
    that silently kept the packaged encoder weights would differ."""
    script_evaluation(monkeypatch, [0.7, 0.2, 0.3, 0.5])
    config = tiny_config(
        data_root, tmp_path, "frozen", train__epochs=3, train__max_steps_per_epoch=1, train__keep_checkpoints=1
    )
    trainer = Trainer(config, SINGLE_CPU)
    frozen = set(trainer.frozen_names)
    assert frozen and all(name.startswith("text_encoder.") for name in frozen)
    packaged = {name: tensor.clone() for name, tensor in trainer.model.state_dict().items() if name in frozen}
    with torch.no_grad():
        for parameter in trainer.model.text_encoder.parameters():
            parameter.add_(0.5)
    trainer.fit()
    state = trainer.model.state_dict()
    assert all(torch.equal(state[name], packaged[name] + 0.5) for name in frozen)

    def nbytes(names) -> int:
        return sum(state[name].numel() * state[name].element_size() for name in names)

    frozen_bytes, other_bytes = nbytes(frozen), nbytes(set(state) - frozen)
    trainable = [p for p in trainer.model.parameters() if p.requires_grad]
    optimizer_bytes = 2 * sum(p.numel() * p.element_size() for p in trainable)  # AdamW's two moments
    assert frozen_bytes > other_bytes + optimizer_bytes  # a frozen copy per epoch would dominate

    checkpoints = trainer.run_dir / "checkpoints"
    (frozen_file,) = checkpoints.glob("frozen-*.safetensors")
    assert frozen_bytes < frozen_file.stat().st_size < frozen_bytes + 256 * 1024
    # keep_checkpoints=1: the best (epoch 0) and the last (epoch 2); a folder holds no frozen tensor.
    assert sorted(p.name for p in checkpoints.iterdir() if p.is_dir()) == ["epoch_0000", "epoch_0002"]
    slack = 1024 * 1024  # file headers and per-tensor records (~600 tensors), step counters, random states
    for folder in ("epoch_0000", "epoch_0002"):
        size = sum(p.stat().st_size for p in (checkpoints / folder).iterdir())
        assert other_bytes + optimizer_bytes <= size < other_bytes + optimizer_bytes + slack, folder
    total = sum(p.stat().st_size for p in checkpoints.rglob("*") if p.is_file())
    assert total < frozen_bytes + 2 * (other_bytes + optimizer_bytes + slack)

    # Readers: the weights as files, from_pretrained, evaluate, --pretrained, resume.
    for name, tensor in read_state_dict(checkpoints / "epoch_0002" / "model.safetensors").items():
        assert torch.equal(tensor, state[name]), name
    loaded = WaveCL.from_pretrained(trainer.run_dir).state_dict()
    assert all(torch.equal(loaded[name], state[name]) for name in frozen)
    cli_main(["evaluate", "-c", str(trainer.run_dir / "config.yaml"), "--checkpoint", str(trainer.run_dir)])
    evaluation = trainer.run_dir / "evaluation" / latest_checkpoint(trainer.run_dir).name
    assert json.loads((evaluation / "metrics.json").read_text())["metrics"] == {"J&F": 0.5}
    finetune = tiny_config(
        data_root, tmp_path, "finetune", train__pretrained_weights=str(checkpoints / "epoch_0000"), train__epochs=1
    )
    finetuned = Trainer(finetune, SINGLE_CPU)
    finetuned.close()
    assert all(torch.equal(finetuned.model.state_dict()[name], state[name]) for name in frozen)
    resumed = Trainer(apply_epochs(config, 4), SINGLE_CPU, resume=trainer.run_dir)
    resumed.close()
    assert all(torch.equal(resumed.model.state_dict()[name], state[name]) for name in frozen)


def apply_epochs(config: Config, epochs: int) -> Config:
    return apply_overrides(config, {"train.epochs": epochs})


# --------------------------------------------------------------------------------- epoch numbering


def test_one_epoch_numbering_everywhere(data_root, tmp_path, capfd, caplog):
    config = tiny_config(data_root, tmp_path, "numbering", train__epochs=1, train__max_steps_per_epoch=1)
    with caplog.at_level(logging.INFO, logger="wavecl.train"):
        Trainer(config, SINGLE_CPU).fit()
        Trainer(apply_epochs(config, 2), SINGLE_CPU, resume=tmp_path / "synthetic" / "numbering").fit()
    bars = capfd.readouterr().err
    run_dir = tmp_path / "synthetic" / "numbering"
    assert "epoch 0 [0-0]" in bars and "epoch 1 [0-1]" in bars and "epoch 2" not in bars
    assert [record["epoch"] for record in read_log(run_dir)] == [0, 1]
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir() if p.is_dir()) == ["epoch_0000", "epoch_0001"]
    assert sorted(p.name for p in (run_dir / "evaluation").iterdir()) == ["epoch_0000", "epoch_0001"]
    assert "continuing with epoch 1, step 0 (numbered from 0)" in caplog.text
    assert "epoch 0: {" in caplog.text and "epoch 1: {" in caplog.text
