"""The collated Batch: pinning and device copies reach every tensor (targets included); metadata is typed."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from wavecl.data.collate import collate_clips
from wavecl.data.types import Batch, ClipSample, DavisMetadata, ExpressionMetadata, FrameTarget


def clip(num_frames: int, height: int, width: int, seed: int) -> ClipSample:
    generator = torch.Generator().manual_seed(seed)
    targets = [
        FrameTarget(
            masks=torch.rand(1, height, width, generator=generator) > 0.5,
            boxes=torch.rand(1, 4, generator=generator),
            labels=torch.tensor([seed]),
            is_visible=True,
            orig_size=(height, width),
            size=(height, width),
        )
        if t % 2 == 0
        else None
        for t in range(num_frames)
    ]
    metadata = ExpressionMetadata(f"v{seed}", "0", tuple(f"{t:05d}" for t in range(num_frames)), (height, width))
    return ClipSample(torch.randn(num_frames, 3, height, width, generator=generator), targets, f"clip {seed}", metadata)


def tensors_of(batch: Batch) -> list[Tensor]:
    """Every tensor of a batch, found by walking it independently of the code under test."""
    found = [batch.frames, batch.pad_mask, batch.image_sizes]
    for row in batch.targets:
        for target in row:
            if target is not None:
                found += [target.masks, target.boxes, target.labels]
    return found


@pytest.fixture
def batch() -> Batch:
    return collate_clips([clip(3, 8, 10, seed=1), clip(2, 6, 12, seed=2)])


def test_pin_memory_pins_every_tensor(batch, monkeypatch):
    """``Tensor.pin_memory`` needs a GPU driver; a stand-in records what is pinned and returns a copy."""
    pinned: dict[int, Tensor] = {}

    def fake_pin_memory(tensor: Tensor) -> Tensor:
        copy = tensor.clone()
        pinned[id(copy)] = copy
        return copy

    monkeypatch.setattr(Tensor, "pin_memory", fake_pin_memory)
    result = batch.pin_memory()
    before, after = tensors_of(batch), tensors_of(result)
    assert len(after) == len(before) == 3 + 3 * 3
    for original, copy in zip(before, after):
        assert id(copy) in pinned and copy is not original
        assert torch.equal(copy, original)
    assert result.texts == batch.texts and result.metadata == batch.metadata
    assert [[t is None for t in row] for row in result.targets] == [[t is None for t in row] for row in batch.targets]
    assert result.metadata[1] == ExpressionMetadata("v2", "0", ("00000", "00001"), (6, 12))


def test_to_copies_every_tensor_without_blocking_when_asked(batch, monkeypatch):
    calls: list[tuple[torch.dtype, bool]] = []
    to = Tensor.to

    def recording_to(tensor: Tensor, *args, **kwargs) -> Tensor:
        calls.append((tensor.dtype, kwargs.get("non_blocking", False)))
        return to(tensor, *args, **kwargs).clone()

    monkeypatch.setattr(Tensor, "to", recording_to)
    moved = batch.to("cpu", non_blocking=True)
    assert len(calls) == len(tensors_of(batch)) and all(non_blocking for _, non_blocking in calls)
    for original, copy in zip(tensors_of(batch), tensors_of(moved)):
        assert copy is not original and torch.equal(copy, original)


def test_metadata_as_checks_every_clip_has_the_expected_kind(batch):
    assert batch.metadata_as(ExpressionMetadata) == batch.metadata
    with pytest.raises(TypeError, match=r"clip 0 \('clip 1'\) has metadata ExpressionMetadata.*expected DavisMetadata"):
        batch.metadata_as(DavisMetadata)
