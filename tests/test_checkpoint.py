"""Checkpoints: exact round trip (weights, optimizer, scheduler, RNG), aliases, refusal of code-running
pickles, clear errors for truncated or missing files, reference ``.pth.tar`` files."""

from __future__ import annotations

import os
import pickle
import random
import shutil

import numpy as np
import pytest
import torch
from safetensors import safe_open
from torch import nn

from wavecl.checkpoint import (
    CheckpointError,
    CheckpointPaths,
    checkpoint_folder_name,
    latest_checkpoint,
    load_training_state,
    parse_checkpoint_folder_name,
    prune_checkpoints,
    read_state_dict,
    restore_rng_state,
    rng_state,
    save_checkpoint,
)
from wavecl.training.optim import build_optimizer, build_scheduler


class AliasedModel(nn.Module):
    """A module registered under two names (tied weights, as the original registered its box heads)."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Linear(3, 4)
        self.bbox_embed = nn.Linear(4, 4)
        self.decoder = nn.Module()
        self.decoder.bbox_embed = self.bbox_embed
        self.register_buffer("counter", torch.arange(3))


def draw_random() -> tuple:
    return random.random(), np.random.standard_normal(), np.random.rand(), torch.rand(3)


def trained_state():
    torch.manual_seed(0)
    model = AliasedModel()
    optimizer = build_optimizer(model, 1e-3, 1e-4, 1e-5, 1e-4)
    scheduler = build_scheduler(optimizer, [1], 0.2)
    for _ in range(2):
        model.bbox_embed(model.backbone(torch.randn(2, 3))).sum().backward()
        optimizer.step()
        scheduler.step()
    return model, optimizer, scheduler


def test_round_trip_is_exact(tmp_path):
    model, optimizer, scheduler = trained_state()
    scaler = torch.amp.GradScaler("cuda", enabled=False)
    np.random.standard_normal()  # leaves a cached Gaussian in numpy's legacy state
    state = {
        "epoch": 3,
        "total_epochs": 40,
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict(),
        "best_metric": 0.42,
        "rng": rng_state(),
    }
    expected_draws = draw_random()
    paths = save_checkpoint(tmp_path / "checkpoints", 3, model.state_dict(), state)
    assert paths == CheckpointPaths.of(tmp_path / "checkpoints" / "epoch_0003")
    assert sorted(p.name for p in paths.directory.iterdir()) == ["model.safetensors", "state.pt"]
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["epoch_0003", "last"]

    weights = read_state_dict(tmp_path)  # run directory -> checkpoints/last -> epoch_0003
    original = model.state_dict()
    assert weights.keys() == original.keys()
    assert {"bbox_embed.weight", "decoder.bbox_embed.weight"} <= weights.keys()
    for name, tensor in original.items():
        assert torch.equal(weights[name], tensor) and weights[name].dtype == tensor.dtype, name
    fresh = AliasedModel()
    fresh.load_state_dict(weights, strict=True)
    assert fresh.bbox_embed.weight is fresh.decoder.bbox_embed.weight

    loaded = load_training_state(paths.directory)
    assert loaded["epoch"] == 3 and loaded["total_epochs"] == 40 and loaded["best_metric"] == 0.42
    fresh_optimizer = build_optimizer(fresh, 1e-3, 1e-4, 1e-5, 1e-4)
    fresh_scheduler = build_scheduler(fresh_optimizer, [1], 0.2)
    fresh_optimizer.load_state_dict(loaded["optimizer"])
    fresh_scheduler.load_state_dict(loaded["scheduler"])
    assert fresh_scheduler.state_dict() == scheduler.state_dict()
    for saved, restored in zip(optimizer.state.values(), fresh_optimizer.state.values()):
        for key in saved:
            assert torch.equal(saved[key], restored[key])
    assert [g["lr"] for g in fresh_optimizer.param_groups] == [g["lr"] for g in optimizer.param_groups]

    draw_random()  # move every generator on
    restore_rng_state(loaded["rng"])
    python_value, gaussian, uniform, torch_values = draw_random()
    assert (python_value, gaussian, uniform) == expected_draws[:3]
    assert torch.equal(torch_values, expected_draws[3])


def test_last_pointer_follows_newest_epoch(tmp_path):
    model, _, _ = trained_state()
    for epoch in (0, 1):
        save_checkpoint(tmp_path / "checkpoints", epoch, model.state_dict(), {"epoch": epoch})
    assert latest_checkpoint(tmp_path) == tmp_path / "checkpoints" / "epoch_0001"
    assert latest_checkpoint(tmp_path / "checkpoints" / "last") == tmp_path / "checkpoints" / "epoch_0001"
    assert latest_checkpoint(tmp_path / "checkpoints" / "epoch_0000") == tmp_path / "checkpoints" / "epoch_0000"
    assert load_training_state(tmp_path)["epoch"] == 1
    with pytest.raises(FileNotFoundError, match="nowhere"):
        latest_checkpoint(tmp_path / "nowhere")
    # Without the pointer, the highest-numbered epoch folder is taken (epoch 10 sorts after epoch 9).
    for epoch in (9, 10):
        save_checkpoint(tmp_path / "checkpoints", epoch, model.state_dict(), {"epoch": epoch})
    (tmp_path / "checkpoints" / "last").unlink()
    assert latest_checkpoint(tmp_path) == tmp_path / "checkpoints" / "epoch_0010"
    assert latest_checkpoint(tmp_path / "checkpoints") == tmp_path / "checkpoints" / "epoch_0010"
    empty = tmp_path / "empty_run"
    (empty / "checkpoints").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="empty_run"):
        latest_checkpoint(empty)


def test_state_that_cannot_be_loaded_safely_is_not_written(tmp_path):
    model, _, _ = trained_state()
    save_checkpoint(tmp_path / "checkpoints", 0, model.state_dict(), {"epoch": 0})
    with pytest.raises(TypeError, match="weights_only"):
        save_checkpoint(tmp_path / "checkpoints", 1, model.state_dict(), {"epoch": 1, "score": np.array([0.5])})
    assert not (tmp_path / "checkpoints" / "epoch_0001" / "state.pt").exists()
    assert latest_checkpoint(tmp_path) == tmp_path / "checkpoints" / "epoch_0000"
    leftovers = [p.name for p in (tmp_path / "checkpoints").rglob("*.tmp")]
    assert leftovers == []


class MaliciousPayload:
    """Unpickling this runs ``touch <marker>``."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_code_running_pickles_are_refused(tmp_path):
    marker = tmp_path / "pwned"
    payload = pickle.dumps({"model_state_dict": MaliciousPayload(str(marker))}, protocol=2)
    pickle.loads(payload)  # the payload is live: plain unpickling runs it
    assert marker.exists()
    marker.unlink()

    reference_file = tmp_path / "evil.pth.tar"
    reference_file.write_bytes(payload)
    with pytest.raises(CheckpointError, match=r"evil\.pth\.tar.*GLOBAL \w+\.system"):
        read_state_dict(reference_file)

    folder = tmp_path / "checkpoints" / "epoch_0000"
    model, _, _ = trained_state()
    save_checkpoint(tmp_path / "checkpoints", 0, model.state_dict(), {"epoch": 0})
    torch.save({"epoch": 0, "rng": MaliciousPayload(str(marker))}, folder / "state.pt")
    with pytest.raises(CheckpointError, match="state.pt"):
        load_training_state(folder)
    assert not marker.exists()


