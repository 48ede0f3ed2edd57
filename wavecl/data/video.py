"""Video decoding and encoding with PyAV.

The reference decodes A2D clips with ``torchvision.io.read_video(path, pts_unit="sec")``, which is a thin
layer over PyAV. :func:`read_video_frames` reproduces its frame selection exactly, so that the 1-based
annotated frame number of A2D lands on the same decoded frame:

* frames of the first video stream are decoded in decoder output order;
* a frame with no timestamp or a negative one is dropped (torchvision keeps ``0 <= pts``);
* frames are keyed by ``pts`` (a later frame with the same ``pts`` replaces the earlier one) and sorted.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image

from wavecl.atomic import atomic_path
from wavecl.data.windows import centred_window

_ENCODERS = ("h264", "libx264", "mpeg4")


def _decode_video(path: str | os.PathLike) -> list[av.VideoFrame]:
    """All frames of the first video stream of ``path``, in presentation order (see module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"video file not found: {path}")
    frames_by_pts: dict[int, av.VideoFrame] = {}
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise ValueError(f"no video stream in {path}")
            for frame in container.decode(video=0):
                if frame.pts is not None and frame.pts >= 0:
                    frames_by_pts[frame.pts] = frame
    except av.FFmpegError as error:
        raise ValueError(f"cannot decode video {path}: {error}") from error
    if not frames_by_pts:
        raise ValueError(f"video {path} has no decodable frames")
    return [frames_by_pts[pts] for pts in sorted(frames_by_pts)]


def count_video_frames(path: str | os.PathLike) -> int:
    """Number of frames :func:`read_video_frames` returns for ``path`` (decodes the whole stream)."""
    return len(_decode_video(path))


def read_video_frames(
    path: str | os.PathLike, indices: Sequence[int] | None = None
) -> list[Image.Image]:
    """Decode ``path`` into RGB PIL images.

    Args:
        path: a video file readable by FFmpeg.
        indices: 0-based frame indices to return, in the given order (repeats allowed); ``None``
            returns every frame.

    Returns:
        ``len(indices)`` (or all) RGB images of size ``W x H``.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file cannot be decoded.
        IndexError: an index is outside ``[0, number of frames)``; the message names file and index.
    """
    frames = _decode_video(path)
    if indices is None:
        indices = range(len(frames))
    for index in indices:
        if not 0 <= index < len(frames):
            raise IndexError(f"frame index {index} out of range for video {path} with {len(frames)} frames")
    return [frames[index].to_image() for index in indices]


def read_video_window(
    path: str | os.PathLike, centre: int, window_size: int
) -> list[Image.Image]:
    """Decode the ``window_size`` frames centred on the 0-based frame ``centre``, edge frames repeated.

    The window is :func:`wavecl.data.windows.centred_window`; the centre frame is at position
    ``window_size // 2``.

    Raises:
        ValueError: ``centre`` is not a frame of the video (the video is shorter than its annotation).
    """
    frames = _decode_video(path)
    if not 0 <= centre < len(frames):
        raise ValueError(
            f"video {path} has {len(frames)} frames but frame {centre + 1} (1-based) is annotated"
        )
    return [frames[index].to_image() for index in centred_window(centre, window_size, len(frames))]


def write_video(path: str | os.PathLike, frames: Sequence[np.ndarray], fps: float) -> None:
    """Encode RGB frames into an mp4 file, atomically.

    Uses the first available encoder among h264, libx264 and mpeg4. Frames of even size are stored as
    yuv420p (what every player reads); odd sizes, which 4:2:0 chroma cannot represent, use yuv444p with
    H.264 and raise ``ValueError`` with the mpeg4 fallback.

    Args:
        path: output file (``.mp4``); its folder is created if needed.
        frames: ``T`` uint8 arrays ``[H, W, 3]``, all the same size.
        fps: frame rate.
    """
    path = Path(path)
    if len(frames) == 0:
        raise ValueError(f"no frames to write to {path}")
    height, width = frames[0].shape[:2]
    for index, frame in enumerate(frames):
        if frame.dtype != np.uint8 or frame.shape != (height, width, 3):
            raise ValueError(
                f"frame {index} for {path} must be uint8 [{height}, {width}, 3], "
                f"got {frame.dtype} {list(frame.shape)}"
            )
    codec = next((name for name in _ENCODERS if name in av.codecs_available), None)
    if codec is None:
        raise RuntimeError(f"no mp4 video encoder available for {path} (tried {', '.join(_ENCODERS)})")
    even = height % 2 == 0 and width % 2 == 0
    if not even and codec == "mpeg4":
        raise ValueError(f"the mpeg4 encoder cannot write odd frame size {height}x{width} to {path}")
    with atomic_path(path) as temporary:
        with av.open(str(temporary), mode="w", format="mp4") as container:
            stream = container.add_stream(codec, rate=Fraction(fps).limit_denominator(100000))
            stream.width, stream.height = width, height
            stream.pix_fmt = "yuv420p" if even else "yuv444p"
            for frame in frames:
                for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
