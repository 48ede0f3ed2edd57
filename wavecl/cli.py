"""The ``wavecl`` command: info | train | evaluate | predict | prepare | demo.

Configuration values come from a YAML file (``--config``); a flag overrides the file only when it is
given explicitly, and ``--set section.field=value`` reaches any field.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from wavecl.config import Config, apply_overrides, load_config, parse_override

console = Console()

# Shortcut flags: argparse destination -> config field. Their defaults are SUPPRESS, so a flag that
# is not typed never overrides the file.
TRAIN_SHORTCUTS = {
    "epochs": "train.epochs",
    "batch_size": "train.batch_size",
    "lr": "train.lr",
    "lr_backbone": "train.lr_backbone",
    "text_encoder_lr": "train.text_encoder_lr",
    "lr_drop": "train.lr_drop",
    "lr_gamma": "train.lr_gamma",
    "version": "train.version",
    "output_dir": "train.output_dir",
    "pretrained": "train.pretrained_weights",
    "eval_interval": "train.eval_interval",
    "amp": "train.amp",
    "window_size": "data.window_size",
    "data_root": "data.root",
    "backbone_pretrained_path": "model.backbone_pretrained_path",
    "text_encoder": "model.text_encoder",
}


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", "-c", required=True, help="YAML config (wavecl or original {desc, value} format)")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.FIELD=VALUE",
        help="override any config field, e.g. --set model.eval_layer=reference (repeatable)",
    )


def add_shortcut_arguments(parser: argparse.ArgumentParser) -> None:
    s = argparse.SUPPRESS
    parser.add_argument("--epochs", type=int, default=s, help="total epochs")
    parser.add_argument("--batch-size", "-bs", type=int, default=s, help="clips per process")
    parser.add_argument("--lr", type=float, default=s, help="learning rate of the rest of the network")
    parser.add_argument("--lr-backbone", type=float, default=s, help="learning rate of the Video-Swin backbone")
    parser.add_argument("--text-encoder-lr", type=float, default=s, help="learning rate of the text encoder")
    parser.add_argument("--lr-drop", type=int, nargs="+", default=s, help="epochs at which the lr is multiplied by gamma")
    parser.add_argument("--lr-gamma", type=float, default=s, help="lr decay factor at each milestone")
    parser.add_argument("--version", type=str, default=s, help="run name: <output-dir>/<dataset>/<version>")
    parser.add_argument("--output-dir", type=str, default=s, help="root of run directories (default runs)")
    parser.add_argument("--pretrained", type=str, default=s, help="finetune from this checkpoint (class heads re-initialised)")
    parser.add_argument("--eval-interval", type=int, default=s, help="evaluate every N epochs (and after the last)")
    parser.add_argument("--amp", choices=["off", "bf16", "fp16"], default=s, help="autocast on CUDA")
    parser.add_argument("--window-size", "-ws", type=int, default=s, help="frames per clip")
    parser.add_argument("--data-root", type=str, default=s, help="dataset root folder")
    parser.add_argument("--backbone-pretrained-path", "-bpp", type=str, default=s, help="Kinetics Video-Swin .pth")
    parser.add_argument("--text-encoder", type=str, default=s, help="Hugging Face encoder folder, or 'minilm'")


def resolve_config(args: argparse.Namespace) -> tuple[Config, dict[str, Any]]:
    """The config file plus explicitly given flags; returns the config and those overrides."""
    config = load_config(args.config)
    overrides: dict[str, Any] = {}
    for destination, field in TRAIN_SHORTCUTS.items():
        if hasattr(args, destination):
            overrides[field] = getattr(args, destination)
    for text in args.overrides:
        key, value = parse_override(text)
        overrides[key] = value
    return apply_overrides(config, overrides), overrides


def count_parameters(module) -> tuple[int, int]:
    parameters = list(module.parameters())
    return sum(p.numel() for p in parameters), sum(p.numel() for p in parameters if p.requires_grad)


def command_info(args: argparse.Namespace) -> None:
    from wavecl.model.wavecl import WaveCL

    config, _ = resolve_config(args)
    model = WaveCL(config.model)
    table = Table(title=f"WaveCL parameters ({args.config})")
    table.add_column("component")
    table.add_column("parameters", justify="right")
    table.add_column("trainable", justify="right")
    for name, child in model.named_children():
        total, trainable = count_parameters(child)
        table.add_row(name, f"{total:,}", f"{trainable:,}")
    total, trainable = count_parameters(model)
    table.add_row("[bold]total", f"[bold]{total:,}", f"[bold]{trainable:,}")
    console.print(table)


def command_train(args: argparse.Namespace) -> None:
    from wavecl.training.distributed import cleanup, init_distributed
    from wavecl.training.trainer import Trainer

    config, overrides = resolve_config(args)
    dist = init_distributed(args.device)
    try:
        trainer = Trainer(config, dist, explicit_overrides=overrides, resume=args.resume)
        metrics = trainer.fit()
        if dist.is_main:
            console.print(f"run directory: {trainer.run_dir}")
            if metrics:
                console.print(metrics)
    finally:
        cleanup()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wavecl", description="WaveCL: referring video object segmentation with wavelet calibration."
    )
    parser.add_argument("--log-level", default="INFO", help="logging level (DEBUG, INFO, WARNING)")
    commands = parser.add_subparsers(dest="command", required=True)

    info = commands.add_parser("info", help="parameter counts per component of a configured model")
    add_config_arguments(info)
    add_shortcut_arguments(info)
    info.set_defaults(handler=command_info)

    train = commands.add_parser(
        "train",
        help="train (one process, or one rank under torchrun)",
        description="Train WaveCL. Single process: `wavecl train -c CONFIG`. Several GPUs or nodes: "
        "`torchrun --nproc_per_node N -m wavecl train -c CONFIG`.",
    )
    add_config_arguments(train)
    add_shortcut_arguments(train)
    train.add_argument("--resume", type=str, default=None, help="run directory or checkpoint folder to continue exactly")
    train.add_argument("--device", type=str, default=None, help="cpu or cuda (default: cuda when available)")
    train.set_defaults(handler=command_train)
    return parser


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    try:
        args.handler(args)
    except (FileNotFoundError, ValueError) as error:
        console.print(f"[red]error:[/red] {error}")
        sys.exit(2)


if __name__ == "__main__":
    main()
