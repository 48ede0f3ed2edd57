"""The Python half of ``benchmarks/gpu_check.sh``: one row of its table per call, in a fresh process.

Sub-commands (every one takes ``--out DIR``, the check's output folder):

* ``env``: versions, GPUs, TF32 flags and which optional packages are missing;
* ``prepare --size S``: synthetic Ref-YouTube-VOS-layout data for the rows (``DIR/data/S``);
* ``row NAME --size S --device D --amp A``: one measured row, appended to ``DIR/rows.jsonl``;
* ``probe --device D``: the compile probe, written to ``DIR/probe.json``;
* ``table``: the table of every row and the probe, printed and written to ``DIR/table.txt``.

Rows run the real code paths with random weights: the :class:`~wavecl.training.trainer.Trainer`'s
epoch loop (criterion, autocast, gradient scaler, DDP), :func:`~wavecl.evaluation.protocols.evaluate_model`
and :class:`~wavecl.inference.predictor.VideoPredictor`. Each row is its own process, so its peak
memory holds nothing of another row's (``torch.cuda.reset_peak_memory_stats`` after the warm-up; on the
CPU the process's resident-set peak). Sizes:

* ``full``: the A2D network (``a2d_sentences``: Video-Swin-T, d_model 256) with a random
  roberta-base over the byte-level tokenizer (``bytes:roberta-base``, no package or download); training
  clips of 8 frames at 320x576, batch 2; evaluation and prediction windows of 8 frames at 360x640;
* ``tiny``: the packaged config ``tiny`` with ``bytes:tiny`` at 64x96, so the same paths run in seconds on a CPU.

Rows (``ROWS``): ``train-bf16``, ``train-fp16``, ``train-text`` (text encoder trained), ``train-compile``,
``evaluate``, ``predict`` and ``ddp`` (two processes under ``torchrun``, always the tiny network: NCCL
with one GPU each where two GPUs exist, else gloo over the CUDA tensors of the one GPU, gloo on the CPU).

Columns: ``runs in`` is the precision that really ran (the run's precision policy, :mod:`wavecl.amp`: bfloat16
where it is native, else float16 with loss scaling on a GPU and float32 on the CPU); ``clips/s`` counts
(sentence, clip) pairs: a training sample, an evaluated window of one expression, a predicted window of
one sentence; ``frames/s`` their frames; ``peak GiB`` is ``torch.cuda.max_memory_allocated`` of the
timed part (weights included) on CUDA, the process's resident-set peak on the CPU. Timed steps follow
an untimed warm-up.

The probe compiles the tiny network's compiled parts (:func:`wavecl.model.compile.compile_model`) with a
backend that only counts the graphs TorchDynamo hands it (no code generation, so it takes seconds), runs
three clip sizes and reports the graphs, graph breaks (with their reasons) and recompiles.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from bench_model import MODEL_CONFIGS

SENTENCES = ("the red circle moving to the left", "a blue square", "the green triangle at the top", "a yellow ball")
ROWS = ("train-bf16", "train-fp16", "train-text", "train-compile", "evaluate", "predict", "ddp")
PROBE_SIZES = ((4, 64, 96), (4, 96, 128), (6, 80, 112))
"""Clips ``(frames, height, width)`` the compile probe runs, one after the other."""


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
WARMUP_STEPS = 2


@dataclass
class Row:
    """One line of the table."""

    name: str
    size: str
    precision: str
    clips: int
    frames: int
    seconds: float
    peak_bytes: int
    note: str = ""


class Meter:
    """Peak memory of the timed part of a row on ``device``."""

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


def data_root(out: Path, size: str) -> Path:
    return out / "data" / size


def make_config(size_name: str, out: Path, amp: str, version: str, **model_overrides):
    """The row's :class:`~wavecl.config.Config`: ``size_name``'s network and clips, ``amp``, runs under
    ``out/runs/<version>`` (cleared first)."""
    from wavecl.config import Config, DataConfig, TrainConfig, load_config

    size = SIZES[size_name]
    model = replace(load_config(size.config).model, **size.model_overrides, **model_overrides)
    data = DataConfig(
        dataset_name="synthetic",
        root=str(data_root(out, size_name)),
        window_size=size.frames,
        train_short_size=size.train_size[0],
        train_max_size=size.train_size[1],
        eval_short_size=size.eval_size[0],
        eval_max_size=size.eval_size[1],
        num_workers=2,
    )
    runs = out / "runs" / version
    if os.environ.get("RANK", "0") == "0":  # under torchrun, rank 0 alone clears (and writes) the run
        shutil.rmtree(runs, ignore_errors=True)
    train = TrainConfig(batch_size=size.batch, amp=amp, output_dir=str(runs), version=version)
    return Config(model=model, data=data, train=train)


def runs_in(precision) -> str:
    """The precision a row really ran in (:class:`wavecl.amp.PrecisionPolicy`): ``bf16``, ``fp16 + scaler``
    or ``float32``."""
    if precision.autocast_dtype is None:
        return "float32"
    return precision.effective + (" + scaler" if precision.grad_scaler else "")


def train_row(name: str, size: str, config, dist, steps: int, meter: Meter):
    """``WARMUP_STEPS`` untimed then ``steps`` timed training steps (one epoch each) of a fresh trainer;
    returns the row and the trained network."""
    from wavecl.training.trainer import Trainer

    trainer = Trainer(config, dist)
    try:
        config.train.max_steps_per_epoch = WARMUP_STEPS
        trainer.train_one_epoch(0)
        config.train.max_steps_per_epoch = steps
        meter.reset()
        result = trainer.train_one_epoch(1)
        peak = meter.peak()
    finally:
        trainer.close()
    clips = steps * config.train.batch_size * dist.world_size
    note = f"mean loss {result.losses['loss']:.3g}" if "loss" in result.losses else "no finite loss"
    frames = clips * config.data.window_size
    return Row(name, size, runs_in(trainer.precision), clips, frames, result.seconds, peak, note), trainer.model


def ddp_row(out: Path, device_name: str, amp: str, steps: int) -> Row | None:
    """Two-process training of the tiny network under ``torchrun``; every rank checks that the ranks end
    with equal parameters. Returns the row on rank 0 (``None`` on the others).

    Raises:
        RuntimeError: not started by torchrun with two processes, or the ranks' parameters differ.
    """
    import torch
    import torch.distributed as torch_dist

    from wavecl.distributed import DistInfo, cleanup, gather_objects, init_distributed

    world = int(os.environ.get("WORLD_SIZE", "0"))
    if world != 2:
        raise RuntimeError(f"the ddp row runs under torchrun with 2 processes (WORLD_SIZE={world or 'unset'})")
    if device_name == "cuda" and torch.cuda.device_count() >= world:
        dist, backend = init_distributed("cuda"), "NCCL, one GPU per process"
    elif device_name == "cuda":
        # NCCL refuses two ranks on one GPU; gloo reduces CUDA tensors (through host memory).
        rank, local_rank = int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"])
        torch.cuda.set_device(0)
        torch_dist.init_process_group("gloo", rank=rank, world_size=world)
        dist, backend = DistInfo(rank, world, local_rank, torch.device("cuda", 0)), "gloo over CUDA tensors, 1 GPU"
    else:
        dist, backend = init_distributed("cpu"), "gloo, CPU"
    try:
        config = make_config("tiny", out, amp, "ddp")
        row, model = train_row("ddp", "tiny", config, dist, steps, Meter(dist.device))
        checksums = gather_objects(sum(float(p.detach().double().sum()) for p in model.parameters()))
    finally:
        cleanup()
    if len(set(checksums)) != 1:
        raise RuntimeError(f"the ranks ended with different parameters: checksums {checksums}")
    row.note = f"{backend}; {world} ranks agree; {row.note}"
    return row if dist.is_main else None


def evaluate_row(size: str, out: Path, device, amp: str, meter: Meter) -> Row:
    """Evaluation of the synthetic valid split (one warm-up pass, then the timed one) with random weights."""
    import torch

    from wavecl.amp import decide_precision
    from wavecl.data.datasets import build_dataset
    from wavecl.distributed import DistInfo
    from wavecl.evaluation.protocols import evaluate_model
    from wavecl.model.wavecl import build_model

    config = make_config(size, out, amp, "evaluate")
    dist = DistInfo(0, 1, 0, device)
    torch.manual_seed(0)
    model = build_model(config.model).to(device)
    dataset = build_dataset(config.data, "eval")
    frames = sum(len(sample.frame_names) for sample in dataset.samples)
    evaluate_model(model, config, out / "runs" / "evaluate" / "warmup", dist)
    meter.reset()
    start = time.perf_counter()
    metrics, _ = evaluate_model(model, config, out / "runs" / "evaluate" / "timed", dist)
    seconds = time.perf_counter() - start
    note = f"J&F {metrics.get('J&F', float('nan')):.3f} (random weights)"
    precision = runs_in(decide_precision(amp, device))
    return Row("evaluate", size, precision, len(dataset), frames, seconds, meter.peak(), note)


def predict_row(size_name: str, out: Path, device, amp: str, meter: Meter) -> Row:
    """:class:`VideoPredictor` on a random video of two windows for four sentences (one untimed call first)."""
    import numpy as np
    import torch

    from wavecl.inference.predictor import VideoPredictor
    from wavecl.model.wavecl import build_model

    size = SIZES[size_name]
    config = make_config(size_name, out, amp, "predict")
    torch.manual_seed(0)
    predictor = VideoPredictor(
        build_model(config.model),
        short_size=size.eval_size[0],
        max_size=size.eval_size[1],
        window=size.frames,
        device=device,
        amp=amp,
        progress=False,
    )
    video = np.random.default_rng(0).integers(0, 256, (2 * size.frames, *size.eval_size, 3), dtype=np.uint8)
    start = time.perf_counter()
    predictor(video, list(SENTENCES))
    first = time.perf_counter() - start
    meter.reset()
    start = time.perf_counter()
    masks = predictor(video, list(SENTENCES))
    seconds = time.perf_counter() - start
    windows = -(-len(video) // size.frames)
    note = f"{len(SENTENCES)} sentences; first call {first:.1f} s; masks {list(masks.shape)}"
    clips, frames = windows * len(SENTENCES), len(video) * len(SENTENCES)
    return Row("predict", size_name, runs_in(predictor.precision), clips, frames, seconds, meter.peak(), note)


def probe(out: Path, device, clips: tuple[tuple[int, int, int], ...]) -> dict:
    """The compile probe (module docstring) on ``clips`` ``(frames, height, width)`` in turn: graphs and
    graph breaks of the first clip, graphs compiled again for the later ones (recompiles)."""
    import torch
    import torch._dynamo
    from bench_model import Workload, synthetic_inputs
    from torch._dynamo.utils import counters

    from wavecl.model.compile import COMPILED_PARTS, compile_model
    from wavecl.model.wavecl import build_model

    torch.manual_seed(0)
    model = build_model(make_config("tiny", out, "off", "probe").model).to(device).eval()
    graph_sizes: list[int] = []

    def counting_backend(graph_module, example_inputs):
        graph_sizes.append(len(graph_module.graph.nodes))
        return graph_module.forward

    torch._dynamo.reset()
    counters.clear()
    guards = compile_model(model, backend=counting_backend)
    graphs_per_clip = []
    for frames, height, width in clips:
        before = len(graph_sizes)
        with torch.no_grad():
            model(**synthetic_inputs(Workload("probe", "tiny", "eval", frames, height, width), device))
        graphs_per_clip.append(len(graph_sizes) - before)
        if len(graphs_per_clip) == 1:
            reasons = counters["graph_break"].copy()
    return {
        "parts": list(COMPILED_PARTS),
        "clips": [list(size) for size in clips],
        "graphs_per_clip": graphs_per_clip,
        "graph_breaks": sum(reasons.values()),
        "break_reasons": [[reason, count] for reason, count in reasons.most_common(8)],
        "recompiles": sum(graphs_per_clip[1:]),
        "fell_back_to_eager": [guard.name for guard in guards if not guard.active],
        "torch": torch.__version__,
    }


def environment() -> dict:
    """Versions, GPUs, TF32 flags and the packages this machine lacks."""
    import importlib.util

    import torch

    from wavecl.optional import PIP_PACKAGES

    def missing(modules) -> list[str]:
        return [name for name in modules if importlib.util.find_spec(name) is None]

    info = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "gpus": [torch.cuda.get_device_name(index) for index in range(torch.cuda.device_count())],
        "bf16_native": torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False),
        "tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
        "tf32_cudnn": torch.backends.cudnn.allow_tf32,
        "missing_required": missing(
            (
                "torchvision",
                "transformers",
                "tokenizers",
                "h5py",
                "scipy",
                "einops",
                "safetensors",
                "PIL",
                "yaml",
                "tqdm",
                "rich",
                "matplotlib",
            )
        ),
        "missing_optional": [PIP_PACKAGES[name] for name in missing(PIP_PACKAGES)] + missing(("gradio",)),
    }
    for name in ("torchvision", "transformers"):
        if name not in info["missing_required"]:
            info[name] = __import__(name).__version__
    return info


def prepare(out: Path, size_name: str, steps: int) -> None:
    """Synthetic data for the rows of ``size_name``: enough training windows for the warm-up and ``steps``
    steps of two processes, and three held-out videos of two windows."""
    from wavecl.data.synthetic import write_synthetic_ytvos

    size = SIZES[size_name]
    root = data_root(out, size_name)
    shutil.rmtree(root, ignore_errors=True)
    # Every training video gives at least two windows of one expression.
    videos = 2 * (WARMUP_STEPS + steps) * size.batch // 2 + 1
    write_synthetic_ytvos(root, videos, num_frames=size.frames + 2, size=size.eval_size, seed=0, split="train")
    write_synthetic_ytvos(root, 3, num_frames=2 * size.frames, size=size.eval_size, seed=1, split="valid")


def format_table(rows: list[dict], probe_result: dict | None, env: dict | None) -> str:
    """The plain-text table of the rows, then the probe's lines."""
    header = ("row", "size", "runs in", "clips", "seconds", "clips/s", "frames/s", "peak GiB", "note")
    lines = [
        (
            row["name"],
            row["size"],
            row["precision"],
            str(row["clips"]),
            f"{row['seconds']:.2f}",
            f"{row['clips'] / row['seconds']:.2f}",
            f"{row['frames'] / row['seconds']:.1f}",
            f"{row['peak_bytes'] / 2**30:.2f}",
            row["note"],
        )
        for row in rows
    ]
    widths = [max(len(cells[i]) for cells in [header, *lines]) for i in range(len(header) - 1)]
    text = []
    where = (", ".join(env["gpus"]) or "CPU") if env else "?"
    text.append(f"gpu_check rows on {where} (torch {env['torch'] if env else '?'})")
    for cells in [header, *lines]:
        text.append("  ".join(cell.ljust(width) for cell, width in zip(cells, widths)) + "  " + cells[-1])
    if probe_result is not None:
        eager = ", ".join(probe_result["fell_back_to_eager"]) or "none"
        text.append(
            f"compile probe (tiny network; compiled parts {', '.join(probe_result['parts'])}; clips (T, H, W) "
            f"{probe_result['clips']}): graphs compiled per clip {probe_result['graphs_per_clip']}; graph breaks "
            f"in the first clip {probe_result['graph_breaks']}; graphs recompiled for the later clips "
            f"{probe_result['recompiles']}; fell back to eager: {eager}"
        )
        for reason, count in probe_result["break_reasons"]:
            text.append(f"  {count} x {reason.strip().splitlines()[0][:150]}")
    return "\n".join(text)


