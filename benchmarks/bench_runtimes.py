"""Eval time of one window on the CPU with each runtime: eager float32, eager bf16 (CPU autocast), compiled
float32 (``torch.compile``, inductor, as ``--compile`` does), ONNX Runtime float32 and ONNX Runtime int8
(dynamically quantized), with the matmul ceiling of the same run.

One window of ``T`` random frames and one sentence goes through the three steps of ``VideoPredictor``
(``encode_video``, ``encode_sentences``, ``segment``), as the predictor runs them. The model is randomly
initialised (``benchmarks/bench_model.py``'s builders): ``tiny`` at 4x256x448 by default, ``--full``
(Video-Swin-T, RoBERTa-base shaped text encoder) at 8x320x576. The ONNX parts are exported first
(minutes; not timed); the compilation happens in the untimed first window. The ceiling is the GFLOP/s of a
2048x2048 matmul in float32 and in bfloat16 on the same threads (``benchmarks/measure.py``), measured before
and after the timings: on a shared machine, compare each time with the ceiling of its run.

Usage::

    python benchmarks/bench_runtimes.py [--full] [--frames T --height H --width W] [--repeats N] [--threads N]
                                        [--no-compile]
"""

from __future__ import annotations

import argparse
import copy
import shutil
import statistics
import tempfile
from pathlib import Path

from bench_model import SENTENCE, build_model
from measure import matmul_gflops, timed


def eager_step(model, frames, pad_mask, dtype):
    """One eager window: the three steps under ``inference_mode`` and, for bf16, CPU autocast, with the
    predictor's store of bfloat16 weights (kept from one window to the next)."""
    import torch

    from wavecl.model.linear import Bfloat16Weights

    weights = Bfloat16Weights()

    def step() -> None:
        autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == "bf16")
        with torch.inference_mode(), autocast, weights:
            visual = model.encode_video(frames, pad_mask)
            sentences = model.encode_sentences([SENTENCE], frames.device)
            model.segment(visual, sentences, torch.tensor([frames.shape[-2:]]), clip_index=torch.zeros(1).long())

    return step


def onnx_step(network, frames, pad_mask):
    """One ONNX Runtime window through :class:`~wavecl.inference.onnx_runtime.OnnxNetwork`."""
    import torch

    def step() -> None:
        visual = network.encode_video(frames, pad_mask)
        network.segment(visual, network.encode_sentences([SENTENCE], frames.device), torch.tensor([frames.shape[-2:]]))

    return step


def median_seconds(step, repeats: int) -> tuple[float, float, float]:
    """``(median, min, max)`` wall seconds of ``repeats`` calls of ``step`` after one untimed call."""
    step()
    seconds = [timed(step)[0] for _ in range(repeats)]
    return statistics.median(seconds), min(seconds), max(seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--full", action="store_true", help="the full configuration at 8x320x576 (slow)")
    parser.add_argument("--frames", type=int, default=None)
    parser.add_argument("--height", type=int, default=None)
    parser.add_argument("--width", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=3, help="timed windows per runtime (median reported)")
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads of torch and ONNX Runtime")
    parser.add_argument("--no-compile", action="store_true", help="leave out the torch.compile row (slow to build)")
    args = parser.parse_args()

    import torch
    from rich.console import Console
    from rich.table import Table

    from wavecl.inference.onnx_runtime import OnnxNetwork
    from wavecl.model.compile import compile_model, compile_unavailable
    from wavecl.model.onnx_export import PART_FILES, export_onnx, quantize_int8

    torch.set_num_threads(args.threads)
    cpu = torch.device("cpu")
    config = "full" if args.full else "tiny"
    default_clip = (8, 320, 576) if args.full else (4, 256, 448)
    T, H, W = (given or default for given, default in zip((args.frames, args.height, args.width), default_clip))
    model = build_model(config).eval()
    frames = torch.randn(T, 1, 3, H, W, generator=torch.Generator().manual_seed(0))
    pad_mask = torch.zeros(T, 1, H, W, dtype=torch.bool)
    ceiling_before = {amp: statistics.median(wall for wall, _ in matmul_gflops(cpu, amp)) for amp in ("off", "bf16")}

    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-onnx-") as folder:
        float32_dir = export_onnx(model, Path(folder) / "float32")
        int8_dir = Path(shutil.copytree(float32_dir, Path(folder) / "int8"))
        for name in PART_FILES.values():
            quantize_int8(int8_dir / name)
        steps = {
            "eager float32": eager_step(model, frames, pad_mask, "off"),
            "eager bf16 (CPU autocast)": eager_step(model, frames, pad_mask, "bf16"),
        }
        unavailable = "left out (--no-compile)" if args.no_compile else compile_unavailable()
        if unavailable is None:
            compiled = copy.deepcopy(model)
            compile_model(compiled)
            steps["compiled float32 (inductor)"] = eager_step(compiled, frames, pad_mask, "off")
        steps |= {
            "ONNX Runtime float32": onnx_step(
                OnnxNetwork(float32_dir, model.tokenizer, model.text_encoder, args.threads), frames, pad_mask
            ),
            "ONNX Runtime int8": onnx_step(
                OnnxNetwork(int8_dir, model.tokenizer, model.text_encoder, args.threads), frames, pad_mask
            ),
        }
        for name, step in steps.items():
            rows.append((name, *median_seconds(step, args.repeats)))
    ceiling_after = {amp: statistics.median(wall for wall, _ in matmul_gflops(cpu, amp)) for amp in ("off", "bf16")}

    table = Table(title=f"eval of one window, {config}, 1x{T}x{H}x{W}, 1 sentence, {args.threads} thread(s)")
    for column in ("runtime", "wall s (median)", "min-max", "vs eager float32"):
        table.add_column(column, justify="left" if column == "runtime" else "right")
    reference = rows[0][1]
    for name, median, low, high in rows:
        table.add_row(name, f"{median:.3f}", f"{low:.3f}-{high:.3f}", f"{reference / median:.2f}x")
    console = Console()
    console.print(table)
    if unavailable is not None:
        console.print(f"compiled float32: {unavailable}")
    for amp, dtype in (("off", "float32"), ("bf16", "bfloat16")):
        console.print(
            f"ceiling, 2048x2048 {dtype} matmul: {ceiling_before[amp]:.1f} GFLOP/s before, "
            f"{ceiling_after[amp]:.1f} after"
        )


if __name__ == "__main__":
    main()
