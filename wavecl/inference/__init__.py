"""Run a trained WaveCL on your own videos: :class:`VideoPredictor` and :func:`predict_video`."""

from wavecl.inference.prediction_folder import predict_video
from wavecl.inference.predictor import VideoPredictor

__all__ = ["VideoPredictor", "predict_video"]
