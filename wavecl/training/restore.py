"""Continuing a run from its checkpoint: :func:`restore` puts back the model, optimizer, scheduler, grad
scaler, position and random streams, applies what the resume changes, and refuses what cannot continue.

A resume continues exactly: the same losses and weights as a run that never stopped, mid-epoch
included, as long as nothing that fixes the position inside the epoch changes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from wavecl.checkpoint import CheckpointPaths, load_training_state, restore_rng_state
from wavecl.config import Config
from wavecl.distributed import DistInfo
from wavecl.run_directory import RunDirectory, RunDirectoryError
from wavecl.training.optim import reschedule
from wavecl.training.recorder import EpochResult
from wavecl.training.run_rules import differences_listing

log = logging.getLogger("wavecl.train")

# Fields a resume may change, applied to the loaded optimizer and scheduler.
SCHEDULE_FIELDS = ("train.lr", "train.lr_backbone", "train.text_encoder_lr", "train.lr_drop", "train.lr_gamma")
# Fields that fix the position inside an epoch: a mid-epoch resume cannot change them.
EPOCH_POSITION_FIELDS = (
    "train.batch_size",
    "train.grad_accum_steps",
    "train.seed",
    "train.max_steps_per_epoch",
    "data.dataset_name",
    "data.window_size",
)


@dataclass
class UnfinishedEpoch:
    """An epoch whose checkpoint was written but whose evaluation and ``log.jsonl`` line were not."""

    epoch: int
    checkpoint: CheckpointPaths
    totals: EpochResult


@dataclass
class Restored:
    """Where a resumed run continues.

    Attributes:
        scheduler: the learning-rate scheduler to use (rebuilt when the resume changes the schedule).
        epoch: the first epoch to train.
        step: steps of ``epoch`` already trained (a mid-epoch checkpoint), else 0.
        global_step: steps the run has trained, whatever the steps per epoch were then.
        totals: the training totals of ``epoch`` so far (a mid-epoch checkpoint), else None.
        unfinished: the checkpoint's epoch, when its evaluation and ``log.jsonl`` line are missing.
    """

    scheduler: torch.optim.lr_scheduler.LRScheduler
    epoch: int
    step: int
    global_step: int
    totals: EpochResult | None
    unfinished: UnfinishedEpoch | None


def restore(
    path: Path,
    config: Config,
    changes: dict[str, tuple[Any, Any]],
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    scaler: torch.amp.GradScaler,
    run: RunDirectory,
    dist: DistInfo,
) -> Restored:
    """Load the training state of checkpoint folder ``path`` (the model's weights are loaded by the caller)
    and restore this rank's random streams.

    Args:
        path: the checkpoint folder.
        config: the configuration that runs.
        changes: ``{"section.field": (old, new)}`` of what this resume changes.
        optimizer, scheduler, scaler: built for ``config``; loaded in place.
        run: the run directory (its ``log.jsonl`` says whether the checkpoint's epoch was recorded).
        dist: this process's place in the job.

    Raises:
        RunDirectoryError: a mid-epoch checkpoint and a change of what fixes the position in the epoch
            (the fields, or the world size, named); an optimizer state that does not fit the model.
        CheckpointError: ``state.pt`` is unreadable or refused.
    """
    state = load_training_state(path)
    epoch, step = int(state["epoch"]), state["step"]
    rng = state["rng"]
    if step is not None:
        fixed = {k: v for k, v in changes.items() if k in EPOCH_POSITION_FIELDS}
        if fixed or len(rng) != dist.world_size:
            what = differences_listing(fixed) or (f"world size {len(rng)} -> {dist.world_size}")
            raise RunDirectoryError(
                f"{path} stopped inside epoch {epoch} (after step {step}); the position there depends on "
                f"what this resume changes ({what}). Resume from an end-of-epoch checkpoint to change it"
            )
    try:
        optimizer.load_state_dict(state["optimizer"])
    except ValueError as error:
        changed = ", ".join(changes) or "none"
        raise RunDirectoryError(
            f"the optimizer state in {path} does not fit this model ({error}); fields changed by this resume: {changed}"
        ) from None
    scheduler.load_state_dict(state["scheduler"])
    if state["scaler"] or not scaler.is_enabled():
        scaler.load_state_dict(state["scaler"])
    else:  # written without loss scaling (e.g. bf16 on another GPU): the scaler starts afresh
        log.warning("%s was written without loss scaling; the float16 loss scale starts afresh", path)
    scheduler = apply_schedule_changes(config, changes, optimizer, scheduler)
    totals = EpochResult(**state["epoch_totals"])
    global_step = int(state["global_step"])
    if step is None:
        unfinished = _unrecorded(run, epoch, CheckpointPaths.of(path), totals, dist)
        restored = Restored(scheduler, epoch + 1, 0, global_step, None, unfinished)
    else:
        restored = Restored(scheduler, epoch, int(step) + 1, global_step, totals, None)
    if len(rng) == dist.world_size:
        restore_rng_state(rng[dist.rank])
    else:  # every rank keeps the streams of its own seed rather than sharing a saved one
        log.warning(
            "checkpoint was written by %d processes, resuming with %d: random streams restart per rank",
            len(rng),
            dist.world_size,
        )
    return restored


def apply_schedule_changes(
    config: Config,
    changes: dict[str, tuple[Any, Any]],
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
) -> torch.optim.lr_scheduler.LRScheduler:
    """Put changed learning rates, milestones, gamma or weight decay into effect (what is recorded is what
    runs); returns the scheduler to use from here on."""
    changed = [key for key in SCHEDULE_FIELDS if key in changes]
    if "train.weight_decay" in changes:
        for group in optimizer.param_groups:
            group["weight_decay"] = config.train.weight_decay
    if not changed:
        return scheduler
    train = config.train
    rates = {"rest": train.lr, "backbone": train.lr_backbone, "text_encoder": train.text_encoder_lr}
    learning_rates = [rates[group["name"]] for group in optimizer.param_groups]
    epochs_done = scheduler.last_epoch
    scheduler = reschedule(optimizer, learning_rates, train.lr_drop, train.lr_gamma, epochs_done)
    log.info(
        "resume changes %s: learning rates now %s after %d epochs",
        ", ".join(changed),
        {group["name"]: group["lr"] for group in optimizer.param_groups},
        epochs_done,
    )
    return scheduler


def _unrecorded(
    run: RunDirectory, epoch: int, checkpoint: CheckpointPaths, totals: EpochResult, dist: DistInfo
) -> UnfinishedEpoch | None:
    """The resumed epoch, when its ``log.jsonl`` line (and so its evaluation) is missing; earlier gaps in
    the log are reported (their weights are no longer the model's)."""
    logged = run.logged_epochs()
    gaps = [e for e in range(epoch) if e not in logged]
    if gaps and dist.is_main:
        log.warning(
            "log.jsonl of %s has no line for epoch(s) %s (numbered from 0): they cannot be completed now",
            run.root,
            gaps,
        )
    return None if epoch in logged else UnfinishedEpoch(epoch, checkpoint, totals)
