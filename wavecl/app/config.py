"""The web app's settings: how the model runs (:class:`~wavecl.inference_settings.InferenceSettings`) and
the page's own limits."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from wavecl.inference_settings import InferenceSettings

MEGABYTE = 1 << 20
"""Bytes in a megabyte as this app and Gradio's upload check count them (2^20)."""


@dataclass
class AppConfig:
    """Settings of the web app.

    Attributes:
        inference: how the model runs; its sizes, window and threshold are the defaults of the page's
            controls (the resize control sets the short side and scales ``max_size`` along).
        max_frames: longest video accepted, in frames (the page states the limit).
        max_upload_mb: largest upload accepted, in megabytes (2^20 bytes, as Gradio counts), per request.
        max_sentences: most sentences per request (each is one clip of the batch).
        max_queue: most requests waiting; a request beyond it is refused with a message.
        cache_minutes: age after which Gradio's copies of uploads and results are deleted.
        temp_parent: folder in which the app makes its temporary folder (the system's when ``None``).
        examples: offer the generated example clips.
        onnx_dir: the exported ONNX parts ONNX Runtime runs (``wavecl export --onnx``); needed when
            ``inference.runtime`` is ``"onnxruntime"``.

    Raises:
        ValueError: a limit out of its range, or ONNX Runtime without ``onnx_dir``, naming the field.
    """

    inference: InferenceSettings = field(default_factory=InferenceSettings)
    max_frames: int = 300
    max_upload_mb: float = 100.0
    max_sentences: int = 8
    max_queue: int = 16
    cache_minutes: float = 30.0
    temp_parent: str | os.PathLike[str] | None = None
    examples: bool = True
    onnx_dir: str | os.PathLike[str] | None = None

    def __post_init__(self) -> None:
        for name in ("max_frames", "max_sentences", "max_queue"):
            if getattr(self, name) < 1:
                raise ValueError(f"AppConfig.{name} must be at least 1, got {getattr(self, name)}")
        if self.inference.runtime == "onnxruntime" and self.onnx_dir is None:
            raise ValueError(
                "AppConfig.onnx_dir is needed with runtime='onnxruntime': export the model with `wavecl export --onnx`"
            )
        if not self.max_upload_mb > 0 or not self.cache_minutes > 0:
            raise ValueError(
                f"AppConfig.max_upload_mb and cache_minutes must be positive, "
                f"got {self.max_upload_mb} and {self.cache_minutes}"
            )

    @property
    def max_upload_bytes(self) -> int:
        """:attr:`max_upload_mb` in bytes."""
        return int(self.max_upload_mb * MEGABYTE)
