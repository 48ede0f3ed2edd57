"""The trainer's guarantees on the tiny model and a few synthetic clips (one CPU process).

- resume continues bit for bit (losses of every step and final weights), with and without loader
  workers, and only because the random streams are restored;
- a non-finite loss stops the run before anything is written (``stop``) or skips the batch (``skip``);
- the run directory holds what docs/training.md#run-directory lists, written atomically, and ``best`` follows the
  evaluator's primary metric, also across a resume;
- ``--pretrained`` re-initialises the class heads and loads everything else;
- a checkpoint that would run code is refused;
- an unreadable training sample is skipped, logged and counted in ``log.jsonl``.

Tests run torch with one intra-op thread: the two CPU cores here are shared with other jobs, and
oversubscribed OpenMP threads make a training step about ten times slower.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import os
import re
import shutil
import stat
from pathlib import Path

import pytest
import torch
from support import (
    SINGLE_CPU,
    SIZE_OVERRIDES,
    TINY_CONFIG,
    read_log,
    read_scalars,
    skip_evaluation,
    tiny_config,
    tiny_train_arguments,
    write_dataset,
)

import wavecl.evaluation.protocols as evaluation_protocols
import wavecl.training.restore as restore_module
from wavecl.atomic import write_text
from wavecl.checkpoint import CheckpointError, save_checkpoint
from wavecl.cli import main as cli_main
from wavecl.config import Config, apply_overrides, load_config
from wavecl.evaluation.protocols import evaluate_model
from wavecl.model.output import NonFiniteOutputError
from wavecl.model.wavecl import build_model
from wavecl.model.weights import CheckpointMismatchError
from wavecl.run_directory import RunDirectory
from wavecl.testing.checkpoints import original_state_dict
from wavecl.training.recorder import read_best_metric
from wavecl.training.trainer import NonFiniteLossError, Trainer, build_criterion

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("synthetic"))


def pointer(path: Path) -> str:
    return path.read_text().strip()


# ----------------------------------------------------------------------------------------- resume


@pytest.mark.parametrize("num_workers", [0, 2])
def test_resume_reproduces_the_uninterrupted_run(data_root, tmp_path, monkeypatch, num_workers):
    """Two epochs in one go == one epoch, a new Trainer resuming the run directory, then epoch two.

    Dropout, drop path and flips are on, and the held-out evaluation runs between the epochs of the
    uninterrupted run only, so equality needs the model, optimizer, scheduler and every random stream
    restored, and evaluation must not consume training randomness. The control at the end resumes
    without restoring the random streams and must differ, so the comparison is sensitive.
    """

    def config(version: str, epochs: int) -> Config:
        return tiny_config(data_root, tmp_path, version, train__epochs=epochs, data__num_workers=num_workers)

    straight = Trainer(config("straight", 2), SINGLE_CPU)
    straight.fit()

    first = Trainer(config("resumed", 1), SINGLE_CPU)
    first.fit()
    copy = tmp_path / "copy_of_resumed"
    shutil.copytree(first.run_dir, copy)
    resumed = Trainer(config("resumed", 2), SINGLE_CPU, resume=first.run_dir)
    assert resumed.start_epoch == 1
    resumed.fit()

    expected, actual = read_scalars(straight.run_dir / "tensorboard"), read_scalars(resumed.run_dir / "tensorboard")
    train_tags = [tag for tag in expected if tag.startswith("train/")]
    assert "train/loss" in train_tags and len(train_tags) > 10
    for tag in train_tags:
        assert sorted(actual[tag]) == sorted(expected[tag]) == [0, 1, 2, 3], tag
        assert actual[tag] == expected[tag], tag  # float32 values, bit for bit
    assert read_log(resumed.run_dir)[1]["train_loss"] == read_log(straight.run_dir)[1]["train_loss"]
    straight_weights, resumed_weights = straight.model.state_dict(), resumed.model.state_dict()
    assert straight_weights.keys() == resumed_weights.keys()
    for name, tensor in straight_weights.items():
        assert torch.equal(resumed_weights[name], tensor), name

    monkeypatch.setattr(restore_module, "restore_rng_state", lambda state: None)
    control = Trainer(config("resumed", 2), SINGLE_CPU, resume=copy / "checkpoints" / "epoch_0000")
    assert control.run_dir == copy  # a resume writes into the run it continues, wherever that is
    control.fit()
    control_losses = read_scalars(copy / "tensorboard")["train/loss"]
    assert sorted(control_losses) == [0, 1, 2, 3]  # epoch 0 came with the copy
    assert all(control_losses[step] != expected["train/loss"][step] for step in (2, 3))


# ------------------------------------------------------------------------------------ NaN guard


def poison_loss_term(trainer: Trainer, term: str, call: int) -> None:
    """Make loss ``term`` NaN in the ``call``-th criterion evaluation (0-based), keeping its graph."""
    original = trainer.criterion.forward
    calls = itertools.count()

    def forward(outputs, targets):
        losses = original(outputs, targets)
        if next(calls) == call:
            losses = {**losses, term: losses[term] * float("nan")}
        return losses

    trainer.criterion.forward = forward


def test_nonfinite_loss_stops_before_the_epoch_is_saved(data_root, tmp_path):
    config = tiny_config(data_root, tmp_path, "stop", train__nonfinite_loss="stop", train__eval_interval=100)
    trainer = Trainer(config, SINGLE_CPU)
    poison_loss_term(trainer, "loss_giou_0", call=3)  # epoch 1, step 1
    with pytest.raises(NonFiniteLossError, match=r"epoch 1 step 1: \['loss_giou_0'\]"):
        trainer.fit()
    checkpoints = trainer.run_dir / "checkpoints"
    assert sorted(p.name for p in checkpoints.iterdir() if not p.name.startswith("frozen-")) == ["epoch_0000", "last"]
    assert pointer(checkpoints / "last") == "epoch_0000"
    assert [record["epoch"] for record in read_log(trainer.run_dir)] == [0]


def test_nonfinite_loss_skips_the_batch(data_root, tmp_path, monkeypatch, caplog):
    skip_evaluation(monkeypatch)
    config = tiny_config(
        data_root, tmp_path, "skip", train__nonfinite_loss="skip", train__epochs=1, train__max_steps_per_epoch=3
    )
    trainer = Trainer(config, SINGLE_CPU)
    initial = {name: p.detach().clone() for name, p in trainer.model.named_parameters()}
    poison_loss_term(trainer, "loss_dice", call=1)
    with caplog.at_level(logging.WARNING, logger="wavecl.train"):
        trainer.fit()
    assert "epoch 0 step 1: ['loss_dice']" in caplog.text

    (record,) = read_log(trainer.run_dir)
    assert record["train_skipped_batches"] == 1
    losses = read_scalars(trainer.run_dir / "tensorboard")["train/loss"]
    assert sorted(losses) == [0, 2]  # the skipped step is not logged ...
    assert record["train_loss"] == pytest.approx(sum(losses.values()) / 2, rel=1e-6)  # ... nor averaged
    assert all(state["step"] == 2 for state in trainer.optimizer.state.values())  # two updates, not three
    for name, parameter in trainer.model.named_parameters():
        assert torch.isfinite(parameter).all(), name
    assert any(not torch.equal(p, initial[name]) for name, p in trainer.model.named_parameters())


def diverging_config(data_root: Path, output_dir: Path, policy: str) -> Config:
    """Learning rate 1e4 without clipping: after one update the model outputs NaN."""
    return tiny_config(
        data_root,
        output_dir,
        policy,
        train__nonfinite_loss=policy,
        train__lr=1e4,
        train__lr_backbone=1e4,
        train__text_encoder_lr=1e4,
        train__clip_max_norm=0.0,
        train__epochs=1,
        train__max_steps_per_epoch=3,
    )


def test_diverging_run_stops_naming_the_outputs_and_costs_not_in_the_matcher(data_root, tmp_path, monkeypatch):
    """Before, scipy's assignment failed on the NaN costs ("matrix contains invalid numeric entries")."""
    skip_evaluation(monkeypatch)
    trainer = Trainer(diverging_config(data_root, tmp_path, "stop"), SINGLE_CPU)
    with pytest.raises(NonFiniteLossError, match=r"epoch 0 step 1: \['pred_masks', ") as caught:
        trainer.fit()
    named = str(caught.value)
    for name in ("pred_boxes", "aux_outputs[0].pred_cls", "cost_giou", "cost_class"):
        assert f"'{name}'" in named
    assert not (trainer.run_dir / "checkpoints").exists(), "the epoch was not saved"


