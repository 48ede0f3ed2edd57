"""``wavecl export``: turn a training run or checkpoint into a self-contained pretrained folder."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from rich.markup import escape

from wavecl.cli.common import console, subcommand

if TYPE_CHECKING:
    from wavecl.model.hub import TrainingRecord

RECIPE_FIELDS = (
    "data.window_size",
    "data.train_short_size",
    "data.train_max_size",
    "train.epochs",
    "train.batch_size",
    "train.lr",
    "train.lr_backbone",
    "train.text_encoder_lr",
    "train.amp",
)
"""The run's settings a model card shows."""


def training_record(checkpoint: str) -> TrainingRecord | None:
    """What the model card says of the run that ``checkpoint`` belongs to: its dataset and settings
    (``config.yaml``), ``run_info.json``, and the scores logged for the checkpoint's epoch (``log.jsonl``,
    counts left out); None when ``checkpoint`` is not part of a training run.

    Raises:
        ValueError: a file of the run is malformed (named).
    """
    from wavecl.checkpoint import latest_checkpoint, parse_checkpoint_folder_name
    from wavecl.config import load_config
    from wavecl.evaluation.counts import is_count
    from wavecl.jsonio import read_json
    from wavecl.model.hub import TrainingRecord
    from wavecl.run_directory import RunDirectory
    from wavecl.training.run_rules import find_run_directory

    found = find_run_directory(checkpoint)
    if found is None:
        return None
    run_dir = RunDirectory(found)
    path = Path(checkpoint)
    folder = latest_checkpoint(path.parent if path.suffix == ".safetensors" else path)
    epoch, step = parse_checkpoint_folder_name(folder.name) or (None, None)
    config = load_config(run_dir.config).to_dict()
    logged = run_dir.logged_epochs().get(epoch, {}) if epoch is not None and step is None else {}
    run_info = run_dir.run_info
    return TrainingRecord(
        dataset=config["data"]["dataset_name"],
        checkpoint=folder.name,
        epochs_trained=None if epoch is None else epoch + (step is None),
        recipe={name: config[name.split(".")[0]][name.split(".")[1]] for name in RECIPE_FIELDS},
        run_info=read_json(run_info) if run_info.is_file() else {},
        metrics={
            name.removeprefix("eval_"): float(value)
            for name, value in logged.items()
            if name.startswith("eval_") and not is_count(name.removeprefix("eval_"))
        },
    )


def run(args: argparse.Namespace) -> None:
    """Write the pretrained folder (and its ONNX parts with ``--onnx``) and say where they are."""
    from wavecl.model.onnx_export import export_onnx
    from wavecl.model.pretrained import ONNX_DIRNAME
    from wavecl.model.wavecl import WaveCL

    if args.int8 and not args.onnx:
        raise ValueError("--int8 quantizes the ONNX export: give --onnx too")
    directory = WaveCL.export_pretrained(args.checkpoint, args.out, training_record(args.checkpoint))
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
        "Write config.json, model.safetensors, the text encoder's config and tokenizer, the run's\n"
        "evaluation resize and a model card (README.md: architecture, configuration, training data and\n"
        "scores of the run) into OUT, which then loads offline with no other file, or from the Hugging\n"
        "Face Hub once uploaded there (WaveCL.from_pretrained('OWNER/NAME')).",
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
