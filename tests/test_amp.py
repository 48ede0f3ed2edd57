"""The precision policy (:func:`wavecl.amp.decide_precision`) on mocked GPUs, and where a run records it."""

from __future__ import annotations

import contextlib
import json
import logging

import pytest
import torch
from test_trainer import SIZE_OVERRIDES, TINY_CONFIG

from wavecl.amp import FLOAT32_TENSORS, bf16_is_native, decide_precision
from wavecl.config import apply_overrides, load_config
from wavecl.data.synthetic import write_synthetic_ytvos
from wavecl.distributed import DistInfo
from wavecl.training.trainer import Trainer

CUDA = torch.device("cuda", 0)
CPU = torch.device("cpu")
# name, compute capability, native bf16, bf16 counting emulation (what torch.cuda.is_bf16_supported() says)
A100 = ("NVIDIA A100-SXM4-80GB", (8, 0), True, True)
V100 = ("Tesla V100-SXM2-32GB", (7, 0), False, True)
T4_OLD_DRIVER = ("Tesla T4", (7, 5), False, False)


def fake_gpu(monkeypatch: pytest.MonkeyPatch, gpu: tuple) -> list[dict]:
    """Make ``torch.cuda`` describe ``gpu``; returns the recorded ``is_bf16_supported`` calls."""
    name, capability, native, emulated = gpu
    calls: list[dict] = []

    def is_bf16_supported(including_emulation: bool = True) -> bool:
        calls.append({"including_emulation": including_emulation})
        return emulated if including_emulation else native

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", is_bf16_supported)
    monkeypatch.setattr(torch.cuda, "device", lambda device: contextlib.nullcontext())
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: name)
    untouched_tf32_flags(monkeypatch)
    return calls


def untouched_tf32_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    """Set torch's TF32 flags off for the test (the monkeypatch restores them after it)."""
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)


@pytest.mark.parametrize(
    ("gpu", "amp", "dtype", "scaler"),
    [
        (A100, "off", None, False),
        (A100, "bf16", torch.bfloat16, False),
        (A100, "fp16", torch.float16, True),
        (V100, "off", None, False),
        (V100, "bf16", torch.float16, True),  # emulated bf16 does not count: fp16, and it is scaled
        (V100, "fp16", torch.float16, True),
        (T4_OLD_DRIVER, "bf16", torch.float16, True),
    ],
)
def test_policy_on_gpus(monkeypatch, gpu, amp, dtype, scaler):
    calls = fake_gpu(monkeypatch, gpu)
    policy = decide_precision(amp, CUDA)
    assert (policy.autocast_dtype, policy.grad_scaler) == (dtype, scaler)
    assert policy.grad_scaler == (policy.autocast_dtype == torch.float16)  # the scaler runs exactly with fp16
    assert policy.effective == {None: "off", torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype]
    kept = list(FLOAT32_TENSORS) if dtype is not None else ["everything (no autocast)"]
    assert policy.summary()["float32"] == kept
    # float32 matmuls and convolutions run TF32 on CUDA whatever the mode, and the record says so
    assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
    assert policy.tf32 and policy.summary()["tf32"] is True
    assert "float32 matmuls and convolutions in TF32" in policy.describe()
    if amp == "bf16":
        assert calls == [{"including_emulation": False}]
    if amp == "bf16" and dtype == torch.float16:
        assert f"{gpu[0]} (compute capability {gpu[1][0]}.{gpu[1][1]}) has no native bfloat16" in policy.note
        assert policy.describe().startswith(
            "precision: bf16 requested, fp16 autocast with loss scaling on cuda, "
            "float32 matmuls and convolutions in TF32 ("
        )
    else:
        assert policy.note == ""


def test_capability_check_without_the_emulation_argument(monkeypatch):
    """torch releases whose ``is_bf16_supported`` takes no argument report native support only."""
    fake_gpu(monkeypatch, A100)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    assert not bf16_is_native(CUDA)
    assert decide_precision("bf16", CUDA).autocast_dtype == torch.float16


@pytest.mark.parametrize("amp", ["off", "bf16", "fp16"])
def test_cpu_runs_float32_and_says_why(amp, monkeypatch):
    untouched_tf32_flags(monkeypatch)
    policy = decide_precision(amp, CPU)
    assert policy.autocast_dtype is None and not policy.grad_scaler and policy.effective == "off"
    assert not policy.tf32 and "TF32" not in policy.describe()
    assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
    assert ("CUDA only" in policy.note) == (amp != "off")
    with policy.autocast():
        assert torch.mm(torch.ones(2, 2), torch.ones(2, 2)).dtype == torch.float32
        assert not torch.is_autocast_enabled("cpu")


def test_autocast_context_runs_the_decided_dtype():
    """The policy's context is torch's autocast with its dtype (CPU autocast stands in for CUDA here)."""
    policy = decide_precision("bf16", CPU)
    forced = type(policy)("bf16", "cpu", torch.bfloat16, False)
    with forced.autocast():
        assert torch.mm(torch.ones(2, 2), torch.ones(2, 2)).dtype == torch.bfloat16
    with pytest.raises(ValueError, match="amp must be"):
        decide_precision("true", CPU)  # type: ignore[arg-type]


def test_trainer_logs_and_records_the_policy(tmp_path, caplog):
    for split in ("train", "valid"):  # training checks both splits it reads before it starts
        write_synthetic_ytvos(tmp_path / "data", 2, num_frames=4, size=(32, 48), seed=0, split=split)
    values = {
        **SIZE_OVERRIDES,
        "data.root": str(tmp_path / "data"),
        "train.output_dir": str(tmp_path / "runs"),
        "train.amp": "bf16",
    }
    config = apply_overrides(load_config(TINY_CONFIG), values)
    with caplog.at_level(logging.INFO, logger="wavecl.train"):
        trainer = Trainer(config, DistInfo(0, 1, 0, CPU))
    assert "precision: bf16 requested, float32 on cpu (autocast runs on CUDA only" in caplog.text
    info = json.loads((trainer.run_dir / "run_info.json").read_text())
    assert info["precision"] == {
        "requested": "bf16",
        "effective": "off",
        "grad_scaler": False,
        "tf32": False,
        "device": "cpu",
        "note": "autocast runs on CUDA only; cpu is float32",
        "float32": ["everything (no autocast)"],
    }
    assert not trainer.scaler.is_enabled()
