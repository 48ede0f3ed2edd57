"""The Gradio page: :func:`build_app`, :func:`launch_options` and :func:`serve`.

One request runs at a time; later ones wait in a queue (of at most
:attr:`~wavecl.app.config.AppConfig.max_queue`) whose position the page shows, on the overlay video
as is the progress bar. A new request first clears the previous results; bad input ends it with one
message on the page (the results stay empty) and one line in the server's log. Gradio reads the location
of its cache from the environment variable ``GRADIO_TEMP_DIR``, which :func:`build_app` sets to the
app's workspace before importing Gradio; a folder or two that Gradio fixes at import time follow the
first app of a process only (``wavecl serve`` runs one).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from wavecl.app.config import AppConfig
from wavecl.app.segmenter import Segmenter
from wavecl.app.uploads import ARCHIVE_SUFFIX, VIDEO_SUFFIXES, InputError
from wavecl.data.synthetic import sample_synthetic_video
from wavecl.data.video_files import write_video
from wavecl.model.wavecl import WaveCL

if TYPE_CHECKING:
    import gradio as gr

log = logging.getLogger("wavecl.serve")
EXAMPLE_CLIPS = 2
EXAMPLE_FRAMES = 16
EXAMPLE_SIZE = (128, 192)
EXAMPLE_FPS = 8.0
RESULT_HEIGHT = 420
"""Most pixels the overlay video and the contact sheet take on the page, whatever their shape (a portrait
video is shown narrower, not taller)."""


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

        config = AppConfig(InferenceSettings(device="cuda"))
        app = build_app(WaveCL.from_pretrained("runs/demo/runs/synthetic/run"), config)
        app.launch(**launch_options(config))        # http://127.0.0.1:7860

    Args:
        model: the network.
        config: the app's settings (:class:`AppConfig`).

    Returns:
        The :class:`gr.Blocks`, with its queue set (one request at a time, ``config.max_queue`` waiting).
        ``app.segmenter`` is its :class:`~wavecl.app.segmenter.Segmenter`, whose temporary folder
        (``app.segmenter.workspace.root``) is removed by ``app.segmenter.close()``, by garbage collection
        or at the interpreter's exit.
    """
    segmenter = Segmenter(model, config or AppConfig())
    app = segmenter_page(segmenter)
    app.segmenter = segmenter  # type: ignore[attr-defined]  # Gradio's Blocks declares no such field
    return app


def segmenter_page(segmenter: Segmenter) -> gr.Blocks:
    """The Gradio page of :func:`build_app` around ``segmenter`` (whose workspace holds Gradio's files),
    with its queue set."""
    config = segmenter.config
    root = segmenter.workspace.root
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
    ) -> tuple[str | None, str, str, str, str]:
        try:
            return segmenter.segment(upload, folder, sentences, window, short_size, threshold, progress).as_outputs()
        except InputError as error:
            log.warning("request refused: %s", error)
            raise gr.Error(str(error), duration=None, print_exception=False) from error

    def clear() -> tuple[None, None, str, None, str]:
        return None, None, "", None, ""

    inference = config.inference
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
                    window = gr.Slider(1, 32, value=inference.window, step=1, label="Window (frames per clip)")
                    short_size = gr.Slider(
                        32,
                        max(1080, inference.short_size),
                        value=inference.short_size,
                        step=8,
                        label="Resize (short side, pixels)",
                    )
                    threshold = gr.Slider(0.05, 0.95, value=inference.threshold, step=0.05, label="Mask threshold")
                button = gr.Button("Segment", variant="primary", elem_id="segment")
                if config.examples:
                    examples = root / "examples"
                    examples.mkdir()
                    gr.Examples(write_example_clips(examples), inputs=[upload, sentences], label="Example clips")
            with gr.Column(scale=2):
                overlay = gr.Video(
                    label="Overlay",
                    format=None,
                    loop=True,
                    interactive=False,
                    height=RESULT_HEIGHT,
                    elem_id="overlay",
                )
                legend = gr.HTML(label="Colours", elem_id="legend")
                summary = gr.Markdown(elem_id="summary")
                sheet = gr.Image(
                    label="Contact sheet", type="filepath", interactive=False, height=RESULT_HEIGHT, elem_id="sheet"
                )
                masks = gr.File(label="Masks (zip of PNGs)", interactive=False, elem_id="masks")
        results = [overlay, sheet, legend, masks, summary]
        button.click(clear, outputs=results, queue=False, show_progress="hidden", api_visibility="private").then(
            run,
            inputs=[upload, folder, sentences, window, short_size, threshold],
            outputs=results,
            show_progress_on=[overlay],
            concurrency_limit=1,
            api_name="segment",
        )
    app.queue(max_size=config.max_queue)
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
    segmenter = Segmenter(model, config or AppConfig())
    try:
        app = segmenter_page(segmenter)
        try:
            app.launch(**launch_options(segmenter.config, host, port))
        finally:
            app.close()
    finally:
        segmenter.close()
