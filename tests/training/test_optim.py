"""Optimiser groups and the per-epoch MultiStepLR schedule (docs/training.md#optimizer-and-schedule)."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.optim import AdamW

from wavecl.training.optim import build_optimizer, build_param_groups, build_scheduler, reschedule


class TinyModel(nn.Module):
    """Names like WaveCL's: a backbone, a (partly frozen) text encoder, heads, and a shared box head."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4))
        self.text_encoder = nn.ModuleDict({"embeddings": nn.Embedding(5, 4), "pooler": nn.Linear(4, 4)})
        self.text_encoder["embeddings"].requires_grad_(False)
        self.input_proj = nn.Linear(4, 4)
        self.bbox_embed = nn.Linear(4, 4)
        self.transformer = nn.Module()
        self.transformer.decoder = nn.Module()
        self.transformer.decoder.bbox_embed = self.bbox_embed  # registered under two names


def test_three_groups_by_name_without_frozen_or_duplicate_parameters():
    model = TinyModel()
    groups = build_param_groups(model, lr=5e-5, lr_backbone=5e-6, text_encoder_lr=1e-6, weight_decay=1e-4)
    assert [g["name"] for g in groups] == ["rest", "backbone", "text_encoder"]
    assert [g["lr"] for g in groups] == [5e-5, 5e-6, 1e-6]
    assert all(g["weight_decay"] == 1e-4 for g in groups)
    ids = [{id(p) for p in g["params"]} for g in groups]
    assert ids[0] == {id(p) for p in [*model.input_proj.parameters(), *model.bbox_embed.parameters()]}
    assert ids[1] == {id(p) for p in model.backbone.parameters()}
    assert ids[2] == {id(p) for p in model.text_encoder["pooler"].parameters()}
    assert sum(len(g["params"]) for g in groups) == len({id(p) for p in model.parameters() if p.requires_grad})
    frozen = model.text_encoder["embeddings"].weight
    assert all(frozen is not p for g in groups for p in g["params"])


def test_frozen_text_encoder_gives_an_empty_group_and_a_valid_optimizer():
    model = TinyModel()
    model.text_encoder.requires_grad_(False)
    optimizer = build_optimizer(model, lr=1e-4, lr_backbone=1e-5, text_encoder_lr=5e-6, weight_decay=1e-4)
    assert isinstance(optimizer, AdamW)
    assert [len(g["params"]) for g in optimizer.param_groups] == [4, 4, 0]
    assert optimizer.defaults["betas"] == (0.9, 0.999) and optimizer.defaults["eps"] == 1e-8


def learning_rates_per_epoch(milestones: list[int], gamma: float, epochs: int) -> list[list[float]]:
    model = TinyModel()
    optimizer = build_optimizer(model, lr=5e-5, lr_backbone=5e-6, text_encoder_lr=1e-6, weight_decay=1e-4)
    scheduler = build_scheduler(optimizer, milestones, gamma)
    rates = []
    for _ in range(epochs):
        rates.append([g["lr"] for g in optimizer.param_groups])
        optimizer.step()
        scheduler.step()
    return rates


def test_a2d_schedule_drops_by_gamma_at_epoch_15():
    rates = learning_rates_per_epoch([15], 0.2, 40)
    assert rates[14] == pytest.approx([5e-5, 5e-6, 1e-6])
    assert rates[15] == pytest.approx([1e-5, 1e-6, 2e-7])
    assert rates[39] == pytest.approx(rates[15])


def test_two_milestones_compound():
    rates = learning_rates_per_epoch([15, 20], 0.1, 30)
    assert rates[14][0] == pytest.approx(5e-5)
    assert rates[19][0] == pytest.approx(5e-6)
    assert rates[20][0] == pytest.approx(5e-7)


def test_unsorted_milestones_are_rejected():
    optimizer = build_optimizer(TinyModel(), 1e-4, 1e-5, 1e-5, 1e-4)
    with pytest.raises(ValueError, match="increasing"):
        build_scheduler(optimizer, [20, 15], 0.1)


def test_scheduler_state_round_trips():
    optimizer = build_optimizer(TinyModel(), 1e-4, 1e-5, 1e-5, 1e-4)
    scheduler = build_scheduler(optimizer, [2], 0.1)
    for _ in range(3):
        optimizer.step()
        scheduler.step()
    restored_optimizer = build_optimizer(TinyModel(), 1e-4, 1e-5, 1e-5, 1e-4)
    restored = build_scheduler(restored_optimizer, [2], 0.1)
    restored.load_state_dict(scheduler.state_dict())
    restored_optimizer.load_state_dict(optimizer.state_dict())
    assert restored.last_epoch == 3
    assert [g["lr"] for g in restored_optimizer.param_groups] == pytest.approx([1e-5, 1e-6, 1e-6])
    assert torch.isclose(torch.tensor(restored.get_last_lr()), torch.tensor([1e-5, 1e-6, 1e-6])).all()


def test_reschedule_gives_the_rates_of_a_run_configured_that_way_from_the_start():
    """A run at epoch 5 with milestone [20] switches to milestones [1, 3], gamma 0.5 and new base rates: its
    rates become those of a fresh scheduler with the new settings stepped 5 times (bit for bit), and
    later steps follow the new milestones; the independent closed form agrees."""
    model = TinyModel()
    optimizer = build_optimizer(model, 1e-4, 1e-5, 1e-6, 1e-4)
    scheduler = build_scheduler(optimizer, [20], 0.1)
    for _ in range(5):
        optimizer.step()
        scheduler.step()
    assert [g["lr"] for g in optimizer.param_groups] == [1e-4, 1e-5, 1e-6]
    new_rates = [2e-4, 3e-5, 0.0]
    scheduler = reschedule(optimizer, new_rates, [1, 3], 0.5, scheduler.last_epoch)

    reference_model = TinyModel()
    reference_optimizer = build_optimizer(reference_model, *new_rates, 1e-4)
    reference = build_scheduler(reference_optimizer, [1, 3], 0.5)
    for _ in range(5):
        reference_optimizer.step()
        reference.step()
    assert scheduler.last_epoch == reference.last_epoch == 5
    assert [g["lr"] for g in optimizer.param_groups] == [g["lr"] for g in reference_optimizer.param_groups]
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([rate * 0.5**2 for rate in new_rates])
    assert [g["initial_lr"] for g in optimizer.param_groups] == new_rates
    optimizer.step()
    scheduler.step()
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([rate * 0.5**2 for rate in new_rates])
    with pytest.raises(ValueError, match="3 parameter groups"):
        reschedule(optimizer, [1e-4], [1], 0.5, 0)
