"""A local web page to segment one's own video: ``wavecl serve`` and :func:`build_app`.

Built on Gradio, the library most model demos of the field use: it gives the file upload, the request
queue with each waiting user's position, the progress bar and a page that can be mounted in a
notebook or in another ASGI server.

The page takes a video file (mp4, webm, mov, ...), a zip of frames or a folder of frames (or one of
a few generated example clips) and one or more sentences, one per line. It runs
:class:`wavecl.inference.VideoPredictor` (every sentence in one batch) through
:func:`wavecl.inference.run.write_predictions`, the writer of ``wavecl predict``, and shows the overlay
video (H.264 yuv420p, even size, which browsers play), the contact sheet, a colour legend per
sentence and a zip of the masks (a PNG per frame and sentence, named as ``wavecl predict`` names them).

Bad input is reported on the page, never by a dead server: an unreadable or empty video, a video
longer than :attr:`AppConfig.max_frames`, an empty sentence, an upload over
:attr:`AppConfig.max_upload_mb` (a zip: its frames unpacked), a frame that is not JPEG or PNG or has
more than :data:`~wavecl.data.paths.MAX_IMAGE_PIXELS` pixels (checked from its header). One request
runs at a time; later ones wait in a queue (of at most :attr:`AppConfig.max_queue`) whose position the
page shows.

Files: everything the app writes lies in one temporary folder, created per app under the system's
temporary folder (or :attr:`AppConfig.temp_parent`) and removed when the app is closed or garbage
collected: Gradio's upload and result cache (``gradio/``, whose files are deleted after
:attr:`AppConfig.cache_minutes`), the example clips (``examples/``) and one folder per request
(``requests/``), deleted when the next request starts (its results are in Gradio's cache by then) or
at once when the request fails. Gradio reads the location of its cache from the environment variable
``GRADIO_TEMP_DIR``, which :func:`build_app` sets before importing Gradio; a folder or two that Gradio
fixes at import time follow the first app of a process only (``wavecl serve`` runs one).
"""

from __future__ import annotations

import html
import os
import shutil
import tempfile
import time
import weakref
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from wavecl.config import DEFAULT_AMP, AmpMode
from wavecl.data.paths import FRAME_SUFFIXES, is_hidden, is_listed_name
from wavecl.data.synthetic import sample_synthetic_video
from wavecl.data.video_files import write_video
from wavecl.inference.overlay import sentence_colors
from wavecl.inference.predictor import Runtime, VideoPredictor, open_video
from wavecl.inference.run import (
    DEFAULT_MAX_SIZE,
    DEFAULT_SHORT_SIZE,
    DEFAULT_WINDOW,
    PredictionPaths,
    write_predictions,
)
from wavecl.model.postprocess import MASK_THRESHOLD
from wavecl.model.wavecl import WaveCL

if TYPE_CHECKING:
    import gradio as gr

VIDEO_SUFFIXES = (".mp4", ".webm", ".mov", ".mkv", ".avi")
"""Offered by the page's file picker; anything FFmpeg decodes is accepted."""
ARCHIVE_SUFFIX = ".zip"
EXAMPLE_CLIPS = 2
EXAMPLE_FRAMES = 16
EXAMPLE_SIZE = (128, 192)
EXAMPLE_FPS = 8.0
MEGABYTE = 1 << 20
"""Bytes in a megabyte as this app and Gradio's upload check count them (2^20)."""


