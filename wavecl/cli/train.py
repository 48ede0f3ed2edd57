"""``wavecl train``: one process, or one rank under ``torchrun``."""

from __future__ import annotations

import argparse

from rich.markup import escape

from wavecl.cli.common import (
    CONFIG_HELP_EPILOG,
    add_config_arguments,
    add_device_argument,
    add_shortcut_arguments,
    console,
    print_metrics_table,
    resolve_config,
    subcommand,
)


def run(args: argparse.Namespace) -> None:
    """Train with the resolved config; prints the run directory and the last evaluation."""
    from wavecl.distributed import cleanup, init_distributed
    from wavecl.training.trainer import Trainer

    config, overrides = resolve_config(args)
    dist = init_distributed(args.device, config.train.dist_timeout_s)
    try:
        trainer = Trainer(config, dist, explicit_overrides=overrides, resume=args.resume)
        metrics = trainer.fit()
        if dist.is_main:
            console.print(f"run directory: {escape(str(trainer.run_dir))}")
            if metrics:
                print_metrics_table(f"last evaluation ({config.data.dataset_name})", metrics)
    finally:
        cleanup()


def register(commands: argparse._SubParsersAction) -> None:
    """Add ``train`` to the ``wavecl`` sub-commands."""
    parser = subcommand(
        commands,
        "train",
        "train (one process, or one rank under torchrun)",
        "Train WaveCL. Outputs go to <output-dir>/<dataset>/<version>/: config.yaml, run_info.json,\n"
        "log.jsonl, tensorboard/, checkpoints/epoch_XXXX/ with 'last' and 'best' pointer files, and\n"
        "eval/epoch_XXXX/ (predictions, submission or tables of each evaluation).",
        "  wavecl train -c configs/a2d_sentences.yaml --device cpu --set train.max_steps_per_epoch=2\n"
        "  torchrun --nproc_per_node 8 -m wavecl train -c configs/coco.yaml -bpp pretrained/swin_tiny.pth\n"
        "  wavecl train -c configs/a2d_sentences_finetune.yaml --pretrained runs/coco/coco_pretrain_tiny\n"
        "  wavecl train -c configs/a2d_sentences.yaml --resume runs/a2d_sentences/a2d\n\n" + CONFIG_HELP_EPILOG,
    )
    add_config_arguments(parser)
    add_shortcut_arguments(parser)
    parser.add_argument(
        "--resume", type=str, default=None, help="run directory or checkpoint folder to continue exactly"
    )
    add_device_argument(parser)
    parser.set_defaults(handler=run)
