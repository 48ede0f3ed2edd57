"""The ``wavecl`` command: one module per sub-command, each owning its parser and handler.

Configuration values come from a YAML file (``--config``); a flag overrides the file only when it is
given explicitly, and ``--set section.field=value`` reaches any field. Heavy modules (the model, the
datasets) are imported inside the handlers, so ``wavecl --help`` answers at once.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from rich.markup import escape

from wavecl.cli import config, demo, evaluate, export, info, predict, prepare, serve, train
from wavecl.cli.common import error_console
from wavecl.optional import MissingPackageError

COMMANDS = (info, config, train, evaluate, predict, serve, export, prepare, demo)


def build_parser() -> argparse.ArgumentParser:
    """The ``wavecl`` parser with every sub-command of :data:`COMMANDS`."""
    parser = argparse.ArgumentParser(
        prog="wavecl",
        description="WaveCL: referring video object segmentation with wavelet calibration.",
        epilog="examples:\n"
        "  wavecl info -c tiny\n"
        "  wavecl config show -c demo\n"
        "  wavecl prepare a2d-gt --root data/a2d_sentences\n"
        "  torchrun --nproc_per_node 2 -m wavecl train -c a2d_sentences\n"
        "  wavecl evaluate -c a2d_sentences --checkpoint runs/a2d_sentences/a2d/checkpoints/best\n"
        "  wavecl predict --checkpoint runs/ref_youtube_vos/finetuneytb_tiny --video dog.mp4 --text 'a dog jumping'\n"
        "  wavecl serve --checkpoint runs/ref_youtube_vos/finetuneytb_tiny\n"
        "Run `wavecl COMMAND --help` for the options of a command.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--log-level", default="INFO", help="logging level (DEBUG, INFO, WARNING)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.register(commands)
    return parser


def main(argv: list[str] | None = None) -> None:
    """Parse ``argv`` and run the command; a bad value, a failed file operation (missing file, no
    permission, disk full) or a missing optional package exits 2 with one line; non-finite values (a
    training loss, a model's outputs in evaluation or prediction) exit 1 with one line."""
    args = build_parser().parse_args(argv)
    level = logging.getLevelName(args.log_level.upper())
    if os.environ.get("RANK", "0") not in ("0", ""):  # under torchrun rank 0 tells the story; the others warn
        level = max(level, logging.WARNING)
    logging.basicConfig(level=level, format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    logging.getLogger("tensorboard").setLevel(max(level, logging.WARNING))  # its INFO lines read like errors
    for chatty in ("onnx_ir", "onnxscript"):  # the ONNX export's graph passes log an INFO line per initializer
        logging.getLogger(chatty).setLevel(max(level, logging.WARNING))
    try:
        args.handler(args)
    except FloatingPointError as error:  # NonFiniteLossError, NonFiniteOutputError, NonFiniteCostError
        error_console.print(f"[red]stopped:[/red] {escape(str(error))}")
        sys.exit(1)
    except (OSError, ValueError, MissingPackageError) as error:
        error_console.print(f"[red]error:[/red] {escape(str(error))}")
        sys.exit(2)
