"""Cost of the WaveCL network: parameters, forward and forward+backward time, peak memory, FLOPs.

Two configurations, both randomly initialised (nothing is downloaded or read besides the MiniLM
tokenizer/encoder shipped as a package):

* ``tiny``: ``configs/tiny.yaml`` on one clip of 4 frames at 64x96;
* ``full``: ``configs/a2d_sentences.yaml`` (Video-Swin-T, d_model 256, 3+3 deformable layers) with
  ``text_encoder = "random:roberta-base"`` and no backbone checkpoint, on one clip of 8 frames at
  320x576. Every frame goes through the heads (``valid_indices=None``), as in Ref-YouTube-VOS
  evaluation; this is the setting of the reference's FLOP figures.

Each (configuration, mode) pair runs in a fresh child process, so that the resident-set high-water
mark (``resource.getrusage(RUSAGE_SELF).ru_maxrss``) of one measurement does not mix with another's.
tracemalloc cannot be used: torch's CPU allocator bypasses Python's. The child builds the model,
records its RSS, runs ``warmup`` untimed and ``repeats`` timed iterations and reports the median:

* ``eval``: ``model.eval()`` under ``torch.inference_mode()``; afterwards (outside the timed and
  memory figures) one more forward under ``torch.utils.flop_counter.FlopCounterMode``, broken down by
  the model's top-level children and grouped as the reference's rows;
* ``train``: ``model.train()``, forward and ``backward()`` of a surrogate loss that touches every
  output (all decoder layers' masks, classes and boxes, the video queries and the sentence feature):
  the network's cost without the Hungarian matching of the real criterion. One more step under
  FlopCounterMode gives the forward+backward FLOPs.

FLOPs are 2 x multiply-accumulates of matmul, convolution and attention kernels; grid_sample (inside
multi-scale deformable attention) and element-wise operations are not counted, as in the reference's figures. Per child,
the bbox_embed MLPs are also called by the deformable decoder (box refinement), so those few FLOPs
count in both the ``transformer`` and the ``bbox_embed`` rows, while the dynamic mask convolutions
run in no child; in the reference's grouping the heads row is the total minus all other rows.

With ``--device cuda`` the same runs happen on the GPU, timed with ``torch.cuda.synchronize`` and
with the peak of ``torch.cuda.max_memory_allocated`` (reset after the model is built); ``--amp``
wraps forward (and the loss) in ``torch.autocast``.

Usage::

    python benchmarks/bench_model.py [--full] [--repeats N] [--warmup N] [--device cpu|cuda]
                                     [--amp off|bf16|fp16] [--threads N]

Without ``--full`` only the tiny configuration runs (well under a minute on two cores). The full
configuration takes several minutes on a CPU: a forward alone is about half a minute.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SENTENCE = "the man in a red shirt riding a bicycle on the left"

SPEC_TOTAL_GFLOPS = 681.9
"""The reference model's eval forward GFLOPs, YTVOS configuration at 8 x 320 x 576, B = 1."""

SPEC_ROWS: list[tuple[str, tuple[str, ...], float]] = [
    ("Video-Swin-T backbone", ("backbone",), 352.6),
    ("deformable encoder", ("transformer.encoder",), 234.6),
    ("WIP output convs", ("convs",), 34.0),
    ("vlf + lvf", ("vlf", "lvf"), 16.7),
    ("deformable decoder", ("transformer.decoder",), 13.6),
    ("WIP attention (FLA + wavelet MMF)", ("wavelet_vlf_h", "wavelet_vlf_l"), 12.5),
    ("FPN decoder", ("spatial_decoder",), 7.0),
    ("input_proj", ("input_proj",), 5.2),
    ("text encoder (RoBERTa)", ("text_encoder",), 1.9),
    ("VOC", ("voc",), 1.7),
]
"""The reference model's rows (GFLOPs) and the module rows of ours that make each of them up. Its
last row, heads + controller + dynamic convs (0.8 GFLOPs), is the rest of the total."""