@dataclass
class AppConfig:
    """Settings of the web app.

    Attributes:
        short_size, max_size: default resize of the frames (short side, cap on the long side, pixels);
            the page's resize control sets the short side and scales ``max_size`` along.
        window: default frames per clip.
        threshold: default mask probability threshold, in ``(0, 1)``.
        max_frames: longest video accepted, in frames (the page states the limit).
        max_upload_mb: largest upload accepted, in megabytes (2^20 bytes, as Gradio counts), per request.
        max_sentences: most sentences per request (each is one clip of the batch).
        max_queue: most requests waiting; a request beyond it is refused with a message.
        cache_minutes: age after which Gradio's copies of uploads and results are deleted.
        device: ``"auto"``, ``"cpu"`` or ``"cuda"`` (:func:`wavecl.device.resolve_device`).
        amp: ``"off"``, ``"bf16"`` or ``"fp16"`` autocast (:func:`wavecl.amp.decide_precision`; on the
            CPU bf16 only where native).
        temp_parent: folder in which the app makes its temporary folder (the system's when ``None``).
        examples: offer the generated example clips.
        runtime: ``"torch"`` or ``"onnxruntime"`` (:class:`~wavecl.inference.predictor.VideoPredictor`).
        onnx_dir: the exported ONNX parts ONNX Runtime runs (``wavecl export --onnx``); needed with
            ``runtime="onnxruntime"``.
    """

    short_size: int = DEFAULT_SHORT_SIZE
    max_size: int | None = DEFAULT_MAX_SIZE
    window: int = DEFAULT_WINDOW
    threshold: float = MASK_THRESHOLD
    max_frames: int = 300
    max_upload_mb: float = 100.0
    max_sentences: int = 8
    max_queue: int = 16
    cache_minutes: float = 30.0
    device: str = "cpu"
    amp: AmpMode = DEFAULT_AMP
    temp_parent: str | os.PathLike[str] | None = None
    examples: bool = True
    runtime: Runtime = "torch"
    onnx_dir: str | os.PathLike[str] | None = None

    def __post_init__(self) -> None:
        for name in ("short_size", "window", "max_frames", "max_sentences", "max_queue"):
            if getattr(self, name) < 1:
                raise ValueError(f"AppConfig.{name} must be at least 1, got {getattr(self, name)}")
        if self.runtime == "onnxruntime" and self.onnx_dir is None:
            raise ValueError(
                "AppConfig.onnx_dir is needed with runtime='onnxruntime': export the model with `wavecl export --onnx`"
            )
        if self.max_size is not None and self.max_size < self.short_size:
            raise ValueError(f"AppConfig.max_size ({self.max_size}) is smaller than short_size ({self.short_size})")
        if not 0.0 < self.threshold < 1.0:
            raise ValueError(f"AppConfig.threshold must be in (0, 1), got {self.threshold}")
        if not self.max_upload_mb > 0 or not self.cache_minutes > 0:
            raise ValueError(
                f"AppConfig.max_upload_mb and cache_minutes must be positive, "
                f"got {self.max_upload_mb} and {self.cache_minutes}"
            )

    @property
    def max_upload_bytes(self) -> int:
        """:attr:`max_upload_mb` in bytes."""
        return int(self.max_upload_mb * MEGABYTE)


class InputError(ValueError):
    """Something wrong with what the user gave; the message is shown on the page as it is."""


@dataclass
class SegmentResult:
    """What one request produced, as shown on the page.

    Attributes:
        overlay_video: the mp4 with every sentence's mask blended in its colour.
        contact_sheet: the contact-sheet PNG.
        legend: HTML listing each sentence beside its colour.
        masks_zip: the zip of per-frame mask PNGs.
        summary: one line of Markdown (frames, sentences, seconds).
    """

    overlay_video: Path
    contact_sheet: Path
    legend: str
    masks_zip: Path
    summary: str

    def as_outputs(self) -> tuple[str, str, str, str, str]:
        """The values of the page's output components, in their order."""
        return str(self.overlay_video), str(self.contact_sheet), self.legend, str(self.masks_zip), self.summary


def parse_sentences(text: str | None, max_sentences: int) -> list[str]:
    """The sentences of the text box: one per non-blank line, surrounding spaces removed.

    Raises:
        InputError: no sentence, or more than ``max_sentences``.
    """
    sentences = [line.strip() for line in (text or "").splitlines() if line.strip()]
    if not sentences:
        raise InputError("Enter at least one sentence describing what to segment (one sentence per line).")
    if len(sentences) > max_sentences:
        raise InputError(f"{len(sentences)} sentences given; this server segments at most {max_sentences} at once.")
    return sentences


def mask_archive_name(mask_file: Path, masks_root: Path) -> str:
    """Name of a mask PNG inside the download zip: its path under the ``masks/`` folder that
    :func:`wavecl.inference.run.write_predictions` wrote (``<i>_<sentence>/<frame>.png``)."""
    return mask_file.relative_to(masks_root).as_posix()


def zip_masks(masks_root: Path, archive: Path) -> Path:
    """Store every mask PNG under ``masks_root`` in ``archive`` (uncompressed: PNGs are compressed).

    Returns:
        ``archive``.
    """
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_STORED) as bundle:
        for mask_file in sorted(masks_root.rglob("*.png")):
            bundle.write(mask_file, mask_archive_name(mask_file, masks_root))
    return archive