def read_json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for name in ("env", "prepare", "row", "probe", "table"):
        command = commands.add_parser(name)
        command.add_argument("--out", type=Path, required=True, help="the check's output folder")
        if name in ("prepare", "row"):
            several = "+" if name == "prepare" else None
            command.add_argument("--size", choices=tuple(SIZES), nargs=several, required=True)
            command.add_argument("--steps", type=int, default=10, help="timed training steps (prepare: for them)")
        if name in ("row", "probe"):
            command.add_argument("--device", choices=("cuda", "cpu"), required=True)
        if name == "probe":
            command.add_argument("--clips", type=int, choices=(2, 3), default=3, help="clip sizes to run")
        if name == "row":
            command.add_argument("name", choices=ROWS)
            command.add_argument("--amp", choices=("off", "bf16", "fp16"), required=True, help="asked precision")
    args = parser.parse_args()
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)

    if args.command == "env":
        info = environment()
        (out / "env.json").write_text(json.dumps(info, indent=1))
        for key, value in info.items():
            print(f"{key}: {value}")
        return
    if args.command == "prepare":
        for size in args.size:
            prepare(out, size, args.steps)
        return
    if args.command == "table":
        rows = (
            [json.loads(line) for line in (out / "rows.jsonl").read_text().splitlines()]
            if (out / "rows.jsonl").is_file()
            else []
        )
        text = format_table(rows, read_json(out / "probe.json"), read_json(out / "env.json"))
        (out / "table.txt").write_text(text + "\n")
        print(text)
        return

    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("CUDA is not available; use --device cpu")
    device = torch.device(args.device, 0) if args.device == "cuda" else torch.device("cpu")
    if args.command == "probe":
        result = probe(out, device, PROBE_SIZES[: args.clips])
        (out / "probe.json").write_text(json.dumps(result, indent=1))
        print(json.dumps(result, indent=1))
        return

    from wavecl.distributed import DistInfo

    meter = Meter(device)
    if args.name == "ddp":
        row = ddp_row(out, args.device, args.amp, args.steps)
    elif args.name == "evaluate":
        row = evaluate_row(args.size, out, device, args.amp, meter)
    elif args.name == "predict":
        row = predict_row(args.size, out, device, args.amp, meter)
    else:
        overrides = {"freeze_text_encoder": False} if args.name == "train-text" else {}
        config = make_config(args.size, out, args.amp, args.name, **overrides)
        config.train.compile = args.name == "train-compile"
        row, _ = train_row(args.name, args.size, config, DistInfo(0, 1, 0, device), args.steps, meter)
    if row is not None:
        with open(out / "rows.jsonl", "a") as handle:
            handle.write(json.dumps(asdict(row)) + "\n")
        print(format_table([asdict(row)], None, None))


if __name__ == "__main__":
    sys.exit(main())