def test_diverging_run_skips_its_steps(data_root, tmp_path, monkeypatch, caplog):
    skip_evaluation(monkeypatch)
    trainer = Trainer(diverging_config(data_root, tmp_path, "skip"), SINGLE_CPU)
    with caplog.at_level(logging.WARNING, logger="wavecl.train"):
        trainer.fit()
    assert "epoch 0 step 1: ['pred_masks'" in caplog.text and "epoch 0 step 2: ['pred_masks'" in caplog.text
    (record,) = read_log(trainer.run_dir)
    assert record["train_skipped_batches"] == 2
    assert all(state["step"] == 1 for state in trainer.optimizer.state.values()), "only the first step updated"


def test_evaluation_refuses_nonfinite_outputs_naming_tensor_and_sample(data_root, tmp_path):
    """Thresholded NaN logits would pass for empty masks and score a plausible J&F."""
    config = tiny_config(data_root, tmp_path, "eval")
    model = build_model(config.model)
    with torch.no_grad():
        for head in model.class_embed:
            head.bias.fill_(float("nan"))
    named = r"\['pred_cls'\] hold NaN .* for the samples \[ExpressionMetadata\(video_id="
    with pytest.raises(NonFiniteOutputError, match=named):
        evaluate_model(model, config, tmp_path / "predictions", SINGLE_CPU)


