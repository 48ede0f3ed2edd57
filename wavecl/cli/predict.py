"""``wavecl predict``: segment a video for one or more sentences."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.markup import escape

from wavecl.cli.common import (
    add_amp_argument,
    add_compile_argument,
    add_device_argument,
    add_inference_settings_arguments,
    add_runtime_argument,
    console,
    inference_changes,
    subcommand,
)
from wavecl.inference_settings import InferenceSettings


def run(args: argparse.Namespace) -> None:
    """Segment the video and print where the masks, the overlay video and the contact sheet are."""
    from wavecl.inference.prediction_folder import predict_video

    if (args.video is None) == (args.video_path is None):
        raise ValueError("give the video once: as the VIDEO argument or with --video")
    video = args.video or args.video_path
    out_dir = Path(args.out_dir) if args.out_dir is not None else Path("predictions") / Path(video).stem
    paths = predict_video(
        args.checkpoint,
        video,
        args.text,
        out_dir,
        sentence_names=[f"--text #{number}" for number in range(1, len(args.text) + 1)],
        **inference_changes(args),
    )
    settings = paths.settings
    console.print(
        f"{paths.num_frames} frames segmented for {len(args.text)} sentence(s), {settings.window} per window "
        f"sharing {settings.overlap} (link weight {settings.link_weight:g})"
    )
    for sentence, folder in zip(args.text, paths.mask_dirs):
        console.print(f"  masks of {escape(repr(sentence))}: {escape(str(folder))}")
    overlay = "not written (needs PyAV: pip install av)" if paths.overlay_video is None else str(paths.overlay_video)
    console.print(f"  overlay video: {escape(overlay)}")
    shown = "all frames" if len(paths.sheet_frames) == paths.num_frames else f"frames {', '.join(paths.sheet_frames)}"
    console.print(f"  contact sheet: {escape(str(paths.contact_sheet))} ({escape(shown)})")


def register(commands: argparse._SubParsersAction) -> None:
    """Add ``predict`` to the ``wavecl`` sub-commands."""
    parser = subcommand(
        commands,
        "predict",
        "segment a video for one or more sentences",
        "Segment the objects that the sentences refer to in a video (mp4 or a folder of frames), window\n"
        "by window. Writes masks/<i>_<sentence>/<frame>.png (named after the source frames: a folder's file\n"
        "names, or index and time for a video file), overlay.mp4 and contact_sheet.png. The window and the\n"
        "resize default to the checkpoint's. Consecutive windows share --overlap frames, on which each\n"
        "window's choice of object is linked to the previous one's (--link-weight).",
        "  wavecl predict --checkpoint runs/ref_youtube_vos/finetuneytb_tiny --video dog.mp4 --text 'a dog jumping'\n"
        "  wavecl predict frames/ --checkpoint pretrained/wavecl-ytvos --text 'a man' --text 'the red car' \\\n"
        "      --output out/ --device cuda\n",
    )
    parser.add_argument(
        "video_path", nargs="?", metavar="VIDEO", help="video file or folder of frames (same as --video)"
    )
    parser.add_argument("--checkpoint", required=True, help="pretrained folder, training run directory or checkpoint")
    parser.add_argument("--video", default=None, help="video file (mp4, ...) or folder of .jpg/.png frames")
    parser.add_argument("--text", action="append", required=True, help="referring expression (repeatable)")
    parser.add_argument(
        "--out-dir", "--output", dest="out_dir", default=None, help="output folder (default predictions/<video name>)"
    )
    add_device_argument(parser)
    add_inference_settings_arguments(parser)
    add_amp_argument(parser)
    parser.add_argument(
        "--sentences-per-pass",
        type=int,
        default=None,
        help="sentences segmented together (each window runs the backbone once for all; "
        f"default {InferenceSettings().sentences_per_pass})",
    )
    add_compile_argument(parser)
    add_runtime_argument(
        parser,
        "what runs the network: torch (default), or onnxruntime (float32 on the CPU; uses the checkpoint "
        "folder's onnx/ from `wavecl export --onnx`, else exports the model first)",
    )
    parser.set_defaults(handler=run)
