"""``wavecl serve``: a local web page to segment one's own videos (:mod:`wavecl.app`)."""

from __future__ import annotations

import argparse

from rich.markup import escape

from wavecl.cli.common import (
    add_amp_argument,
    add_device_argument,
    add_inference_settings_arguments,
    add_runtime_argument,
    error_console,
    inference_changes,
    stop_cleanly_on_signals,
    subcommand,
)

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


def run(args: argparse.Namespace) -> None:
    """Load the checkpoint and serve the page until Ctrl-C; a taken port is reported as a ValueError."""
    from wavecl.app import AppConfig, serve
    from wavecl.device import resolve_device
    from wavecl.inference.prediction_folder import onnx_parts
    from wavecl.model.pretrained import build_pretrained, resolve_pretrained
    from wavecl.model.wavecl import WaveCL

    device = str(resolve_device(args.device))  # an impossible request fails before the weights are read
    source = resolve_pretrained(args.checkpoint)
    settings = source.inference_settings.with_given(**(inference_changes(args) | {"device": device}))
    model = build_pretrained(WaveCL, source, device)
    config = AppConfig(
        settings,
        max_frames=args.max_frames,
        max_upload_mb=args.max_upload_mb,
        max_queue=args.max_queue,
        onnx_dir=onnx_parts(args.checkpoint) if settings.runtime == "onnxruntime" else None,
    )
    if args.host not in LOOPBACK_HOSTS:
        error_console.print(
            f"[yellow]warning:[/yellow] --host {escape(args.host)}: the page is reachable from other machines"
        )
    try:
        with stop_cleanly_on_signals():  # SIGTERM (a service manager, `docker stop`) stops it as Ctrl-C does
            serve(model, config, host=args.host, port=args.port)
    except OSError as error:
        raise ValueError(f"cannot serve on {args.host}:{args.port}: {error}") from error


def register(commands: argparse._SubParsersAction) -> None:
    """Add ``serve`` to the ``wavecl`` sub-commands."""
    parser = subcommand(
        commands,
        "serve",
        "a local web page to segment your own videos",
        "Start a web app (Gradio) where you upload a video, a zip or a folder of frames, type one sentence\n"
        "per line and get the overlay video, a contact sheet and the masks. Bound to 127.0.0.1 unless\n"
        "--host says otherwise. Stop it with Ctrl-C; its temporary files are then removed.",
        "  wavecl serve --checkpoint runs/demo/runs/synthetic/run\n"
        "  wavecl serve --checkpoint pretrained/wavecl-ytvos --device cuda --port 8080 --max-frames 600\n",
    )
    parser.add_argument("--checkpoint", required=True, help="pretrained folder, training run directory or checkpoint")
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)"
    )
    parser.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    add_device_argument(parser)
    add_inference_settings_arguments(parser)
    parser.add_argument("--max-frames", type=int, default=300, help="longest video accepted, in frames (default 300)")
    parser.add_argument(
        "--max-upload-mb", type=float, default=100.0, help="largest upload accepted, in MB of 2^20 bytes (default 100)"
    )
    parser.add_argument("--max-queue", type=int, default=16, help="most requests waiting their turn (default 16)")
    add_amp_argument(parser)
    add_runtime_argument(
        parser,
        "what runs the network: torch (default), or onnxruntime (float32 on the CPU; the checkpoint must be a "
        "pretrained folder written by `wavecl export --onnx`)",
    )
    parser.set_defaults(handler=run)
