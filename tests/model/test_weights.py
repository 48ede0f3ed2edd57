"""The one weights loader: every layout other writers produce loads to the file's tensors, and anything
else is refused with the keys and the likely cause."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from wavecl.model.wavecl import WaveCL
from wavecl.model.weights import CheckpointMismatchError, load_weights
from wavecl.testing.checkpoints import original_state_dict


@pytest.fixture()
def weights(tiny_model: WaveCL) -> dict[str, torch.Tensor]:
    """A state dict of the tiny model whose every tensor differs from a freshly built model's."""
    generator = torch.Generator().manual_seed(3)
    return {
        name: tensor + torch.rand(tensor.shape, generator=generator) if tensor.is_floating_point() else tensor + 1
        for name, tensor in tiny_model.state_dict().items()
    }


def assert_holds(model: WaveCL, weights: dict[str, torch.Tensor]) -> None:
    state = model.state_dict()
    assert state.keys() == weights.keys()
    for name, tensor in state.items():
        assert torch.equal(tensor, weights[name]), name


def test_the_box_heads_are_registered_once(tiny_model: WaveCL) -> None:
    names = list(tiny_model.state_dict())
    assert any(name.startswith("bbox_embed.") for name in names)
    assert not any("decoder.bbox_embed" in name for name in names)


@pytest.mark.parametrize("layout", ["original", "ddp", "original under ddp"])
def test_original_and_ddp_checkpoints_load_to_the_files_tensors(tiny_config, weights, tmp_path: Path, layout) -> None:
    state = original_state_dict(weights) if layout.startswith("original") else dict(weights)
    if layout.endswith("ddp"):
        state = {f"module.{key}": value for key, value in state.items()}
    torch.save({"model_state_dict": state, "epoch": 7, "optimizer": {}}, tmp_path / "checkpoint.pth.tar")
    model = WaveCL(tiny_config)
    report = load_weights(model, tmp_path / "checkpoint.pth.tar")
    assert len(report.loaded) == len(weights)
    assert_holds(model, weights)


def test_mismatches_name_the_file_the_keys_and_the_likely_cause(tiny_config, weights, tmp_path: Path) -> None:
    model = WaveCL(tiny_config)
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    path = tmp_path / "weights.pt"

    torch.save({f"model.{key}": value for key, value in weights.items()}, path)
    with pytest.raises(CheckpointMismatchError, match=r"(?s)weights\.pt.*prefix 'model\.'"):
        load_weights(model, path)

    torch.save({key: value for key, value in weights.items() if not key.startswith("voc.")}, path)
    with pytest.raises(CheckpointMismatchError, match=r"(?s)missing: \d+ key.*voc\..*no 'voc\.\*' weights"):
        load_weights(model, path)

    other_classes = dict(weights)
    for name in [name for name in weights if name.startswith("class_embed.")]:
        other_classes[name] = torch.zeros((65, *weights[name].shape[1:]))
    torch.save(other_classes, path)
    with pytest.raises(CheckpointMismatchError, match=r"(?s)shape mismatch.*class_embed.*another num_classes"):
        load_weights(model, path)
    report = load_weights(model, path, skip=("class_embed.",))
    assert len(report.skipped) == sum(name.startswith("class_embed.") for name in weights)
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, before[name] if name.startswith("class_embed.") else weights[name]), name


def test_nothing_is_loaded_when_refused(tiny_config, weights) -> None:
    model = WaveCL(tiny_config)
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    partial = dict(weights)
    partial.pop("query_embed.weight")
    with pytest.raises(CheckpointMismatchError, match=r"(?s)the given state dict .* missing: 1 key"):
        load_weights(model, partial)
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, before[name]), name
    report = load_weights(model, partial, strict=False)
    assert report.missing == ["query_embed.weight"]
    assert torch.equal(model.state_dict()["query_embed.weight"], before["query_embed.weight"])