def test_truncated_and_missing_files_name_the_file(tmp_path):
    model, _, _ = trained_state()
    paths = save_checkpoint(tmp_path / "checkpoints", 0, model.state_dict(), {"epoch": 0, "rng": rng_state()})
    for path in (paths.model, paths.state):
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="model.safetensors"):
        read_state_dict(paths.directory)
    with pytest.raises(CheckpointError, match="state.pt"):
        load_training_state(paths.directory)
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        read_state_dict(tmp_path / "missing.pth")


def test_reference_pth_tar_checkpoint_loads_model_state_dict(tmp_path):
    model, optimizer, scheduler = trained_state()
    reference = {
        "epoch": 14,
        "total_epochs": 40,
        "model_state_dict": model.state_dict(),
        "optimizer_state_dict": optimizer.state_dict(),
        "scheduler_state_dict": scheduler.state_dict(),
        "best_mAP": np.float64(0.4),  # what COCOeval's stats give the reference trainer
    }
    torch.save(reference, tmp_path / "14.pth.tar")
    weights = read_state_dict(tmp_path / "14.pth.tar")
    assert weights.keys() == model.state_dict().keys()
    assert all(torch.equal(weights[k], v) for k, v in model.state_dict().items())

    torch.save(model.state_dict(), tmp_path / "bare.pth")
    assert read_state_dict(tmp_path / "bare.pth").keys() == model.state_dict().keys()

    torch.save({"epoch": 1}, tmp_path / "no_weights.pth")
    with pytest.raises(CheckpointError, match="no_weights.pth"):
        read_state_dict(tmp_path / "no_weights.pth")


