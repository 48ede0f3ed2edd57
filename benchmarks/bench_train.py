"""Training throughput of the WaveCL trainer on the CPU (clips per second), one process and two DDP processes.

What is timed is :meth:`wavecl.training.trainer.Trainer.train_one_epoch` itself, i.e. everything a
training step costs: reading and transforming the clips (``num_workers 0``, so loading is part of
the step), forward, the criterion with its Hungarian matching, backward, gradient clipping at 0.1,
the AdamW step, the all-reduce of the logged losses and the TensorBoard scalars. Evaluation and
checkpoints are not timed. The clips are synthetic (``wavecl.data.synthetic``, Ref-YouTube-VOS layout,
so every frame of a window reaches the heads), written once into a temporary folder.

Settings:

* ``tiny``: the packaged config ``tiny``, windows of 4 frames at 64x96, batch 2 per process.
* ``full``: the packaged config ``a2d_sentences`` (Video-Swin-T, d_model 256, 3+3 deformable layers) with
  ``model.text_encoder = bytes:roberta-base`` and no backbone checkpoint, windows of 8 frames at
  320x576, batch 1 per process. A step takes minutes on a CPU and about 16 GiB: run it with ``--full``.

A layout is skipped (and said so) when its processes would need more memory than is available.

Layouts, each in fresh processes: one process with ``N`` intra-op threads for every ``N`` in
``--threads``, and two processes (``torchrun --standalone --nproc_per_node 2``, gloo) with one thread
each. A first epoch of ``--warmup`` steps is not timed (first-call allocations, lazy initialisation);
the second, of ``--steps`` steps, is. Throughput = steps x batch per process x processes / seconds.

Usage::

    python benchmarks/bench_train.py [--full] [--steps N] [--warmup N] [--threads 1 2]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Setting:
    """A benchmarked configuration: config file, overrides, synthetic clip shape, default step counts."""

    name: str
    config_file: str
    overrides: dict
    frames: int
    height: int
    width: int
    batch: int
    videos: int
    steps: int
    warmup: int
    rss_gib: float


SETTINGS = {
    "tiny": Setting(
        "tiny",
        "tiny",
        {},
        frames=4,
        height=64,
        width=96,
        batch=2,
        videos=12,
        steps=10,
        warmup=2,
        rss_gib=1.2,
    ),
    "full": Setting(
        "full",
        "a2d_sentences",
        {"model.text_encoder": "bytes:roberta-base", "model.backbone_pretrained_path": None},
        frames=8,
        height=320,
        width=576,
        batch=1,
        videos=4,
        steps=2,
        warmup=1,
        rss_gib=16.5,
    ),
}
"""``rss_gib``: peak resident memory of one training process, measured with this script (CPU, fp32)."""


def available_gib() -> float:
    """``MemAvailable`` of ``/proc/meminfo`` in GiB (infinite where that file does not exist)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return float("inf")


def training_config(setting: Setting, data_root: Path, output_dir: Path):
    """The setting's config file, trained on the synthetic clips at their own size."""
    from wavecl.config import apply_overrides, load_config

    overrides = {
        **setting.overrides,
        "data.dataset_name": "synthetic",
        "data.root": str(data_root),
        "data.window_size": setting.frames,
        "data.train_short_size": setting.height,
        "data.train_max_size": setting.width,
        "data.num_workers": 0,
        "train.batch_size": setting.batch,
        "train.output_dir": str(output_dir),
        "train.version": "bench",
    }
    return apply_overrides(load_config(setting.config_file), overrides)