def legend_html(sentences: Sequence[str]) -> str:
    """HTML listing ``i: sentence`` beside the colour its masks have in the overlay and contact sheet."""
    items = []
    for index, (sentence, color) in enumerate(zip(sentences, sentence_colors(len(sentences)))):
        red, green, blue = (int(c) for c in color)
        items.append(
            f'<li style="list-style:none;margin:0.2em 0"><span style="display:inline-block;width:1em;'
            f"height:1em;margin-right:0.5em;vertical-align:middle;border:1px solid #0004;"
            f'background:rgb({red},{green},{blue})"></span>{index}: {html.escape(sentence)}</li>'
        )
    return f'<ul class="wavecl-legend" style="padding:0;margin:0">{"".join(items)}</ul>'


def _frame_name(path: str) -> str | None:
    """The file name of a frame inside an archive or folder, ``None`` for other files (and for the
    hidden copies archivers add, ``__MACOSX/`` and ``._name``): the rule of
    :func:`wavecl.data.paths.is_listed_name`, applied to every folder of the path."""
    parts = PurePosixPath(path.replace("\\", "/")).parts
    if not parts or not is_listed_name(parts[-1], FRAME_SUFFIXES) or any(is_hidden(part) for part in parts):
        return None
    return parts[-1]


def _check_frame_names(names: list[str], source: str, max_frames: int) -> None:
    if not names:
        raise InputError(f"{source} holds no frames ({', '.join(FRAME_SUFFIXES)} files).")
    if len(names) > max_frames:
        raise InputError(f"{source} holds {len(names)} frames; this server accepts at most {max_frames} frames.")
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise InputError(f"{source} holds several frames named {repeated[0]}; frame names must be unique.")


def extract_frames(archive: Path, destination: Path, max_frames: int, max_bytes: int) -> Path:
    """Unpack the frames of a zip into ``destination`` (flat, by file name).

    Args:
        archive: the zip; its ``.jpg``/``.jpeg``/``.png`` files at any depth are the frames.
        destination: an existing, empty folder.
        max_frames: most frames accepted.
        max_bytes: most bytes the frames may unpack to.

    Returns:
        ``destination``.

    Raises:
        InputError: not a zip, no frame, too many frames, two frames of one name, too many bytes.
    """
    try:
        bundle = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError) as error:
        raise InputError(f"{archive.name} is not a readable zip archive ({error}).") from error
    with bundle:
        members = [(info, _frame_name(info.filename)) for info in bundle.infolist() if not info.is_dir()]
        members = [(info, name) for info, name in members if name is not None]
        _check_frame_names([name for _, name in members], archive.name, max_frames)
        unpacked = sum(info.file_size for info, _ in members)
        if unpacked > max_bytes:
            raise InputError(
                f"{archive.name} unpacks to {_megabytes(unpacked)} of frames; "
                f"this server accepts at most {_megabytes(max_bytes)}."
            )
        try:
            for info, name in members:
                with bundle.open(info) as source, open(destination / name, "wb") as target:
                    shutil.copyfileobj(source, target)
        except (zipfile.BadZipFile, OSError, EOFError) as error:
            raise InputError(f"{archive.name} is damaged: {error}") from error
    return destination


def collect_frames(files: Sequence[str], destination: Path, max_frames: int) -> Path:
    """Copy the frames of an uploaded folder into ``destination`` by file name; other files are ignored.

    Raises:
        InputError: no frame, too many frames, two frames of one name.
    """
    frames = [(path, _frame_name(path)) for path in files]
    frames = [(path, name) for path, name in frames if name is not None]
    _check_frame_names([name for _, name in frames], "The folder", max_frames)
    for path, name in frames:
        shutil.copyfile(path, destination / name)
    return destination


def _megabytes(count: float) -> str:
    """``count`` bytes in megabytes, with three significant digits (``"0.00413 MB"``, ``"152 MB"``)."""
    value = count / MEGABYTE
    return f"{value:.3g} MB" if value < 1000 else f"{value:.0f} MB"


def _upload_size(paths: Sequence[str]) -> int:
    return sum(Path(path).stat().st_size for path in paths)


def _public_message(error: Exception, path: Path) -> str:
    """The error's message with the server-side path of the upload replaced by its file name."""
    return str(error).replace(str(path), path.name)


