"""Segment the objects that sentences refer to in a video of any length.

A video is cut into windows of ``window`` frames, consecutive windows sharing ``overlap`` frames (the last
window may be shorter), decoded window by window, so memory does not grow with the video's length. Each
window is one clip for the model, prepared as in evaluation (DETR resize, ImageNet normalisation,
docs/datasets.md#transforms) and post-processed as Ref-YouTube-VOS (docs/architecture.md#post-processing):
per sentence, one query for the window, its masks thresholded and brought back to the original
resolution. The query is the window's best-scoring one plus ``link_weight`` times its agreement with the
previous window's choice on the shared frames; shared frames keep the earlier window's masks
(:mod:`wavecl.model.linking`).

Each window runs through the backbone once, whatever the number of sentences; the sentences then
share its visual features, ``sentences_per_pass`` at a time (so memory stays bounded with many).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from wavecl.amp import decide_precision
from wavecl.data.paths import FRAME_SUFFIXES, listed_files, read_image
from wavecl.data.transforms import ClipTransform, clean_expression, resize_shape
from wavecl.data.video_files import iter_video_frames, probe_video
from wavecl.device import resolve_device
from wavecl.inference.onnx_runtime import OnnxNetwork
from wavecl.inference_settings import InferenceSettings
from wavecl.model.compile import compile_model
from wavecl.model.linear import Bfloat16Weights
from wavecl.model.linking import LinkedQueries
from wavecl.model.onnx_export import export_onnx
from wavecl.model.output import NonFiniteOutputError, WaveCLOutput
from wavecl.model.postprocess import video_postprocess
from wavecl.model.text import sentence_start
from wavecl.model.wavecl import WaveCL
from wavecl.progress import progress_bar

VideoInput = str | os.PathLike | Sequence[Image.Image] | np.ndarray
"""An mp4 (or any FFmpeg-readable) file, a folder of frames, a list of PIL images or a ``[T, H, W, 3]`` uint8 array."""


@dataclass
class VideoSource:
    """Frames to segment, produced lazily.

    Attributes:
        frames: the RGB frames in order; iterating decodes or reads them one at a time. A frame read
            from a folder carries its file name without extension as ``info["frame_name"]``; a frame
            decoded from a video file carries its presentation time in seconds as ``info["time"]``.
        num_frames: the frame count when known without decoding (for progress display), else ``None``.
        fps: frames per second recorded in a video file, else ``None``.
        name: how error messages refer to the video.
    """

    frames: Iterable[Image.Image]
    num_frames: int | None
    fps: float | None
    name: str


def frame_files(folder: Path) -> list[Path]:
    """The ``.jpg``/``.jpeg``/``.png`` files of ``folder`` in natural name order (``frame2`` before ``frame10``);
    hidden files, macOS's ``._name`` copies among them, are not frames (:func:`wavecl.data.paths.listed_files`).

    Raises:
        ValueError: the folder holds no frame, or two frames share a name without extension
            (``a.jpg`` and ``a.png``), which would give their masks one file name.
    """
    files = listed_files(folder, FRAME_SUFFIXES)
    if not files:
        raise ValueError(f"no frames ({', '.join(FRAME_SUFFIXES)}) in folder {folder}")
    seen: dict[str, Path] = {}
    for path in files:
        if path.stem in seen:
            raise ValueError(
                f"frames {seen[path.stem].name} and {path.name} in {folder} have the same name {path.stem!r} "
                "(their masks would overwrite each other)"
            )
        seen[path.stem] = path
    return files


def _named_frame(path: Path) -> Image.Image:
    image = read_image(path, exif_orientation=True)
    image.info["frame_name"] = path.stem
    return image


def open_video(video: VideoInput) -> VideoSource:
    """Wrap any accepted video form as a :class:`VideoSource`.

    A folder's frames are its ``.jpg``/``.jpeg``/``.png`` files in natural name order
    (:func:`frame_files`), turned as their EXIF orientation says; a video file's frames are turned as
    its display matrix says (:func:`wavecl.data.video_files.upright_image`): frames are segmented as a
    viewer sees them.

    Raises:
        FileNotFoundError: the path does not exist.
        ValueError: the folder holds no frame, the array is not ``[T, H, W, 3]`` uint8, or the video is
            empty. An unreadable video file is reported when its frames are first iterated.
    """
    if isinstance(video, (str, os.PathLike)):
        path = Path(video)
        if path.is_dir():
            files = frame_files(path)
            return VideoSource((_named_frame(p) for p in files), len(files), None, str(path))
        num_frames, fps = probe_video(path)
        return VideoSource(iter_video_frames(path), num_frames, fps, str(path))
    if isinstance(video, np.ndarray):
        if video.dtype != np.uint8 or video.ndim != 4 or video.shape[-1] != 3:
            raise ValueError(f"a video array must be [T, H, W, 3] uint8, got {video.dtype} {list(video.shape)}")
        if len(video) == 0:
            raise ValueError("the video array has no frames")
        return VideoSource((Image.fromarray(frame) for frame in video), len(video), None, "video array")
    if len(video) == 0:
        raise ValueError("the video has no frames")
    return VideoSource((frame.convert("RGB") for frame in video), len(video), None, "frame list")


VisualT = TypeVar("VisualT")
SentencesT = TypeVar("SentencesT")


class SegmentationNetwork(Protocol[VisualT, SentencesT]):
    """The three steps :class:`VideoPredictor` runs, on :class:`WaveCL` or :class:`OnnxNetwork`; the encoded
    video and sentences go back into ``segment`` of the same network, whatever their type."""

    def encode_video(self, frames: Tensor, pad_mask: Tensor) -> VisualT: ...

    def encode_sentences(self, texts: Sequence[str], device: torch.device) -> SentencesT: ...

    def segment(
        self, visual: VisualT, sentences: SentencesT, image_sizes: Tensor, clip_index: Tensor | None = None
    ) -> WaveCLOutput: ...


class VideoPredictor:
    """Referring segmentation of whole videos with a trained :class:`WaveCL`.

    Args:
        model: the network; it is moved to ``settings.device`` and put in eval mode.
        settings: how to run it; ``model.inference_settings`` when ``None``: the resize and window the
            model was trained at (recorded with its weights) and the defaults of everything else.
        progress: show progress over frames (a live bar on a terminal, a line every few seconds in a log).
        onnx_dir: the folder ``wavecl export --onnx`` wrote (a pretrained folder's ``onnx/``); with
            ``runtime="onnxruntime"`` and ``None``, ``model`` is exported into a temporary folder first.
        **changes: settings that replace those of ``settings`` (:meth:`InferenceSettings.with_given`;
            ``None`` leaves one as it is).

    The settings (:class:`~wavecl.inference_settings.InferenceSettings`): ``device`` ``"auto"``, ``"cpu"``,
    ``"cuda"`` or ``"cuda:<index>"`` (asking for CUDA without CUDA is an error); ``amp`` autocast as
    :func:`wavecl.amp.decide_precision` decides; ``compile`` with :func:`wavecl.model.compile.compile_model`
    (eager with one warning where unavailable); ``runtime="onnxruntime"`` runs the network's three ONNX
    parts in float32 on the CPU (needs ``device="cpu"``, ``amp="off"``, no ``compile``, and frames whose
    resized sides lie in the export's range, :mod:`wavecl.model.onnx_export`). Under bfloat16 autocast on
    the CPU the predictor keeps a bfloat16 copy of each linear weight while it lives
    (:class:`~wavecl.model.linear.Bfloat16Weights`): change ``model``'s weights in place through ``.data``
    and it would not see it.

    Raises:
        TypeError: an unknown setting name.
        ValueError: a setting out of range, or ``onnxruntime`` with CUDA, autocast or compilation.

    Example::

        predictor = VideoPredictor(WaveCL.from_pretrained("wavecl-ytvos"), device="cuda", amp="bf16")
        masks = predictor("dog.mp4", ["a dog jumping over a fence"])   # [1, T, H, W] bool
    """

    def __init__(
        self,
        model: WaveCL,
        settings: InferenceSettings | None = None,
        progress: bool = True,
        onnx_dir: str | os.PathLike[str] | None = None,
        **changes: Any,
    ) -> None:
        self.settings = (model.inference_settings if settings is None else settings).with_given(**changes)
        self.device = resolve_device(self.settings.device)
        self.model = model.to(self.device).eval()
        self.network: SegmentationNetwork[Any, Any]
        if self.settings.runtime == "onnxruntime":
            self.network = self._onnx_network(model, onnx_dir)
        else:
            self.network = self.model
        if self.settings.compile:
            compile_model(self.model)
        self.transform = ClipTransform(
            train=False, short_size=self.settings.short_size, max_size=self.settings.max_size
        )
        self.precision = decide_precision(self.settings.amp, self.device)
        self.bfloat16_weights = Bfloat16Weights()
        self.progress = progress

    def check_sentences(self, sentences: Sequence[str] | str, names: Sequence[str] | None = None) -> list[str]:
        """The sentences cleaned as the datasets clean them (lower case, single spaces), each checked
        before any frame is read: not empty, and not longer than the text encoder accepts.

        Args:
            sentences: ``N`` referring expressions (a single string counts as one).
            names: how messages name each sentence's source (``--text 2``, ``line 2``); ``sentence i``
                (0-based) when ``None``.

        Raises:
            ValueError: no sentence, an empty one, or one with more tokens than the text encoder accepts;
                the message names it and quotes its start.
        """
        if isinstance(sentences, str):
            sentences = [sentences]
        if len(sentences) == 0:
            raise ValueError("no sentences given: at least one referring expression is needed")
        names = [f"sentence {index}" for index in range(len(sentences))] if names is None else list(names)
        if len(names) != len(sentences):
            raise ValueError(f"{len(sentences)} sentences but {len(names)} names")
        texts = [clean_expression(text, f"{name} ({sentence_start(text)})") for name, text in zip(names, sentences)]
        self.model.check_sentences(texts, names)
        return texts

    def _onnx_network(self, model: WaveCL, onnx_dir: str | os.PathLike[str] | None) -> OnnxNetwork:
        """The ONNX Runtime network of ``onnx_dir``, or of ``model`` exported into a temporary folder."""
        amp, compile = self.settings.amp, self.settings.compile
        if self.device.type != "cpu" or amp != "off" or compile:
            raise ValueError(
                "runtime='onnxruntime' runs float32 on the CPU: it needs device='cpu', amp='off' and no compile "
                f"(got device={str(self.device)!r}, amp={amp!r}, compile={compile})"
            )
        if onnx_dir is None:
            self._exported = tempfile.TemporaryDirectory(prefix="wavecl-onnx-")
            onnx_dir = export_onnx(model, self._exported.name)
        return OnnxNetwork(onnx_dir, model.tokenizer, model.text_encoder)

    def encode_sentences(self, sentences: Sequence[str]) -> list[tuple[int, Any]]:
        """``sentences`` (cleaned, non-empty) encoded ``sentences_per_pass`` at a time, as
        :meth:`predict_window` takes them: ``(count, encoded)`` per pass. The encoding does not depend on
        the frames, so a video encodes its sentences once for all its windows."""
        per_pass = self.settings.sentences_per_pass
        chunks = [list(sentences[start : start + per_pass]) for start in range(0, len(sentences), per_pass)]
        with torch.inference_mode(), self.precision.autocast(), self.bfloat16_weights:
            return [(len(chunk), self.network.encode_sentences(chunk, self.device)) for chunk in chunks]

    def predict_window(
        self,
        frames: Sequence[Image.Image],
        sentences: Sequence[str],
        links: Sequence[LinkedQueries] | None = None,
        encoded: Sequence[tuple[int, Any]] | None = None,
    ) -> Tensor:
        """Segment one clip: one backbone pass, then the sentences ``sentences_per_pass`` at a time.

        Args:
            frames: ``T`` RGB images of one size ``W x H``.
            sentences: ``N`` cleaned, non-empty sentences.
            links: each sentence's choices over the previous windows (:mod:`wavecl.model.linking`), which
                choose its query and are updated; ``None``: each sentence's best-scoring query.
            encoded: :meth:`encode_sentences` of ``sentences``, encoded here when ``None``.

        Returns:
            ``[N, T, H, W]`` bool masks on the CPU.

        Raises:
            NonFiniteOutputError: the model's outputs hold NaN or inf (they would threshold to empty masks).
        """
        width, height = frames[0].size
        clip, _, _ = self.transform(list(frames), [None] * len(frames), "")
        num_frames, _, resized_h, resized_w = clip.shape
        resized = (resized_h, resized_w)
        inputs = clip.to(self.device)[:, None]
        pad_mask = torch.zeros(num_frames, 1, resized_h, resized_w, dtype=torch.bool, device=self.device)
        if encoded is None:
            encoded = self.encode_sentences(sentences)
        masks = []
        start = 0
        with torch.inference_mode(), self.precision.autocast(), self.bfloat16_weights:
            visual = self.network.encode_video(inputs, pad_mask)
            for count, chunk in encoded:
                output = self.network.segment(
                    visual,
                    chunk,
                    torch.tensor([resized] * count, device=self.device),
                    clip_index=torch.zeros(count, dtype=torch.long),  # host: its range check is free
                )
                output.require_finite(f"a clip of {num_frames} frames")
                for index in range(count):
                    pred_cls, pred_masks = output.pred_cls[:, index], output.pred_masks[:, index]
                    link = None if links is None else links[start + index]
                    query = None if link is None else link.choose(pred_cls, pred_masks, resized, resized)
                    _, sentence_masks = video_postprocess(
                        pred_cls, pred_masks, resized, resized, (height, width), self.settings.threshold, query
                    )
                    masks.append(sentence_masks)
                start += count
        return torch.stack(masks).cpu()

    def predict_stream(
        self, video: VideoInput, sentences: Sequence[str] | str
    ) -> Iterator[tuple[int, Image.Image, Tensor]]:
        """Segment ``video`` window by window, yielding each frame as soon as its first window is done.

        At most one window of frames is held: the window being filled begins with the previous window's
        last ``overlap`` frames, already given out.

        Args:
            video: see :data:`VideoInput`.
            sentences: ``N`` referring expressions (a single string counts as one).

        Yields:
            ``(frame_index, frame, masks)``: the 0-based index, the original RGB frame and its
            ``[N, H, W]`` bool masks at the original resolution.

        Raises:
            FileNotFoundError / ValueError: missing or unreadable video (the message names it), an empty
                video, a sentence :meth:`check_sentences` refuses (before any frame is read), frames of
                different sizes or of a shape the resize cannot keep (1x5000);
                a refused image or video (:class:`~wavecl.data.paths.UnsupportedImageError`).
        """
        texts = self.check_sentences(sentences)
        source = open_video(video)
        settings = self.settings
        links = [LinkedQueries(settings.overlap, settings.link_weight, settings.threshold) for _ in texts]
        encoded = self.encode_sentences(texts)
        first_size: tuple[int, int] | None = None
        window: list[Image.Image] = []
        start = 0  # index of window[0] in the video
        given = 0  # frames of ``window`` already given out (the previous window's shared ones)
        name = Path(source.name).name
        with progress_bar(total=source.num_frames, unit="frame", desc=name, disable=not self.progress) as bar:
            for index, frame in enumerate(source.frames):
                if first_size is None:
                    first_size = frame.size
                    try:
                        resize_shape(frame.height, frame.width, self.transform.short_size, self.transform.max_size)
                    except ValueError as error:
                        named = f" ({frame.info['frame_name']})" if frame.info.get("frame_name") else ""
                        raise ValueError(f"frame {index}{named} of {source.name}: {error}") from error
                elif frame.size != first_size:
                    raise ValueError(
                        f"frame {index} of {source.name} is {frame.size[0]}x{frame.size[1]}, "
                        f"frame 0 is {first_size[0]}x{first_size[1]}; all frames must have one size"
                    )
                window.append(frame)
                if len(window) == settings.window:
                    yield from self._segment(window, texts, links, encoded, start, given, source.name)
                    bar.update(len(window) - given)
                    step = settings.window - settings.overlap
                    window, start, given = window[step:], start + step, settings.overlap
            if len(window) > given:
                yield from self._segment(window, texts, links, encoded, start, given, source.name)
                bar.update(len(window) - given)
        if first_size is None:
            raise ValueError(f"video {source.name} has no frames")

    def _segment(
        self,
        frames: list[Image.Image],
        texts: list[str],
        links: list[LinkedQueries],
        encoded: list[tuple[int, Any]],
        start: int,
        given: int,
        name: str,
    ) -> Iterator[tuple[int, Image.Image, Tensor]]:
        """Segment the window of frames ``start, ...`` and yield those after the first ``given``."""
        try:
            masks = self.predict_window(frames, texts, links, encoded)
        except NonFiniteOutputError as error:
            raise NonFiniteOutputError(f"{error}; frames {start} to {start + len(frames) - 1} of {name}") from error
        for offset in range(given, len(frames)):
            yield start + offset, frames[offset], masks[:, offset]

    def __call__(self, video: VideoInput, sentences: Sequence[str] | str) -> Tensor:
        """Segment a whole video and return every mask at once.

        Returns:
            ``[N, T, H, W]`` bool masks at the original resolution (held in memory; use
            :meth:`predict_stream` to process frames as they come).
        """
        return torch.stack([masks for _, _, masks in self.predict_stream(video, sentences)], dim=1)