SPEC_DIFFERENCES = (
    "vlf + lvf: wavecl runs lvf at level 2 only, the one level whose output is used; the reference also "
    "runs it at levels 0 and 1 and discards them (docs/differences.md#changes-that-do-not-affect-outputs).",
    "WIP attention: wavelet_vlf_l attends to a single memory token (the sentence), so wavecl computes "
    "it in closed form, out_proj(v_proj(s)), instead of the full attention (docs/architecture.md#mmf).",
    "text encoder: its FLOPs depend on the sentence's length in tokens (here the MiniLM WordPiece "
    "tokenizer paired with the random roberta-base).",
)
"""Why our rows may differ from the reference's (printed under the comparison)."""

SPEC_PARAMS = ("176,621,888", "51,976,256")
"""Total and trainable (text encoder frozen) parameters of the A2D model (docs/architecture.md#parameter-counts)."""


@dataclass(frozen=True)
class Setting:
    """A benchmarked configuration: its config file, model overrides and clip shape ``[T, B, 3, H, W]``."""

    name: str
    config_file: str
    model_overrides: dict
    frames: int
    height: int
    width: int
    batch: int = 1
    default_repeats: int = 5
    default_warmup: int = 1


SETTINGS = {
    "tiny": Setting("tiny", "configs/tiny.yaml", {}, frames=4, height=64, width=96),
    "full": Setting(
        "full",
        "configs/a2d_sentences.yaml",
        {"text_encoder": "random:roberta-base", "backbone_pretrained_path": None},
        frames=8,
        height=320,
        width=576,
        default_repeats=2,
        default_warmup=1,
    ),
}


def build_model(setting: Setting):
    """The randomly initialised WaveCL of ``setting`` (seed 0), on the CPU."""
    import torch

    from wavecl.config import load_config
    from wavecl.model.wavecl import WaveCL

    config = load_config(REPO / setting.config_file).model
    torch.manual_seed(0)
    return WaveCL(replace(config, **setting.model_overrides))


def synthetic_inputs(setting: Setting, device) -> dict:
    """Keyword inputs of ``WaveCL.forward``: random normalised frames ``[T, B, 3, H, W]``, no padding."""
    import torch

    generator = torch.Generator().manual_seed(0)
    shape = (setting.frames, setting.batch, 3, setting.height, setting.width)
    return {
        "frames": torch.randn(shape, generator=generator).to(device),
        "pad_mask": torch.zeros(shape[:2] + shape[3:], dtype=torch.bool, device=device),
        "texts": [SENTENCE] * setting.batch,
        "image_sizes": torch.tensor([[setting.height, setting.width]] * setting.batch, device=device),
    }


def surrogate_loss(output):
    """A scalar depending on every prediction of every decoder layer (stands in for the criterion)."""
    loss = output.pred_logit.float().mean() + output.text_sentence_feature.float().mean()
    for layer in [output, *output.aux_outputs]:
        loss = loss + layer.pred_masks.float().mean() + layer.pred_cls.float().mean() + layer.pred_boxes.float().mean()
    return loss


def child_flops(counts: dict[str, dict], model) -> dict[str, int]:
    """FLOPs per top-level child of ``model`` (plus ``transformer.encoder``/``.decoder`` and ``total``)
    from ``FlopCounterMode.get_flop_counts()``.

    The counter keys FLOPs by the path of every module that was running (``WaveCL.backbone``, ...). A
    container that is never called itself (``convs``, a ModuleList) has no key: its FLOPs are the sum
    over its outermost called members, found by module identity (a module shared by two parents is
    keyed under one path only).
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


def child(setting: Setting, mode: str, args: argparse.Namespace) -> None:
    """One measurement in this (fresh) process; prints its figures as one JSON line."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from wavecl.model.parameters import count_parameters

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    model = build_model(setting).to(device)
    total_params, trainable_params = count_parameters(model)
    inputs = synthetic_inputs(setting, device)
    rss_after_build_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    autocast = torch.autocast(
        device.type, dtype={"bf16": torch.bfloat16, "fp16": torch.float16}.get(args.amp), enabled=args.amp != "off"
    )

    def step() -> None:
        if mode == "eval":
            with torch.inference_mode(), autocast:
                model(**inputs)
        else:
            model.zero_grad(set_to_none=True)
            with autocast:
                loss = surrogate_loss(model(**inputs))
            loss.backward()

    def synchronize() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    model.train(mode == "train")
    if mode == "eval":
        # Nothing needs gradients here; and FlopCounterMode's module tracker fails on a module input
        # that requires grad (query_embed.weight) under inference_mode.
        model.requires_grad_(False)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for _ in range(args.warmup):
        step()
    seconds = []
    for _ in range(args.repeats):
        synchronize()
        start = time.perf_counter()
        step()
        synchronize()
        seconds.append(time.perf_counter() - start)
    figures = {
        "params": total_params,
        "trainable": trainable_params,
        "seconds": seconds,
        "rss_after_build_kib": rss_after_build_kib,
        "peak_rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        "cuda_peak_bytes": torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None,
    }
    with FlopCounterMode(display=False) as counter:
        step()
    figures["flops"] = child_flops(counter.get_flop_counts(), model)
    print(json.dumps(figures))


