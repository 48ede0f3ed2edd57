"""Test-session setup and fixtures shared by the test modules.

Derived files (sample-list caches) go to a temporary folder, not ``~/.cache``; the reduced model of
``configs/tiny.yaml`` is one fixture.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
import torch

from wavecl.config import ModelConfig, load_config
from wavecl.data.sample_cache import CACHE_ENVIRONMENT_VARIABLE
from wavecl.model.wavecl import WaveCL

TINY_CONFIG_PATH = Path(__file__).parents[1] / "configs" / "tiny.yaml"


def pytest_configure(config) -> None:
    """Point ``$WAVECL_CACHE_DIR`` (inherited by the subprocesses tests start) at a fresh folder."""
    os.environ[CACHE_ENVIRONMENT_VARIABLE] = tempfile.mkdtemp(prefix="wavecl-test-cache-")


@pytest.fixture(scope="module")
def tiny_config() -> ModelConfig:
    """The network part of ``configs/tiny.yaml`` (reduced Video-Swin, the packaged MiniLM encoder)."""
    return load_config(TINY_CONFIG_PATH).model


@pytest.fixture(scope="module")
def tiny_model(tiny_config: ModelConfig) -> WaveCL:
    """A randomly initialised tiny WaveCL (seed 0), in train mode; one per test module."""
    torch.manual_seed(0)
    return WaveCL(tiny_config)
