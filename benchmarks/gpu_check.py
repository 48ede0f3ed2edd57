"""Throughput and peak memory of the training, evaluation and prediction paths (the table of gpu_check.sh).

Every row runs the real code path (the :class:`~wavecl.training.trainer.Trainer`'s epoch loop with its
criterion, autocast and gradient scaler; :func:`~wavecl.evaluation.datasets.evaluate_model`;
:class:`~wavecl.inference.predictor.VideoPredictor`) on generated synthetic data, with random weights:

* ``--size full``: the A2D network (``configs/a2d_sentences.yaml``: Video-Swin-T, d_model 256) with a
  random roberta-base (``random:roberta-base``); training clips of 8 frames resized to 320x576, batch 2;
  evaluation and prediction windows of 8 frames at 360x640 (the Ref-YouTube-VOS sizes);
* ``--size tiny``: ``configs/tiny.yaml`` at 64x96, so that the same paths run in seconds on a CPU.

Columns: ``runs in`` is the precision the row really ran in (the run's precision policy: float32 on
the CPU, float16 with loss scaling where bfloat16 is not native); ``clips/s`` counts (sentence, clip)
pairs, each a training sample, an evaluated window of one expression, or a predicted window of one
sentence; ``frames/s`` counts their frames; ``peak`` is ``torch.cuda.max_memory_allocated`` of the row
on CUDA, the process's resident-set peak so far on CPU.
Timed runs follow an untimed warm-up (which, for ``--compile`` rows, includes the compilation).

Usage::

    python benchmarks/gpu_check.py --work DIR [--device cuda|cpu] [--size full|tiny] [--steps N] [--compile]
"""

from __future__ import annotations

import argparse
import resource
import time
from dataclasses import dataclass, replace
from pathlib import Path

from bench_model import MODEL_CONFIGS

REPO = Path(__file__).resolve().parents[1]
SENTENCES = ("the red circle moving to the left", "a blue square", "the green triangle at the top", "a yellow ball")


@dataclass(frozen=True)
class Size:
    config: str
    model_overrides: dict
    train_size: tuple[int, int]
    eval_size: tuple[int, int]
    frames: int
    batch: int


SIZES = {
    "full": Size(*MODEL_CONFIGS["full"], train_size=(320, 576), eval_size=(360, 640), frames=8, batch=2),
    "tiny": Size(*MODEL_CONFIGS["tiny"], train_size=(64, 96), eval_size=(64, 96), frames=4, batch=2),
}


@dataclass
class Row:
    name: str
    clips: int
    frames: int
    seconds: float
    peak_bytes: int
    precision: str
    note: str = ""


class Meter:
    """Peak memory of one row on ``device``."""

    def __init__(self, device) -> None:
        self.device = device

    def reset(self) -> None:
        import torch

        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)

    def peak(self) -> int:
        import torch

        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            return torch.cuda.max_memory_allocated(self.device)
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def make_config(size: Size, work: Path, amp: str, version: str = "check", **model_overrides):
    from wavecl.config import Config, DataConfig, TrainConfig, load_config

    model = replace(load_config(REPO / size.config).model, **size.model_overrides, **model_overrides)
    data = DataConfig(
        dataset_name="synthetic",
        root=str(work / "synthetic"),
        window_size=size.frames,
        train_short_size=size.train_size[0],
        train_max_size=size.train_size[1],
        eval_short_size=size.eval_size[0],
        eval_max_size=size.eval_size[1],
        num_workers=2,
    )
    train = TrainConfig(batch_size=size.batch, amp=amp, output_dir=str(work / "runs"), version=version)
    return Config(model=model, data=data, train=train)


def train_row(name: str, config, dist, steps: int, warmup: int, meter: Meter):
    """``warmup`` untimed then ``steps`` timed training steps (one epoch each); returns the row and the trainer."""
    from wavecl.training.trainer import Trainer

    trainer = Trainer(config, dist)
    config.train.max_steps_per_epoch = warmup
    trainer.train_one_epoch(0)
    config.train.max_steps_per_epoch = steps
    meter.reset()
    result = trainer.train_one_epoch(1)
    clips = steps * config.train.batch_size
    note = f"mean loss {result.losses['loss']:.3g}" if "loss" in result.losses else "no finite loss"
    row = Row(
        name, clips, clips * config.data.window_size, result.seconds, meter.peak(), runs_in(trainer.precision), note
    )
    return row, trainer


