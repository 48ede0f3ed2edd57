"""Video decoding and encoding with PyAV (imported when a video file is first read or written; the
error of a missing PyAV names the package, see :mod:`wavecl.optional`).

The reference decodes A2D clips with ``torchvision.io.read_video(path, pts_unit="sec")``, which is a thin
layer over PyAV. :func:`read_video_frames` reproduces its frame selection exactly, so that the 1-based
annotated frame number of A2D lands on the same decoded frame:

* frames of the first video stream are decoded in decoder output order;
* a frame with no timestamp or a negative one is dropped (torchvision keeps ``0 <= pts``);
* frames are keyed by ``pts`` (a later frame with the same ``pts`` replaces the earlier one) and sorted.

Every reader returns frames as a player shows them: a file whose display matrix turns the picture
(phone videos record a 90° display rotation rather than turning the pixels) is read upright,
through :func:`upright_image`. torchvision ignores the matrix; A2D's videos carry none, so this
changes nothing there. Written files carry no display matrix: their pixels are already upright.

Inference on videos of any length uses the streaming forms, in memory bounded by one frame:
:func:`iter_video_frames` yields the same frames, in the same order, as :func:`read_video_frames` for
every stream whose decoded timestamps increase (all ordinary files), and :class:`VideoWriter` encodes
frames as they arrive. :func:`iter_video_frames` also tolerates damage: a packet that does not decode
stands for one frame, which repeats the frame before it (the first decoded frame when none came before),
with one warning naming the frames, unless more than :data:`MAX_DAMAGED_SHARE` of the frames are damaged.
Its presentation times count from the stream's start (MPEG-TS streams start at an arbitrary clock
value), so the first frame is at 0 s. The dataset readers (:func:`read_video_frames`) stay strict: a
damaged packet there is an error, since a missing frame would shift the annotated frame numbers.

Encoding uses the first available of h264, libx264 and mpeg4; even frame sizes are stored as yuv420p
(what every player reads), odd sizes as yuv444p with H.264 (mpeg4 refuses them) unless the writer pads
them to even sizes (``pad_to_even``, for web browsers).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from types import ModuleType, TracebackType
from typing import TYPE_CHECKING, cast

import numpy as np
from PIL import Image

from wavecl.atomic import atomic_path
from wavecl.data.paths import check_pixel_count
from wavecl.data.windows import centred_window
from wavecl.optional import require_package

if TYPE_CHECKING:
    import av
    from av.video.stream import VideoStream

logger = logging.getLogger(__name__)

MAX_DAMAGED_SHARE = 0.1
"""Most share of a video's frames that may fail to decode in :func:`iter_video_frames` (each then repeats
the frame before it); more is an error naming the frames."""
_ENCODERS = ("h264", "libx264", "mpeg4")
# PIL's ROTATE_* turn counter-clockwise, as ``VideoFrame.rotation`` counts.
_QUARTER_TURNS = {1: Image.Transpose.ROTATE_90, 2: Image.Transpose.ROTATE_180, 3: Image.Transpose.ROTATE_270}


def _pyav() -> ModuleType:
    """The ``av`` module (PyAV), which every video-file reader and writer needs."""
    return require_package("av", "reading and writing video files")


def _open_input(path: Path) -> av.container.InputContainer:
    """The opened container, its first video stream's frame size (from the header) checked against
    :data:`~wavecl.data.paths.MAX_IMAGE_PIXELS`.

    Raises:
        FileNotFoundError / ValueError naming the file (:class:`~wavecl.data.paths.UnsupportedImageError`
        for too large frames).
    """
    if not path.is_file():
        raise FileNotFoundError(f"video file not found: {path}")
    av = _pyav()
    try:
        container = av.open(str(path))
    except av.FFmpegError as error:
        raise ValueError(f"cannot read video {path}: {error}") from error
    if not container.streams.video:
        container.close()
        raise ValueError(f"no video stream in {path}")
    stream = container.streams.video[0]
    try:
        check_pixel_count(stream.width, stream.height, f"a frame of video {path}")
    except ValueError:
        container.close()
        raise
    return container


def upright_image(frame: av.VideoFrame, path: Path) -> Image.Image:
    """The RGB picture a player shows for ``frame``: the decoded pixels turned by the frame's display
    rotation (``frame.rotation``, degrees counter-clockwise, from the display matrix phones record).

    A ``90`` turns a stored ``W x H`` frame into an ``H x W`` picture whose left column was the stored
    top row. A mirroring in the display matrix is not applied: PyAV reports the rotation only, and
    reading the raw side data instead makes forked data-loader workers crash (PyAV 18).

    Raises:
        ValueError: the rotation is not a multiple of 90 degrees (within 1 degree); names the file.
    """
    degrees = frame.rotation
    quarter_turns = round(degrees / 90)
    if abs(degrees - 90 * quarter_turns) > 1:
        raise ValueError(
            f"video {path} asks to be shown turned by {degrees} degrees; only multiples of 90 are supported"
        )
    image = frame.to_image()
    return image.transpose(_QUARTER_TURNS[quarter_turns % 4]) if quarter_turns % 4 else image


@dataclass
class DecodeReport:
    """What a tolerant pass of :func:`_presented_frames` found besides the frames.

    Attributes:
        start_pts: the stream's start time in ``time_base`` units (0 when the container records none).
        time_base: seconds per timestamp unit.
        damaged: timestamps of the packets that failed to decode, in decoding order.
    """

    start_pts: int = 0
    time_base: Fraction = Fraction(1)
    damaged: list[int] = field(default_factory=list)

    def seconds(self, pts: int) -> float:
        """Presentation time of ``pts`` in seconds from the stream's start."""
        return float((pts - self.start_pts) * self.time_base)


