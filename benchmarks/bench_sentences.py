"""Time of 1, 2 and 4 sentences on one clip: the backbone runs once, only the text-conditioned part per sentence.

The full A2D configuration (the packaged config ``a2d_sentences``: Video-Swin-T, d_model 256, 3+3 deformable
layers) with ``text_encoder = "bytes:roberta-base"`` and random weights, on one clip of 8 frames at
320x576, in eval mode under ``torch.inference_mode()``. Each measurement is one
``encode_video`` of the clip plus one ``segment`` of the N sentences (what ``VideoPredictor`` and the
evaluation loop do), the median of ``--repeats`` runs after ``--warmup`` untimed ones.

By default only the annotated centre frame continues after the backbone (the A2D protocol,
``valid_indices``); ``--every-frame`` keeps all 8 (Ref-YouTube-VOS). ``--baseline`` also times the
per-sentence path (``forward`` on the clip repeated once per sentence: N backbone passes).

The same run measures the machine's float32 matmul ceiling (``benchmarks/measure.py``: a 2048x2048
matmul with the same thread count, 8192x8192 on a GPU) and reports each row's achieved GFLOP/s
against it. FLOPs are counted once per row with ``torch.utils.flop_counter.FlopCounterMode``
(2 x multiply-accumulates of matmul, convolution and attention; grid_sample and element-wise
operations are not counted).

Usage::

    python benchmarks/bench_sentences.py [--threads N] [--repeats 3] [--warmup 1] [--every-frame] [--baseline]
                                         [--sentences 1 2 4] [--device cpu|cuda]

Target (issue 9): 4 sentences in at most 1.6x the time of 1 sentence.
"""

from __future__ import annotations

import argparse
import os
import statistics

from bench_model import build_model
from measure import describe_ceiling, start_table_benchmark, synchronize, timed

SENTENCES = (
    "the man in a red shirt riding a bicycle on the left",
    "a dog running",
    "the woman walking behind the car on the right side of the road",
    "a small white bird flying",
)
FRAMES, HEIGHT, WIDTH = 8, 320, 576
TARGET_RATIO = 1.6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per row (median reported)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs first")
    parser.add_argument("--sentences", type=int, nargs="+", default=[1, 2, 4], help="sentence counts (1..4)")
    parser.add_argument("--every-frame", action="store_true", help="all frames through the heads (Ref-YouTube-VOS)")
    parser.add_argument("--baseline", action="store_true", help="also time forward on the repeated clip")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    args = parser.parse_args()
    if args.repeats < 1 or args.warmup < 0:
        parser.error("--repeats must be at least 1 and --warmup non-negative")
    if not all(1 <= n <= len(SENTENCES) for n in args.sentences):
        parser.error(f"--sentences must lie in 1..{len(SENTENCES)}")

    import torch
    from rich.table import Table
    from torch.utils.flop_counter import FlopCounterMode

    device, console, ceiling = start_table_benchmark(args.threads, args.device, console_width=140)
    model = build_model("full").to(device).eval().requires_grad_(False)
    generator = torch.Generator().manual_seed(0)
    frames = torch.randn(FRAMES, 1, 3, HEIGHT, WIDTH, generator=generator).to(device)
    pad_mask = torch.zeros(FRAMES, 1, HEIGHT, WIDTH, dtype=torch.bool, device=device)
    centre = None if args.every_frame else torch.tensor([FRAMES // 2], device=device)

    def shared(n: int) -> None:
        visual = model.encode_video(frames, pad_mask, centre)
        model.segment(
            visual,
            model.encode_sentences(SENTENCES[:n], device),
            torch.tensor([[HEIGHT, WIDTH]] * n, device=device),
            torch.zeros(n, dtype=torch.long, device=device),
        )

    def repeated(n: int) -> None:
        valid = None if centre is None else centre + FRAMES * torch.arange(n, device=device)
        sizes = torch.tensor([[HEIGHT, WIDTH]] * n, device=device)
        model(frames.expand(-1, n, -1, -1, -1), pad_mask.expand(-1, n, -1, -1), list(SENTENCES[:n]), sizes, valid)

    def measure(run, n: int) -> tuple[list[float], int]:
        with torch.inference_mode():
            for _ in range(args.warmup):
                run(n)
            synchronize(device)
            seconds = [timed(lambda: (run(n), synchronize(device)))[0] for _ in range(args.repeats)]
            with FlopCounterMode(display=False) as counter:
                run(n)
        return seconds, counter.get_total_flops()

    paths = [("shared backbone", shared)] + ([("per sentence (forward)", repeated)] if args.baseline else [])
    rows = []
    for label, run in paths:
        for n in args.sentences:
            console.print(f"[dim]{label}, {n} sentence(s): {args.warmup} warm-up + {args.repeats} timed runs ...[/dim]")
            rows.append((label, n, *measure(run, n)))

    threads = torch.get_num_threads()
    heads = "every frame" if args.every_frame else "centre frame only"
    table = Table(
        title=f"sentences on one clip: full A2D config, {FRAMES}x{HEIGHT}x{WIDTH}, {heads}, "
        f"{args.device}, {threads} thread(s)"
    )
    for column in ("path", "sentences", "median s", "min s", "max s", "x 1 sentence", "GFLOPs", "GFLOP/s", "% ceiling"):
        table.add_column(column, justify="left" if column == "path" else "right")
    single = {label: statistics.median(seconds) for label, n, seconds, _ in rows if n == 1}
    for label, n, seconds, flops in rows:
        median = statistics.median(seconds)
        rate = flops / median / 1e9
        ratio = f"{median / single[label]:.2f}" if label in single else ""
        table.add_row(
            label,
            str(n),
            f"{median:.2f}",
            f"{min(seconds):.2f}",
            f"{max(seconds):.2f}",
            ratio,
            f"{flops / 1e9:,.1f}",
            f"{rate:,.1f}",
            f"{100 * rate / ceiling:.0f} %",
        )
    console.print(table)
    console.print(
        f"matmul ceiling ({describe_ceiling(device.type, 'off')}, same run, {threads} thread(s)): "
        f"{ceiling:,.1f} GFLOP/s; "
        f"torch {torch.__version__}; {os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.2f} at the end"
    )
    if "shared backbone" in single and 4 in args.sentences and 1 in args.sentences:
        four = next(statistics.median(s) for label, n, s, _ in rows if label == "shared backbone" and n == 4)
        verdict = "met" if four / single["shared backbone"] <= TARGET_RATIO else "NOT met"
        console.print(
            f"target 4 sentences <= {TARGET_RATIO}x 1 sentence: {four / single['shared backbone']:.2f}x, {verdict}"
        )


if __name__ == "__main__":
    main()