def run_child(setting: Setting, mode: str, args: argparse.Namespace) -> dict:
    """Run :func:`child` in a new interpreter and return its figures."""
    command = [sys.executable, __file__, "--child", setting.name, mode, "--device", args.device, "--amp", args.amp]
    command += ["--repeats", str(args.repeats), "--warmup", str(args.warmup)]
    command += ["--threads", str(args.threads)] if args.threads else []
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"benchmark child ({setting.name}, {mode}) failed:\n{result.stderr}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def gflops(flops: int) -> str:
    return f"{flops / 1e9:,.3f}"


def print_summary(results: dict[str, dict[str, dict]], args: argparse.Namespace, console) -> None:
    """Parameters per configuration, then time, peak memory and FLOPs per configuration and mode."""
    from rich.table import Table

    table = Table(title="WaveCL parameters")
    for column in ("config", "total", "trainable", "expected total", "expected trainable"):
        table.add_column(column, justify="left" if column == "config" else "right")
    for name, modes in results.items():
        spec = SPEC_PARAMS if name == "full" else ("", "")
        table.add_row(name, f"{modes['eval']['params']:,}", f"{modes['eval']['trainable']:,}", *spec)
    console.print(table)

    on_cuda = args.device == "cuda"
    table = Table(title=f"WaveCL time, memory and FLOPs, B = 1, device {args.device}, amp {args.amp}")
    for column in ("config", "clip TxHxW", "mode", "median s", "min s", "max s", "runs", "peak MiB", "GFLOPs"):
        table.add_column(column, justify="left" if column in ("config", "clip TxHxW", "mode") else "right")
    for name, modes in results.items():
        setting = SETTINGS[name]
        for mode, figures in modes.items():
            seconds = figures["seconds"]
            peak = figures["cuda_peak_bytes"] / 2**20 if on_cuda else figures["peak_rss_kib"] / 1024
            table.add_row(
                name,
                f"{setting.frames}x{setting.height}x{setting.width}",
                "forward, eval, inference_mode" if mode == "eval" else "forward+backward, train",
                f"{statistics.median(seconds):.3f}",
                f"{min(seconds):.3f}",
                f"{max(seconds):.3f}",
                str(len(seconds)),
                f"{peak:,.0f}",
                gflops(figures["flops"]["total"]),
            )
    console.print(table)
    memory = "torch.cuda.max_memory_allocated" if on_cuda else "peak RSS (ru_maxrss) of the measuring child process"
    build_peaks = ", ".join(
        f"{name} {modes['eval']['rss_after_build_kib'] / 1024:,.0f}" for name, modes in results.items()
    )
    console.print(f"peak MiB: {memory}; its value once the model and inputs were built (MiB): {build_peaks}")
    console.print("GFLOPs: one step of the row's mode (forward, or forward and backward)")