def _presented_frames(path: Path, report: DecodeReport | None = None) -> Iterator[av.VideoFrame]:
    """Frames of the first video stream of ``path`` in decoder output order, those without a timestamp
    or with a negative one dropped; the single decoding loop behind every reader of this module.

    Args:
        path: the video file.
        report: ``None``: a packet that fails to decode is an error. Otherwise decoding goes on after such
            a packet, whose timestamp is added to ``report.damaged``; the stream's start and time base are
            filled in when the file is opened.

    Raises (when iterated): FileNotFoundError / ValueError naming the file, also for a frame whose size
    exceeds :data:`~wavecl.data.paths.MAX_IMAGE_PIXELS` (a stream may change size after its header).
    """
    container = _open_input(path)
    av = _pyav()
    try:
        with container:
            stream = container.streams.video[0]
            if report is not None:
                report.start_pts = stream.start_time or 0
                report.time_base = stream.time_base or Fraction(1)
            for packet in container.demux(stream):
                try:
                    frames = packet.decode()
                except av.FFmpegError:
                    if report is None or packet.pts is None:
                        raise
                    report.damaged.append(packet.pts)
                    continue
                for frame in frames:
                    check_pixel_count(frame.width, frame.height, f"the frame at {frame.time} s of video {path}")
                    if frame.pts is not None and frame.pts >= 0:
                        yield frame
    except av.FFmpegError as error:
        raise ValueError(f"cannot decode video {path}: {error}") from error


def _decode_video(path: str | os.PathLike) -> list[av.VideoFrame]:
    """All frames of the first video stream of ``path``, in presentation order (see module docstring)."""
    path = Path(path)
    # _presented_frames yields only frames with a timestamp
    frames_by_pts = {cast(int, frame.pts): frame for frame in _presented_frames(path)}
    if not frames_by_pts:
        raise ValueError(f"video {path} has no decodable frames")
    return [frames_by_pts[pts] for pts in sorted(frames_by_pts)]


def count_video_frames(path: str | os.PathLike) -> int:
    """Number of frames :func:`read_video_frames` returns for ``path`` (decodes the whole stream)."""
    return len(_decode_video(path))


def read_video_frames(path: str | os.PathLike, indices: Sequence[int] | None = None) -> list[Image.Image]:
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
    return [upright_image(frames[index], Path(path)) for index in indices]


def read_video_window(path: str | os.PathLike, centre: int, window_size: int) -> list[Image.Image]:
    """Decode the ``window_size`` frames centred on the 0-based frame ``centre``, edge frames repeated.

    The window is :func:`wavecl.data.windows.centred_window`; the centre frame is at position
    ``window_size // 2``.

    Raises:
        ValueError: ``centre`` is not a frame of the video (the video is shorter than its annotation).
    """
    frames = _decode_video(path)
    if not 0 <= centre < len(frames):
        raise ValueError(f"video {path} has {len(frames)} frames but frame {centre + 1} (1-based) is annotated")
    return [upright_image(frames[index], Path(path)) for index in centred_window(centre, window_size, len(frames))]


def write_video(path: str | os.PathLike, frames: Sequence[np.ndarray], fps: float) -> None:
    """Encode RGB frames into an mp4 file, atomically (a whole list; :class:`VideoWriter` streams).

    Args:
        path: output file (``.mp4``); its folder is created if needed.
        frames: ``T`` uint8 arrays ``[H, W, 3]``, all the same size.
        fps: frame rate.
    """
    if len(frames) == 0:
        raise ValueError(f"no frames to write to {path}")
    with VideoWriter(path, fps) as writer:
        for frame in frames:
            writer.write(frame)


