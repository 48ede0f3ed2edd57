"""Run a trained WaveCL on your own videos: :class:`VideoPredictor`, :func:`predict_video`, pretrained folders."""

from wavecl.inference.predictor import VideoPredictor
from wavecl.inference.pretrained import load_pretrained, save_pretrained
from wavecl.inference.run import predict_video

__all__ = ["VideoPredictor", "load_pretrained", "predict_video", "save_pretrained"]
