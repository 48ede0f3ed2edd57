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
    explicit_overrides,
    print_metrics_table,
    resolve_config,
    stop_cleanly_on_signals,
    subcommand,
)
from wavecl.config import Config, load_config


def weights_source(checkpoint: str | Path) -> Path:
    """The file or folder the weights of ``--checkpoint`` come from.

    Args:
        checkpoint: a wavecl run directory, ``checkpoints`` folder, checkpoint folder or pointer
            (``last``/``best``), a pretrained folder, a ``model.safetensors`` file, or a ``torch.save``
            file such as a checkpoint of the original repository (read by
            :func:`wavecl.model.weights.load_weights`).

    Raises:
        FileNotFoundError: nothing at ``checkpoint``.
    """
    from wavecl.checkpoint import latest_checkpoint
    from wavecl.original import CHECKPOINT_SUFFIXES

    path = Path(checkpoint)
    single_file = path.suffix == ".safetensors" or path.name.endswith(CHECKPOINT_SUFFIXES)
    return path if single_file else latest_checkpoint(path)


def evaluation_name(source: Path) -> str:
    """The name of the evaluation folder of the weights at ``source``: its checkpoint or pretrained folder's
    name (``epoch_0003``), or a file's name without its suffixes (``reference_a2d`` for ``reference_a2d.pth.tar``)."""
    from wavecl.checkpoint import MODEL_FILENAME

    if source.is_dir():
        return source.name
    return source.parent.name if source.name == MODEL_FILENAME else source.name.split(".")[0]


def evaluate_config(args: argparse.Namespace) -> tuple[Config, Path | None]:
    """The config to evaluate with, and the training run ``--checkpoint`` belongs to (None otherwise).

    A checkpoint of a training run is evaluated with the network of the run's ``config.yaml``: ``-c`` may
    be left out (the run's whole config is used) or name the data to evaluate on, but its ``model``
    section must agree with the run's except for fields set explicitly.

    Raises:
        ValueError: no ``-c`` where no run supplies the config; ``-c`` disagrees with the run's network.
    """
    from wavecl.training.run_rules import evaluation_config, find_run_directory

    run_dir = None if args.checkpoint is None else find_run_directory(args.checkpoint)
    if run_dir is None:
        if args.config is None:
            raise ValueError("wavecl evaluate needs a config file (-c CONFIG) unless --checkpoint is a training run")
        return resolve_config(args)[0], None
    config_file = None if args.config is None else load_config(args.config)
    return evaluation_config(run_dir, config_file, explicit_overrides(args), f"-c {args.config}"), run_dir


def print_tables_written(out_dir: Path) -> None:
    """Name the per-expression table an evaluation of Ref-YouTube-VOS-layout data wrote, if any."""
    from wavecl.evaluation.ytvos import PER_EXPRESSION_FILENAME

    if (out_dir / PER_EXPRESSION_FILENAME).is_file():
        console.print(f"J, F and J&F per expression: {escape(str(out_dir / PER_EXPRESSION_FILENAME))}")


def require_replaceable(out_dir: Path) -> None:
    """Refuse an ``--out-dir`` that holds files but no ``metrics.json``: the evaluation replaces the folder
    whole, and such a folder is not an earlier evaluation's.

    Raises:
        ValueError: naming the folder.
    """
    from wavecl.evaluation.protocols import METRICS_FILENAME

    if out_dir.is_dir() and any(out_dir.iterdir()) and not (out_dir / METRICS_FILENAME).is_file():
        raise ValueError(
            f"--out-dir {out_dir} holds files but no {METRICS_FILENAME}, so it is not the output of an earlier "
            f"evaluation, and an evaluation replaces its folder whole: choose another folder, or empty this one"
        )


def run(args: argparse.Namespace) -> None:
    """Run the model over the config's evaluation split, or score ``--predictions``; print the metrics."""
    from wavecl.atomic import write_json
    from wavecl.evaluation.protocols import METRICS_FILENAME, metrics_record

    if (args.checkpoint is None) == (args.predictions is None):
        raise ValueError("give exactly one of --checkpoint (run the model) and --predictions (score saved predictions)")
    config, run_dir = evaluate_config(args)
    if args.predictions is not None:
        from wavecl.evaluation.protocols import evaluate_saved_predictions

        if args.out_dir is not None:  # metrics.json marks a finished scoring: gone until this one is
            (Path(args.out_dir) / METRICS_FILENAME).unlink(missing_ok=True)
        metrics = evaluate_saved_predictions(config, args.predictions, args.out_dir)
        record = metrics_record({"dataset": config.data.dataset_name, "predictions": str(args.predictions)}, metrics)
        if args.out_dir is not None:
            write_json(Path(args.out_dir) / METRICS_FILENAME, record, indent=2)
            console.print(f"metrics written to {escape(str(Path(args.out_dir) / METRICS_FILENAME))}")
            print_tables_written(Path(args.out_dir))
        print_metrics_table(f"{config.data.dataset_name} evaluation of saved predictions", metrics)
        return

    from wavecl.run_directory import RunDirectory

    if args.out_dir is not None:
        require_replaceable(Path(args.out_dir))
    source = weights_source(args.checkpoint)
    if args.out_dir is not None:
        out_dir = Path(args.out_dir)
    elif (
        run_dir is not None and config.data.dataset_name == load_config(RunDirectory(run_dir).config).data.dataset_name
    ):
        out_dir = RunDirectory(run_dir).evaluation(evaluation_name(source))  # the run's own, wherever it is now
    else:
        out_dir = RunDirectory(config.run_directory()).evaluation(evaluation_name(source))
    with stop_cleanly_on_signals():  # SIGTERM, like Ctrl-C, removes the unfinished folder beside out_dir
        evaluate_checkpoint(args, config, run_dir, source, out_dir)


