"""Segment one video for one or several sentences and write the prediction folder of ``wavecl predict``.

Output folder::

    <out_dir>/
        masks/<i>_<slug>/<frame>.png   per sentence i and frame, 0/255 grey PNG at the original size
        overlay.mp4                    the video with every sentence's mask in its colour, outlined,
                                       a legend under the picture; small videos enlarged
                                       (written when PyAV is installed: pip install av)
        contact_sheet.png              up to 8 evenly spaced overlay frames, each under a caption
                                       naming it, a title saying which frames it shows, and a legend

Each sentence's colour contrasts with its object: it is chosen from the masked pixels of the first
window (:func:`wavecl.inference.overlay.sentence_colors`), which is held until then.

Everything is written into a hidden folder inside ``<out_dir>`` (``.predictions.<hex>.tmp``) and moved
into place once the video is done, ``contact_sheet.png`` last (it is removed first): a folder without
it is unfinished, and a prediction that fails or is interrupted leaves the previous one whole. Other
files in ``<out_dir>`` are left alone; the previous ``masks/`` is replaced whole, so no sentence of an
earlier prediction stays beside the new ones.

Mask files are named after the source frames: a folder's frame files keep their names
(``img_0042.jpg`` -> ``img_0042.png``); a video file's frames are named by index and presentation
time (``00012_0.480s.png``); arrays and frame lists by index (``00012.png``).

The settings default to the model's own (:attr:`wavecl.model.wavecl.WaveCL.inference_settings`: a run's
``data.window_size`` and ``data.eval_short_size``/``eval_max_size``, or a pretrained folder's
``preprocessor_config.json``). Frames are written as soon as their window is segmented, so memory stays
bounded whatever the video's length.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import logging
import os
import re
import shutil
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

import numpy as np
from PIL import Image

from wavecl.atomic import replace_directory, temporary_directory
from wavecl.data.video_files import VideoWriter
from wavecl.device import resolve_device
from wavecl.inference.overlay import (
    LEGEND_MIN_WIDTH,
    VIDEO_LONG_SIDE,
    contact_sheet,
    legend_band,
    object_colors,
    paint,
    save_png,
    sentence_colors,
    sheet_tile,
    video_frame,
)
from wavecl.inference.predictor import VideoInput, VideoPredictor, open_video
from wavecl.inference_settings import InferenceSettings
from wavecl.model.onnx_export import ONNX_MANIFEST
from wavecl.model.pretrained import ONNX_DIRNAME
from wavecl.model.wavecl import WaveCL
from wavecl.optional import package_available

T = TypeVar("T")
log = logging.getLogger("wavecl.predict")
DEFAULT_FPS = 24.0
SHEET_FRAMES = 8
SHEET_COLUMNS = 4
MASKS_DIRNAME = "masks"
OVERLAY_FILENAME = "overlay.mp4"
SHEET_FILENAME = "contact_sheet.png"  # written last: the mark of a finished prediction


@dataclass
class PredictionPaths:
    """What :func:`predict_video` wrote.

    Attributes:
        out_dir: the output folder.
        mask_dirs: one folder of per-frame PNG masks per sentence, in sentence order.
        overlay_video: the overlay mp4; ``None`` when PyAV is not installed.
        contact_sheet: the contact-sheet PNG.
        num_frames: frames segmented.
        colors: ``[N, 3]`` uint8 RGB, each sentence's colour in the overlay video and contact sheet.
        sheet_frames: names of the frames the contact sheet shows, in order.
        settings: the settings the video was segmented with.
    """

    out_dir: Path
    mask_dirs: list[Path]
    overlay_video: Path | None
    contact_sheet: Path
    num_frames: int
    colors: np.ndarray
    settings: InferenceSettings
    sheet_frames: list[str] = field(default_factory=list)


def sentence_slug(sentence: str, max_length: int = 40) -> str:
    """A folder-name-safe form of a sentence: lower-case ASCII letters and digits joined by ``_``."""
    slug = re.sub(r"[^a-z0-9]+", "_", sentence.lower()).strip("_")
    return slug[:max_length].rstrip("_") or "sentence"


class EvenSample(Generic[T]):
    """An evenly spaced sample of a stream of unknown length, in bounded memory.

    Items whose index is a multiple of the current stride are kept; whenever more than
    ``2 * size`` are kept the stride doubles and every other kept item is dropped. At the end
    :meth:`items` picks ``size`` of the kept items, evenly spread over them.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self.stride = 1
        self._kept: dict[int, T] = {}

    def offer(self, index: int, make: Callable[[], T]) -> None:
        """Consider item ``index`` (0, 1, 2, ... in order); ``make`` builds it only if it is kept."""
        if index % self.stride:
            return
        self._kept[index] = make()
        if len(self._kept) > 2 * self.size:
            self.stride *= 2
            self._kept = {i: item for i, item in self._kept.items() if i % self.stride == 0}

    def items(self) -> list[tuple[int, T]]:
        """Up to ``size`` ``(index, item)`` pairs in index order."""
        indices = sorted(self._kept)
        if not indices:
            return []
        picks = np.unique(np.linspace(0, len(indices) - 1, min(self.size, len(indices))).round().astype(int))
        return [(indices[p], self._kept[indices[p]]) for p in picks]


