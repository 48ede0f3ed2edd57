"""Does ``--compile`` pay? Eager against ``torch.compile`` time per step, compile time and graph counts.

For each workload of ``bench_model.py`` (default: the tiny configuration's eval and train steps), the
randomly initialised network runs eagerly, then with :func:`wavecl.model.compile.compile_model` (the
parts ``--compile`` compiles, static shapes). Reported per row: the first step (for the compiled model
this is where compilation happens), the median of ``--repeats`` later steps, the speed-up over eager,
the share of the matmul ceiling (``benchmarks/measure.py``, same run and threads), and TorchDynamo's
counts: graphs compiled and graph breaks. ``--extra-shapes`` then runs the compiled model on further clip
shapes (``TxHxW``), each a recompilation, and reports the seconds each costs: the price of every new clip
shape a dataset brings.

Usage::

    python benchmarks/bench_compile.py [--workloads tiny-eval tiny-train] [--repeats 5] [--warmup 1]
                                       [--backend inductor] [--extra-shapes 4x48x80 3x64x64]
                                       [--device cpu|cuda] [--threads N]

The full configuration's workloads (``eval``, ``train``) compile for many minutes on a CPU.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
from dataclasses import replace

from bench_model import WORKLOADS, build_model, surrogate_loss, synthetic_inputs
from measure import describe_ceiling, start_table_benchmark, synchronize, timed


def parse_shape(text: str) -> tuple[int, int, int]:
    """``"4x48x80"`` → ``(4, 48, 80)`` (frames, height, width)."""
    try:
        frames, height, width = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected FRAMESxHEIGHTxWIDTH, got {text!r}") from None
    return frames, height, width


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workloads", nargs="+", choices=sorted(WORKLOADS), default=["tiny-eval", "tiny-train"])
    parser.add_argument("--repeats", type=int, default=5, help="timed steps per row (median reported)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps after the first")
    parser.add_argument("--backend", default="inductor", help="torch.compile backend")
    parser.add_argument("--extra-shapes", type=parse_shape, nargs="*", default=[(3, 48, 80), (4, 64, 64)])
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = parser.parse_args()
    if args.repeats < 1 or args.warmup < 0:
        parser.error("--repeats must be at least 1 and --warmup non-negative")

    # A fresh inductor cache, so the first compiled step pays the whole compilation (and no other
    # process's half-written cache entry is read).
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", tempfile.mkdtemp(prefix="bench_compile_inductor_"))
    import torch
    import torch._dynamo as dynamo
    from rich.table import Table
    from torch.utils.flop_counter import FlopCounterMode

    from wavecl.model.compile import compile_model

    device, console, ceiling = start_table_benchmark(args.threads, args.device, console_width=150)

    def step_of(model, workload):
        inputs = synthetic_inputs(workload, device)

        def step() -> None:
            if workload.mode == "eval":
                with torch.no_grad():
                    model(**inputs)
            else:
                model.zero_grad(set_to_none=True)
                surrogate_loss(model(**inputs)).backward()
            synchronize(device)

        return step

    table = Table(title=f"torch.compile ({args.backend}) against eager, {args.device}")
    for column in ("workload", "clip", "mode", "first step s", "median s", "x eager", "% ceiling", "graphs", "breaks"):
        table.add_column(column, justify="left" if column in ("workload", "mode") else "right")
    recompiles = []
    for name in args.workloads:
        workload = WORKLOADS[name]
        training = workload.mode == "train"
        # FlopCounterMode's module tracker fails on parameters that require grad when no graph is built
        model = build_model(workload.config).to(device).train(training).requires_grad_(training)
        with FlopCounterMode(display=False) as counter:
            step_of(model, workload)()
        flops = counter.get_total_flops()
        clip = f"{workload.frames}x{workload.height}x{workload.width}"
        eager_median = None
        for mode in ("eager", "compiled"):
            dynamo.reset()
            dynamo.utils.counters.clear()
            if mode == "compiled":
                compile_model(model, backend=args.backend)
            step = step_of(model, workload)
            console.print(f"[dim]{name}, {mode}: first step, {args.warmup} warm-up, {args.repeats} timed ...[/dim]")
            first = timed(step)[0]
            for _ in range(args.warmup):
                step()
            median = statistics.median(timed(step)[0] for _ in range(args.repeats))
            eager_median = eager_median or median
            graphs = dynamo.utils.counters["stats"]["unique_graphs"]
            breaks = sum(dynamo.utils.counters["graph_break"].values())
            table.add_row(
                name,
                clip,
                mode,
                f"{first:.2f}",
                f"{median:.3f}",
                f"{eager_median / median:.2f}",
                f"{100 * flops / median / 1e9 / ceiling:.1f} %",
                str(graphs) if mode == "compiled" else "",
                str(breaks) if mode == "compiled" else "",
            )
        for frames, height, width in args.extra_shapes:
            shaped = replace(workload, frames=frames, height=height, width=width)
            seconds = timed(step_of(model, shaped))[0]
            recompiles.append((name, f"{frames}x{height}x{width}", seconds))
    console.print(table)
    if recompiles:
        shapes = Table(title="a new clip shape on the compiled model (one recompilation each)")
        for column in ("workload", "clip", "first step s"):
            shapes.add_column(column, justify="left" if column == "workload" else "right")
        for name, clip, seconds in recompiles:
            shapes.add_row(name, clip, f"{seconds:.2f}")
        console.print(shapes)
    console.print(
        f"matmul ceiling ({describe_ceiling(device.type, 'off')}, same run, {torch.get_num_threads()} thread(s)): "
        f"{ceiling:,.1f} GFLOP/s; torch {torch.__version__}; {os.cpu_count()} CPUs; "
        f"load average {os.getloadavg()[0]:.2f} at the end"
    )


if __name__ == "__main__":
    main()
