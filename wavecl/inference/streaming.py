"""Frame-by-frame video decoding and encoding with PyAV, in memory bounded by one frame.

:mod:`wavecl.data.video` decodes whole clips (datasets need random access to a few frames) and encodes
from a complete list. Inference on a video of any length needs the streaming forms below instead.
:func:`iter_video_frames` yields the same frames, in the same order, as
:func:`wavecl.data.video.read_video_frames` for every stream whose decoded timestamps increase (all
ordinary files): frames without a timestamp or with a negative one are dropped, and of consecutive
frames sharing a timestamp the last one is kept.
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import ExitStack
from fractions import Fraction
from pathlib import Path
from types import TracebackType

import av
import numpy as np
from PIL import Image

from wavecl.atomic import atomic_path
from wavecl.data.video import _ENCODERS


def _open_input(path: Path) -> av.container.InputContainer:
    if not path.is_file():
        raise FileNotFoundError(f"video file not found: {path}")
    try:
        container = av.open(str(path))
    except av.FFmpegError as error:
        raise ValueError(f"cannot read video {path}: {error}") from error
    if not container.streams.video:
        container.close()
        raise ValueError(f"no video stream in {path}")
    return container


def iter_video_frames(path: str | os.PathLike[str]) -> Iterator[Image.Image]:
    """Decode the first video stream of ``path`` one frame at a time, as RGB PIL images.

    Raises (when iterated):
        FileNotFoundError: the file does not exist.
        ValueError: the file cannot be decoded or holds no frame; the message names the file.
    """
    path = Path(path)
    container = _open_input(path)
    pending: av.VideoFrame | None = None
    try:
        with container:
            for frame in container.decode(video=0):
                if frame.pts is None or frame.pts < 0:
                    continue
                if pending is not None and frame.pts != pending.pts:
                    yield pending.to_image()
                pending = frame
    except av.FFmpegError as error:
        raise ValueError(f"cannot decode video {path}: {error}") from error
    if pending is None:
        raise ValueError(f"video {path} has no decodable frames")
    yield pending.to_image()


def probe_video(path: str | os.PathLike[str]) -> tuple[int | None, float | None]:
    """``(frame count, frames per second)`` from the container header, without decoding.

    Either is ``None`` when the container does not record it. The count is the header's, which may
    differ from the decoded count for unusual files; use it for progress display only.
    """
    path = Path(path)
    with _open_input(path) as container:
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate
        return (stream.frames or None), (float(rate) if rate else None)


class VideoWriter:
    """Encode RGB frames into an mp4 file as they arrive; the file appears atomically on close.

    The encoder and pixel format follow :func:`wavecl.data.video.write_video` (the first available of
    h264, libx264, mpeg4; yuv420p for even sizes, yuv444p with H.264 for odd sizes); the file is
    written through :func:`wavecl.atomic.atomic_path`. The frame size is fixed by the first frame.

    Use as a context manager: on normal exit the file is finalised; if the block raises, nothing is
    written and the temporary file is removed::

        with VideoWriter("out.mp4", fps=24) as writer:
            for frame in frames:          # [H, W, 3] uint8
                writer.write(frame)

    Args:
        path: output ``.mp4``; its folder is created if needed.
        fps: frame rate.
    """

    def __init__(self, path: str | os.PathLike[str], fps: float) -> None:
        if not fps > 0:
            raise ValueError(f"fps must be positive for {path}, got {fps}")
        self.path = Path(path)
        self.fps = fps
        self.num_frames = 0
        self._resources = ExitStack()
        self._container: av.container.OutputContainer | None = None
        self._stream: av.video.stream.VideoStream | None = None

    def __enter__(self) -> "VideoWriter":
        return self

    def _open(self, height: int, width: int) -> None:
        codec = next((name for name in _ENCODERS if name in av.codecs_available), None)
        if codec is None:
            raise RuntimeError(f"no mp4 video encoder available for {self.path} (tried {', '.join(_ENCODERS)})")
        even = height % 2 == 0 and width % 2 == 0
        if not even and codec == "mpeg4":
            raise ValueError(f"the mpeg4 encoder cannot write odd frame size {height}x{width} to {self.path}")
        temporary = self._resources.enter_context(atomic_path(self.path))
        self._container = self._resources.enter_context(av.open(str(temporary), mode="w", format="mp4"))
        self._stream = self._container.add_stream(codec, rate=Fraction(self.fps).limit_denominator(100000))
        self._stream.width, self._stream.height = width, height
        self._stream.pix_fmt = "yuv420p" if even else "yuv444p"

    def write(self, frame: np.ndarray) -> None:
        """Encode one ``[H, W, 3]`` uint8 RGB frame (the same size as the first one)."""
        if self._stream is None:
            if frame.ndim != 3 or frame.shape[2] != 3:
                raise ValueError(f"frames for {self.path} must be [H, W, 3], got {list(frame.shape)}")
            self._open(frame.shape[0], frame.shape[1])
        assert self._stream is not None and self._container is not None
        expected = (self._stream.height, self._stream.width, 3)
        if frame.dtype != np.uint8 or frame.shape != expected:
            raise ValueError(
                f"frame {self.num_frames} for {self.path} must be uint8 {list(expected)}, got {frame.dtype} {list(frame.shape)}"
            )
        for packet in self._stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
            self._container.mux(packet)
        self.num_frames += 1

    def close(self) -> None:
        """Flush the encoder, close the container and move the file into place."""
        if self._container is None or self._stream is None:
            raise ValueError(f"no frames to write to {self.path}")
        with self._resources:
            for packet in self._stream.encode():
                self._container.mux(packet)
        self._container = self._stream = None

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        if kind is None:
            self.close()
        else:
            self._resources.__exit__(kind, error, traceback)
            self._container = self._stream = None
