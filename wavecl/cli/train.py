"""``wavecl train``: one process, or one rank under ``torchrun``."""

from __future__ import annotations

import argparse
from typing import Any

from rich.markup import escape

from wavecl.cli.common import (
    CONFIG_HELP_EPILOG,
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


def train_config(args: argparse.Namespace) -> tuple[Config, dict[str, Any]]:
    """The config to train with and the fields given explicitly.

    A new run: the ``-c`` file with the explicit flags. A resume: the run's own ``config.yaml`` with the
    explicit flags; a ``-c`` file may be given but must agree with it on every other field.

    Raises:
        ValueError: no ``-c`` for a new run; ``-c`` disagrees with the resumed run (fields named).
    """
    from wavecl.training.run_rules import resume_config, run_directory_of

    if args.resume is None:
        if args.config is None:
            raise ValueError("wavecl train needs a config file (-c CONFIG), or --resume RUN to continue a run")
        return resolve_config(args)
    overrides = explicit_overrides(args)
    config_file = None if args.config is None else load_config(args.config)
    return resume_config(run_directory_of(args.resume), config_file, overrides, f"-c {args.config}"), overrides


def run(args: argparse.Namespace) -> None:
    """Train with the resolved config; prints the run directory and the last evaluation.

    Whatever stops the run (Ctrl-C, SIGTERM, an error) leaves no temporary files and a run that
    ``--resume`` continues; the trainer logs how. Non-finite values (a loss under
    ``train.nonfinite_loss: stop``, or the model's outputs in an evaluation) end it with exit status 1
    and one line naming the step or samples and the tensors, without a traceback.
    """
    from wavecl.distributed import cleanup, init_distributed
    from wavecl.training.trainer import Trainer

    config, overrides = train_config(args)
    with stop_cleanly_on_signals():
        dist = init_distributed(args.device, config.train.dist_timeout_s)
        try:
            trainer = Trainer(config, dist, explicit_overrides=overrides, resume=args.resume)
            metrics = trainer.fit()
        finally:
            cleanup()
    if dist.is_main:
        console.print(f"run directory: {escape(str(trainer.run_dir))}")
        if metrics:
            print_metrics_table(f"last evaluation ({config.data.dataset_name})", metrics)


def register(commands: argparse._SubParsersAction) -> None:
    """Add ``train`` to the ``wavecl`` sub-commands."""
    parser = subcommand(
        commands,
        "train",
        "train (one process, or one rank under torchrun)",
        "Train WaveCL into the run directory <output-dir>/<dataset>/<version>/ (its layout:\n"
        "docs/training.md#run-directory). Epochs are numbered from 0 everywhere (progress bar, log.jsonl,\n"
        "folders, messages).\n"
        "--resume RUN continues RUN in RUN itself with RUN's own config.yaml: -c may be left out, and a\n"
        "-c that disagrees with it is refused unless the differing fields are set explicitly (--set or a\n"
        "flag), which are then applied and recorded in run_info.json. One trainer at a time per run\n"
        "directory (train.lock); a new run refuses a directory that already holds one. A run stopped\n"
        "(Ctrl-C, SIGTERM, an error, a full disk) resumes with --resume RUN from its last complete\n"
        "checkpoint, or from the beginning when none was complete.",
        "  wavecl train -c a2d_sentences --device cpu --set train.max_steps_per_epoch=2\n"
        "  torchrun --nproc_per_node 8 -m wavecl train -c coco -bpp pretrained/swin_tiny.pth\n"
        "  wavecl train -c a2d_sentences_finetune --pretrained runs/coco/coco_pretrain_tiny\n"
        "  wavecl train --resume runs/a2d_sentences/a2d\n"
        "  wavecl train --resume runs/a2d_sentences/a2d --epochs 50 --lr-drop 40\n\n" + CONFIG_HELP_EPILOG,
    )
    add_config_arguments(parser, required=False)
    add_shortcut_arguments(parser)
    parser.add_argument(
        "--resume",
        type=str,
        default=None,
        help="run directory (or one of its checkpoint folders) to continue exactly, in that directory",
    )
    add_device_argument(parser)
    parser.set_defaults(handler=run)