def frame_file_name(index: int, frame: Image.Image) -> str:
    """The name (without extension) of frame ``index``'s mask files: the source file's name for a frame
    read from a folder, ``<index:05d>_<time>s`` for a frame decoded from a video file, else ``<index:05d>``
    (see :class:`~wavecl.inference.predictor.VideoSource`)."""
    if frame.info.get("frame_name"):
        return str(frame.info["frame_name"])
    if frame.info.get("time") is not None:
        return f"{index:05d}_{float(frame.info['time']):.3f}s"
    return f"{index:05d}"


def sheet_title(shown: int, total: int) -> str:
    """The contact sheet's title: whether it shows every frame, or how many of them."""
    if shown == total:
        return f"all {total} frames"
    return f"{shown} of {total} frames, evenly spaced (each tile names its frame)"


def predict_video(
    checkpoint: str | os.PathLike[str],
    video: VideoInput,
    sentences: Sequence[str],
    out_dir: str | os.PathLike[str],
    settings: InferenceSettings | None = None,
    fps: float | None = None,
    progress: bool = True,
    sentence_names: Sequence[str] | None = None,
    **changes: Any,
) -> PredictionPaths:
    """Segment ``video`` for every sentence and write masks, an overlay video and a contact sheet.

    Args:
        checkpoint: a pretrained folder, training run directory or checkpoint
            (:meth:`wavecl.model.wavecl.WaveCL.from_pretrained`).
        video: an mp4 (or other FFmpeg-readable) file or a folder of ``.jpg``/``.png`` frames (arrays
            and frame lists work too, see :data:`wavecl.inference.predictor.VideoInput`).
        sentences: ``N >= 1`` referring expressions.
        out_dir: output folder (created; the ``masks/``, overlay and contact sheet of a previous
            prediction are replaced once this one is complete, other files are left alone).
        settings: how to run the model (:class:`~wavecl.inference_settings.InferenceSettings`); the
            checkpoint's own when ``None`` (its recorded resize and window, the defaults of the rest).
        fps: frame rate of the overlay video; the input video's when ``None`` (24 for frame folders).
        progress: show progress (a live bar on a terminal, a line every few seconds in a log).
        sentence_names: how error messages name each sentence's source (``--text #2``); ``sentence i``
            when ``None``.
        **changes: settings that replace those of ``settings`` (``None`` leaves one as it is). With
            ``runtime="onnxruntime"``, ONNX Runtime runs the ``onnx/`` parts of a pretrained folder when it
            has them, else exports the model.

    Returns:
        The paths written (:class:`PredictionPaths`).

    Raises:
        TypeError: an unknown setting name.
        ValueError: a setting out of range.
    """
    # an impossible device fails before the weights are read
    resolve_device(changes.get("device") or (settings or InferenceSettings()).device)
    model = WaveCL.from_pretrained(checkpoint)
    settings = (settings or model.inference_settings).with_given(**changes)
    onnx_dir = onnx_parts(checkpoint) if settings.runtime == "onnxruntime" else None
    predictor = VideoPredictor(model, settings, progress=progress, onnx_dir=onnx_dir)
    return write_predictions(predictor, video, sentences, out_dir, fps=fps, sentence_names=sentence_names)


def onnx_parts(checkpoint: str | os.PathLike[str]) -> Path | None:
    """The ONNX parts ``wavecl export --onnx`` wrote into the pretrained folder ``checkpoint``, or ``None``."""
    folder = Path(checkpoint) / ONNX_DIRNAME
    return folder if (folder / ONNX_MANIFEST).is_file() else None