# -------------------------------------------------------------------------------- run directory


def test_cli_run_directory_contents(data_root, tmp_path):
    """``wavecl train`` writes config, run info, log, TensorBoard scalars and checkpoints; no temporaries."""
    output_dir = tmp_path / "runs"
    sets = {**SIZE_OVERRIDES, "train.max_steps_per_epoch": 2}
    cli_main(["train", *tiny_train_arguments(2, output_dir, data_root, sets)])

    explicit = {"train.epochs": 2, "train.output_dir": str(output_dir), "data.root": str(data_root), **sets}
    expected_config = apply_overrides(load_config(TINY_CONFIG), explicit)
    run_dir = output_dir / "synthetic" / "tiny"
    assert load_config(run_dir / "config.yaml") == expected_config

    info = json.loads((run_dir / "run_info.json").read_text())
    assert info["explicit_overrides"] == explicit
    assert info["resumes"] == []
    assert info["world_size"] == 1
    assert "git_revision" in info
    assert info["git_revision"] is None or re.fullmatch(r"[0-9a-f]{40}", info["git_revision"])

    loss_terms = sorted(build_criterion(expected_config).weight_dict)
    assert len(loss_terms) == 12  # 6 terms x (final layer + 1 auxiliary layer) with dec_layers 2
    records = read_log(run_dir)
    assert [record["epoch"] for record in records] == [0, 1]
    for record in records:
        assert {f"train_{term}" for term in loss_terms} | {"train_loss", "eval_J", "eval_F", "eval_J&F"} <= set(record)
        assert record["train_skipped_batches"] == 0 and record["train_bad_samples"] == 0

    scalars = read_scalars(run_dir / "tensorboard")
    for tag in [f"train/{term}" for term in loss_terms] + ["train/loss"]:
        assert sorted(scalars[tag]) == [0, 1, 2, 3], tag
    learning_rates = {"lr/rest": 1e-4, "lr/backbone": 1e-5, "lr/text_encoder": 5e-6}  # configs/tiny.yaml
    for tag, lr in learning_rates.items():
        assert scalars[tag] == pytest.approx({step: lr for step in range(4)}), tag
    assert scalars["eval/J&F"] == pytest.approx({0: records[0]["eval_J&F"], 1: records[1]["eval_J&F"]})
    assert len(list((run_dir / "tensorboard").iterdir())) == 1

    checkpoints = run_dir / "checkpoints"
    (frozen,) = checkpoints.glob("frozen-*.safetensors")  # the frozen text encoder, once per run
    names = sorted(p.name for p in checkpoints.iterdir() if p != frozen)
    assert names == ["best", "best.json", "epoch_0000", "epoch_0001", "last"]
    for epoch in ("epoch_0000", "epoch_0001"):
        assert sorted(p.name for p in (checkpoints / epoch).iterdir()) == ["model.safetensors", "state.pt"]
    assert pointer(checkpoints / "last") == "epoch_0001"
    best_epoch = max(records, key=lambda record: record["eval_J&F"])["epoch"]
    assert pointer(checkpoints / "best") == f"epoch_{best_epoch:04d}"
    best = json.loads((checkpoints / "best.json").read_text())
    assert best == {"metric": "J&F", "value": records[best_epoch]["eval_J&F"], "epoch": best_epoch}
    leftovers = [p for p in run_dir.rglob("*") if p.name.startswith(".") or p.suffix == ".tmp"]
    assert leftovers == []
    assert not (run_dir / "train.lock").exists()
    # What the run holds is what RunDirectory names, and nothing else.
    top = {"config.yaml", "run_info.json", "log.jsonl", "tensorboard", "checkpoints", "evaluation"}
    assert {p.name for p in run_dir.iterdir()} == top
    run = RunDirectory(run_dir)
    assert {run.config, run.run_info, run.log, run.tensorboard, run.checkpoints, run.evaluations} == {
        run_dir / name for name in top
    }
    assert (run.last_pointer, run.best_pointer, run.best_record) == (
        checkpoints / "last",
        checkpoints / "best",
        checkpoints / "best.json",
    )
    assert sorted(p.name for p in run.evaluations.iterdir()) == ["epoch_0000", "epoch_0001"]
    assert (run.evaluation("epoch_0001") / "metrics.json").is_file()
    # Every file has the mode of a new file (safetensors alone would write 0600).
    umask = os.umask(0)
    os.umask(umask)
    modes = {str(p.relative_to(run_dir)): stat.S_IMODE(p.stat().st_mode) for p in run_dir.rglob("*") if p.is_file()}
    assert modes == dict.fromkeys(modes, 0o666 & ~umask)


