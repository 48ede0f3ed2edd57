"""wavecl: WaveCL, wavelet calibration learning for referring video object segmentation.

The public API, imported lazily (``import wavecl`` stays fast; torch loads on first use)::

    from wavecl import WaveCL, VideoPredictor, load_config

    model = WaveCL.from_pretrained("runs/demo/runs/synthetic/run")
    masks = VideoPredictor(model)("my_video.mp4", ["the dog on the left"])   # bool [N, T, H, W]

Importing it keeps freed tensor memory in the C heap for reuse (:mod:`wavecl.heap`; ``WAVECL_MALLOC=system``
leaves glibc's policy as it is).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from wavecl.heap import keep_freed_memory

__version__ = "0.1.0"

keep_freed_memory()

# public name -> the module that defines it
_EXPORTS = {
    "Config": "wavecl.config",
    "ModelConfig": "wavecl.config",
    "DataConfig": "wavecl.config",
    "LossConfig": "wavecl.config",
    "TrainConfig": "wavecl.config",
    "load_config": "wavecl.config",
    "apply_overrides": "wavecl.config",
    "WaveCL": "wavecl.model.wavecl",
    "WaveCLOutput": "wavecl.model.output",
    "build_model": "wavecl.model.wavecl",
    "VideoPredictor": "wavecl.inference.predictor",
    "InferenceSettings": "wavecl.inference_settings",
    "predict_video": "wavecl.inference.prediction_folder",
    "build_dataset": "wavecl.data.datasets",
    "evaluate_model": "wavecl.evaluation.protocols",
    "DATASETS": "wavecl.data.datasets",
    "Trainer": "wavecl.training.trainer",
}

__all__ = [
    "DATASETS",
    "Config",
    "DataConfig",
    "InferenceSettings",
    "LossConfig",
    "ModelConfig",
    "TrainConfig",
    "Trainer",
    "VideoPredictor",
    "WaveCL",
    "WaveCLOutput",
    "__version__",
    "apply_overrides",
    "build_dataset",
    "build_model",
    "evaluate_model",
    "load_config",
    "predict_video",
]

if TYPE_CHECKING:
    from wavecl.config import (
        Config,
        DataConfig,
        LossConfig,
        ModelConfig,
        TrainConfig,
        apply_overrides,
        load_config,
    )
    from wavecl.data.datasets import DATASETS, build_dataset
    from wavecl.evaluation.protocols import evaluate_model
    from wavecl.inference.prediction_folder import predict_video
    from wavecl.inference.predictor import VideoPredictor
    from wavecl.inference_settings import InferenceSettings
    from wavecl.model.output import WaveCLOutput
    from wavecl.model.wavecl import WaveCL, build_model
    from wavecl.training.trainer import Trainer


def __getattr__(name: str) -> Any:
    """Import a public name's module on first access (PEP 562)."""
    if name not in _EXPORTS:
        raise AttributeError(f"module 'wavecl' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
