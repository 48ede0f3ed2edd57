"""Mixed precision: one autocast policy for training, evaluation and prediction."""

from __future__ import annotations

import contextlib
from typing import Literal, get_args

import torch

AmpMode = Literal["off", "bf16", "fp16"]
"""Mixed precision everywhere (training, evaluation, prediction, the web app): float32, bf16 or fp16."""
DEFAULT_AMP: AmpMode = "off"
"""The one default of every ``amp`` setting: float32, as the published results were computed."""
AMP_CHOICES: tuple[str, ...] = get_args(AmpMode)


def autocast(device: torch.device, amp: AmpMode) -> contextlib.AbstractContextManager:
    """bf16 or fp16 autocast on CUDA; a no-op elsewhere (CPU runs in fp32) or with ``amp="off"``.

    ``bf16`` falls back to fp16 on GPUs without bfloat16 support.
    """
    if amp == "off" or device.type != "cuda":
        return contextlib.nullcontext()
    use_bf16 = amp == "bf16" and torch.cuda.is_bf16_supported()
    return torch.autocast("cuda", dtype=torch.bfloat16 if use_bf16 else torch.float16)