def test_tensorboard_continues_when_a_resume_changes_the_steps_per_epoch(data_root, tmp_path, monkeypatch):
    """A resume on another number of GPUs changes the steps per epoch, as ``train.max_steps_per_epoch``
    does here (3 steps in epoch 0, then 2): the resumed steps follow the 3 logged ones (steps 3-4), and
    the steps logged before the resume keep their values (none purged, none overwritten)."""
    skip_evaluation(monkeypatch)
    first = Trainer(tiny_config(data_root, tmp_path, "run", train__epochs=1, train__max_steps_per_epoch=3), SINGLE_CPU)
    first.fit()
    before = read_scalars(first.run_dir / "tensorboard")["train/loss"]
    assert sorted(before) == [0, 1, 2]

    resumed = Trainer(
        tiny_config(data_root, tmp_path, "run", train__max_steps_per_epoch=2), SINGLE_CPU, resume=first.run_dir
    )
    assert resumed.start_epoch == 1 and resumed.steps_per_epoch == 2
    resumed.fit()
    after = read_scalars(first.run_dir / "tensorboard")["train/loss"]
    assert sorted(after) == [0, 1, 2, 3, 4]
    assert {step: after[step] for step in before} == before
    epoch_1 = read_log(first.run_dir)[1]["train_loss"]
    assert math.isclose((after[3] + after[4]) / 2, epoch_1, rel_tol=1e-5)


