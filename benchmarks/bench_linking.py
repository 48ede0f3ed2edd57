"""Window-only, linked and whole-video inference on long look-alike clips: J&F and identity switches.

1. Writes look-alike data (:mod:`wavecl.testing.lookalike`: two shapes of one colour, kind and size that
   cross and swap places, told apart only by motion or position words) under ``<out>/data``:
   ``--train-videos`` training clips of ``--train-frames`` frames and ``--videos`` held-out clips of
   ``--frames`` frames.
2. Trains the demo recipe (the packaged ``demo`` recipe, :func:`wavecl.training.demo.demo_config`, windows of
   ``data.window_size`` = 4 frames) on it for about ``--minutes`` (the recipe's steps scaled) into
   ``<out>/runs/ref_youtube_vos/run``, or loads ``--checkpoint`` (a second run into the same ``--out`` is
   refused: pass that run as ``--checkpoint`` to score it again).
3. Segments every held-out clip with :class:`~wavecl.inference.predictor.VideoPredictor` three ways:
   ``window-only`` (windows of ``data.window_size``, each picking its own query: today's behaviour),
   ``linked`` (the same windows overlapping by ``--overlap`` frames, each choice tied to the previous one
   with ``--link-weight``) and ``whole video`` (one window holding the whole clip: memory grows with it).
4. Scores each way's masks as one's own data is scored (:func:`wavecl.evaluation.ytvos.score_ytvos_predictions`):
   J, F, J&F, identity switches and temporal stability (docs/datasets.md#identity-switches-and-temporal-stability).
   Every way is scored at the starts of the window-only windows, so the switch counts compare. The table
   adds the seconds each way took and, on CUDA, its peak allocated memory.

Goal (issue 21): linked has fewer identity switches than window-only, and J&F at least that of whole video.

Usage::

    python benchmarks/bench_linking.py [--out runs/bench_linking] [--minutes 10] [--device cpu|cuda]
                                       [--overlap 1] [--link-weight 1.0] [--checkpoint RUN]
"""

from __future__ import annotations

import argparse
import shutil
import time
from collections import defaultdict
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from wavecl.data.ytvos import YTVOSGroundTruth
from wavecl.device import resolve_device
from wavecl.distributed import DistInfo
from wavecl.evaluation.ytvos import score_ytvos_predictions, write_ytvos_masks
from wavecl.inference.predictor import VideoPredictor
from wavecl.inference_settings import InferenceSettings
from wavecl.model.wavecl import WaveCL
from wavecl.testing.lookalike import write_lookalike_ytvos
from wavecl.training.demo import FRAME_SIZE, demo_config
from wavecl.training.trainer import Trainer


def train(out: Path, data_root: Path, minutes: float, device: str, seed: int) -> Path:
    """Train the demo recipe on ``data_root``; returns the run directory."""
    overrides = {"data.root": str(data_root)}
    config = demo_config(out, seed, minutes, overrides=overrides)
    dist = DistInfo(rank=0, world_size=1, local_rank=0, device=resolve_device(device))
    trainer = Trainer(config, dist, explicit_overrides=overrides)
    trainer.fit()
    return trainer.run_dir