class Segmenter:
    """The page's work, without the page: check the input, segment, write and package the results.

    It makes the app's temporary folder :attr:`root` (under ``config.temp_parent``, else the system's
    temporary folder); requests work in ``root/requests``. :meth:`close` removes it, as does garbage
    collection or the interpreter's exit.

    Args:
        model: the network (moved to ``config.device``, eval mode).
        config: the app's settings.
    """

    def __init__(self, model: WaveCL, config: AppConfig) -> None:
        self.model = model
        self.config = config
        self.root = Path(tempfile.mkdtemp(prefix="wavecl-serve-", dir=config.temp_parent))
        self.requests = self.root / "requests"
        self.requests.mkdir()
        self._finalizer = weakref.finalize(self, shutil.rmtree, self.root, ignore_errors=True)

    def close(self) -> None:
        """Remove the temporary folder and everything in it."""
        self._finalizer()

    def predictor(self, window: int, short_size: int, threshold: float) -> VideoPredictor:
        """A predictor with the page's settings; ``max_size`` keeps the configured long/short ratio."""
        config = self.config
        max_size = None if config.max_size is None else round(short_size * config.max_size / config.short_size)
        return VideoPredictor(
            self.model,
            short_size=short_size,
            max_size=max_size,
            window=window,
            device=config.device,
            amp=config.amp,
            progress=False,
            threshold=threshold,
            runtime=config.runtime,
            onnx_dir=config.onnx_dir,
        )

    def _video_input(self, upload: str | None, folder: Sequence[str] | None, work: Path) -> tuple[Path, str]:
        """The video to segment (a file or a folder of frames) and the name to show for it."""
        if upload and folder:
            raise InputError("Give either a video (or zip of frames) or a folder of frames, not both.")
        if not upload and not folder:
            raise InputError("Upload a video, a zip of frames or a folder of frames first.")
        paths = [upload] if upload else list(folder or [])
        size = _upload_size(paths)
        if size > self.config.max_upload_bytes:
            raise InputError(
                f"The upload is {_megabytes(size)}; "
                f"this server accepts at most {_megabytes(self.config.max_upload_bytes)}."
            )
        if folder:
            frames = work / "frames"
            frames.mkdir()
            return collect_frames(paths, frames, self.config.max_frames), "folder of frames"
        path = Path(upload)
        if size == 0:
            raise InputError(f"{path.name} is empty (0 bytes).")
        if path.suffix.lower() == ARCHIVE_SUFFIX:
            frames = work / "frames"
            frames.mkdir()
            return extract_frames(path, frames, self.config.max_frames, self.config.max_upload_bytes), path.name
        return path, path.name

    def _check_length(self, video: Path, name: str) -> int | None:
        """The frame count when the file records it (``None`` otherwise); too long a video is refused."""
        try:
            source = open_video(video)
        except (OSError, ValueError) as error:
            raise InputError(f"Cannot read {name} as a video: {_public_message(error, video)}") from error
        if source.num_frames is not None and source.num_frames > self.config.max_frames:
            seconds = f" ({source.num_frames / source.fps:.1f} s at {source.fps:g} fps)" if source.fps else ""
            raise InputError(
                f"{name} has {source.num_frames} frames{seconds}; this server accepts at most "
                f"{self.config.max_frames} frames. Cut the video shorter and try again."
            )
        return source.num_frames

    def _clear_finished_requests(self) -> None:
        """Delete the folders of earlier requests: one request runs at a time, so theirs are finished
        and Gradio has copied their results into its cache."""
        for folder in self.requests.iterdir():
            shutil.rmtree(folder, ignore_errors=True)

    def segment(
        self,
        upload: str | None,
        folder: Sequence[str] | None,
        sentences_text: str | None,
        window: float | None = None,
        short_size: float | None = None,
        threshold: float | None = None,
        progress: Callable[..., Any] | None = None,
    ) -> SegmentResult:
        """Segment an uploaded video for the sentences of the text box.

        Args:
            upload: path of an uploaded video file or zip of frames.
            folder: paths of the files of an uploaded folder of frames.
            sentences_text: one sentence per line.
            window, short_size, threshold: the page's controls (the config's defaults when ``None``).
            progress: called as ``progress((done, total), desc=..., unit="frames")`` after each frame
                (``total`` is ``None`` when the file does not record its length), like :class:`gr.Progress`.

        Returns:
            The results (:class:`SegmentResult`), written in a new folder under ``root/requests``.

        Raises:
            InputError: the input is unusable; the message says why in the user's terms.
        """
        config = self.config
        sentences = parse_sentences(sentences_text, config.max_sentences)
        window = int(config.window if window is None else window)
        short_size = int(config.short_size if short_size is None else short_size)
        threshold = float(threshold if threshold is not None else config.threshold)
        if window < 1 or short_size < 1 or not 0.0 < threshold < 1.0:
            raise InputError(
                f"Window ({window}) and resize ({short_size}) must be positive and the threshold "
                f"({threshold}) between 0 and 1."
            )
        predictor = self.predictor(window, short_size, threshold)
        try:
            predictor.check_sentences(sentences, [f"Sentence {line}" for line in range(1, len(sentences) + 1)])
        except ValueError as error:
            raise InputError(str(error)) from error
        self._clear_finished_requests()
        work = Path(tempfile.mkdtemp(dir=self.requests))
        try:
            video, name = self._video_input(upload, folder, work)
            total = self._check_length(video, name)
            start = time.perf_counter()

            def on_frame(index: int) -> None:
                if index >= config.max_frames:
                    raise InputError(f"{name} is longer than {config.max_frames} frames, the most this server accepts.")
                if progress is not None:
                    progress((index + 1, total), desc="Segmenting", unit="frames")

            if progress is not None:
                progress((0, total), desc="Segmenting", unit="frames")
            try:
                paths = write_predictions(
                    predictor,
                    video,
                    sentences,
                    work / "result",
                    on_frame=on_frame,
                    pad_to_even=True,
                )
            except (OSError, ValueError) as error:
                if isinstance(error, InputError):
                    raise
                raise InputError(f"Cannot segment {name}: {_public_message(error, video)}") from error
            return self._package(paths, sentences, Path(name).stem, time.perf_counter() - start)
        except BaseException:
            shutil.rmtree(work, ignore_errors=True)
            raise

    def _package(self, paths: PredictionPaths, sentences: list[str], stem: str, seconds: float) -> SegmentResult:
        masks_root = paths.out_dir / "masks"
        archive = zip_masks(masks_root, paths.out_dir / f"{stem}_masks.zip")
        shutil.rmtree(masks_root)
        summary = (
            f"{paths.num_frames} frames × {len(sentences)} sentence{'s' if len(sentences) > 1 else ''} "
            f"segmented in {seconds:.1f} s."
        )
        return SegmentResult(paths.overlay_video, paths.contact_sheet, legend_html(sentences), archive, summary)


