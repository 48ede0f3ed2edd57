"""What the ``wavecl`` commands share: the config flags and their shortcuts, the consoles, the
metrics table, the sub-parser layout and the handling of SIGTERM and Ctrl-C."""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from wavecl.config import AMP_CHOICES, DEFAULT_AMP, Config, apply_overrides, load_config, parse_override
from wavecl.inference_settings import RUNTIMES, InferenceSettings

AMP_HELP = (
    "mixed precision: off (float32), bf16 (on CUDA float16 where bf16 is not native, with loss scaling in "
    "training; on the CPU bfloat16 where it has AVX512-BF16 or AMX-BF16, else float32) or fp16 (CUDA only)"
)

COMPILE_HELP = "torch.compile the network's heavy parts (falls back to eager mode, with a warning, if it cannot)"

console = Console(soft_wrap=True)  # long paths stay on one line, ready to copy
error_console = Console(stderr=True, soft_wrap=True)


# Shortcut flags: argparse destination -> (flags, config field, argparse keywords). Their defaults are
# SUPPRESS, so a flag that is not typed never overrides the file.
SHORTCUTS: dict[str, tuple[tuple[str, ...], str, dict[str, Any]]] = {
    "epochs": (("--epochs",), "train.epochs", {"type": int, "help": "total epochs"}),
    "batch_size": (("--batch-size", "-bs"), "train.batch_size", {"type": int, "help": "clips per process"}),
    "lr": (("--lr",), "train.lr", {"type": float, "help": "learning rate of the rest of the network"}),
    "lr_backbone": (
        ("--lr-backbone",),
        "train.lr_backbone",
        {"type": float, "help": "learning rate of the Video-Swin backbone"},
    ),
    "text_encoder_lr": (
        ("--text-encoder-lr",),
        "train.text_encoder_lr",
        {"type": float, "help": "learning rate of the text encoder"},
    ),
    "lr_drop": (
        ("--lr-drop",),
        "train.lr_drop",
        {"type": int, "nargs": "+", "help": "epochs at which the lr is multiplied by gamma"},
    ),
    "lr_gamma": (("--lr-gamma",), "train.lr_gamma", {"type": float, "help": "lr decay factor at each milestone"}),
    "version": (("--version",), "train.version", {"type": str, "help": "run name: <output-dir>/<dataset>/<version>"}),
    "output_dir": (
        ("--output-dir",),
        "train.output_dir",
        {"type": str, "help": "root of run directories (default runs)"},
    ),
    "pretrained": (
        ("--pretrained",),
        "train.pretrained_weights",
        {"type": str, "help": "finetune from this checkpoint (class heads re-initialised; a fresh run, not a resume)"},
    ),
    "eval_interval": (
        ("--eval-interval",),
        "train.eval_interval",
        {"type": int, "help": "evaluate every N epochs (and after the last)"},
    ),
    "amp": (("--amp",), "train.amp", {"choices": AMP_CHOICES, "help": AMP_HELP}),
    "compile": (
        ("--compile",),
        "train.compile",
        {"action": "store_true", "help": COMPILE_HELP},
    ),
    "window_size": (("--window-size", "-ws"), "data.window_size", {"type": int, "help": "frames per clip"}),
    "data_root": (("--data-root",), "data.root", {"type": str, "help": "dataset root folder"}),
    "dataset": (
        ("--dataset",),
        "data.dataset_name",
        {"type": str, "help": "dataset name (data.dataset_name); ref_youtube_vos for your own data in that layout"},
    ),
    "backbone_pretrained_path": (
        ("--backbone-pretrained-path", "-bpp"),
        "model.backbone_pretrained_path",
        {"type": str, "help": "Kinetics Video-Swin .pth"},
    ),
    "text_encoder": (
        ("--text-encoder",),
        "model.text_encoder",
        {"type": str, "help": "Hugging Face encoder folder, or 'minilm'"},
    ),
}
TRAIN_SHORTCUTS = tuple(SHORTCUTS)
EVALUATE_SHORTCUTS = ("window_size", "data_root", "dataset", "text_encoder", "amp", "compile")

CONFIG_HELP_EPILOG = """\
Any config field can be set with --set SECTION.FIELD=VALUE (the value is read as YAML), e.g.
  --set model.eval_layer=reference --set data.num_workers=2 --set train.max_steps_per_epoch=10
"""


def add_config_arguments(parser: argparse.ArgumentParser, required: bool = True) -> None:
    parser.add_argument(
        "--config",
        "-c",
        required=required,
        help="a packaged recipe's name (wavecl config list), e.g. a2d_sentences, or a YAML file's path "
        "(wavecl or original {desc, value} format)",
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.FIELD=VALUE",
        help="override any config field, e.g. --set model.eval_layer=reference (repeatable)",
    )


def add_shortcut_arguments(parser: argparse.ArgumentParser, names: tuple[str, ...] = TRAIN_SHORTCUTS) -> None:
    for name in names:
        flags, _, keywords = SHORTCUTS[name]
        parser.add_argument(*flags, dest=name, default=argparse.SUPPRESS, **keywords)