def test_best_follows_the_primary_metric_across_a_resume(data_root, tmp_path, monkeypatch):
    """``best`` is the epoch with the highest evaluator primary metric (J&F for synthetic data), not the
    lowest training loss and not the last epoch, and a resumed run still knows the best so far.

    The evaluation returns scripted J&F values 0.2, 0.6, 0.4 for epochs 0, 1, 2; epochs 0-1 run, then
    a new Trainer resumes for epoch 2, whose 0.4 beats epoch 0 but not epoch 1.
    """
    scripted = iter([0.2, 0.6, 0.4])
    monkeypatch.setattr(evaluation_protocols, "run_evaluation", lambda *args, **kwargs: {"J&F": next(scripted)})

    def config(epochs: int) -> Config:
        return tiny_config(data_root, tmp_path, "best", train__epochs=epochs, train__max_steps_per_epoch=1)

    first = Trainer(config(2), SINGLE_CPU)
    first.fit()
    checkpoints = first.run_dir / "checkpoints"
    assert pointer(checkpoints / "best") == "epoch_0001"

    resumed = Trainer(config(3), SINGLE_CPU, resume=first.run_dir)
    resumed.fit()
    records = read_log(first.run_dir)
    assert [record["eval_J&F"] for record in records] == [0.2, 0.6, 0.4]
    assert pointer(checkpoints / "last") == "epoch_0002"
    assert pointer(checkpoints / "best") == "epoch_0001"


# ---------------------------------------------------------------------------- pretrained weights


@pytest.mark.parametrize("layout", ["wavecl", "original", "ddp"])
def test_pretrained_reinitialises_class_heads_and_loads_the_rest(data_root, tmp_path, caplog, layout):
    """A checkpoint of the original repository (before: its 25 backbone tensors stayed at their initial
    values) or one saved under DDP (before: nothing loaded) fills every tensor but the class heads."""
    config = tiny_config(data_root, tmp_path, "finetune")
    torch.manual_seed(7)
    source = {
        name: tensor + (0.5 if tensor.is_floating_point() else 1)
        for name, tensor in build_model(config.model).state_dict().items()
    }
    for name in source:
        if name.startswith("class_embed.") and name.endswith(".bias"):
            source[name] = torch.full_like(source[name], 3.0)
    if layout == "wavecl":
        save_checkpoint(tmp_path / "pretrain" / "checkpoints", 4, source, {"epoch": 4})
        weights = tmp_path / "pretrain"
    else:
        weights = tmp_path / "pretrain.pth.tar"
        state = original_state_dict(source) if layout == "original" else {f"module.{k}": v for k, v in source.items()}
        torch.save({"model_state_dict": state, "epoch": 4}, weights)

    torch.manual_seed(config.train.seed)
    fresh = build_model(config.model).state_dict()  # what the trainer builds before loading
    finetune = apply_overrides(config, {"train.pretrained_weights": str(weights)})
    with caplog.at_level(logging.INFO, logger="wavecl.train"):
        trainer = Trainer(finetune, SINGLE_CPU)
    loaded = trainer.model.state_dict()

    class_keys = sorted(name for name in loaded if name.startswith("class_embed."))
    assert class_keys == [f"class_embed.{layer}.{kind}" for layer in (0, 1) for kind in ("bias", "weight")]
    for name in class_keys:
        assert torch.equal(loaded[name], fresh[name]), name
        if name.endswith(".bias"):
            assert torch.allclose(loaded[name], torch.full_like(loaded[name], -math.log(99))), name
    assert sum(name.startswith("backbone.") for name in loaded) > 20
    for name, tensor in loaded.items():
        if name not in class_keys:
            assert torch.equal(tensor, source[name]), name
    assert f"{len(loaded) - 4} tensors loaded, 4 re-initialised (class_embed.)" in caplog.text


def test_pretrained_refuses_weights_that_do_not_fit_naming_keys_and_cause(data_root, tmp_path):
    config = tiny_config(data_root, tmp_path, "finetune")
    source = build_model(config.model).state_dict()
    del source["transformer.level_embed"]
    source["obsolete_head.weight"] = torch.ones(2, 2)
    save_checkpoint(tmp_path / "partial" / "checkpoints", 0, source, {"epoch": 0})
    finetune = apply_overrides(config, {"train.pretrained_weights": str(tmp_path / "partial")})
    with pytest.raises(CheckpointMismatchError, match=r"(?s)missing: 1 key.*transformer\.level_embed.*obsolete_head"):
        Trainer(finetune, SINGLE_CPU)
    assert not (tmp_path / "synthetic").exists(), "nothing started"

    wrapped = {f"model.{key}": value for key, value in build_model(config.model).state_dict().items()}
    torch.save(wrapped, tmp_path / "wrapped.pt")
    finetune = apply_overrides(config, {"train.pretrained_weights": str(tmp_path / "wrapped.pt")})
    with pytest.raises(CheckpointMismatchError, match="likely cause: all unexpected keys carry the prefix 'model.'"):
        Trainer(finetune, SINGLE_CPU)