def write_example_clips(folder: Path) -> list[list[str]]:
    """Generate the example clips (moving coloured shapes, see :mod:`wavecl.data.synthetic`).

    Returns:
        One ``[mp4 path, sentences]`` row per clip, the sentences those the synthetic data set gives it.
    """
    rows = []
    for index in range(EXAMPLE_CLIPS):
        clip = sample_synthetic_video(
            seed=2024, split="examples", index=index, num_frames=EXAMPLE_FRAMES, size=EXAMPLE_SIZE
        )
        frames, _ = clip.render()
        path = folder / f"shapes_{index}.mp4"
        write_video(path, list(frames), fps=EXAMPLE_FPS)
        rows.append([str(path), "\n".join(expression.text for expression in clip.expressions[:2])])
    return rows


def build_app(model: WaveCL, config: AppConfig | None = None) -> gr.Blocks:
    """The web page, as a Gradio app: launch it, show it in a notebook or mount it in a server.

    Example::

        app = build_app(WaveCL.from_pretrained("runs/demo/runs/synthetic/run"), AppConfig(device="cuda"))
        app.launch(**launch_options(AppConfig()))        # http://127.0.0.1:7860

    Args:
        model: the network.
        config: the app's settings (:class:`AppConfig`).

    Returns:
        The :class:`gr.Blocks`, with its queue set (one request at a time, ``config.max_queue`` waiting).
        ``app.segmenter`` is its :class:`Segmenter`, whose temporary folder (``app.segmenter.root``)
        is removed by ``app.segmenter.close()``, by garbage collection or at the interpreter's exit.
    """
    config = config or AppConfig()
    segmenter = Segmenter(model, config)
    root = segmenter.root
    os.environ["GRADIO_TEMP_DIR"] = str(root / "gradio")
    import gradio as gr  # after GRADIO_TEMP_DIR: some of Gradio's folders are fixed when it is imported

    def run(
        upload: str | None,
        folder: list[str] | None,
        sentences: str,
        window: float,
        short_size: float,
        threshold: float,
        progress: gr.Progress = gr.Progress(),  # noqa: B008 (Gradio finds the tracker by this default)
    ) -> tuple[str, str, str, str, str]:
        try:
            return segmenter.segment(upload, folder, sentences, window, short_size, threshold, progress).as_outputs()
        except InputError as error:
            raise gr.Error(str(error), duration=None) from error

    cache_seconds = int(config.cache_minutes * 60)
    with gr.Blocks(
        title="WaveCL: segment a video from a sentence",
        analytics_enabled=False,
        delete_cache=(max(60, cache_seconds // 4), cache_seconds),
    ) as app:
        gr.Markdown(
            "# WaveCL: segment what a sentence describes\n"
            "Upload a video, a zip of frames or a folder of frames, write one or more sentences (one per "
            "line), press **Segment**. Each sentence gets its own colour. "
            f"Limits: {config.max_frames} frames, {config.max_upload_mb:g} MB per upload, "
            f"{config.max_sentences} sentences."
        )
        with gr.Row():
            with gr.Column(scale=1):
                with gr.Tab("Video or zip of frames"):
                    upload = gr.File(
                        label="Video (mp4, webm, mov, ...) or zip of frames",
                        file_types=[*VIDEO_SUFFIXES, ARCHIVE_SUFFIX],
                        elem_id="upload",
                    )
                with gr.Tab("Folder of frames"):
                    folder = gr.File(label="Folder of .jpg / .png frames", file_count="directory", elem_id="folder")
                sentences = gr.Textbox(
                    label="Sentences, one per line",
                    lines=3,
                    placeholder="the red circle moving to the left\na blue square",
                    elem_id="sentences",
                )
                with gr.Accordion("Options", open=False):
                    window = gr.Slider(1, 32, value=config.window, step=1, label="Window (frames per clip)")
                    short_size = gr.Slider(
                        32,
                        max(1080, config.short_size),
                        value=config.short_size,
                        step=8,
                        label="Resize (short side, pixels)",
                    )
                    threshold = gr.Slider(0.05, 0.95, value=config.threshold, step=0.05, label="Mask threshold")
                button = gr.Button("Segment", variant="primary", elem_id="segment")
                if config.examples:
                    examples = root / "examples"
                    examples.mkdir()
                    gr.Examples(write_example_clips(examples), inputs=[upload, sentences], label="Example clips")
            with gr.Column(scale=2):
                overlay = gr.Video(label="Overlay", format=None, loop=True, interactive=False, elem_id="overlay")
                legend = gr.HTML(label="Colours", elem_id="legend")
                summary = gr.Markdown(elem_id="summary")
                sheet = gr.Image(label="Contact sheet", type="filepath", interactive=False, elem_id="sheet")
                masks = gr.File(label="Masks (zip of PNGs)", interactive=False, elem_id="masks")
        button.click(
            run,
            inputs=[upload, folder, sentences, window, short_size, threshold],
            outputs=[overlay, sheet, legend, masks, summary],
            concurrency_limit=1,
            api_name="segment",
        )
    app.queue(max_size=config.max_queue)
    app.segmenter = segmenter
    return app


def launch_options(config: AppConfig, host: str = "127.0.0.1", port: int = 7860) -> dict[str, Any]:
    """Keyword arguments of :meth:`gr.Blocks.launch` for an app of ``config``: bound to ``host``
    (loopback by default), the upload size limit, errors shown on the page, no server-side rendering."""
    return {
        "server_name": host,
        "server_port": port,
        "max_file_size": config.max_upload_bytes,
        "show_error": True,
        "ssr_mode": False,
    }


def serve(model: WaveCL, config: AppConfig | None = None, host: str = "127.0.0.1", port: int = 7860) -> None:
    """Run the web app until interrupted (Ctrl-C), then remove its temporary folder.

    Raises:
        OSError: the port is taken (Gradio names it).
    """
    config = config or AppConfig()
    app = build_app(model, config)
    try:
        app.launch(**launch_options(config, host, port))
    finally:
        app.close()
        app.segmenter.close()