def runs_in(precision) -> str:
    """The precision a row really ran in (:class:`wavecl.amp.PrecisionPolicy`): ``bf16``, ``fp16 + scaler``
    or ``float32``."""
    if precision.autocast_dtype is None:
        return "float32"
    return precision.effective + (" + scaler" if precision.grad_scaler else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", required=True, help="scratch folder (data, runs, predictions)")
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--size", choices=tuple(SIZES), default="full")
    parser.add_argument("--steps", type=int, default=10, help="timed training steps per training row")
    parser.add_argument("--compile", action="store_true", help="add rows with torch.compile")
    args = parser.parse_args()

    import numpy as np
    import torch
    from rich.console import Console
    from rich.table import Table

    from wavecl.amp import decide_precision
    from wavecl.data.synthetic import write_synthetic_ytvos
    from wavecl.distributed import DistInfo
    from wavecl.evaluation.datasets import build_dataset, evaluate_model
    from wavecl.inference.predictor import VideoPredictor

    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("CUDA is not available; use --device cpu")
    console = Console()
    if not console.is_terminal:
        console.width = 150
    device = torch.device(args.device, 0) if args.device == "cuda" else torch.device("cpu")
    dist = DistInfo(0, 1, 0, device)
    meter = Meter(device)
    size = SIZES[args.size]
    work = Path(args.work)
    warmup = 2
    train_frames = size.frames + 2
    # Every training video gives at least two windows of one expression: enough batches for every epoch.
    train_videos = (warmup + args.steps) * size.batch // 2 + 1
    write_synthetic_ytvos(
        work / "synthetic", train_videos, num_frames=train_frames, size=size.eval_size, seed=0, split="train"
    )
    write_synthetic_ytvos(work / "synthetic", 3, num_frames=2 * size.frames, size=size.eval_size, seed=1, split="valid")
    rows: list[Row] = []

    for index, (name, amp, overrides) in enumerate(
        [
            ("train, bf16 autocast", "bf16", {}),
            ("train, fp16 autocast + GradScaler", "fp16", {}),
            ("train, bf16, text encoder trainable", "bf16", {"freeze_text_encoder": False}),
        ]
    ):
        console.print(f"[dim]{name} ...[/dim]")
        config = make_config(size, work, amp, f"check_{index}", **overrides)
        row, trainer = train_row(name, config, dist, args.steps, warmup, meter)
        rows.append(row)
    if args.compile:
        console.print("[dim]train, bf16, torch.compile ...[/dim]")
        config = make_config(size, work, "bf16", "check_compile")
        config.train.compile = True
        row, _ = train_row("train, bf16, --compile", config, dist, args.steps, warmup, meter)
        rows.append(row)

    model = trainer.model
    config = make_config(size, work, "bf16")
    dataset = build_dataset(config.data, "eval")
    frames = sum(len(sample.frame_names) for sample in dataset.samples)
    console.print("[dim]evaluate, bf16 autocast ...[/dim]")
    evaluate_model(model, config, work / "eval_warmup", dist)
    meter.reset()
    start = time.perf_counter()
    metrics, _ = evaluate_model(model, config, work / "eval", dist)
    rows.append(
        Row(
            "evaluate, bf16 autocast",
            len(dataset),
            frames,
            time.perf_counter() - start,
            meter.peak(),
            runs_in(decide_precision(config.train.amp, device)),
            f"J&F {metrics.get('J&F', float('nan')):.3f} (random weights)",
        )
    )

    video = np.random.default_rng(0).integers(0, 256, (2 * size.frames, *size.eval_size, 3), dtype=np.uint8)
    for name, compile_model in [("predict, bf16 autocast, 4 sentences", False)] + (
        [("predict, bf16, --compile, 4 sentences", True)] if args.compile else []
    ):
        console.print(f"[dim]{name} ...[/dim]")
        predictor = VideoPredictor(
            model,
            short_size=size.eval_size[0],
            max_size=size.eval_size[1],
            window=size.frames,
            device=device,
            amp="bf16",
            progress=False,
            compile=compile_model,
        )
        start = time.perf_counter()
        predictor(video, list(SENTENCES))
        first = time.perf_counter() - start
        meter.reset()
        start = time.perf_counter()
        masks = predictor(video, list(SENTENCES))
        seconds = time.perf_counter() - start
        windows = -(-len(video) // size.frames)
        note = f"first call {first:.1f} s; masks {list(masks.shape)}"
        clips, frames = windows * len(SENTENCES), len(video) * len(SENTENCES)
        rows.append(Row(name, clips, frames, seconds, meter.peak(), runs_in(predictor.precision), note))

    where = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    table = Table(title=f"gpu_check: {args.size} configuration on {where}")
    for column in ("path", "runs in", "clips", "seconds", "clips/s", "frames/s", "peak GiB", "note"):
        table.add_column(column, justify="left" if column in ("path", "runs in", "note") else "right")
    for row in rows:
        table.add_row(
            row.name,
            row.precision,
            str(row.clips),
            f"{row.seconds:.2f}",
            f"{row.clips / row.seconds:.2f}",
            f"{row.frames / row.seconds:.1f}",
            f"{row.peak_bytes / 2**30:.2f}",
            row.note,
        )
    console.print(table)
    memory = "torch.cuda.max_memory_allocated per row" if device.type == "cuda" else "process RSS peak so far"
    console.print(
        f"peak: {memory}; torch {torch.__version__}; train clips {size.frames}x{size.train_size[0]}x"
        f"{size.train_size[1]} batch {size.batch}; eval/predict windows {size.frames}x{size.eval_size[0]}x"
        f"{size.eval_size[1]}"
    )


if __name__ == "__main__":
    main()