# ------------------------------------------------------------------ frozen weights, steps, pruning


class PartlyFrozenModel(nn.Module):
    """A trainable head beside a large frozen "encoder" (like WaveCL's frozen text encoder)."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Linear(64, 64)
        self.head = nn.Linear(64, 2)
        self.encoder.requires_grad_(False)

    def frozen_names(self) -> list[str]:
        return [name for name, p in self.named_parameters() if not p.requires_grad]


def folder_bytes(folder) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def test_frozen_weights_are_stored_once_per_run_and_merged_back(tmp_path):
    torch.manual_seed(0)
    model = PartlyFrozenModel()
    checkpoints = tmp_path / "checkpoints"
    for epoch in range(3):
        with torch.no_grad():
            model.head.weight.add_(1.0)  # training changes the head only
        save_checkpoint(checkpoints, epoch, model.state_dict(), {"epoch": epoch}, frozen=model.frozen_names())
        weights = read_state_dict(checkpoints / f"epoch_{epoch:04d}")
        assert weights.keys() == model.state_dict().keys()
        for name, tensor in model.state_dict().items():
            assert torch.equal(weights[name], tensor), name

    (frozen_file,) = checkpoints.glob("frozen-*.safetensors")
    encoder_bytes = sum(t.numel() * t.element_size() for n, t in model.state_dict().items() if n.startswith("encoder"))
    head_bytes = sum(t.numel() * t.element_size() for n, t in model.state_dict().items() if n.startswith("head"))
    assert encoder_bytes > 30 * head_bytes
    for epoch in range(3):
        folder = checkpoints / f"epoch_{epoch:04d}"
        assert set(load_file_names(folder / "model.safetensors")) == {"head.weight", "head.bias"}
        assert head_bytes <= folder_bytes(folder) < head_bytes + 4096  # + state.pt and the file headers
    assert encoder_bytes <= frozen_file.stat().st_size < encoder_bytes + 4096
    # Stored per epoch, the encoder would take 3 x encoder_bytes.
    assert folder_bytes(checkpoints) < encoder_bytes + 3 * head_bytes + 3 * 4096

    # The file alone (as a reader given model.safetensors gets it) also merges the frozen weights.
    assert read_state_dict(checkpoints / "epoch_0001" / "model.safetensors").keys() == model.state_dict().keys()

    # A folder copied without the shared file says which file to bring along.
    copied = tmp_path / "elsewhere" / "epoch_0002"
    shutil.copytree(checkpoints / "epoch_0002", copied)
    with pytest.raises(FileNotFoundError, match=frozen_file.name):
        read_state_dict(copied)


def load_file_names(path) -> list[str]:
    with safe_open(str(path), framework="pt") as handle:
        return list(handle.keys())


def test_changed_frozen_values_get_a_new_file_and_pruning_drops_the_unreferenced_one(tmp_path):
    model = PartlyFrozenModel()
    checkpoints = tmp_path / "checkpoints"
    save_checkpoint(checkpoints, 0, model.state_dict(), {"epoch": 0}, frozen=model.frozen_names())
    with torch.no_grad():
        model.encoder.weight.mul_(2.0)
    save_checkpoint(checkpoints, 1, model.state_dict(), {"epoch": 1}, frozen=model.frozen_names())
    assert len(list(checkpoints.glob("frozen-*.safetensors"))) == 2
    old = read_state_dict(checkpoints / "epoch_0000")["encoder.weight"]
    assert torch.equal(read_state_dict(checkpoints / "epoch_0001")["encoder.weight"], 2 * old)
    deleted = prune_checkpoints(checkpoints, keep_last=1)
    assert sorted(p.name for p in deleted)[0] == "epoch_0000"
    assert len(list(checkpoints.glob("frozen-*.safetensors"))) == 1
    assert torch.equal(read_state_dict(checkpoints)["encoder.weight"], 2 * old)
    with pytest.raises(KeyError, match="nonexistent"):
        save_checkpoint(checkpoints, 2, model.state_dict(), {"epoch": 2}, frozen=["nonexistent"])


def test_step_checkpoints_sort_inside_their_epoch(tmp_path):
    assert checkpoint_folder_name(3) == "epoch_0003"
    assert checkpoint_folder_name(3, 119) == "epoch_0003_step_000119"
    assert parse_checkpoint_folder_name("epoch_0003_step_000119") == (3, 119)
    assert parse_checkpoint_folder_name("epoch_0003") == (3, None)
    assert parse_checkpoint_folder_name("best") is None
    model = PartlyFrozenModel()
    checkpoints = tmp_path / "checkpoints"
    # Written out of order, then the pointer removed: the position decides, not the age.
    for epoch, step in ((4, 1), (3, None), (3, 10)):
        save_checkpoint(checkpoints, epoch, model.state_dict(), {"epoch": epoch}, step=step)
    (checkpoints / "last").unlink()
    assert latest_checkpoint(tmp_path) == checkpoints / "epoch_0004_step_000001"
    shutil.rmtree(checkpoints / "epoch_0004_step_000001")
    assert latest_checkpoint(tmp_path) == checkpoints / "epoch_0003"


def test_pruning_keeps_the_last_k_epochs_best_and_only_the_newest_step(tmp_path):
    model = PartlyFrozenModel()
    checkpoints = tmp_path / "checkpoints"

    def names() -> list[str]:
        return sorted(p.name for p in checkpoints.iterdir() if p.is_dir())

    for epoch in range(4):
        for step in (4, 9):
            save_checkpoint(checkpoints, epoch, model.state_dict(), {}, step=step, frozen=model.frozen_names())
            prune_checkpoints(checkpoints, keep_last=2)
            # A step checkpoint lives only while it is the newest one.
            assert [n for n in names() if "step" in n] == [f"epoch_{epoch:04d}_step_{step:06d}"]
        save_checkpoint(checkpoints, epoch, model.state_dict(), {}, frozen=model.frozen_names())
        if epoch == 0:
            (checkpoints / "best").write_text("epoch_0000\n")
        prune_checkpoints(checkpoints, keep_last=2)
    assert names() == ["epoch_0000", "epoch_0002", "epoch_0003"]  # best + the last two
    assert len(list(checkpoints.glob("frozen-*.safetensors"))) == 1
    prune_checkpoints(checkpoints, keep_last=None)  # keep all epochs: nothing more to delete
    assert names() == ["epoch_0000", "epoch_0002", "epoch_0003"]
    (checkpoints / "notes").mkdir()  # foreign folders are left alone
    prune_checkpoints(checkpoints, keep_last=1)
    assert names() == ["epoch_0000", "epoch_0003", "notes"]
    with pytest.raises(ValueError, match="keep_checkpoints"):
        prune_checkpoints(checkpoints, keep_last=0)
