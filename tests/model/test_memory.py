"""Activation checkpointing computes the same network, and benchmarks/memory_estimate.py counts what a real
run holds."""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import re
import sys
from pathlib import Path
from unittest import mock

import pytest
import torch
import torch.utils.checkpoint
from support import assert_all_close, make_inputs, perturbed_model, run

from wavecl.config import apply_overrides, load_config
from wavecl.model.wavecl import WaveCL

ROOT = Path(__file__).parents[2]
TINY = "tiny"
SMALL = {"train.batch_size": 2, "data.window_size": 4, "data.train_short_size": 64, "data.train_max_size": 96}
"""A training batch small enough for the CPU: 2 clips of 4 frames at 64x96."""


@functools.cache
def load_estimator():
    """benchmarks/memory_estimate.py as the module ``memory_estimate``."""
    spec = importlib.util.spec_from_file_location("memory_estimate", ROOT / "benchmarks" / "memory_estimate.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def tiny_model(checkpointing: bool) -> WaveCL:
    """The perturbed tiny model in float64 with windows of (2, 3, 3) tokens (every stage shifted and padded)."""
    config = load_config(TINY).model
    config = dataclasses.replace(config, backbone_window_size=[2, 3, 3], activation_checkpointing=checkpointing)
    return perturbed_model(config).double()


def test_checkpointing_keeps_outputs_and_gradients(single_thread):
    """Dropout and stochastic depth (train mode) are replayed in the recomputation: equal to rounding."""
    inputs = make_inputs(3, 2)
    plain_outputs, plain_gradients = run(tiny_model(False), inputs, train=True, plain=False)
    checkpointed = tiny_model(True)
    with mock.patch.object(torch.utils.checkpoint, "checkpoint", wraps=torch.utils.checkpoint.checkpoint) as calls:
        outputs, gradients = run(checkpointed, inputs, train=True, plain=False)
    blocks = sum(checkpointed.config.backbone_depths) + 3  # Swin blocks and patch mergings
    assert calls.call_count == blocks + checkpointed.config.enc_layers
    assert all(call.kwargs == {"use_reentrant": False} for call in calls.call_args_list)
    assert_all_close(outputs, plain_outputs)
    assert gradients.keys() == plain_gradients.keys() and len(gradients) > 100
    assert_all_close(gradients, plain_gradients)
    with mock.patch.object(torch.utils.checkpoint, "checkpoint") as calls, torch.no_grad():
        checkpointed(*inputs)  # nothing to keep for a backward pass: plain calls
    assert calls.call_count == 0


@pytest.mark.parametrize("checkpointing", [False, True], ids=["plain", "checkpointing"])
def test_estimate_matches_a_measured_cpu_run(checkpointing, single_thread):
    """The saved activations counted on fake CPU tensors against the memory a real forward leaves allocated
    (torch's CPU memory profiler: every allocation minus every free during the forward). With checkpointing
    that is what the segments keep, without the segment the backward pass recomputes."""
    estimator = load_estimator()
    settings = {**SMALL, "model.activation_checkpointing": checkpointing}
    estimate = estimator.estimate(TINY, device="cpu", overrides=settings)
    assert (estimate.batch, estimate.frames, estimate.size, estimate.amp) == (2, 4, (64, 96), "off")
    assert (estimate.recomputed > 0) == checkpointing and estimate.loss_activations > 0

    config = apply_overrides(load_config(TINY), settings)
    torch.manual_seed(0)
    model = WaveCL(config.model).train()
    frames = torch.randn(4, 2, 3, 64, 96)
    pad_mask = torch.zeros(4, 2, 64, 96, dtype=torch.bool)
    inputs = (frames, pad_mask, [estimator.SENTENCE] * 2, torch.tensor([[64, 96]] * 2))
    with torch.no_grad():
        model(*inputs)  # the per-shape index tables are built and cached here, outside the measurement
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True) as profile:
        output = model(*inputs)
    held = sum(event.self_cpu_memory_usage for event in profile.events())
    assert output.pred_masks.requires_grad and held > 20 * 2**20
    assert estimate.activations - estimate.recomputed == pytest.approx(held, rel=0.15)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert (estimate.gradients, estimate.optimizer) == (4 * trainable, 8 * trainable)
    assert estimate.weights == 4 * sum(p.numel() for p in model.parameters())


def test_estimate_of_checkpointing_and_bf16_is_smaller_and_the_table_ends_with_the_max(capsys):
    estimator = load_estimator()
    plain = estimator.estimate(TINY, overrides=SMALL)
    bf16 = estimator.estimate(TINY, amp="bf16", overrides=SMALL)
    checkpointed = estimator.estimate(TINY, checkpointing=True, overrides=SMALL)
    assert bf16.amp == "bf16" and 0 < bf16.activations < 0.9 * plain.activations  # tiny: 0.86
    assert checkpointed.checkpointing and 0 < checkpointed.activations < 0.8 * plain.activations  # tiny: 0.74

    estimates = estimator.main(["-c", str(TINY), "--checkpointing", "on"])
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert re.fullmatch(r"max \d+\.\d GiB per GPU \(tiny\.yaml\)", last)
    assert float(last.split()[1]) == pytest.approx(estimates[0].total / 2**30, abs=0.05)


def test_the_default_configs_are_those_the_training_scripts_launch():
    launched = set()
    for script in (ROOT / "scripts").glob("*.sh"):
        for line in script.read_text().splitlines():
            if line.startswith("launch train"):
                launched.add(line.split()[3])
    assert len(launched) == 6
    assert [path.stem for path in load_estimator().recipe_configs()] == sorted(launched)


@pytest.mark.slow
def test_every_recipe_fits_under_70_gib(capsys):
    """The acceptance line of the recipes: each training config at its own batch, frames, size, precision and
    checkpointing (a few minutes on one CPU thread)."""
    estimator = load_estimator()
    estimates = estimator.main([])
    assert [estimate.name for estimate in estimates] == [path.name for path in estimator.recipe_configs()]
    for estimate in estimates:
        assert estimate.total < 70 * 2**30, estimate
        assert estimate.amp == "bf16"