def explicit_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The config fields given explicitly on the command line (shortcut flags, then ``--set``).

    Raises:
        ValueError: a malformed ``--set``, or two ``--set`` of one field (both are named).
    """
    overrides: dict[str, Any] = {}
    for destination, (_, field, _) in SHORTCUTS.items():
        if hasattr(args, destination):
            overrides[field] = getattr(args, destination)
    given: dict[str, str] = {}
    for text in args.overrides:
        key, value = parse_override(text)
        if key in given:
            raise ValueError(f"--set {given[key]!r} and --set {text!r} both set {key}; give each field once")
        given[key] = text
        overrides[key] = value
    return overrides


def resolve_config(args: argparse.Namespace) -> tuple[Config, dict[str, Any]]:
    """The config file (the defaults without one) plus explicitly given flags; returns the config and
    those overrides."""
    config = load_config(args.config) if args.config else Config()
    overrides = explicit_overrides(args)
    return apply_overrides(config, overrides), overrides


def print_metrics_table(title: str, metrics: dict[str, float]) -> None:
    """Print ``metrics`` as a two-column table (the one metrics table of every command); counts
    (:func:`~wavecl.evaluation.counts.is_count`) are shown as integers."""
    from wavecl.evaluation.counts import is_count

    table = Table(title=escape(title))
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name, value in metrics.items():
        table.add_row(escape(name), f"{int(value)}" if is_count(name) else f"{value:.4f}")
    console.print(table)


def subcommand(commands, name: str, summary: str, description: str, examples: str) -> argparse.ArgumentParser:
    """A sub-parser whose help shows ``description`` and then ``examples``."""
    return commands.add_parser(
        name,
        help=summary,
        description=description,
        epilog="examples:\n" + examples,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def add_device_argument(parser: argparse.ArgumentParser, default: str = "auto") -> None:
    """``--device auto|cpu|cuda`` (see :func:`wavecl.device.resolve_device`; ``auto`` is CUDA when available)."""
    parser.add_argument(
        "--device",
        choices=["auto", "cpu", "cuda"],
        default=default,
        help=f"auto (CUDA when available), cpu or cuda; asking for cuda without a GPU is an error (default {default})",
    )


def add_inference_settings_arguments(parser: argparse.ArgumentParser) -> None:
    """``--window``, ``--short-size``, ``--max-size``, ``--overlap`` and ``--link-weight``
    (:class:`~wavecl.inference_settings.InferenceSettings`), each defaulting to the checkpoint's own;
    :func:`inference_changes` collects them."""
    default = InferenceSettings()
    parser.add_argument(
        "--window",
        type=int,
        default=None,
        help=f"frames per clip (default: the checkpoint's data.window_size, else {default.window})",
    )
    parser.add_argument(
        "--short-size",
        type=int,
        default=None,
        help=f"resize: short side (default: the checkpoint's, else {default.short_size})",
    )
    parser.add_argument(
        "--max-size",
        type=int,
        default=None,
        help=f"resize: cap on the long side (default: the checkpoint's, else {default.max_size})",
    )
    parser.add_argument(
        "--overlap",
        type=int,
        default=None,
        help=f"frames shared by consecutive windows, linking their choices (default {default.overlap}; 0: "
        "disjoint windows)",
    )
    parser.add_argument(
        "--link-weight",
        type=float,
        default=None,
        help="weight of the agreement (mask IoU on the shared frames) with the previous window's choice of "
        f"object, against the query's score in [0, 1] (default {default.link_weight}; 0: each window on its own)",
    )


INFERENCE_OPTIONS = (
    "window",
    "short_size",
    "max_size",
    "overlap",
    "link_weight",
    "device",
    "amp",
    "runtime",
    "sentences_per_pass",
    "compile",
)
"""The parsed options that are :class:`~wavecl.inference_settings.InferenceSettings` fields."""


def inference_changes(args: argparse.Namespace) -> dict[str, Any]:
    """The inference settings given on the command line (:data:`INFERENCE_OPTIONS` the command has), for
    :meth:`~wavecl.inference_settings.InferenceSettings.with_given` over the checkpoint's own; an option
    left unset is ``None``."""
    return {name: getattr(args, name) for name in INFERENCE_OPTIONS if hasattr(args, name)}


def add_compile_argument(parser: argparse.ArgumentParser) -> None:
    """``--compile``: ``torch.compile`` the network (eager, with one warning line, where unavailable)."""
    parser.add_argument(
        "--compile",
        action="store_true",
        help=COMPILE_HELP,
    )


def add_runtime_argument(parser: argparse.ArgumentParser, description: str) -> None:
    """``--runtime torch|onnxruntime``: what runs the network (``description`` says how each command uses it)."""
    parser.add_argument("--runtime", choices=RUNTIMES, default=InferenceSettings().runtime, help=description)


def add_amp_argument(parser: argparse.ArgumentParser) -> None:
    """``--amp off|bf16|fp16`` for commands without a config (default: the one default of every amp setting)."""
    parser.add_argument("--amp", choices=AMP_CHOICES, default=DEFAULT_AMP, help=f"{AMP_HELP} (default {DEFAULT_AMP})")


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread as Ctrl-C raises ``KeyboardInterrupt``, so that ``finally``
    blocks and context managers (temporary files, the run's lock) clean up before the process ends."""


@contextmanager
def stop_cleanly_on_signals() -> Iterator[None]:
    """Within the block, SIGTERM raises :class:`Terminated` (a second one is ignored while cleaning up);
    Ctrl-C or SIGTERM then ends the process with one line on stderr and exit status 130 or 143 (128 +
    the signal's number) instead of a traceback. The previous SIGTERM handler is restored on the way out.
    Main thread only (where Python runs signal handlers)."""

    def terminate(signum: int, frame: Any) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    except KeyboardInterrupt as interrupt:
        received = signal.SIGTERM if isinstance(interrupt, Terminated) else signal.SIGINT
        error_console.print(f"[red]stopped by {received.name}[/red]")
        sys.exit(128 + received)
    finally:
        signal.signal(signal.SIGTERM, previous)
