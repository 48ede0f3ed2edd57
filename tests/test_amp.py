"""The precision policy (:func:`wavecl.amp.decide_precision`) on mocked GPUs, and where a run records it."""

from __future__ import annotations

import contextlib
import json
import logging
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from support import SIZE_OVERRIDES, TINY_CONFIG, make_inputs, perturbed_model, read_log, skip_evaluation
from torch import nn

from wavecl import amp
from wavecl.amp import FLOAT32_TENSORS, bf16_is_native, cpu_bf16_is_native, decide_precision, float32_norms
from wavecl.config import apply_overrides, load_config
from wavecl.data.synthetic import sample_synthetic_video, write_synthetic_ytvos
from wavecl.distributed import DistInfo
from wavecl.inference.predictor import VideoPredictor
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
    return calls


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


def fake_cpu(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, native: bool) -> None:
    """Make :func:`cpu_bf16_is_native` read a two-core ``/proc/cpuinfo`` with or without ``avx512_bf16``."""
    flags = "fpu sse2 avx2 avx512f avx512bw" + (" avx512_bf16" if native else " avx512_vnni")
    core = f"processor\t: {{}}\nmodel name\t: Some CPU\nflags\t\t: {flags}\nbugs\t\t: spectre_v1\n\n"
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(core.format(0) + core.format(1))
    monkeypatch.setattr(amp, "CPUINFO", cpuinfo)


@pytest.mark.parametrize("native", [True, False], ids=["avx512_bf16", "no_bf16"])
@pytest.mark.parametrize("mode", ["off", "bf16", "fp16"])
def test_cpu_policy(mode, native, monkeypatch, tmp_path):
    """bf16 autocast on a CPU with bfloat16 instructions; float32 otherwise, with the reason noted."""
    fake_cpu(monkeypatch, tmp_path, native)
    assert cpu_bf16_is_native() == native
    policy = decide_precision(mode, CPU)
    runs_bf16 = mode == "bf16" and native
    assert policy.autocast_dtype == (torch.bfloat16 if runs_bf16 else None)
    assert policy.effective == ("bf16" if runs_bf16 else "off") and not policy.grad_scaler
    assert not policy.tf32 and "TF32" not in policy.describe()
    assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
    expected_note = {
        "off": "",
        "bf16": "" if native else "this CPU has no bfloat16 instructions (AVX512-BF16 or AMX-BF16); cpu is float32",
        "fp16": "float16 autocast runs on CUDA only; cpu is float32",
    }[mode]
    assert policy.note == expected_note
    with policy.autocast():
        product = torch.mm(torch.ones(2, 2), torch.ones(2, 2))
        assert product.dtype == (torch.bfloat16 if runs_bf16 else torch.float32)
        assert torch.is_autocast_enabled("cpu") == runs_bf16


def test_cpu_without_cpuinfo_is_not_native(monkeypatch, tmp_path):
    monkeypatch.setattr(amp, "CPUINFO", tmp_path / "missing")
    assert not cpu_bf16_is_native()
    assert decide_precision("bf16", CPU).autocast_dtype is None


