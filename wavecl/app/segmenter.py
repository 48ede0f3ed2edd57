"""The page's work without the page: check the input, segment, write and package the results."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from wavecl.app.config import AppConfig
from wavecl.app.results import SegmentResult, legend_html, summary_line, zip_masks
from wavecl.app.uploads import InputError, check_length, parse_sentences, public_message, video_input
from wavecl.app.workspace import Workspace
from wavecl.inference.prediction_folder import PredictionPaths, write_predictions
from wavecl.inference.predictor import VideoPredictor
from wavecl.inference_settings import InferenceSettings
from wavecl.model.wavecl import WaveCL


class Segmenter:
    """Segments uploads for the page, each request in its own folder of :attr:`workspace`.

    :meth:`close` removes the workspace, as do garbage collection and the interpreter's exit.

    Args:
        model: the network (moved to ``config.inference.device``, eval mode).
        config: the app's settings.
    """

    def __init__(self, model: WaveCL, config: AppConfig) -> None:
        self.model = model
        self.config = config
        self.workspace = Workspace(config.temp_parent)
        self._predictor: VideoPredictor | None = None

    def close(self) -> None:
        """Remove the temporary folder and everything in it."""
        self.workspace.close()

    def settings(self, window: int, short_size: int, threshold: float) -> InferenceSettings:
        """The app's inference settings with the page's controls; ``max_size`` keeps the configured
        long/short ratio, and the overlap shrinks to fit a shorter window (a window of 1 frame shares none).

        Raises:
            InputError: a control out of its range.
        """
        default = self.config.inference
        max_size = None if default.max_size is None else round(short_size * default.max_size / default.short_size)
        try:
            overlap = min(default.overlap, max(window - 1, 0))
            return default.with_given(
                window=window, overlap=overlap, short_size=short_size, threshold=threshold, max_size=max_size
            )
        except ValueError as error:
            raise InputError(
                f"Window ({window}) and resize ({short_size}) must be positive and the threshold "
                f"({threshold}) between 0 and 1."
            ) from error

    def predictor(self, settings: InferenceSettings) -> VideoPredictor:
        """A predictor of the model with ``settings``, without a progress display; the last one is kept and
        reused while the settings stay the same (building one can load ONNX sessions, or export the model)."""
        predictor = self._predictor
        if predictor is None or predictor.settings != settings:
            predictor = VideoPredictor(self.model, settings, progress=False, onnx_dir=self.config.onnx_dir)
            self._predictor = predictor
        return predictor

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
            The results (:class:`SegmentResult`), written in a new folder of the workspace.

        Raises:
            InputError: the input is unusable; the message says why in the user's terms.
        """
        config = self.config
        sentences = parse_sentences(sentences_text, config.max_sentences)
        default = config.inference
        settings = self.settings(
            int(default.window if window is None else window),
            int(default.short_size if short_size is None else short_size),
            float(default.threshold if threshold is None else threshold),
        )
        predictor = self.predictor(settings)
        try:
            predictor.check_sentences(sentences, [f"Sentence {line}" for line in range(1, len(sentences) + 1)])
        except ValueError as error:
            raise InputError(str(error)) from error
        work = self.workspace.new_request()
        try:
            video, name = video_input(upload, folder, work, config)
            total = check_length(video, name, config.max_frames)
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
                    predictor, video, sentences, work / "result", on_frame=on_frame, pad_to_even=True
                )
            except InputError:
                raise
            except (OSError, ValueError) as error:
                raise InputError(f"Cannot segment {name}: {public_message(error, video)}") from error
            return self._package(paths, sentences, Path(name).stem, time.perf_counter() - start)
        except BaseException:
            shutil.rmtree(work, ignore_errors=True)
            raise

    def _package(self, paths: PredictionPaths, sentences: list[str], stem: str, seconds: float) -> SegmentResult:
        masks_root = paths.out_dir / "masks"
        archive = zip_masks(masks_root, paths.out_dir / f"{stem}_masks.zip")
        shutil.rmtree(masks_root)
        summary = summary_line(paths.num_frames, len(sentences), seconds)
        return SegmentResult(
            paths.overlay_video, paths.contact_sheet, legend_html(sentences, paths.colors), archive, summary
        )
