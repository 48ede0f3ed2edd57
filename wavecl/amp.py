"""Mixed precision: one policy, decided once per run, for training, evaluation and prediction.

:func:`decide_precision` turns the configured mode (``off``, ``bf16``, ``fp16``) and the device into a
:class:`PrecisionPolicy`: the dtype autocast actually runs in, whether training scales the loss, and
which tensors stay float32. The rules:

- ``bf16`` runs bfloat16 where the GPU computes it natively (compute capability 8.0 and later;
  emulated bfloat16 on older GPUs is slower than float32 and does not count); elsewhere it runs
  float16, with loss scaling;
- on the CPU, ``bf16`` runs bfloat16 autocast where the CPU has bfloat16 instructions (AVX512-BF16 or
  AMX-BF16, :func:`cpu_bf16_is_native`; oneDNN emulates it elsewhere, slower than float32) and float32
  elsewhere; ``fp16`` runs float32 (no CPU has float16 matmuls worth using); a request that does not run
  is noted, not obeyed; other devices run float32;
- a gradient scaler runs exactly when float16 does (float16's narrow range underflows small gradients;
  bfloat16 has float32's range and needs none);
- on CUDA, whatever the mode, float32 matmuls and cuDNN convolutions run in TF32 on the tensor cores
  (float32's range with float16's 10-bit mantissa, finer than bfloat16's 7 bits; several times faster
  than full float32 on Ampere and later GPUs, a no-op on older ones). :func:`decide_precision` sets torch's
  process-wide flags for it, and nothing else in wavecl touches them.
"""

from __future__ import annotations

import contextlib
import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from wavecl.config import AMP_CHOICES, AmpMode

FLOAT32_TENSORS = (
    "parameters, gradients and optimizer state (autocast computes on low-precision copies)",
    "layer and group norms, and so the residual streams they start (as CUDA autocast does, on every device)",
    "the losses and the matcher's costs (the model's outputs are cast to float32 first)",
    "deformable attention reference points and sampling grids, and the mask head's coordinates",
)
"""What stays float32 under autocast, whatever the policy (recorded with the policy)."""

_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}

CPUINFO = Path("/proc/cpuinfo")
"""Where Linux lists the CPU's instruction-set flags (read by :func:`cpu_bf16_is_native`)."""

CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")
"""The x86 flags of bfloat16 arithmetic in hardware: either one makes CPU bf16 autocast pay."""


@dataclass(frozen=True)
class PrecisionPolicy:
    """The precision a run computes in.

    Attributes:
        requested: the configured mode.
        device_type: ``"cuda"`` or ``"cpu"``.
        autocast_dtype: ``torch.bfloat16`` or ``torch.float16`` under autocast; ``None`` for float32.
        note: why the precision differs from the request (empty when it does not).
    """

    requested: AmpMode
    device_type: str
    autocast_dtype: torch.dtype | None
    note: str = ""

    @property
    def grad_scaler(self) -> bool:
        """Whether training scales the loss: exactly when float16 runs (its narrow range underflows small
        gradients; bfloat16 has float32's range)."""
        return self.autocast_dtype == torch.float16

    @property
    def tf32(self) -> bool:
        """Whether float32 matmuls and convolutions run in TF32: on CUDA (see the module's rules)."""
        return self.device_type == "cuda"

    @property
    def effective(self) -> AmpMode:
        """The mode that runs: ``off``, ``bf16`` or ``fp16``."""
        modes: dict[torch.dtype | None, AmpMode] = {None: "off", torch.bfloat16: "bf16", torch.float16: "fp16"}
        return modes[self.autocast_dtype]

    def autocast(self) -> contextlib.AbstractContextManager:
        """The autocast context of this policy (a no-op for float32)."""
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.autocast_dtype)

    def summary(self) -> dict[str, Any]:
        """A JSON-ready record: requested and effective mode, scaler, TF32, device, note and what stays
        float32 (:data:`FLOAT32_TENSORS` under autocast; everything without it)."""
        return {
            "requested": self.requested,
            "effective": self.effective,
            "grad_scaler": self.grad_scaler,
            "tf32": self.tf32,
            "device": self.device_type,
            "note": self.note,
            "float32": list(FLOAT32_TENSORS) if self.autocast_dtype is not None else ["everything (no autocast)"],
        }

    def describe(self) -> str:
        """One line for the log: ``precision: bf16 requested, fp16 autocast with loss scaling on cuda, float32
        matmuls in TF32 (...)``."""
        runs = "float32" if self.autocast_dtype is None else f"{self.effective} autocast"
        scaler = " with loss scaling" if self.grad_scaler else ""
        tf32 = ", float32 matmuls and convolutions in TF32" if self.tf32 else ""
        note = f" ({self.note})" if self.note else ""
        return f"precision: {self.requested} requested, {runs}{scaler} on {self.device_type}{tf32}{note}"


