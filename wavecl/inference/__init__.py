"""Run a trained WaveCL on your own videos: :class:`VideoPredictor` and :func:`predict_video`."""

from wavecl.inference.predictor import VideoPredictor
from wavecl.inference.run import predict_video

__all__ = ["VideoPredictor", "predict_video"]
