"""``wavecl demo``: train and evaluate a small model on synthetic data, end to end."""

from __future__ import annotations

import argparse

from wavecl.cli.common import add_device_argument, subcommand


def run(args: argparse.Namespace) -> None:
    """Run :func:`wavecl.training.demo.run_demo`, which prints where everything is."""
    from wavecl.training.demo import run_demo

    run_demo(args.out_dir, minutes=args.minutes, seed=args.seed, device=args.device)


def register(commands: argparse._SubParsersAction) -> None:
    """Add ``demo`` to the ``wavecl`` sub-commands."""
    parser = subcommand(
        commands,
        "demo",
        "train and evaluate a small model on synthetic data, end to end",
        "Write a synthetic dataset, train a reduced WaveCL on it, evaluate it and segment a video.",
        "  wavecl demo --out-dir runs/demo --minutes 5\n",
    )
    parser.add_argument("--out-dir", default="runs/demo", help="output folder (default runs/demo)")
    parser.add_argument(
        "--minutes", type=float, default=None, help="approximate training budget in minutes on 2 CPU cores (default 10)"
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    add_device_argument(parser, default="cpu")
    parser.set_defaults(handler=run)