def print_breakdown(name: str, flops: dict[str, int], console) -> None:
    """Eval-forward FLOPs per top-level child, then grouped as the reference's rows when ``full``."""
    from rich.table import Table

    total = flops.pop("total")
    children = {module: count for module, count in flops.items() if not module.startswith("transformer.")}
    table = Table(title=f"{name}: eval forward FLOPs per top-level module")
    table.add_column("module")
    table.add_column("GFLOPs", justify="right")
    table.add_column("share", justify="right")
    for module, _ in sorted(children.items(), key=lambda item: -item[1]):
        parts = ["transformer.encoder", "transformer.decoder"] if module == "transformer" else []
        for row in [module, *parts]:
            if flops[row]:
                label = f"  {row}" if row in parts else row
                table.add_row(label, gflops(flops[row]), f"{100 * flops[row] / total:.1f} %")
    table.add_row("sum of the children", gflops(sum(children.values())), "")
    table.add_row("[bold]total", f"[bold]{gflops(total)}", "")
    console.print(table)
    console.print(
        "the children overlap by bbox_embed's box refinement inside transformer.decoder; the dynamic mask "
        "convolutions run in no child"
    )
    if name != "full":
        return
    table = Table(title="full: eval forward FLOPs, ours vs the reference model")
    for column in ("part", "our modules", "ours GFLOPs", "reference GFLOPs"):
        table.add_column(column, justify="right" if "GFLOPs" in column else "left")
    grouped = 0
    for part, modules, spec in SPEC_ROWS:
        count = sum(flops[m] for m in modules)
        grouped += count
        table.add_row(part, ", ".join(modules), gflops(count), f"{spec:.1f}")
    named = {m for _, modules, _ in SPEC_ROWS for m in modules} | {
        "transformer",
        "class_embed",
        "bbox_embed",
        "controller",
    }
    rest = [m for m, count in children.items() if m not in named and count]
    rest_count = (
        sum(children[m] for m in rest)
        + flops["transformer"]
        - flops["transformer.encoder"]
        - flops["transformer.decoder"]
    )
    grouped += rest_count
    table.add_row("(no reference row)", ", ".join(rest + ["transformer (rest)"]), gflops(rest_count), "")
    table.add_row("heads + controller + dynamic convs", "the rest of the total", gflops(total - grouped), "0.8")
    table.add_row("[bold]total", "", f"[bold]{gflops(total)}", f"[bold]{SPEC_TOTAL_GFLOPS:.1f}")
    console.print(table)
    for note in SPEC_DIFFERENCES:
        console.print(f"- {note}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="also benchmark the full Video-Swin-T config (slow on CPU)")
    parser.add_argument("--repeats", type=int, default=None, help="timed iterations (default: tiny 5, full 2)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed iterations first (default: 1)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--amp", choices=("off", "bf16", "fp16"), default="off", help="torch.autocast dtype")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads in the children")
    parser.add_argument("--child", nargs=2, metavar=("SETTING", "MODE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.repeats is not None and args.repeats < 1:
        parser.error("--repeats must be at least 1")
    if args.warmup is not None and args.warmup < 0:
        parser.error("--warmup must be non-negative")
    if args.child:
        child(SETTINGS[args.child[0]], args.child[1], args)
        return

    import torch
    from rich.console import Console

    if args.device == "cuda" and not torch.cuda.is_available():
        print("CUDA unavailable (torch.cuda.is_available() is False): run without --device cuda", file=sys.stderr)
        sys.exit(1)
    console = Console()
    if not console.is_terminal:
        console.width = 132
    names = ["tiny", "full"] if args.full else ["tiny"]
    results: dict[str, dict[str, dict]] = {}
    for name in names:
        setting = SETTINGS[name]
        settings_args = argparse.Namespace(**vars(args))
        settings_args.repeats = args.repeats or setting.default_repeats
        settings_args.warmup = setting.default_warmup if args.warmup is None else args.warmup
        console.print(
            f"[dim]{name}: {settings_args.warmup} warm-up + {settings_args.repeats} timed runs per mode, "
            f"each mode in a fresh process ...[/dim]"
        )
        results[name] = {mode: run_child(setting, mode, settings_args) for mode in ("eval", "train")}
    console.print(
        f"torch {torch.__version__}, {torch.get_num_threads() if not args.threads else args.threads} threads, "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at the end"
    )
    print_summary(results, args, console)
    for name, modes in results.items():
        print_breakdown(name, modes["eval"]["flops"], console)


if __name__ == "__main__":
    main()