def predict_all(predictor: VideoPredictor, ground_truth: YTVOSGroundTruth, out_dir: Path) -> float:
    """Segment every held-out clip for all its sentences and write the masks under ``out_dir``; returns seconds."""
    by_video = defaultdict(list)
    for expression in ground_truth.expressions:
        by_video[expression.video_id].append(expression)
    frames_root = ground_truth.paths.root / ground_truth.subset / "JPEGImages"
    started = time.perf_counter()
    for video_id, expressions in by_video.items():
        masks = predictor(frames_root / video_id, [expression.text for expression in expressions])
        for expression, expression_masks in zip(expressions, masks):
            write_ytvos_masks(out_dir, video_id, expression.exp_id, expression.frames, expression_masks)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("runs/bench_linking"), help="data, run and masks")
    parser.add_argument("--train-videos", type=int, default=200, help="look-alike training clips (default 200)")
    parser.add_argument("--train-frames", type=int, default=16, help="frames per training clip (default 16)")
    parser.add_argument("--videos", type=int, default=12, help="held-out clips (default 12)")
    parser.add_argument("--frames", type=int, default=64, help="frames per held-out clip (default 64)")
    parser.add_argument("--minutes", type=float, default=10.0, help="training budget on 2 CPU cores (default 10)")
    parser.add_argument("--checkpoint", type=Path, default=None, help="a trained run to use instead of training")
    parser.add_argument("--overlap", type=int, default=1, help="frames shared by linked windows (default 1)")
    parser.add_argument("--link-weight", type=float, default=1.0, help="weight of linking (default 1.0)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto (default cpu)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the data and of training (default 0)")
    args = parser.parse_args()
    console = Console()
    if not console.is_terminal:
        console.width = 160

    data_root = args.out / "data"
    write_lookalike_ytvos(data_root, args.train_videos, args.train_frames, FRAME_SIZE, args.seed, "train")
    held_out = write_lookalike_ytvos(data_root, args.videos, args.frames, FRAME_SIZE, args.seed + 1, "valid")
    console.print(f"look-alike data: {held_out.num_expressions} held-out sentences -> {data_root}")
    run_dir = args.checkpoint or train(args.out, data_root, args.minutes, args.device, args.seed)
    model = WaveCL.from_pretrained(run_dir)
    window = demo_config(args.out, args.seed).data.window_size
    size = {"short_size": FRAME_SIZE[0], "max_size": FRAME_SIZE[1], "device": args.device}
    ways = {
        "window-only": InferenceSettings(window=window, overlap=0, link_weight=0.0, **size),
        "linked": InferenceSettings(window=window, overlap=args.overlap, link_weight=args.link_weight, **size),
        "whole video": InferenceSettings(window=args.frames, overlap=0, link_weight=0.0, **size),
    }
    ground_truth = YTVOSGroundTruth(data_root)
    table = Table(title=f"{args.videos} held-out look-alike clips of {args.frames} frames, trained run {run_dir}")
    for column in ("inference", "window", "overlap", "link weight", "J", "F", "J&F", "switches", "stability"):
        table.add_column(column, justify="left" if column == "inference" else "right")
    table.add_column("seconds", justify="right")
    table.add_column("peak GiB (CUDA)", justify="right")
    cuda = resolve_device(args.device).type == "cuda"
    for name, settings in ways.items():
        predictor = VideoPredictor(model, settings=settings, progress=False)
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        masks_dir = args.out / "predictions" / name.replace(" ", "_")
        shutil.rmtree(masks_dir, ignore_errors=True)  # masks of an earlier run would count as extra masks
        seconds = predict_all(predictor, ground_truth, masks_dir)
        peak = f"{torch.cuda.max_memory_allocated() / 2**30:.2f}" if cuda else "-"
        metrics = score_ytvos_predictions(masks_dir, ground_truth, masks_dir / "per_expression.csv", window)
        table.add_row(
            name,
            str(settings.window),
            str(settings.overlap),
            f"{settings.link_weight:g}",
            *(f"{metrics[key]:.3f}" for key in ("J", "F", "J&F")),
            f"{metrics['identity_switches']:.0f}",
            f"{metrics['temporal_stability']:+.3f}",
            f"{seconds:.1f}",
            peak,
        )
    console.print(table)
    console.print(
        f"switches: changes of the ground-truth object best overlapping the mask between segments cut at the starts "
        f"of windows of {window} frames (every way alike), summed over {held_out.num_expressions} sentences; "
        "stability: consecutive-frame IoU of the masks minus that of the truth (0 = as steady as the object)."
    )


if __name__ == "__main__":
    main()
