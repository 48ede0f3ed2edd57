"""Test-session setup and fixtures shared by the test modules.

Derived files (sample-list caches) go to a temporary folder, not ``~/.cache``; the reduced model of
the packaged recipe ``tiny`` is one fixture.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest
import torch

from wavecl.config import ModelConfig, load_config
from wavecl.data.sample_cache import CACHE_ENVIRONMENT_VARIABLE
from wavecl.inference_settings import InferenceSettings
from wavecl.model.pretrained import save_pretrained
from wavecl.model.wavecl import WaveCL

CACHE_FOLDER = pytest.StashKey[str]()


def pytest_configure(config: pytest.Config) -> None:
    """Point ``$WAVECL_CACHE_DIR`` (inherited by the subprocesses tests start) at a fresh folder."""
    config.stash[CACHE_FOLDER] = os.environ[CACHE_ENVIRONMENT_VARIABLE] = tempfile.mkdtemp(prefix="wavecl-test-cache-")


def pytest_unconfigure(config: pytest.Config) -> None:
    """Remove the cache folder of :func:`pytest_configure`: a test run leaves nothing in the temp directory."""
    shutil.rmtree(config.stash[CACHE_FOLDER], ignore_errors=True)


@pytest.fixture(autouse=True)
def tf32_flags_off():
    """TF32 off during every test, as torch starts, and the flags put back after it. The precision policy
    sets them on CUDA, which tests fake; they are torch properties, which ``monkeypatch`` cannot always
    restore (pytest 9.2 fails to, leaving the test's other patches in place too)."""
    matmul, cudnn = torch.backends.cuda.matmul, torch.backends.cudnn
    saved = matmul.allow_tf32, cudnn.allow_tf32
    matmul.allow_tf32 = cudnn.allow_tf32 = False
    yield
    matmul.allow_tf32, cudnn.allow_tf32 = saved


@pytest.fixture(scope="module")
def tiny_config() -> ModelConfig:
    """The network part of the packaged recipe ``tiny`` (reduced Video-Swin, the packaged MiniLM encoder)."""
    return load_config("tiny").model


@pytest.fixture(scope="module")
def tiny_model(tiny_config: ModelConfig) -> WaveCL:
    """A randomly initialised tiny WaveCL (seed 0), in train mode; one per test module."""
    torch.manual_seed(0)
    return WaveCL(tiny_config)


@pytest.fixture(scope="module")
def tiny_eval_model(tiny_model: WaveCL) -> WaveCL:
    """The module's tiny model in eval mode, the mode prediction runs the network in."""
    return tiny_model.eval()


@pytest.fixture(scope="module")
def tiny_pretrained(tiny_model: WaveCL, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A pretrained folder of the module's tiny model (untrained weights), recorded to run at 32 / 48, window 2."""
    return save_pretrained(
        tiny_model,
        tmp_path_factory.mktemp("pretrained") / "tiny",
        InferenceSettings(short_size=32, max_size=48, window=2),
    )


@pytest.fixture(scope="module")
def single_thread():
    """One intra-op thread for a module of tiny-model tests: their tensors gain nothing from threads, and
    on a busy machine the threads of several processes spin against each other; restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
