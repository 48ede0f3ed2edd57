"""Peak memory of `wavecl predict` on a video ten times longer than one window, versus one window.

Each case runs :func:`wavecl.inference.prediction_folder.predict_video` (decode, segment, write mask PNGs, overlay
video and contact sheet) in a fresh child process, so the peaks do not mix. Two measures per case:

* RSS: the child's resident-set peak (``VmHWM`` in ``/proc/self/status``) and its growth over the
  RSS measured just before ``predict_video`` starts (libraries imported, nothing loaded). This counts
  everything: torch tensors, decoded frames, encoder buffers, the model.
* tracemalloc: the peak of memory allocated through Python's allocators (numpy arrays included, torch
  tensors not), a second view of what the decode/write path holds. It runs in a separate child: the
  tables tracemalloc keeps for itself grow with the number of allocations and would inflate the RSS.

Streaming keeps both flat: the 10x video should peak within about 1.3x of the one-window video.

The model is the tiny config, randomly initialised apart from its packaged text encoder (memory does
not depend on the weights' values). Linux only (reads ``/proc``).

Usage::

    python benchmarks/bench_predict_memory.py [--height 240 --width 320 --window 8 --repeat 10]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
TOLERANCE = 1.3


def proc_status_kib(field: str) -> int:
    """A ``kB`` field of ``/proc/self/status`` (``VmRSS``, ``VmHWM``), in KiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not found in /proc/self/status")


def synthetic_frames(num_frames: int, height: int, width: int) -> list[np.ndarray]:
    """A textured background with a bright square sliding left to right, ``[H, W, 3]`` uint8 each."""
    rng = np.random.default_rng(0)
    background = rng.integers(60, 160, size=(height, width, 3), dtype=np.uint8)
    side = height // 4
    frames = []
    for t in range(num_frames):
        frame = background.copy()
        x = int((width - side) * t / max(num_frames - 1, 1))
        frame[height // 2 - side // 2 : height // 2 + side // 2, x : x + side] = (230, 40, 40)
        frames.append(frame)
    return frames


def child(checkpoint: str, video: str, out_dir: str, window: int, threads: int | None, trace: bool) -> None:
    """Run one prediction and print its memory figures as JSON (tracemalloc's peak when ``trace``)."""
    import torch

    from wavecl.inference.prediction_folder import predict_video

    if threads:
        torch.set_num_threads(threads)
    baseline = proc_status_kib("VmRSS")
    if trace:
        tracemalloc.start()
    start = time.perf_counter()
    paths = predict_video(
        checkpoint, video, ["the red square", "the background"], out_dir, window=window, progress=False
    )
    seconds = time.perf_counter() - start
    figures = {"frames": paths.num_frames, "seconds": seconds}
    if trace:
        figures["traced_peak_kib"] = tracemalloc.get_traced_memory()[1] // 1024
    else:
        figures.update(baseline_kib=baseline, peak_kib=proc_status_kib("VmHWM"))
    print(json.dumps(figures))


def run_child(checkpoint: Path, video: Path, out_dir: Path, window: int, threads: int | None, trace: bool) -> dict:
    command = [sys.executable, __file__, "--child", str(checkpoint), str(video), str(out_dir), "--window", str(window)]
    command += ["--threads", str(threads)] if threads else []
    command += ["--trace"] if trace else []
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"benchmark child failed:\n{result.stderr}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def run_case(checkpoint: Path, video: Path, out_dir: Path, window: int, threads: int | None) -> dict:
    """RSS figures from one child, tracemalloc's peak from another."""
    figures = run_child(checkpoint, video, out_dir, window, threads, trace=False)
    figures["traced_peak_kib"] = run_child(checkpoint, video, out_dir, window, threads, trace=True)["traced_peak_kib"]
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--height", type=int, default=240)
    parser.add_argument("--width", type=int, default=320)
    parser.add_argument("--window", type=int, default=8, help="frames per clip")
    parser.add_argument("--repeat", type=int, default=10, help="the long video has this many windows")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads in the children")
    parser.add_argument("--child", nargs=3, metavar=("CHECKPOINT", "VIDEO", "OUT_DIR"), help=argparse.SUPPRESS)
    parser.add_argument("--trace", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child, window=args.window, threads=args.threads, trace=args.trace)
        return

    import torch

    from wavecl.config import load_config
    from wavecl.data.video_files import write_video
    from wavecl.inference_settings import InferenceSettings
    from wavecl.model.pretrained import save_pretrained
    from wavecl.model.wavecl import WaveCL

    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        torch.manual_seed(0)
        model = WaveCL(load_config("tiny").model)
        size = InferenceSettings(short_size=min(args.height, args.width), max_size=max(args.height, args.width))
        checkpoint = save_pretrained(model, scratch / "tiny", size)
        del model
        frames = synthetic_frames(args.window * args.repeat, args.height, args.width)
        cases = {}
        for label, count in (("1 window", args.window), (f"{args.repeat} windows", args.window * args.repeat)):
            video = scratch / f"video_{count}.mp4"
            write_video(video, frames[:count], fps=24)
            cases[label] = run_case(checkpoint, video, scratch / f"out_{count}", args.window, args.threads)

    short, long = cases.values()
    growth_ratio = (long["peak_kib"] - long["baseline_kib"]) / (short["peak_kib"] - short["baseline_kib"])
    print(f"wavecl predict, tiny config, {args.height}x{args.width}, window {args.window}, 2 sentences")
    print(
        f"{'case':<12} {'frames':>6} {'peak RSS MiB':>13} {'RSS growth MiB':>15} {'tracemalloc MiB':>16} {'seconds':>8}"
    )
    for label, case in cases.items():
        print(
            f"{label:<12} {case['frames']:>6} {case['peak_kib'] / 1024:>13.1f} "
            f"{(case['peak_kib'] - case['baseline_kib']) / 1024:>15.1f} {case['traced_peak_kib'] / 1024:>16.1f} "
            f"{case['seconds']:>8.1f}"
        )
    print(
        f"peak RSS ratio {long['peak_kib'] / short['peak_kib']:.2f}, RSS growth ratio {growth_ratio:.2f}, "
        f"tracemalloc ratio {long['traced_peak_kib'] / max(short['traced_peak_kib'], 1):.2f} (limit {TOLERANCE})"
    )
    if growth_ratio > TOLERANCE:
        print("FAIL: memory grows with the video's length")
        sys.exit(1)
    print("OK: memory is bounded by one window")


if __name__ == "__main__":
    main()
