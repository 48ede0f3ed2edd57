"""``wavecl config show``: every config field with its type, default, value and meaning; ``wavecl config list``:
the packaged recipes."""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

from rich.markup import escape

from wavecl.cli.common import (
    CONFIG_HELP_EPILOG,
    add_config_arguments,
    add_shortcut_arguments,
    console,
    resolve_config,
    subcommand,
)
from wavecl.config import PACKAGED_CONFIG_DIR, SECTIONS, Config, config_description, field_help, packaged_configs


def format_value(value: Any) -> str:
    """A config value as it would be written in YAML: ``null``, ``true``, ``[8, 7, 7]``, ``5e-05``, ``runs``."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(format_value(item) for item in value) + "]"
    return str(value)


def config_rows(config: Config) -> list[tuple[str, str, str, str, str]]:
    """``(section.field, type, default, value, meaning)`` of every field of ``config``, in declaration order."""
    defaults = Config()
    rows = []
    for section, cls in SECTIONS.items():
        meanings = field_help(cls)
        for field in dataclasses.fields(cls):
            default = getattr(getattr(defaults, section), field.name)
            value = getattr(getattr(config, section), field.name)
            rows.append(
                (
                    f"{section}.{field.name}",
                    str(field.type),
                    format_value(default),
                    format_value(value),
                    meanings.get(field.name, ""),
                )
            )
    return rows


def run(args: argparse.Namespace) -> None:
    """Print every field as ``section.field = value  [type; default: ...]`` and its meaning on the next
    line; values that differ from the default are marked ``(changed)``."""
    config, _ = resolve_config(args)
    console.print(f"# wavecl configuration: {escape(args.config or 'the defaults')}", highlight=False)
    for name, kind, default, value, meaning in config_rows(config):
        changed = "  (changed)" if value != default else ""
        line = f"{name} = {value}  [{kind}; default: {default}]{changed}"
        console.print(escape(line), style="bold" if changed else None, highlight=False)
        console.print(f"    {escape(meaning)}", highlight=False)


def run_list(args: argparse.Namespace) -> None:
    """Print each packaged recipe's name (what ``-c`` takes) and its one-line description."""
    configs = packaged_configs()
    width = max(map(len, configs))
    for name, path in configs.items():
        console.print(f"{escape(name):<{width}}  {escape(config_description(path))}", highlight=False)
    console.print(f"# files in {escape(str(PACKAGED_CONFIG_DIR))}; -c also takes a YAML file's path", highlight=False)


def register(commands: argparse._SubParsersAction) -> None:
    """Add ``config`` (with its ``show`` and ``list`` actions) to the ``wavecl`` sub-commands."""
    parser = subcommand(
        commands,
        "config",
        "list the packaged recipes, or every config field: type, default, value and meaning",
        "list: the recipes shipped with wavecl, which -c takes by name, each with a one-line description.\n"
        "show: every configuration field with its type, default, the value it takes from -c NAME or FILE (and\n"
        "any --set or shortcut flags) and a one-line meaning.",
        "  wavecl config list\n"
        "  wavecl config show\n"
        "  wavecl config show -c demo --data-root data/my_videos --dataset ref_youtube_vos\n\n" + CONFIG_HELP_EPILOG,
    )
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    show = subcommand(
        actions,
        "show",
        "print every field with its type, default, value and meaning",
        "Print every configuration field with its type, default, value and meaning.",
        "  wavecl config show -c demo\n",
    )
    add_config_arguments(show, required=False)
    add_shortcut_arguments(show)
    show.set_defaults(handler=run)
    listing = subcommand(
        actions,
        "list",
        "list the packaged recipes (names for -c) with a one-line description each",
        "List the recipes shipped with wavecl: the names -c takes, each with a one-line description.",
        "  wavecl config list\n",
    )
    listing.set_defaults(handler=run_list)
