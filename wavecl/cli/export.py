"""``wavecl export``: turn a training run or checkpoint into a self-contained pretrained folder."""

from __future__ import annotations

import argparse

from rich.markup import escape

from wavecl.cli.common import console, subcommand


def run(args: argparse.Namespace) -> None:
    """Write the pretrained folder (and its ONNX parts with ``--onnx``) and say where they are."""
    from wavecl.model.onnx_export import export_onnx
    from wavecl.model.pretrained import ONNX_DIRNAME
    from wavecl.model.wavecl import WaveCL

    if args.int8 and not args.onnx:
        raise ValueError("--int8 quantizes the ONNX export: give --onnx too")
    directory = WaveCL.export_pretrained(args.checkpoint, args.out)
    console.print(f"pretrained folder: {escape(str(directory))} (load it with WaveCL.from_pretrained)")
    if args.onnx:
        onnx_dir = export_onnx(WaveCL.from_pretrained(directory), directory / ONNX_DIRNAME, int8=args.int8)
        console.print(f"ONNX parts: {escape(str(onnx_dir))} (wavecl predict --runtime onnxruntime)")


def register(commands: argparse._SubParsersAction) -> None:
    """Add ``export`` to the ``wavecl`` sub-commands."""
    parser = subcommand(
        commands,
        "export",
        "write a run or checkpoint as a self-contained pretrained folder",
        "Write config.json, model.safetensors, the text encoder's config and tokenizer, and the run's\n"
        "evaluation resize into OUT, which then loads offline with no other file.",
        "  wavecl export runs/ref_youtube_vos/finetuneytb_tiny pretrained/wavecl-ytvos\n"
        "  wavecl export runs/ref_youtube_vos/finetuneytb_tiny pretrained/wavecl-ytvos --onnx [--int8]\n",
    )
    parser.add_argument("checkpoint", metavar="RUN", help="run directory, checkpoint folder or pointer")
    parser.add_argument("out", metavar="OUT", help="pretrained folder to write (replaced if it holds one)")
    parser.add_argument(
        "--onnx",
        action="store_true",
        help="also write the network as ONNX (video, sentence and segment parts) into OUT/onnx, for "
        "`wavecl predict --runtime onnxruntime` (needs onnx, onnxscript and onnxruntime: pip install 'wavecl[onnx]')",
    )
    parser.add_argument(
        "--int8",
        action="store_true",
        help="with --onnx: quantize the matmul weights of the ONNX parts to int8 (ONNX Runtime's dynamic "
        "quantization; smaller and usually faster, slightly different masks)",
    )
    parser.set_defaults(handler=run)