def write_predictions(
    predictor: VideoPredictor,
    video: VideoInput,
    sentences: Sequence[str] | str,
    out_dir: str | os.PathLike[str],
    fps: float | None = None,
    on_frame: Callable[[int], None] | None = None,
    pad_to_even: bool = False,
    sentence_names: Sequence[str] | None = None,
) -> PredictionPaths:
    """Segment ``video`` with ``predictor`` and write the folder described in the module docstring.

    Args:
        predictor: the model with its settings.
        video, sentences, out_dir, fps: as for :func:`predict_video`.
        on_frame: called with the 0-based index of each frame once it is written (progress display);
            an exception it raises stops the run and no overlay video is left behind.
        pad_to_even: pad odd-sized overlay frames to even sizes, so the video is yuv420p H.264, the
            form web browsers play (:class:`wavecl.data.video_files.VideoWriter`).
        sentence_names: how error messages name each sentence (:meth:`VideoPredictor.check_sentences`).

    Returns:
        The paths written (:class:`PredictionPaths`).

    Raises:
        FileNotFoundError / ValueError: as :meth:`VideoPredictor.predict_stream`; the sentences are
            checked (:meth:`VideoPredictor.check_sentences`) before anything is written.
    """
    sentences = [sentences] if isinstance(sentences, str) else list(sentences)
    predictor.check_sentences(sentences, sentence_names)
    if fps is None:
        fps = (open_video(video).fps if isinstance(video, (str, os.PathLike)) else None) or DEFAULT_FPS
    out_dir = Path(out_dir)
    mask_names = [f"{index}_{sentence_slug(text)}" for index, text in enumerate(sentences)]
    staging = temporary_directory(out_dir / ".predictions")
    try:
        num_frames, shown, colors = _write_into(
            staging, predictor, video, sentences, mask_names, fps, on_frame, pad_to_even
        )
        _publish(staging, out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    overlay = out_dir / OVERLAY_FILENAME
    return PredictionPaths(
        out_dir,
        [out_dir / MASKS_DIRNAME / name for name in mask_names],
        overlay if overlay.is_file() else None,
        out_dir / SHEET_FILENAME,
        num_frames,
        colors,
        predictor.settings,
        shown,
    )


def _write_into(
    folder: Path,
    predictor: VideoPredictor,
    video: VideoInput,
    sentences: list[str],
    mask_names: list[str],
    fps: float,
    on_frame: Callable[[int], None] | None,
    pad_to_even: bool,
) -> tuple[int, list[str], np.ndarray]:
    """Write the masks, overlay video and contact sheet of :func:`write_predictions` into ``folder``;
    returns the number of frames, the names of those the contact sheet shows and the sentences' colours."""
    mask_dirs = [folder / MASKS_DIRNAME / name for name in mask_names]
    (folder / MASKS_DIRNAME).mkdir()
    head, stream = _peek(predictor.predict_stream(video, sentences), predictor.settings.window)
    seen = object_colors([np.asarray(frame) for _, frame, _ in head], [masks.numpy() for _, _, masks in head])
    colors = sentence_colors(len(sentences), seen)
    legend: np.ndarray | None = None
    sample: EvenSample[tuple[str, np.ndarray]] = EvenSample(SHEET_FRAMES)
    num_frames = 0
    overlay_path = folder / OVERLAY_FILENAME if package_available("av") else None
    if overlay_path is None:
        log.warning("PyAV is not installed (pip install av): no overlay.mp4; masks and contact sheet are written")
    writer_context = contextlib.nullcontext() if overlay_path is None else VideoWriter(overlay_path, fps, pad_to_even)
    with writer_context as writer:
        for index, frame, masks in stream:
            pixels = np.asarray(frame)
            binary = masks.numpy()
            name = frame_file_name(index, frame)
            for mask_dir, mask in zip(mask_dirs, binary):
                save_png(mask_dir / f"{name}.png", mask.astype(np.uint8) * 255)
            if writer is not None:
                picture = paint(pixels, binary, colors, VIDEO_LONG_SIDE)
                if legend is None:
                    legend = legend_band(sentences, colors, max(picture.shape[1], LEGEND_MIN_WIDTH))
                writer.write(video_frame(picture, legend))
            sample.offer(index, functools.partial(_named_tile, name, pixels, binary, colors))
            num_frames += 1
            if on_frame is not None:
                on_frame(index)

    sampled = [item for _, item in sample.items()]
    shown = [name for name, _ in sampled]
    sheet = contact_sheet(
        [image for _, image in sampled],
        columns=min(SHEET_COLUMNS, len(sampled)),
        labels=sentences,
        colors=colors,
        captions=shown,
        title=sheet_title(len(sampled), num_frames),
    )
    save_png(folder / SHEET_FILENAME, sheet)
    return num_frames, shown, colors


def _named_tile(name: str, frame: np.ndarray, masks: np.ndarray, colors: np.ndarray) -> tuple[str, np.ndarray]:
    """``(name, tile)``: a frame painted as a contact-sheet tile."""
    return name, sheet_tile(frame, masks, colors)


def _peek(stream: Iterator[T], count: int) -> tuple[list[T], Iterator[T]]:
    """The first ``count`` items of ``stream`` (fewer if it ends), and an iterator over all of them."""
    head = list(itertools.islice(stream, count))
    return head, itertools.chain(head, stream)


def _publish(staging: Path, out_dir: Path) -> None:
    """Move a finished prediction from ``staging`` into ``out_dir``: the contact sheet, which marks a
    finished folder, is removed first and comes back last; an overlay video of an earlier prediction is
    removed when this one has none (no PyAV)."""
    (out_dir / SHEET_FILENAME).unlink(missing_ok=True)
    replace_directory(staging / MASKS_DIRNAME, out_dir / MASKS_DIRNAME)
    if (staging / OVERLAY_FILENAME).is_file():
        os.replace(staging / OVERLAY_FILENAME, out_dir / OVERLAY_FILENAME)
    else:
        (out_dir / OVERLAY_FILENAME).unlink(missing_ok=True)
    os.replace(staging / SHEET_FILENAME, out_dir / SHEET_FILENAME)
