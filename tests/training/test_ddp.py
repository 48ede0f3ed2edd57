"""Two-process training under torchrun (gloo on CPU) against one process with the same global batch.

The DDP run goes through the real entry point: a small launcher script calls ``wavecl.cli.main``
(``wavecl train``) and, after ``Trainer.fit`` returns on each rank, writes a hash of that rank's
parameters and buffers.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from support import TINY_CONFIG, tiny_train_arguments
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from wavecl.checkpoint import read_state_dict
from wavecl.config import apply_overrides, load_config
from wavecl.data.collate import collate_clips
from wavecl.data.datasets import build_dataset
from wavecl.data.synthetic import write_synthetic_ytvos
from wavecl.distributed import DistInfo
from wavecl.model.wavecl import build_model
from wavecl.training.trainer import Trainer, build_criterion, parameters_without_gradient

REPO = Path(__file__).resolve().parents[2]
# Deterministic forward passes, so the two runs can be compared: no dropout, no drop path, no flips.
COMPARABLE = {
    "data.train_short_size": 32,
    "data.train_max_size": 48,
    "data.eval_short_size": 32,
    "data.eval_max_size": 48,
    "model.dropout": 0,
    "model.voc_dropout": 0,
    "model.text_proj_dropout": 0,
    "model.backbone_drop_path": 0,
    "data.horizontal_flip": False,
}
TOLERANCE = 1e-5  # float32 reduction order differs between the runs; one AdamW step moves weights by lr = 1e-4

LAUNCHER = textwrap.dedent(
    """
    import hashlib, json, os, random, sys
    from pathlib import Path

    import numpy as np
    import torch

    import wavecl.training.trainer as trainer_module
    from wavecl.cli import main

    def digest(named_tensors):
        sha = hashlib.sha256()
        for name, tensor in sorted(named_tensors):
            sha.update(name.encode())
            sha.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        return sha.hexdigest()

    record = {}
    build_model = trainer_module.build_model

    def build_then_hash(config):
        model = build_model(config)
        record["initial"] = digest(model.named_parameters())
        record["initial_text_encoder"] = digest(model.text_encoder.named_parameters())
        return model

    fit = trainer_module.Trainer.fit

    def fit_then_hash(self):
        record["draws"] = [torch.rand(2).tolist(), np.random.rand(2).tolist(), random.random()]
        metrics = fit(self)
        record["parameters"] = digest(self.model.named_parameters())
        record["buffers"] = digest(self.model.named_buffers())
        record["text_encoder"] = digest(self.model.text_encoder.named_parameters())
        Path(os.environ["HASH_DIR"], f"rank{self.dist.rank}.json").write_text(json.dumps(record))
        return metrics

    trainer_module.build_model = build_then_hash
    trainer_module.Trainer.fit = fit_then_hash
    main(sys.argv[1:])
    """
)


def train_two_ranks(tmp_path: Path, data_root: Path, output_dir: Path, settings: dict) -> tuple[dict, dict]:
    """``wavecl train`` on configs/tiny.yaml in two torchrun processes (gloo), batch 1 per rank, one
    epoch; ``settings`` are ``--set`` overrides. Returns what the launcher recorded on rank 0 and 1."""
    launcher = tmp_path / "launch_wavecl_train.py"
    launcher.write_text(LAUNCHER)
    hash_dir = tmp_path / "hashes"
    hash_dir.mkdir()
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        str(launcher),
        "train",
        *tiny_train_arguments(1, output_dir, data_root, {"train.batch_size": 1, **settings}),
    ]
    env = {**os.environ, "HASH_DIR": str(hash_dir), "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    output = result.stdout + result.stderr
    assert output.count("wavecl.train INFO: precision: ") == 1, output[-3000:]  # logged by rank 0 only
    assert "Loading weights" not in output  # no progress bar per rank for loading the text encoder
    return tuple(json.loads((hash_dir / f"rank{rank}.json").read_text()) for rank in (0, 1))


def write_train_and_valid(data_root: Path) -> Path:
    """6 training videos and 2 held-out videos of 4 frames, 32 x 48."""
    write_synthetic_ytvos(data_root, 6, num_frames=4, size=(32, 48), seed=0, split="train")
    write_synthetic_ytvos(data_root, 2, num_frames=4, size=(32, 48), seed=1, split="valid")
    return data_root


pytestmark = pytest.mark.usefixtures("single_thread")


def train_loss_per_step(run_dir: Path) -> dict[int, float]:
    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0})
    events.Reload()
    return {event.step: event.value for event in events.Scalars("train/loss")}


def run_single_process(data_root: Path, output_dir: Path, version: str, overrides: dict) -> Trainer:
    values = {
        **COMPARABLE,
        "data.root": str(data_root),
        "train.output_dir": str(output_dir),
        "train.version": version,
        "train.epochs": 1,
        **overrides,
    }
    trainer = Trainer(apply_overrides(load_config(TINY_CONFIG), values), DistInfo(0, 1, 0, torch.device("cpu")))
    trainer.evaluate = lambda epoch: ({}, None)
    trainer.fit()
    return trainer


def test_two_ranks_agree_and_match_one_process_with_the_same_global_batch(tmp_path):
    """2 ranks x batch 1 (torchrun, gloo) for 2 steps.

    - After training, both ranks hold identical parameters *and* buffers (BatchNorm running statistics
      are re-synchronised from rank 0 before saving and evaluating).
    - Only rank 0 writes: one TensorBoard file, one log line per epoch, one checkpoint.
    - The result equals one process with batch 1 and 2 accumulation steps (same global batch of 2).
      Why not one process with batch 2: SEP's ``bn_s_w`` is a plain BatchNorm1d (no SyncBatchNorm, as in
      the reference), which normalises over each process's own batch, so 2 x 1 and 1 x 2 are different
      computations; the control below shows the difference is far above the tolerance.
    - Why the global batches coincide: ``DistributedSampler`` draws one permutation ``p`` from
      ``seed + epoch`` whatever the world size and gives rank ``r`` the elements ``p[r::2]``, so
      step ``k`` of the 2-rank run sees ``{p[2k], p[2k+1]}`` — exactly micro-steps ``2k, 2k+1`` of
      the single process (36 samples, an even count, so no padding is involved).
    - Per-step training losses agree too: the DDP log shows the mean over ranks, i.e. the mean of
      the two micro-step losses of the single process.
    """
    data_root = write_train_and_valid(tmp_path / "data")
    ddp_output = tmp_path / "ddp"
    rank0, rank1 = train_two_ranks(tmp_path, data_root, ddp_output, {**COMPARABLE, "train.max_steps_per_epoch": 2})
    for key in ("parameters", "buffers"):
        assert rank0[key] == rank1[key], key

    run_dir = ddp_output / "synthetic" / "tiny"
    assert json.loads((run_dir / "run_info.json").read_text())["world_size"] == 2
    assert [json.loads(line)["epoch"] for line in (run_dir / "log.jsonl").read_text().splitlines()] == [0]
    assert len(list((run_dir / "tensorboard").iterdir())) == 1
    checkpoints = sorted(p.name for p in (run_dir / "checkpoints").iterdir() if not p.name.startswith("frozen-"))
    assert checkpoints == ["best", "best.json", "epoch_0000", "last"]
    assert not (run_dir / "train.lock").exists()  # rank 0 took it (the only rank that does) and released it
    ddp_weights = read_state_dict(run_dir / "checkpoints" / "epoch_0000")

    accumulated = run_single_process(
        data_root,
        tmp_path / "single",
        "accumulate",
        {"train.batch_size": 1, "train.grad_accum_steps": 2, "train.max_steps_per_epoch": 4},
    )
    parameters = dict(accumulated.model.named_parameters())
    for name, parameter in parameters.items():
        torch.testing.assert_close(ddp_weights[name], parameter.detach(), rtol=0, atol=TOLERANCE, msg=name)
    micro_losses = train_loss_per_step(accumulated.run_dir)
    ddp_losses = train_loss_per_step(run_dir)
    assert sorted(ddp_losses) == [0, 1] and sorted(micro_losses) == [0, 1, 2, 3]
    for step in (0, 1):
        mean = (micro_losses[2 * step] + micro_losses[2 * step + 1]) / 2
        assert ddp_losses[step] == pytest.approx(mean, rel=1e-5)

    batch_of_two = run_single_process(
        data_root, tmp_path / "single", "batch2", {"train.batch_size": 2, "train.max_steps_per_epoch": 2}
    )
    difference = max(
        (ddp_weights[name] - parameter.detach()).abs().max().item()
        for name, parameter in batch_of_two.model.named_parameters()
    )
    assert difference > 10 * TOLERANCE


# Every parity switch of the model and the data set to the reference's behaviour at once.
PARITY = {
    "model.eval_layer": "reference",
    "model.fla_order": "reference",
    "model.sep_pooling": "reference",
    "model.sentence_pooling": "pooler",
    "data.flip_mode": "reference",
}


@pytest.mark.parametrize("parity", [False, True], ids=["defaults", "reference parity switches"])
def test_two_ranks_train_the_text_encoder_with_their_own_random_streams(tmp_path, parity):
    """``model.freeze_text_encoder=false`` (configs/coco.yaml, the Ref-YouTube-VOS finetune) on two
    gloo ranks for three steps and an evaluation, with dropout, stochastic depth and flips on.

    - Both ranks build the same initial weights, and hold identical parameters and buffers after
      training; the text encoder did train.
    - Each rank draws its own random numbers (torch, NumPy, Python) after building the model.
    """
    data_root = write_train_and_valid(tmp_path / "data")
    settings = {
        **{key: COMPARABLE[key] for key in COMPARABLE if key.startswith("data.") and "size" in key},
        "model.freeze_text_encoder": False,
        "train.max_steps_per_epoch": 3,
        **(PARITY if parity else {}),
    }
    rank0, rank1 = train_two_ranks(tmp_path, data_root, tmp_path / "ddp", settings)
    for key in ("initial", "initial_text_encoder", "parameters", "buffers", "text_encoder"):
        assert rank0[key] == rank1[key], key
    assert rank0["text_encoder"] != rank0["initial_text_encoder"]
    for draw0, draw1 in zip(rank0["draws"], rank1["draws"]):
        assert draw0 != draw1


# Every setting that changes which modules run in training: parity switches, the sentence feature,
# the mask head's coordinates, the text encoder frozen or trained.
SWITCHES = [
    {"model.freeze_text_encoder": True},
    {"model.sentence_pooling": "mean"},
    {"model.sentence_pooling": "pooler"},
    {"model.fla_order": "reference"},
    {"model.sep_pooling": "reference"},
    {"model.eval_layer": "reference"},
    {"model.rel_coord": False},
    {"model.dec_layers": 1},
    {"valid frames": "one per clip"},  # A2D/JHMDB: only the annotated frame continues after the backbone
]


@pytest.fixture(scope="module")
def train_batch(tmp_path_factory):
    """Two synthetic clips of 4 frames, collated as the trainer collates them."""
    root = tmp_path_factory.mktemp("synthetic")
    write_synthetic_ytvos(root, 2, num_frames=4, size=(32, 48), seed=0, split="train")
    config = apply_overrides(load_config(TINY_CONFIG), {**COMPARABLE, "data.root": str(root)})
    dataset = build_dataset(config.data, "train")
    return collate_clips([dataset[0], dataset[1]])


@pytest.mark.parametrize("switch", SWITCHES, ids=lambda switch: ",".join(f"{k}={v}" for k, v in switch.items()))
def test_every_trainable_parameter_receives_a_gradient(train_batch, switch):
    """DDP (``find_unused_parameters=False``) needs a gradient for every trainable parameter at every
    step: under each switch, with the text encoder trainable unless the switch freezes it, and with
    valid-frame selection (A2D/JHMDB), one training step leaves no trainable parameter without one."""
    settings = {key: value for key, value in switch.items() if key != "valid frames"}
    config = apply_overrides(load_config(TINY_CONFIG), {**COMPARABLE, "model.freeze_text_encoder": False, **settings})
    torch.manual_seed(0)
    model = build_model(config.model).train()
    batch = train_batch
    if "valid frames" in switch:
        batch = replace(
            batch, targets=[[t if time == 1 else None for t in row] for time, row in enumerate(batch.targets)]
        )
    valid_indices, targets = batch.valid_frames()
    outputs = model(batch.frames, batch.pad_mask, batch.texts, batch.image_sizes, valid_indices)
    criterion = build_criterion(config)
    criterion.weighted_total(criterion(outputs, targets)).backward()
    assert parameters_without_gradient(model) == []
    trainable_encoder = [name for name, p in model.text_encoder.named_parameters() if p.requires_grad]
    assert bool(trainable_encoder) == (not config.model.freeze_text_encoder)
    pooler_used = config.model.sentence_pooling == "pooler" and not config.model.freeze_text_encoder
    assert any(name.startswith("pooler.") for name in trainable_encoder) == pooler_used
