"""Fixtures shared by the test modules: the reduced model of ``configs/tiny.yaml``."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from wavecl.config import ModelConfig, load_config
from wavecl.model.wavecl import WaveCL

TINY_CONFIG_PATH = Path(__file__).parents[1] / "configs" / "tiny.yaml"


@pytest.fixture(scope="module")
def tiny_config() -> ModelConfig:
    """The network part of ``configs/tiny.yaml`` (reduced Video-Swin, the packaged MiniLM encoder)."""
    return load_config(TINY_CONFIG_PATH).model


@pytest.fixture(scope="module")
def tiny_model(tiny_config: ModelConfig) -> WaveCL:
    """A randomly initialised tiny WaveCL (seed 0), in train mode; one per test module."""
    torch.manual_seed(0)
    return WaveCL(tiny_config)