def test_amx_counts_as_native(monkeypatch, tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: avx2 amx_tile amx_bf16 amx_int8\n")
    monkeypatch.setattr(amp, "CPUINFO", cpuinfo)
    assert decide_precision("bf16", CPU).autocast_dtype == torch.bfloat16


def test_autocast_context_runs_the_decided_dtype():
    """The policy's context is torch's autocast with its dtype (CPU autocast stands in for CUDA here)."""
    policy = decide_precision("bf16", CPU)
    forced = type(policy)("bf16", "cpu", torch.bfloat16, False)
    with forced.autocast():
        assert torch.mm(torch.ones(2, 2), torch.ones(2, 2)).dtype == torch.bfloat16
    with pytest.raises(ValueError, match="amp must be"):
        decide_precision("true", CPU)  # type: ignore[arg-type]


@pytest.mark.parametrize("native", [True, False], ids=["avx512_bf16", "no_bf16"])
def test_trainer_logs_records_and_runs_the_policy(tmp_path, caplog, monkeypatch, native):
    """A CPU training step under the policy: bf16 autocast where native (finite loss, gradients reach the
    weights), float32 elsewhere; logged and recorded in run_info.json either way."""
    fake_cpu(monkeypatch, tmp_path, native)
    skip_evaluation(monkeypatch)
    for split in ("train", "valid"):  # training checks both splits it reads before it starts
        write_synthetic_ytvos(tmp_path / "data", 2, num_frames=4, size=(32, 48), seed=0, split=split)
    values = {
        **SIZE_OVERRIDES,
        "data.root": str(tmp_path / "data"),
        "train.output_dir": str(tmp_path / "runs"),
        "train.amp": "bf16",
        "train.epochs": 1,
        "train.max_steps_per_epoch": 1,
    }
    config = apply_overrides(load_config(TINY_CONFIG), values)
    with caplog.at_level(logging.INFO, logger="wavecl.train"):
        trainer = Trainer(config, DistInfo(0, 1, 0, CPU))
    if native:
        assert "precision: bf16 requested, bf16 autocast on cpu\n" in caplog.text + "\n"
    else:
        assert "precision: bf16 requested, float32 on cpu (this CPU has no bfloat16 instructions" in caplog.text
    info = json.loads((trainer.run_dir / "run_info.json").read_text())
    assert info["precision"] == {
        "requested": "bf16",
        "effective": "bf16" if native else "off",
        "grad_scaler": False,
        "tf32": False,
        "device": "cpu",
        "note": "" if native else "this CPU has no bfloat16 instructions (AVX512-BF16 or AMX-BF16); cpu is float32",
        "float32": list(FLOAT32_TENSORS) if native else ["everything (no autocast)"],
    }
    assert not trainer.scaler.is_enabled()
    projected = []
    value_proj = trainer.model.transformer.encoder.layers[0].self_attn.value_proj
    value_proj.register_forward_hook(lambda module, inputs, output: projected.append(output.dtype))
    before = {name: p.detach().clone() for name, p in trainer.model.named_parameters() if p.requires_grad}
    trainer.fit()
    assert projected == [torch.bfloat16 if native else torch.float32]
    (record,) = read_log(trainer.run_dir)
    assert math.isfinite(record["train_loss"]) and record["train_skipped_batches"] == 0
    after = dict(trainer.model.named_parameters())
    assert all(after[name].dtype == torch.float32 and torch.isfinite(after[name]).all() for name in before)
    assert any(not torch.equal(after[name], value) for name, value in before.items())


def test_bf16_prediction_agrees_with_float32(monkeypatch, tmp_path, tiny_config):
    """The tiny model (every path carrying a signal) predicts nearly the same masks under CPU bf16 autocast
    as in float32; its mask logits differ by bf16 rounding (so bf16 really ran), not more."""
    fake_cpu(monkeypatch, tmp_path, native=True)
    model = perturbed_model(tiny_config).eval()
    video, _ = sample_synthetic_video(seed=3, split="test", index=0, num_frames=5, size=(48, 64)).render()
    sentences = ["the red circle moving to the left", "a blue square", "the green triangle"]
    segment = model.segment
    logits: list[torch.Tensor] = []

    def recording_segment(*args, **kwargs):
        output = segment(*args, **kwargs)
        logits.append(output.pred_masks.float().flatten())
        return output

    monkeypatch.setattr(model, "segment", recording_segment)
    results = {}
    for mode in ("off", "bf16"):
        predictor = VideoPredictor(model, short_size=40, max_size=64, window=5, amp=mode, progress=False)
        assert predictor.precision.effective == mode
        masks = predictor(video, sentences)
        results[mode] = (masks, torch.cat(logits))
        logits.clear()
    (masks32, logits32), (masks16, logits16) = results["off"], results["bf16"]
    assert masks32.shape == masks16.shape == (3, 5, 48, 64)
    assert 0.02 < masks32.float().mean() < 0.98  # neither empty nor full: the comparison means something
    assert (masks32 == masks16).float().mean() >= 0.98
    error = (logits16 - logits32).abs().max() / logits32.abs().max()
    assert 0 < error < 0.05


def test_norms_compute_in_float32_under_cpu_autocast():
    """A hooked LayerNorm or GroupNorm given bfloat16 under CPU autocast returns the float32 norm of that
    input (CPU autocast alone would return bfloat16); without autocast a bfloat16 norm stays bfloat16."""
    x = torch.randn(6, 16, 5).bfloat16()
    for norm, plain in ((nn.LayerNorm(5), F.layer_norm), (nn.GroupNorm(4, 16), F.group_norm)):
        with torch.no_grad():
            norm.weight.normal_()
            norm.bias.normal_()
        shape = norm.normalized_shape if isinstance(norm, nn.LayerNorm) else norm.num_groups
        expected = plain(x.float(), shape, norm.weight, norm.bias, norm.eps)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert norm(x).dtype == torch.bfloat16  # what CPU autocast does by itself
            float32_norms(norm)
            output = norm(x)
        assert output.dtype == torch.float32
        torch.testing.assert_close(output, expected, rtol=0, atol=0)
        assert norm.bfloat16()(x).dtype == torch.bfloat16


def test_model_residual_streams_stay_float32_under_cpu_autocast(tiny_config):
    """Under CPU bf16 autocast every norm of the model returns float32, so do the post-norm deformable
    encoder layers, while the matmuls run in bfloat16."""
    model = perturbed_model(tiny_config).eval()
    dtypes: dict[str, set[torch.dtype]] = {}

    def record(name):
        return lambda module, args, output: dtypes.setdefault(name, set()).add(output.dtype)

    for module in model.modules():
        for kind in (nn.LayerNorm, nn.GroupNorm, nn.Linear):
            if isinstance(module, kind):
                module.register_forward_hook(record(kind.__name__))
    for index, layer in enumerate(model.transformer.encoder.layers):
        layer.register_forward_hook(record(f"encoder layer {index}"))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        model(*make_inputs(2, 1, dtype=torch.float32))
    assert torch.bfloat16 in dtypes.pop("Linear")  # autocast ran (a few linears run float32 on purpose)
    assert dtypes.pop("LayerNorm") == dtypes.pop("GroupNorm") == {torch.float32}
    assert dtypes == {
        f"encoder layer {index}": {torch.float32} for index in range(len(model.transformer.encoder.layers))
    }