def bf16_is_native(device: torch.device) -> bool:
    """Whether the GPU ``device`` computes bfloat16 natively; emulated support does not count.

    Uses ``torch.cuda.is_bf16_supported(including_emulation=False)``; torch releases without that
    argument report native support only.
    """
    with torch.cuda.device(device):
        if "including_emulation" in inspect.signature(torch.cuda.is_bf16_supported).parameters:
            return torch.cuda.is_bf16_supported(including_emulation=False)
        return torch.cuda.is_bf16_supported()


def cpu_bf16_is_native() -> bool:
    """Whether this CPU computes bfloat16 in hardware: ``avx512_bf16`` or ``amx_bf16`` among the flags of
    :data:`CPUINFO`.

    torch exposes no such check (``torch.backends.cpu.get_cpu_capability()`` names the vector width
    only, and oneDNN's bf16 check also accepts plain AVX512, where bfloat16 is emulated). Where
    :data:`CPUINFO` does not exist (macOS, Windows) or cannot be read, the answer is False.
    """
    try:
        text = CPUINFO.read_text()
    except OSError:
        return False
    flags = {flag for line in text.splitlines() if line.startswith("flags") for flag in line.split(":", 1)[-1].split()}
    return any(flag in flags for flag in CPU_BF16_FLAGS)


def enable_tf32() -> None:
    """Let CUDA run float32 matmuls (cuBLAS) and convolutions (cuDNN) in TF32, process-wide.

    The CUDA flags only (``torch.backends.cuda.matmul.allow_tf32``, ``torch.backends.cudnn.allow_tf32``):
    the CPU's float32 matmuls stay exact.
    """
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True


NORM_TYPES = (nn.LayerNorm, nn.GroupNorm)
"""The norm modules :func:`float32_norms` hooks."""


def float32_norms(model: nn.Module) -> None:
    """Make every :data:`NORM_TYPES` module of ``model`` compute in float32 under autocast, on every device.

    CUDA autocast runs layer and group norms in float32; CPU autocast runs them in the dtype of their
    input, so a norm after a bfloat16 linear or convolution returned bfloat16 and, in a post-norm
    transformer, kept the whole residual stream in bfloat16 (the deformable encoder and the object
    decoder: 8-bit mantissas from the ``input_proj`` GroupNorm on). A forward pre-hook casts a
    low-precision input to float32 while autocast is on (the norm's parameters are float32, so its output
    is float32); without autocast it does nothing, and a model cast to bfloat16 stays bfloat16.
    """
    for module in model.modules():
        if isinstance(module, NORM_TYPES):
            module.register_forward_pre_hook(_float32_norm_input)


def _float32_norm_input(module: nn.Module, args: tuple[Tensor, ...]) -> tuple[Tensor, ...] | None:
    """The pre-hook of :func:`float32_norms`: ``args`` with a float32 first input, or ``None`` (unchanged)."""
    x = args[0]
    if x.dtype in (torch.bfloat16, torch.float16) and torch.is_autocast_enabled(x.device.type):
        return (x.float(), *args[1:])
    return None


def decide_precision(amp: AmpMode, device: torch.device) -> PrecisionPolicy:
    """The precision policy of a run on ``device`` configured with ``amp``; on CUDA it also turns TF32 on
    (:func:`enable_tf32`), so the policy the run records is the one that runs.

    Args:
        amp: ``off``, ``bf16`` or ``fp16``.
        device: the device the model computes on.

    Returns:
        The :class:`PrecisionPolicy` (see the module's rules).

    Raises:
        ValueError: ``amp`` is not one of the three modes.
    """
    if amp not in AMP_CHOICES:
        raise ValueError(f"amp must be 'off', 'bf16' or 'fp16', got {amp!r}")
    if device.type == "cuda":
        enable_tf32()
    if amp == "off":
        return PrecisionPolicy(amp, device.type, None)
    if device.type == "cpu":
        return _cpu_policy(amp)
    if device.type != "cuda":
        return PrecisionPolicy(amp, device.type, None, f"autocast runs on CUDA and CPUs only; {device.type} is float32")
    if amp == "bf16" and not bf16_is_native(device):
        major, minor = torch.cuda.get_device_capability(device)
        note = (
            f"{torch.cuda.get_device_name(device)} (compute capability {major}.{minor}) has no native bfloat16; "
            "float16 runs instead"
        )
        return PrecisionPolicy(amp, "cuda", torch.float16, note)
    return PrecisionPolicy(amp, "cuda", _DTYPES[amp])


def _cpu_policy(amp: AmpMode) -> PrecisionPolicy:
    """The CPU's policy for ``bf16`` or ``fp16`` (see the module's rules)."""
    if amp == "fp16":
        return PrecisionPolicy(amp, "cpu", None, "float16 autocast runs on CUDA only; cpu is float32")
    if not cpu_bf16_is_native():
        note = "this CPU has no bfloat16 instructions (AVX512-BF16 or AMX-BF16); cpu is float32"
        return PrecisionPolicy(amp, "cpu", None, note)
    return PrecisionPolicy(amp, "cpu", torch.bfloat16)