def child(args: argparse.Namespace) -> None:
    """One measurement in this process (one rank under torchrun); rank 0 prints one JSON line."""
    import torch

    from wavecl.distributed import cleanup, gather_objects, init_distributed
    from wavecl.training.trainer import Trainer

    torch.set_num_threads(args.threads)
    setting = SETTINGS[args.child]
    dist = init_distributed("cpu")
    try:
        trainer = Trainer(training_config(setting, Path(args.data_root), Path(args.output_dir)), dist)
        trainer.config.train.max_steps_per_epoch = args.warmup
        trainer.train_one_epoch(0)
        trainer.config.train.max_steps_per_epoch = args.steps
        timed = trainer.train_one_epoch(1)
        peak_rss_mib = gather_objects(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
        if dist.is_main:
            clips = args.steps * setting.batch * dist.world_size
            print(
                json.dumps(
                    {
                        "seconds": timed.seconds,
                        "clips": clips,
                        "world_size": dist.world_size,
                        "peak_rss_mib": max(peak_rss_mib),
                    }
                )
            )
    finally:
        cleanup()


def measure(
    setting: Setting, processes: int, threads: int, steps: int, warmup: int, data_root: Path, workdir: Path
) -> dict:
    """Run one layout in fresh processes and return rank 0's figures."""
    launcher = [sys.executable]
    if processes > 1:
        launcher += ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes)]
    output_dir = workdir / f"runs_{setting.name}_{processes}x{threads}"
    command = launcher + [
        str(Path(__file__).resolve()),
        "--child",
        setting.name,
        "--data-root",
        str(data_root),
        "--output-dir",
        str(output_dir),
        "--steps",
        str(steps),
        "--warmup",
        str(warmup),
        "--threads",
        str(threads),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(REPO)}
    result = subprocess.run(command, cwd=workdir, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}")
    figures = json.loads([line for line in result.stdout.splitlines() if line.startswith("{")][-1])
    return {**figures, "processes": processes, "threads": threads, "steps": steps}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--full", action="store_true", help="also the full Video-Swin-T / roberta-base configuration")
    parser.add_argument("--steps", type=int, default=None, help="timed steps (default: 10 tiny, 2 full)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps first (default: 2 tiny, 1 full)")
    parser.add_argument(
        "--threads", type=int, nargs="+", default=[1, 2], help="intra-op threads of the one-process runs"
    )
    parser.add_argument("--no-ddp", action="store_true", help="skip the two-process runs")
    parser.add_argument("--child", choices=sorted(SETTINGS), help=argparse.SUPPRESS)
    parser.add_argument("--data-root", help=argparse.SUPPRESS)
    parser.add_argument("--output-dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        args.threads = args.threads[0]
        child(args)
        return

    from rich.console import Console
    from rich.table import Table

    from wavecl.data.synthetic import write_synthetic_ytvos

    console = Console(width=None if sys.stdout.isatty() else 120)
    load_before = os.getloadavg()[0]
    layouts = [(1, threads) for threads in args.threads] + ([] if args.no_ddp else [(2, 1)])
    rows = []
    skipped: list[str] = []
    with tempfile.TemporaryDirectory(prefix="wavecl_bench_train_") as workdir:
        for setting in [SETTINGS["tiny"]] + ([SETTINGS["full"]] if args.full else []):
            data_root = Path(workdir) / f"data_{setting.name}"
            size = (setting.height, setting.width)
            write_synthetic_ytvos(
                data_root, setting.videos, num_frames=setting.frames, size=size, seed=0, split="train"
            )
            steps = args.steps or setting.steps
            warmup = args.warmup if args.warmup is not None else setting.warmup
            for processes, threads in layouts:
                if processes * setting.rss_gib > available_gib():
                    skipped.append(
                        f"{setting.name} with {processes} processes: "
                        f"needs about {processes * setting.rss_gib:.0f} GiB, "
                        f"{available_gib():.0f} GiB available"
                    )
                    continue
                console.print(
                    f"{setting.name}: {processes} process(es) x {threads} thread(s), {warmup} + {steps} steps ..."
                )
                rows.append((setting, measure(setting, processes, threads, steps, warmup, data_root, Path(workdir))))

    table = Table(title=f"WaveCL training throughput on the CPU ({os.cpu_count()} cores)")
    for column in (
        "config",
        "clip TxHxW",
        "procs x threads",
        "batch/proc",
        "steps",
        "s/step",
        "clips/s",
        "peak RSS MiB",
    ):
        table.add_column(column, justify="left" if column in ("config", "clip TxHxW") else "right", no_wrap=True)
    for setting, figures in rows:
        table.add_row(
            setting.name,
            f"{setting.frames}x{setting.height}x{setting.width}",
            f"{figures['processes']} x {figures['threads']}",
            str(setting.batch),
            str(figures["steps"]),
            f"{figures['seconds'] / figures['steps']:.2f}",
            f"{figures['clips'] / figures['seconds']:.3g}",
            f"{figures['peak_rss_mib']:.0f}",
        )
    console.print(table)
    for line in skipped:
        console.print(f"skipped (memory): {line}")
    console.print(
        f"load average (1 min) before / after: {load_before:.1f} / {os.getloadavg()[0]:.1f}; other processes "
        "share these cores, so the figures are lower bounds of an idle machine's"
    )


if __name__ == "__main__":
    main()
