"""Speed of the WaveCL network against the machine's floor: FLOPs, time, GFLOP/s and its share of the
matmul ceiling, per workload.

Two model configurations, both randomly initialised (nothing is downloaded or read besides the MiniLM
tokenizer/encoder shipped as a package):

* ``tiny``: the packaged config ``tiny``;
* ``full``: the packaged config ``a2d_sentences`` (Video-Swin-T, d_model 256, 3+3 deformable layers) with
  ``text_encoder = "bytes:roberta-base"`` and no backbone checkpoint.

Workloads (one clip, ``B = 1``, 8 frames for ``full``, 4 frames at 64x96 for ``tiny``):

* ``eval``: forward in eval mode under ``torch.inference_mode()``, every frame through the heads
  (Ref-YouTube-VOS evaluation), 360x640;
* ``a2d``: the same, 320x576, with only the centre frame (``valid_indices``) continuing after the
  backbone (A2D / JHMDB evaluation);
* ``train``: forward and ``backward()`` in train mode at 360x640, of a surrogate loss that touches
  every output (all decoder layers' masks, classes and boxes, the video queries and the sentence
  feature): the network's cost without the Hungarian matching of the real criterion;
  ``train-half``: the same at 180x320, a quarter of the cost, for a loaded machine.

Each workload runs in a fresh child process, so that the resident-set high-water mark
(``ru_maxrss``) of one measurement does not mix with another's. The child builds the model, runs
``warmup`` untimed and ``repeats`` timed steps and reports the median. Around them it measures the
**matmul ceiling** (``benchmarks/measure.py``): the GFLOP/s of a 2048x2048 matmul on the same threads
(8192x8192 on a GPU), in the dtype the workload's matmuls run in (median of 5 before the model is built
and 5 after the timed steps; the memory peak is read before the second), so the ratio achieved /
ceiling is comparable between runs on a machine shared with other work. After the timing, one more
step under ``torch.utils.flop_counter.FlopCounterMode`` gives the FLOPs: 2 x multiply-accumulates of matmul,
convolution and attention kernels (CPU fused attention included); grid_sample and element-wise
operations are not counted.

With ``--device cuda`` the same runs happen on the GPU, timed with ``torch.cuda.synchronize`` and
with the peak of ``torch.cuda.max_memory_allocated``; ``--amp`` wraps forward (and the loss) in
``torch.autocast``. ``--threads N`` pins torch's intra-op threads (and the ceiling's) to ``N``.
``--malloc system`` runs the children with glibc's own heap policy instead of the one ``import wavecl``
sets (``wavecl/heap.py``); the table's system seconds and page faults per step show what that costs.

Usage::

    python benchmarks/bench_model.py [--full] [--workloads eval a2d train] [--repeats N] [--warmup N]
                                     [--device cpu|cuda] [--amp off|bf16|fp16] [--threads N]
                                     [--malloc keep|system]

Without ``--full`` only the tiny configuration runs (well under a minute). The full configuration
takes tens of minutes on one CPU thread.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
from dataclasses import dataclass, replace
from pathlib import Path

from measure import AMP_DTYPES, describe_ceiling, matmul_gflops, register_flop_formulas, synchronize, timed

REPO = Path(__file__).resolve().parents[1]
SENTENCE = "the man in a red shirt riding a bicycle on the left"

MODEL_CONFIGS = {
    "tiny": ("tiny", {"text_encoder": "bytes:tiny"}),
    "full": (
        "a2d_sentences",
        {"text_encoder": "bytes:roberta-base", "backbone_pretrained_path": None},
    ),
}
"""Config file and model overrides of each benchmarked configuration."""


@dataclass(frozen=True)
class Workload:
    """One measured step: the model configuration, the mode and the clip ``[T, B, 3, H, W]``.

    Attributes:
        mode: ``"eval"`` (forward under inference_mode) or ``"train"`` (forward and backward).
        centre_only: only the centre frame of each clip continues after the backbone (A2D).
    """

    name: str
    config: str
    mode: str
    frames: int
    height: int
    width: int
    centre_only: bool = False
    batch: int = 1

    @property
    def description(self) -> str:
        what = "forward, eval" if self.mode == "eval" else "forward+backward, train"
        return what + (", centre frame only" if self.centre_only else ", every frame")


WORKLOADS = {
    workload.name: workload
    for workload in (
        Workload("eval", "full", "eval", 8, 360, 640),
        Workload("a2d", "full", "eval", 8, 320, 576, centre_only=True),
        Workload("train", "full", "train", 8, 360, 640),
        Workload("train-half", "full", "train", 8, 180, 320),
        Workload("tiny-eval", "tiny", "eval", 4, 64, 96),
        Workload("tiny-a2d", "tiny", "eval", 4, 64, 96, centre_only=True),
        Workload("tiny-train", "tiny", "train", 4, 64, 96),
    )
}


def build_model(config_name: str):
    """The randomly initialised WaveCL of ``config_name`` (a key of :data:`MODEL_CONFIGS`, seed 0), on the CPU."""
    import torch

    from wavecl.config import load_config
    from wavecl.model.wavecl import WaveCL

    config_file, overrides = MODEL_CONFIGS[config_name]
    config = load_config(config_file).model
    torch.manual_seed(0)
    return WaveCL(replace(config, **overrides))


def synthetic_inputs(workload: Workload, device) -> dict:
    """Keyword inputs of ``WaveCL.forward``: random normalised frames ``[T, B, 3, H, W]``, no padding,
    and with ``centre_only`` the batch-major index of frame ``T // 2`` of every clip."""
    import torch

    generator = torch.Generator().manual_seed(0)
    t, b = workload.frames, workload.batch
    shape = (t, b, 3, workload.height, workload.width)
    inputs = {
        "frames": torch.randn(shape, generator=generator).to(device),
        "pad_mask": torch.zeros(shape[:2] + shape[3:], dtype=torch.bool, device=device),
        "texts": [SENTENCE] * b,
        "image_sizes": torch.tensor([[workload.height, workload.width]] * b, device=device),
    }
    if workload.centre_only:
        inputs["valid_indices"] = torch.arange(b, device=device) * t + t // 2
    return inputs