def evaluate_checkpoint(
    args: argparse.Namespace, config: Config, run_dir: Path | None, source: Path, out_dir: Path
) -> None:
    """Evaluate the weights at ``source`` (:func:`weights_source`) with ``config`` into ``out_dir``
    (replaced whole at the end, with its ``metrics.json``) and print the metrics, on rank 0.

    Raises:
        ValueError: the weights file is unreadable, or its keys or shapes do not fit the model (missing
            and unexpected keys are listed).
    """
    from wavecl.amp import decide_precision
    from wavecl.data.datasets import check_dataset
    from wavecl.distributed import cleanup, init_distributed, on_main_process
    from wavecl.evaluation.protocols import METRICS_FILENAME, evaluate_model
    from wavecl.model.compile import compile_model
    from wavecl.model.wavecl import WaveCL
    from wavecl.model.weights import load_weights
    from wavecl.run_directory import RunDirectory

    dist = init_distributed(args.device, config.train.dist_timeout_s)
    try:
        model = WaveCL(config.model)
        load_weights(model, source)
        on_main_process(lambda: check_dataset(config.data, ("eval",)), "checking the dataset")  # before any forward
        model.to(dist.device)
        if config.train.compile:
            compile_model(model)
        precision = decide_precision(config.train.amp, dist.device)
        if dist.is_main:
            console.print(f"evaluating {escape(str(source))} on {config.data.dataset_name}; {precision.describe()}")
        record = {
            "dataset": config.data.dataset_name,
            "checkpoint": str(source.absolute()),
            "config": str(args.config if args.config is not None or run_dir is None else RunDirectory(run_dir).config),
            "world_size": dist.world_size,
            "precision": precision.summary(),
        }
        metrics, _ = evaluate_model(model, config, out_dir, dist, precision, record)
        if dist.is_main:
            print_metrics_table(f"{config.data.dataset_name} evaluation", metrics)
            console.print(f"outputs in {escape(str(out_dir))} (metrics: {METRICS_FILENAME})")
            print_tables_written(out_dir)
    finally:
        cleanup()


class PrintProtocols(argparse.Action):
    """``--protocols``: print each dataset's protocol from the dataset table and exit. Not part of ``--help``:
    the table imports torch and every dataset reader, seconds that ``--help`` should not cost."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, namespace, values, option_string=None) -> None:
        from wavecl.evaluation.protocols import protocols_help

        console.print(escape(protocols_help()), highlight=False)
        parser.exit()


def register(commands: argparse._SubParsersAction) -> None:
    """Add ``evaluate`` to the ``wavecl`` sub-commands."""
    parser = subcommand(
        commands,
        "evaluate",
        "evaluate a checkpoint, or score saved predictions",
        "Run the model on the evaluation split of the config's dataset (also under torchrun) and write its\n"
        "predictions and metrics.json into --out-dir (default <output-dir>/<dataset>/<version>/evaluation/\n"
        "<checkpoint>, e.g. evaluation/epoch_0003, in the run's own directory for a checkpoint of a run\n"
        "evaluated on its dataset), or recompute the metrics from saved predictions (--predictions). A\n"
        "checkpoint of a training run is built from the run's config.yaml: -c may be left out, or name the\n"
        "data to evaluate on, but a model field that disagrees with the run's is refused unless set\n"
        "explicitly with --set. --protocols lists what is reported for each dataset and\n"
        "what --predictions takes.",
        "  wavecl evaluate --checkpoint runs/a2d_sentences/a2d/checkpoints/best\n"
        "  wavecl evaluate -c a2d_sentences --checkpoint reference_a2d.pth.tar\n"
        "  torchrun --nproc_per_node 2 -m wavecl evaluate -c jhmdb_sentences \\\n"
        "      --checkpoint runs/a2d_sentences/a2d\n"
        "  wavecl evaluate -c a2d_sentences \\\n"
        "      --predictions runs/a2d_sentences/a2d/evaluation/epoch_0003/predictions.json\n"
        "  wavecl evaluate -c runs/ref_youtube_vos/demo/config.yaml --checkpoint runs/ref_youtube_vos/demo\n"
        "  wavecl evaluate -c demo --data-root data/my_videos --predictions masks/ --out-dir out/\n\n"
        + CONFIG_HELP_EPILOG,
    )
    add_config_arguments(parser, required=False)
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
    parser.add_argument(
        "--out-dir",
        default=None,
        help="where predictions, metrics.json and per-item tables (per_expression.csv) go, replacing the folder "
        "whole when the evaluation is complete (a folder holding files but no metrics.json is refused); with "
        "--predictions, only the tables and metrics.json are written (metrics.json last), nothing without it",
    )
    add_device_argument(parser)
    parser.add_argument(
        "--protocols",
        action=PrintProtocols,
        help="print what is reported for each dataset and what --predictions takes, then exit",
    )
    parser.set_defaults(handler=run)