def iter_video_frames(path: str | os.PathLike[str]) -> Iterator[Image.Image]:
    """Decode the first video stream of ``path`` one frame at a time, as RGB PIL images.

    Each image's ``info["time"]`` is its presentation time in seconds from the stream's start (the first
    frame of an MPEG-TS file is at 0 s, not at the transport clock's value). A packet that fails to decode
    is a damaged frame: it is yielded, at its place in time, as a copy of the frame before it (of the first
    decoded frame when it comes first), with ``info["damaged"] = True``; once the video is done, one
    warning names the damaged frames by index and time.

    Raises (when iterated):
        FileNotFoundError: the file does not exist.
        ValueError: the file cannot be opened or holds no decodable frame, or more than
            :data:`MAX_DAMAGED_SHARE` of its frames are damaged (after the others were yielded); the
            message names the file and the damaged frames.
    """
    path = Path(path)
    report = DecodeReport()
    damaged: list[str] = []
    previous: Image.Image | None = None
    index = 0

    def emit(frame: av.VideoFrame) -> Iterator[Image.Image]:
        nonlocal previous, index
        assert frame.pts is not None  # _presented_frames yields only frames with a timestamp
        image = upright_image(frame, path)
        image.info["time"] = report.seconds(frame.pts)
        for pts in sorted(pts for pts in report.damaged if pts < frame.pts):
            report.damaged.remove(pts)
            yield from fill(pts, previous if previous is not None else image)
        previous = image
        index += 1
        yield image

    def fill(pts: int, source: Image.Image) -> Iterator[Image.Image]:
        nonlocal index
        copy = source.copy()
        copy.info.update(time=report.seconds(pts), damaged=True)
        damaged.append(f"{index} ({copy.info['time']:.3f} s)")
        index += 1
        yield copy

    pending: av.VideoFrame | None = None
    for frame in _presented_frames(path, report):
        if pending is not None and frame.pts != pending.pts:
            yield from emit(pending)
        pending = frame
    if pending is None:
        raise ValueError(f"video {path} has no decodable frames")
    yield from emit(pending)
    assert previous is not None
    for pts in sorted(report.damaged):
        yield from fill(pts, previous)
    if not damaged:
        return
    listed = ", ".join(damaged)
    if len(damaged) > MAX_DAMAGED_SHARE * index:
        raise ValueError(
            f"{len(damaged)} of the {index} frames of video {path} do not decode (frames {listed}); "
            f"at most {MAX_DAMAGED_SHARE:.0%} may be damaged"
        )
    logger.warning(
        "%d of the %d frames of video %s do not decode and repeat the frame before them: frames %s",
        len(damaged),
        index,
        path,
        listed,
    )


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

    The encoder and pixel format follow :func:`wavecl.data.video_files.write_video` (the first available of
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
        pad_to_even: give frames of odd height or width one more row or column (a copy of the last),
            so the file is yuv420p, which web browsers require, rather than yuv444p.
    """

    def __init__(self, path: str | os.PathLike[str], fps: float, pad_to_even: bool = False) -> None:
        if not fps > 0:
            raise ValueError(f"fps must be positive for {path}, got {fps}")
        self.path = Path(path)
        self.fps = fps
        self.pad_to_even = pad_to_even
        self.num_frames = 0
        self._frame_shape: tuple[int, ...] | None = None
        self._resources = ExitStack()
        self._container: av.container.OutputContainer | None = None
        self._stream: av.video.stream.VideoStream | None = None

    def __enter__(self) -> VideoWriter:
        return self

    def _open(self, height: int, width: int) -> None:
        av = _pyav()
        codec = next((name for name in _ENCODERS if name in av.codecs_available), None)
        if codec is None:
            raise RuntimeError(f"no mp4 video encoder available for {self.path} (tried {', '.join(_ENCODERS)})")
        even = height % 2 == 0 and width % 2 == 0
        if not even and codec == "mpeg4":
            raise ValueError(f"the mpeg4 encoder cannot write odd frame size {height}x{width} to {self.path}")
        temporary = self._resources.enter_context(atomic_path(self.path))
        self._container = self._resources.enter_context(av.open(str(temporary), mode="w", format="mp4"))
        rate = Fraction(self.fps).limit_denominator(100000)
        stream = cast("VideoStream", self._container.add_stream(codec, rate=rate))  # a video codec
        stream.width, stream.height = width, height
        stream.pix_fmt = "yuv420p" if even else "yuv444p"
        self._stream = stream

    def write(self, frame: np.ndarray) -> None:
        """Encode one ``[H, W, 3]`` uint8 RGB frame (the same size as the first one)."""
        if frame.ndim != 3 or frame.shape[2] != 3:
            raise ValueError(f"frames for {self.path} must be [H, W, 3], got {list(frame.shape)}")
        if self._frame_shape is None:
            self._frame_shape = frame.shape
        if frame.dtype != np.uint8 or frame.shape != self._frame_shape:
            raise ValueError(
                f"frame {self.num_frames} for {self.path} must be uint8 {list(self._frame_shape)}, "
                f"got {frame.dtype} {list(frame.shape)}"
            )
        if self.pad_to_even:
            frame = np.pad(frame, ((0, frame.shape[0] % 2), (0, frame.shape[1] % 2), (0, 0)), mode="edge")
        if self._stream is None:
            self._open(frame.shape[0], frame.shape[1])
        assert self._stream is not None and self._container is not None
        for packet in self._stream.encode(_pyav().VideoFrame.from_ndarray(frame, format="rgb24")):
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