def surrogate_loss(output):
    """A scalar depending on every prediction of every decoder layer (stands in for the criterion)."""
    loss = output.video_queries.float().mean() + output.text_sentence_feature.float().mean()
    for layer in [output, *output.aux_outputs]:
        loss = loss + layer.pred_masks.float().mean() + layer.pred_cls.float().mean() + layer.pred_boxes.float().mean()
    return loss


def child(workload: Workload, args: argparse.Namespace) -> None:
    """One measurement in this (fresh) process; prints its figures as one JSON line."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from wavecl.model.parameters import count_parameters

    if args.threads:
        torch.set_num_threads(args.threads)
    register_flop_formulas()
    device = torch.device(args.device)
    ceiling = matmul_gflops(device, args.amp)  # before the model: its matrices stay out of the memory peak
    model = build_model(workload.config).to(device)
    total_params, trainable_params = count_parameters(model)
    inputs = synthetic_inputs(workload, device)
    autocast = torch.autocast(device.type, dtype=getattr(torch, AMP_DTYPES[args.amp]), enabled=args.amp != "off")

    def step() -> None:
        if workload.mode == "eval":
            with torch.inference_mode(), autocast:
                model(**inputs)
        else:
            model.zero_grad(set_to_none=True)
            with autocast:
                loss = surrogate_loss(model(**inputs))
            loss.backward()

    model.train(workload.mode == "train")
    if workload.mode == "eval":
        # Nothing needs gradients here; and FlopCounterMode's module tracker fails on a module input
        # that requires grad (query_embed.weight) under inference_mode.
        model.requires_grad_(False)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for _ in range(args.warmup):
        step()

    def synchronised_step() -> None:
        step()
        synchronize(device)

    synchronize(device)
    before = resource.getrusage(resource.RUSAGE_SELF)
    times = [timed(synchronised_step) for _ in range(args.repeats)]
    after = resource.getrusage(resource.RUSAGE_SELF)
    peak_rss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    cuda_peak_bytes = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    ceiling += matmul_gflops(device, args.amp)
    figures = {
        "params": total_params,
        "trainable": trainable_params,
        "threads": torch.get_num_threads(),
        "seconds": [wall for wall, _ in times],
        "cpu_seconds": [cpu for _, cpu in times],
        "ceiling_gflops": statistics.median(wall for wall, _ in ceiling),
        "ceiling_cpu_gflops": statistics.median(cpu for _, cpu in ceiling),
        "peak_rss_kib": peak_rss_kib,
        "system_seconds_per_step": (after.ru_stime - before.ru_stime) / args.repeats,
        "page_faults_per_step": (after.ru_minflt - before.ru_minflt) / args.repeats,
        "cuda_peak_bytes": cuda_peak_bytes,
    }
    with FlopCounterMode(display=False) as counter:
        step()
    figures["flops"] = child_flops(counter.get_flop_counts(), model)
    print(json.dumps(figures))


def child_flops(counts: dict[str, dict], model) -> dict[str, int]:
    """FLOPs per top-level child of ``model`` (plus ``transformer.encoder``/``.decoder`` and ``total``)
    from ``FlopCounterMode.get_flop_counts()``.

    The counter keys FLOPs by the path of every module that was running (``WaveCL.backbone``, ...). A
    container that is never called itself (``convs``, a ModuleList) has no key: its FLOPs are the sum
    over its outermost called members, found by module identity because a module shared by two
    parents (``bbox_embed``, also ``transformer.decoder.bbox_embed``) is keyed under one path only.
    """
    root = type(model).__name__
    called = {name.removeprefix(root + "."): sum(ops.values()) for name, ops in counts.items()}
    modules = {path: model.get_submodule(path) for path in called if path not in ("Global", root)}
    flops: dict[str, int] = {}
    for name, module in model.named_children():
        if name in called:
            flops[name] = called[name]
            continue
        members = {id(m) for m in module.modules()}
        inside = {path for path, m in modules.items() if id(m) in members}
        outermost = [p for p in inside if not any(p.startswith(q + ".") for q in inside)]
        flops[name] = sum(called[p] for p in outermost)
    for part in ("encoder", "decoder"):
        flops[f"transformer.{part}"] = called.get(f"transformer.{part}", 0)
    flops["total"] = called["Global"]
    return flops


def run_child(workload: Workload, args: argparse.Namespace) -> dict:
    """Run :func:`child` in a new interpreter and return its figures."""
    command = [sys.executable, __file__, "--child", workload.name, "--device", args.device, "--amp", args.amp]
    command += ["--repeats", str(args.repeats), "--warmup", str(args.warmup)]
    command += ["--threads", str(args.threads)] if args.threads else []
    env = {**os.environ, "WAVECL_MALLOC": args.malloc}
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, env=env)
    if result.returncode != 0:
        raise RuntimeError(f"benchmark child ({workload.name}) failed:\n{result.stderr}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def print_summary(results: dict[str, dict], args: argparse.Namespace, console) -> None:
    """Parameters per configuration, then per workload: FLOPs, time, GFLOP/s and its share of the ceiling."""
    from rich.table import Table

    table = Table(title="WaveCL parameters")
    for column in ("config", "total", "trainable"):
        table.add_column(column, justify="left" if column == "config" else "right")
    seen = {}
    for name, figures in results.items():
        seen.setdefault(WORKLOADS[name].config, figures)
    for config, figures in seen.items():
        table.add_row(config, f"{figures['params']:,}", f"{figures['trainable']:,}")
    console.print(table)

    on_cuda = args.device == "cuda"
    title = f"WaveCL speed, device {args.device}, amp {args.amp}, heap {args.malloc}, median of {args.repeats}"
    table = Table(title=title)
    columns = ("workload", "clip BxTxHxW", "step", "GFLOPs", "wall s", "min-max", "GFLOP/s", "ceiling", "of ceiling")
    columns += ("CPU s", "CPU ceiling", "of CPU ceiling", "sys s", "page faults", "peak MiB")
    for column in columns:
        table.add_column(column, justify="left" if column in columns[:3] else "right")
    for name, figures in results.items():
        workload = WORKLOADS[name]
        seconds = figures["seconds"]
        median = statistics.median(seconds)
        cpu = statistics.median(figures["cpu_seconds"])
        flops = figures["flops"]["total"]
        achieved = flops / median / 1e9
        peak = figures["cuda_peak_bytes"] / 2**20 if on_cuda else figures["peak_rss_kib"] / 1024
        table.add_row(
            name,
            f"{workload.batch}x{workload.frames}x{workload.height}x{workload.width}",
            workload.description,
            f"{flops / 1e9:,.1f}",
            f"{median:.2f}",
            f"{min(seconds):.1f}-{max(seconds):.1f}",
            f"{achieved:.1f}",
            f"{figures['ceiling_gflops']:.1f}",
            f"{100 * achieved / figures['ceiling_gflops']:.1f} %",
            f"{cpu:.2f}",
            f"{figures['ceiling_cpu_gflops']:.1f}",
            f"{100 * flops / cpu / 1e9 / figures['ceiling_cpu_gflops']:.1f} %",
            f"{figures['system_seconds_per_step']:.2f}",
            f"{figures['page_faults_per_step']:,.0f}",
            f"{peak:,.0f}",
        )
    console.print(table)
    memory = "torch.cuda.max_memory_allocated" if on_cuda else "peak RSS (ru_maxrss) of the measuring child process"
    console.print(
        f"ceiling: GFLOP/s of a {describe_ceiling(args.device, args.amp)} on the same threads, median of 10 around"
        " the workload's steps; CPU s and CPU ceiling: the same in process CPU time, which on a machine "
        "shared with other work leaves out the time other processes held the cores (with one thread, the "
        "fairer ratio); sys s, page faults: kernel time and minor page faults per step; GFLOPs: one step "
        f"(matmul, convolution and attention FLOPs); peak MiB: {memory}"
    )


def print_breakdown(name: str, flops: dict[str, int], console) -> None:
    """FLOPs of one eval workload per top-level child (and the deformable encoder and decoder); the module
    tracker does not attribute backward FLOPs reliably, so train workloads have no breakdown."""
    from rich.table import Table

    flops = dict(flops)
    total = flops.pop("total")
    children = {module: count for module, count in flops.items() if not module.startswith("transformer.")}
    table = Table(title=f"{name}: FLOPs per top-level module")
    table.add_column("module")
    table.add_column("GFLOPs", justify="right")
    table.add_column("share", justify="right")
    for module, _ in sorted(children.items(), key=lambda item: -item[1]):
        parts = ["transformer.encoder", "transformer.decoder"] if module == "transformer" else []
        for row in [module, *parts]:
            if flops[row]:
                label = f"  {row}" if row in parts else row
                table.add_row(label, f"{flops[row] / 1e9:,.2f}", f"{100 * flops[row] / total:.1f} %")
    table.add_row("[bold]total", f"[bold]{total / 1e9:,.2f}", "")
    console.print(table)
    console.print(
        "the children overlap by bbox_embed's box refinement inside transformer.decoder; the dynamic mask "
        "convolutions run in no child"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="benchmark the full Video-Swin-T workloads (slow on CPU)")
    parser.add_argument(
        "--workloads", nargs="+", choices=sorted(WORKLOADS), help="workloads to run (default: tiny-*, or all full)"
    )
    parser.add_argument("--repeats", type=int, default=3, help="timed steps per workload (median reported)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--amp", choices=tuple(AMP_DTYPES), default="off", help="torch.autocast dtype")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads in the children")
    parser.add_argument(
        "--malloc", choices=("keep", "system"), default="keep", help="heap policy of the children (wavecl/heap.py)"
    )
    parser.add_argument("--breakdown", action="store_true", help="FLOPs per module of the eval workloads")
    parser.add_argument("--child", metavar="WORKLOAD", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    if args.warmup < 0:
        parser.error("--warmup must be non-negative")
    if args.threads is not None and args.threads < 1:
        parser.error("--threads must be at least 1")
    if args.child:
        child(WORKLOADS[args.child], args)
        return

    import torch
    from rich.console import Console

    if args.device == "cuda" and not torch.cuda.is_available():
        print("CUDA unavailable (torch.cuda.is_available() is False): run without --device cuda", file=sys.stderr)
        sys.exit(1)
    console = Console()
    if not console.is_terminal:
        console.width = 200
    names = args.workloads or [
        name for name, w in WORKLOADS.items() if (w.config == "full") == args.full and name != "train-half"
    ]
    results: dict[str, dict] = {}
    for name in names:
        console.print(f"[dim]{name}: {args.warmup} warm-up + {args.repeats} timed steps in a fresh process ...[/dim]")
        results[name] = run_child(WORKLOADS[name], args)
    threads = {figures["threads"] for figures in results.values()}
    console.print(
        f"torch {torch.__version__}, {'/'.join(map(str, sorted(threads)))} threads, {os.cpu_count()} CPUs, "
        f"load average {os.getloadavg()[0]:.2f} at the end"
    )
    print_summary(results, args, console)
    if args.breakdown:
        for name, figures in results.items():
            if WORKLOADS[name].mode == "eval":
                print_breakdown(name, figures["flops"], console)


if __name__ == "__main__":
    main()
