"""``wavecl evaluate``: evaluate a checkpoint, or score saved predictions."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.markup import escape

from wavecl.cli.common import (
    CONFIG_HELP_EPILOG,
    EVALUATE_SHORTCUTS,
    add_config_arguments,
    add_device_argument,
    add_shortcut_arguments,
    console,
    print_metrics_table,
    resolve_config,
    subcommand,
)

METRICS_FILENAME = "metrics.json"


def load_evaluation_weights(model, checkpoint: str | Path) -> Path:
    """Load a checkpoint into ``model`` strictly; returns the file or folder the weights came from.

    Args:
        model: the :class:`~wavecl.model.wavecl.WaveCL` built from the evaluation config.
        checkpoint: a wavecl run directory, ``checkpoints`` folder, checkpoint folder or pointer
            (``last``/``best``), a pretrained folder, a ``model.safetensors`` file, or a checkpoint
            written by the reference implementation (``.pth``/``.pth.tar``, keys renamed).

    Raises:
        FileNotFoundError: nothing at ``checkpoint``.
        ValueError: the file is unreadable, or its keys or shapes do not fit the model (missing and
            unexpected keys are listed).
    """
    from wavecl.checkpoint import REFERENCE_SUFFIXES, latest_checkpoint, load_model_weights
    from wavecl.model.pretrained import load_weights
    from wavecl.model.wavecl import convert_reference_state_dict

    path = Path(checkpoint)
    if path.name.endswith(REFERENCE_SUFFIXES):
        source = path
        try:
            state = convert_reference_state_dict(load_model_weights(path))
        except ValueError as error:
            raise ValueError(f"{path} is not a checkpoint of the reference implementation: {error}") from error
    else:
        source = path if path.suffix == ".safetensors" else latest_checkpoint(path)
        state = load_model_weights(source)
    load_weights(model, state, source)
    return source


def run(args: argparse.Namespace) -> None:
    """Run the model over the config's evaluation split, or score ``--predictions``; print the metrics."""
    from wavecl.atomic import write_json

    config, _ = resolve_config(args)
    if (args.checkpoint is None) == (args.predictions is None):
        raise ValueError("give exactly one of --checkpoint (run the model) and --predictions (score saved predictions)")
    if args.predictions is not None:
        from wavecl.evaluation.datasets import evaluate_saved_predictions

        metrics = evaluate_saved_predictions(config, args.predictions)
        record = {"dataset": config.data.dataset_name, "predictions": str(args.predictions), "metrics": metrics}
        if args.out_dir is not None:
            write_json(Path(args.out_dir) / METRICS_FILENAME, record, indent=2)
            console.print(f"metrics written to {escape(str(Path(args.out_dir) / METRICS_FILENAME))}")
        print_metrics_table(f"{config.data.dataset_name} evaluation of saved predictions", metrics)
        return

    from wavecl.amp import decide_precision
    from wavecl.distributed import cleanup, init_distributed
    from wavecl.evaluation.datasets import evaluate_model
    from wavecl.model.wavecl import WaveCL

    out_dir = Path(args.out_dir) if args.out_dir is not None else config.run_directory() / "evaluation"
    dist = init_distributed(args.device, config.train.dist_timeout_s)
    try:
        model = WaveCL(config.model)
        source = load_evaluation_weights(model, args.checkpoint)
        model.to(dist.device)
        precision = decide_precision(config.train.amp, dist.device)
        if dist.is_main:
            console.print(f"evaluating {escape(str(source))} on {config.data.dataset_name}; {precision.describe()}")
        metrics, _ = evaluate_model(model, config, out_dir, dist, precision)
        if dist.is_main:
            record = {
                "dataset": config.data.dataset_name,
                "checkpoint": str(source.absolute()),
                "config": str(args.config),
                "world_size": dist.world_size,
                "precision": precision.summary(),
                "metrics": metrics,
            }
            write_json(out_dir / METRICS_FILENAME, record, indent=2)
            print_metrics_table(f"{config.data.dataset_name} evaluation", metrics)
            console.print(f"outputs in {escape(str(out_dir))} (metrics: {METRICS_FILENAME})")
    finally:
        cleanup()


def register(commands: argparse._SubParsersAction) -> None:
    """Add ``evaluate`` to the ``wavecl`` sub-commands."""
    parser = subcommand(
        commands,
        "evaluate",
        "evaluate a checkpoint, or score saved predictions",
        "Run the model on the evaluation split of the config's dataset (also under torchrun) and write its\n"
        "predictions and metrics.json into --out-dir (default <output-dir>/<dataset>/<version>/evaluation),\n"
        "or recompute the metrics from saved predictions (--predictions). The protocol of each dataset is\n"
        "listed below.",
        "  wavecl evaluate -c configs/a2d_sentences.yaml --checkpoint runs/a2d_sentences/a2d/checkpoints/best\n"
        "  wavecl evaluate -c configs/a2d_sentences.yaml --checkpoint reference_a2d.pth.tar\n"
        "  torchrun --nproc_per_node 2 -m wavecl evaluate -c configs/jhmdb_sentences.yaml \\\n"
        "      --checkpoint runs/a2d_sentences/a2d\n"
        "  wavecl evaluate -c configs/a2d_sentences.yaml \\\n"
        "      --predictions runs/a2d_sentences/a2d/evaluation/predictions.json\n\n" + CONFIG_HELP_EPILOG,
    )
    add_config_arguments(parser)
    add_shortcut_arguments(parser, EVALUATE_SHORTCUTS)
    parser.add_argument(
        "--checkpoint",
        default=None,
        help="run directory, checkpoints folder, checkpoint folder or 'last'/'best' pointer, pretrained folder, "
        "or a reference .pth/.pth.tar",
    )
    parser.add_argument(
        "--predictions", default=None, help="saved predictions file or folder to score instead of running the model"
    )
    parser.add_argument("--out-dir", default=None, help="where predictions and metrics.json go")
    add_device_argument(parser)
    parser.set_defaults(handler=run)
    plain_format_help = parser.format_help

    def format_help() -> str:
        """The help with each dataset's protocol, read from the dataset table only when help is shown
        (the table imports torch and every dataset, which ``wavecl --help`` should not wait for)."""
        from wavecl.evaluation.datasets import protocols_help

        return plain_format_help() + "\n" + protocols_help() + "\n"

    parser.format_help = format_help
