"""Optimiser and learning-rate schedule (docs/training.md#optimizer-and-schedule).

AdamW over three parameter groups selected by name: the Video-Swin backbone, the RoBERTa text encoder
and everything else, each with its own learning rate and the same weight decay (applied to every
parameter, as in the reference). The schedule is a per-epoch ``MultiStepLR``.
"""

from __future__ import annotations

import warnings
from typing import Any

from torch import nn
from torch.optim import AdamW, Optimizer
from torch.optim.lr_scheduler import MultiStepLR

PARAM_GROUP_NAMES = ("rest", "backbone", "text_encoder")


def build_param_groups(
    model: nn.Module, lr: float, lr_backbone: float, text_encoder_lr: float, weight_decay: float
) -> list[dict[str, Any]]:
    """Split the trainable parameters into three optimiser groups.

    A parameter whose name contains ``"backbone"`` goes to the backbone group, else one whose name
    contains ``"text_encoder"`` to the text-encoder group, else to the first group. Frozen parameters
    (``requires_grad=False``) are left out; a parameter registered under two names (tied weights)
    appears once. Groups are always returned, even when empty (e.g. a frozen text
    encoder), so optimiser and scheduler states have the same layout in every run.

    Returns:
        ``[{"name": "rest", "params": [...], "lr": lr, "weight_decay": wd},
        {"name": "backbone", ..., "lr": lr_backbone}, {"name": "text_encoder", ..., "lr": text_encoder_lr}]``.
    """
    groups: dict[str, list[nn.Parameter]] = {name: [] for name in PARAM_GROUP_NAMES}
    for name, param in model.named_parameters():  # yields a parameter shared by two modules once
        if not param.requires_grad:
            continue
        if "backbone" in name:
            groups["backbone"].append(param)
        elif "text_encoder" in name:
            groups["text_encoder"].append(param)
        else:
            groups["rest"].append(param)
    learning_rates = {"rest": lr, "backbone": lr_backbone, "text_encoder": text_encoder_lr}
    return [
        {"name": name, "params": groups[name], "lr": learning_rates[name], "weight_decay": weight_decay}
        for name in PARAM_GROUP_NAMES
    ]


def build_optimizer(
    model: nn.Module, lr: float, lr_backbone: float, text_encoder_lr: float, weight_decay: float
) -> AdamW:
    """AdamW (betas 0.9/0.999, eps 1e-8) over :func:`build_param_groups`."""
    return AdamW(build_param_groups(model, lr, lr_backbone, text_encoder_lr, weight_decay))


def build_scheduler(optimizer: Optimizer, milestones: list[int], gamma: float) -> MultiStepLR:
    """Per-epoch step decay: epochs ``< milestones[0]`` run at the base rates, each milestone multiplies
    every group's rate by ``gamma``. Call ``scheduler.step()`` once at the end of each epoch."""
    if sorted(milestones) != list(milestones):
        raise ValueError(f"lr milestones must be increasing, got {milestones}")
    return MultiStepLR(optimizer, milestones=milestones, gamma=gamma)


def reschedule(
    optimizer: Optimizer, learning_rates: list[float], milestones: list[int], gamma: float, epochs_done: int
) -> MultiStepLR:
    """A scheduler for a new schedule, at the point ``epochs_done`` epochs into it (e.g. after a resume
    that changes the learning rates or milestones).

    Every group's base rate becomes ``learning_rates[i]`` and its current rate what a run configured
    this way from the start would use now (the same chain of multiplications, so equal bit for bit).

    Args:
        optimizer: the optimizer, with its state loaded; ``learning_rates`` has one rate per group.
        learning_rates: base rate per parameter group, in the optimizer's group order.
        milestones: increasing epochs at which the rates are multiplied by ``gamma``.
        gamma: the decay factor.
        epochs_done: scheduler steps already taken (the ``last_epoch`` of the loaded scheduler).

    Raises:
        ValueError: one rate per group is not given, or the milestones are not increasing.
    """
    if len(learning_rates) != len(optimizer.param_groups):
        raise ValueError(f"{len(learning_rates)} learning rates for {len(optimizer.param_groups)} parameter groups")
    for group, lr in zip(optimizer.param_groups, learning_rates):
        group["lr"] = group["initial_lr"] = lr
    scheduler = build_scheduler(optimizer, milestones, gamma)
    with warnings.catch_warnings():  # "scheduler.step() before optimizer.step()": replaying, not training
        warnings.simplefilter("ignore", UserWarning)
        for _ in range(epochs_done):
            scheduler.step()
    return scheduler