# ------------------------------------------------------------------------------ unsafe checkpoints


class CodeRunningPayload:
    """Unpickling this runs ``touch <marker>`` (as in tests/test_checkpoint.py)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_checkpoints_that_would_run_code_are_refused(data_root, tmp_path):
    config = tiny_config(data_root, tmp_path, "evil")
    marker = tmp_path / "code-ran"
    checkpoints = tmp_path / "evil_run" / "checkpoints"
    paths = save_checkpoint(checkpoints, 0, build_model(config.model).state_dict(), {"epoch": 0})
    write_text(checkpoints.parent / "config.yaml", config.to_yaml())
    torch.save({"epoch": 0, "rng": CodeRunningPayload(marker)}, paths.state)
    with pytest.raises(CheckpointError, match="state.pt"):
        Trainer(config, SINGLE_CPU, resume=tmp_path / "evil_run")

    reference = tmp_path / "evil.pth.tar"
    torch.save({"model_state_dict": CodeRunningPayload(marker)}, reference)
    with pytest.raises(CheckpointError, match=r"evil\.pth\.tar"):
        Trainer(apply_overrides(config, {"train.pretrained_weights": str(reference)}), SINGLE_CPU)
    assert not marker.exists()


# ---------------------------------------------------------------------------------- bad samples


def test_unreadable_sample_is_skipped_logged_and_counted(tmp_path, monkeypatch, caplog):
    """A corrupt JPEG in the first clip the sampler visits: the run finishes, and ``train_bad_samples``
    equals the number of failed loads, counted independently from the sampler order (a failed index
    is replaced by the next one, which fails too while it belongs to the same video)."""
    skip_evaluation(monkeypatch)
    data_root = write_dataset(tmp_path / "data")
    config = tiny_config(data_root, tmp_path / "runs", "bad", train__epochs=1, train__max_steps_per_epoch=3)
    trainer = Trainer(config, SINGLE_CPU)
    samples = trainer.train_set.dataset.samples
    trainer.sampler.set_epoch(0)
    visited = list(trainer.sampler)[: 3 * config.train.batch_size]
    broken_video = samples[visited[0]].video_id
    broken_file = data_root / "train" / "JPEGImages" / broken_video / "00000.jpg"
    broken_file.write_bytes(b"not a JPEG")

    def failures_from(index: int) -> int:
        count = 0
        while samples[(index + count) % len(samples)].video_id == broken_video:
            count += 1
        return count

    expected = sum(failures_from(index) for index in visited)
    assert expected >= 1
    with caplog.at_level(logging.WARNING, logger="wavecl.data.robust"):
        trainer.fit()
    (record,) = read_log(trainer.run_dir)
    assert record["train_bad_samples"] == expected
    assert math.isfinite(record["train_loss"])
    assert broken_video in caplog.text
    assert pointer(trainer.run_dir / "checkpoints" / "last") == "epoch_0000"


@pytest.mark.parametrize(
    "text,problem",
    [("{not json", "JSONDecodeError"), ('{"metric": "mAP"}', "KeyError"), ('{"value": "high"}', "must be a number")],
)
def test_a_malformed_best_record_is_refused_naming_the_file(tmp_path, text, problem):
    best = tmp_path / "best.json"
    assert read_best_metric(best) is None
    best.write_text('{"metric": "mAP", "value": 0.25, "epoch": 3}')
    assert read_best_metric(best) == 0.25
    best.write_text(text)
    with pytest.raises(CheckpointError, match=re.escape(str(best)) + ".*" + problem):
        read_best_metric(best)
