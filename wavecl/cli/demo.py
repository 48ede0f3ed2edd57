"""``wavecl demo``: train and evaluate a small model on synthetic data (or your own), end to end."""

from __future__ import annotations

import argparse

from wavecl.cli.common import (
    add_config_arguments,
    add_device_argument,
    add_shortcut_arguments,
    explicit_overrides,
    stop_cleanly_on_signals,
    subcommand,
)


def run(args: argparse.Namespace) -> None:
    """Run :func:`wavecl.training.demo.run_demo`, which prints where everything is; Ctrl-C or SIGTERM
    ends it with one line (:func:`~wavecl.cli.common.stop_cleanly_on_signals`)."""
    from wavecl.training.demo import DEMO_CONFIG, run_demo

    with stop_cleanly_on_signals():
        run_demo(
            args.out_dir,
            minutes=args.minutes,
            seed=args.seed,
            device=args.device,
            config_path=args.config or DEMO_CONFIG,
            overrides=explicit_overrides(args),
        )


def register(commands: argparse._SubParsersAction) -> None:
    """Add ``demo`` to the ``wavecl`` sub-commands."""
    parser = subcommand(
        commands,
        "demo",
        "train and evaluate a small model on synthetic data (or your own), end to end",
        "Write a synthetic dataset, train a reduced WaveCL on it with the recipe 'demo',\n"
        "evaluate it (J, F, J&F on held-out clips) and segment a few held-out videos. With --data-root,\n"
        "train on your own data in the Ref-YouTube-VOS layout instead (README: 'Train on your own videos').",
        "  wavecl demo --out-dir runs/demo --minutes 5\n"
        "  wavecl demo --data-root data/my_videos --out-dir runs/my_demo --minutes 5\n",
    )
    parser.add_argument("--out-dir", default="runs/demo", help="output folder (default runs/demo)")
    parser.add_argument(
        "--minutes", type=float, default=None, help="approximate training budget in minutes on 2 CPU cores (default 10)"
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    add_config_arguments(parser, required=False)
    add_shortcut_arguments(parser, ("data_root", "dataset", "epochs", "window_size"))
    add_device_argument(parser, default="cpu")
    parser.set_defaults(handler=run)
