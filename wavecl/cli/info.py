"""``wavecl info``: parameter counts per component of a configured model."""

from __future__ import annotations

import argparse

from rich.markup import escape
from rich.table import Table

from wavecl.cli.common import (
    CONFIG_HELP_EPILOG,
    add_config_arguments,
    add_shortcut_arguments,
    console,
    resolve_config,
    subcommand,
)


def run(args: argparse.Namespace) -> None:
    """Build the configured model (no weights are loaded, not even the text encoder's: its shape comes
    from its config, see :func:`~wavecl.model.text.text_encoder_of_shape`) and print its parameter counts."""
    from wavecl.model.parameters import count_parameters, parameters_per_component
    from wavecl.model.text import text_encoder_of_shape
    from wavecl.model.wavecl import WaveCL

    config, _ = resolve_config(args)
    text_encoder, tokenizer = text_encoder_of_shape(config.model.text_encoder)
    model = WaveCL(config.model, text_encoder=text_encoder, tokenizer=tokenizer)
    table = Table(title=escape(f"WaveCL parameters ({args.config})"))
    table.add_column("component")
    table.add_column("parameters", justify="right")
    table.add_column("trainable", justify="right")
    for name, (total, trainable) in parameters_per_component(model).items():
        table.add_row(name, f"{total:,}", f"{trainable:,}")
    total, trainable = count_parameters(model)
    table.add_row("[bold]total", f"[bold]{total:,}", f"[bold]{trainable:,}")
    console.print(table)


def register(commands: argparse._SubParsersAction) -> None:
    """Add ``info`` to the ``wavecl`` sub-commands."""
    parser = subcommand(
        commands,
        "info",
        "parameter counts per component of a configured model",
        "Build the configured model and print its parameter counts. No weights are read: the text encoder\n"
        "is built from its config.json, or from its published shape for pretrained/roberta-base.",
        "  wavecl info -c a2d_sentences --text-encoder minilm\n  wavecl info -c tiny\n\n" + CONFIG_HELP_EPILOG,
    )
    add_config_arguments(parser)
    add_shortcut_arguments(parser)
    parser.set_defaults(handler=run)
