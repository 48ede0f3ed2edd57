"""Held-out J&F of the demo recipe in reduced precision: ``--amp bf16`` training on the CPU against float32,
and the ``--int8`` ONNX export against the float32 one.

Two trainings of the packaged ``demo`` recipe on the synthetic data of ``wavecl demo`` (same seed, same data),
one in float32 and one with ``train.amp bf16`` (CPU autocast where the CPU has bfloat16 instructions,
float32 elsewhere: the table says which ran). The float32 run is then exported to ONNX
(:func:`wavecl.model.onnx_export.export_onnx`, float32 and ``int8``) and the held-out clips are
segmented by :class:`~wavecl.inference.predictor.VideoPredictor` with the torch runtime and with ONNX
Runtime on each export; every prediction is scored by the same Ref-YouTube-VOS scorer
(:func:`wavecl.evaluation.protocols.evaluate_saved_predictions`). The bf16-trained run is scored both
by its trainer's held-out evaluation and through the predictor, like the float32 run.

Targets (issue 19): bf16 training within 0.02 J&F of float32; int8 within 0.01 of float32.

Usage::

    python benchmarks/bench_demo_precision.py [--minutes M] [--seeds N] [--out DIR]

``--minutes`` scales the recipe's steps (10 minutes on 2 free CPU cores); each training takes about that.
``--seeds N`` trains both precisions with training seeds ``0..N-1`` (same data) and adds their means, the
mean per-seed difference and float32's spread over the seeds, which says how much of a difference is noise.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from wavecl.amp import decide_precision
from wavecl.data.ytvos import YTVOSPaths, evaluated_videos
from wavecl.distributed import DistInfo
from wavecl.evaluation.protocols import evaluate_saved_predictions
from wavecl.evaluation.ytvos import mask_member
from wavecl.inference.predictor import VideoPredictor
from wavecl.model.onnx_export import PART_FILES, export_onnx, quantize_int8
from wavecl.model.wavecl import WaveCL
from wavecl.training.demo import demo_config, write_dataset
from wavecl.training.trainer import Trainer


def train(out_dir: Path, minutes: float, amp: str, seed: int) -> tuple[Path, dict[str, float]]:
    """Train the demo recipe with ``train.amp = amp`` and training seed ``seed`` into ``out_dir`` (the data of
    seed 0 always); returns the run directory and its metrics."""
    config = demo_config(out_dir, seed=seed, minutes=minutes, overrides={"train.amp": amp})
    write_dataset(Path(config.data.root), seed=0)
    trainer = Trainer(config, DistInfo(rank=0, world_size=1, local_rank=0, device=torch.device("cpu")))
    return trainer.run_dir, trainer.fit()


def score(predictor: VideoPredictor, config, folder: Path) -> dict[str, float]:
    """Segment every held-out expression with ``predictor``, write the masks into ``folder`` and score them."""
    paths = YTVOSPaths.find(Path(config.data.root))
    for video_id, video in evaluated_videos(paths, "valid").items():
        frames_dir = paths.root / "valid" / "JPEGImages" / video_id
        frame_files = sorted(frames_dir.iterdir())
        expressions = list(video["expressions"].items())
        masks = predictor(frames_dir, [expression["exp"] for _, expression in expressions])  # [N, T, H, W]
        for (exp_id, _), expression_masks in zip(expressions, masks, strict=True):
            for frame_file, mask in zip(frame_files, expression_masks, strict=True):
                path = folder / mask_member(video_id, exp_id, frame_file.stem)
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(np.asarray(mask, dtype=np.uint8) * 255).save(path)
    return evaluate_saved_predictions(config, folder)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="training budget of each run (recipe: 10)")
    parser.add_argument(
        "--seeds", type=int, default=1, help="training seeds 0..N-1 of both precisions (the exports: seed 0)"
    )
    parser.add_argument("--out", type=Path, default=None, help="working folder (a temporary one by default)")
    args = parser.parse_args()
    if args.seeds < 1:
        parser.error("--seeds must be at least 1")
    out = args.out or Path(tempfile.mkdtemp(prefix="wavecl_precision_"))
    torch.manual_seed(0)
    rows = []
    runs = {}
    scores: dict[str, list[float]] = {"off": [], "bf16": []}
    for seed in range(args.seeds):
        for amp in ("off", "bf16"):
            run_dir, metrics = train(out / f"train_{amp}" / f"seed{seed}", args.minutes, amp, seed)
            runs.setdefault(amp, run_dir)
            scores[amp].append(metrics["J&F"])
            ran = decide_precision(amp, torch.device("cpu")).describe()
            rows.append((f"trainer held-out eval, seed {seed}, trained amp={amp} ({ran})", metrics["J&F"]))
    if args.seeds > 1:
        differences = [bf16 - off for off, bf16 in zip(scores["off"], scores["bf16"])]
        rows.append(("mean over seeds, trained amp=off", float(np.mean(scores["off"]))))
        rows.append(("mean over seeds, trained amp=bf16", float(np.mean(scores["bf16"]))))
        rows.append(("mean of bf16 - off per seed", float(np.mean(differences))))
        rows.append(("spread of amp=off over seeds (max - min)", max(scores["off"]) - min(scores["off"])))
    config = demo_config(runs["off"].parents[2], seed=0, minutes=args.minutes)
    data = config.data

    def predictor(model: WaveCL, **runtime: Any) -> VideoPredictor:
        short, longest, window = data.eval_short_size, data.eval_max_size, data.window_size
        return VideoPredictor(model, short_size=short, max_size=longest, window=window, progress=False, **runtime)

    for amp, run_dir in runs.items():
        model = WaveCL.from_pretrained(run_dir).eval()
        metrics = score(predictor(model), config, out / f"predicted_torch_{amp}")
        rows.append((f"VideoPredictor torch float32, seed 0, trained amp={amp}", metrics["J&F"]))
        if amp == "off":  # one export; the int8 parts are its copy quantized as `export --int8` does
            exported = {"float32": export_onnx(model, out / "onnx_float32")}
            exported["int8"] = Path(shutil.copytree(exported["float32"], out / "onnx_int8"))
            for name in PART_FILES.values():
                quantize_int8(exported["int8"] / name)
            for kind, onnx_dir in exported.items():
                onnx = predictor(model, runtime="onnxruntime", onnx_dir=onnx_dir)
                metrics = score(onnx, config, out / f"predicted_onnx_{kind}")
                rows.append((f"VideoPredictor ONNX Runtime {kind}, seed 0, trained amp=off", metrics["J&F"]))
    print(f"\nheld-out J&F of the demo recipe ({args.minutes:g} min per training), folder {out}")
    width = max(len(name) for name, _ in rows)
    print(f"| {'what':<{width}} | J&F    |\n|{'-' * (width + 2)}|--------|")
    for name, value in rows:
        shown = f"{value:+.3f}" if name.startswith("mean of") else f"{value:.3f}"
        print(f"| {name:<{width}} | {shown:<6} |")


if __name__ == "__main__":
    main()
