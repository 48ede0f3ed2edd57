"""``wavecl demo``: the quick start, end to end on one CPU with nothing to download.

1. Writes a synthetic referring-video dataset in the Ref-YouTube-VOS on-disk format (moving coloured
   shapes, sentences such as "the red circle moving to the left"): a training split and a held-out
   split with ground truth.
2. Trains a small WaveCL (reduced Video-Swin, the packaged all-MiniLM-L6-v2 sentence encoder) with
   the same trainer, losses and checkpoints as the full recipes.
3. Evaluates region similarity J and boundary F on the held-out clips.
4. Writes pictures into the run directory: mask overlays of held-out clips (a contact-sheet PNG and
   an mp4 per clip) and the loss curve.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from rich.console import Console
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from wavecl.atomic import write_json
from wavecl.config import Config, DataConfig, LossConfig, ModelConfig, TrainConfig
from wavecl.data.paths import read_json
from wavecl.data.synthetic import write_synthetic_ytvos
from wavecl.data.ytvos import read_expression_videos
from wavecl.device import resolve_device
from wavecl.distributed import DistInfo
from wavecl.inference.run import predict_video
from wavecl.training.trainer import Trainer

log = logging.getLogger("wavecl.training.demo")

TRAIN_VIDEOS = 300
HELD_OUT_VIDEOS = 24
FRAMES_PER_VIDEO = 8
FRAME_SIZE = (64, 96)
# About 10 minutes on 2 CPU cores; --minutes scales the number of steps.
STEPS_PER_EPOCH = 300
EPOCHS = 6
OVERLAY_CLIPS = 3
SMOOTHING = 50


def demo_config(data_root: Path, output_dir: Path, seed: int, steps_per_epoch: int) -> Config:
    """The demo's model and recipe: a reduced WaveCL trained from scratch on the synthetic shapes."""
    model = ModelConfig(
        backbone_embed_dim=32,
        backbone_depths=[1, 1, 1, 1],
        backbone_num_heads=[1, 2, 4, 8],
        backbone_drop_path=0.1,
        text_encoder="minilm",
        freeze_text_encoder=True,
        d_model=128,
        num_queries=5,
        enc_layers=1,
        dec_layers=2,
        dim_feedforward=256,
        voc_enc_layers=1,
        voc_dec_layers=1,
        voc_dim_feedforward=256,
    )
    data = DataConfig(
        dataset_name="synthetic",
        root=str(data_root),
        window_size=4,
        train_short_size=FRAME_SIZE[0],
        train_max_size=FRAME_SIZE[1],
        eval_short_size=FRAME_SIZE[0],
        eval_max_size=FRAME_SIZE[1],
        num_workers=0,
    )
    train = TrainConfig(
        epochs=EPOCHS,
        batch_size=2,
        lr=3e-4,
        lr_backbone=3e-4,  # the backbone starts from random weights here, not from Kinetics
        text_encoder_lr=0.0,
        lr_drop=[EPOCHS - 1],
        lr_gamma=0.1,
        seed=seed,
        eval_interval=EPOCHS,
        output_dir=str(output_dir),
        version="run",
        max_steps_per_epoch=steps_per_epoch,
    )
    return Config(model=model, data=data, loss=LossConfig(), train=train)


def write_dataset(root: Path, seed: int) -> None:
    """Write the synthetic splits unless a previous demo with this seed already did."""
    stamp = root / "wavecl_demo_dataset.json"
    description = {
        "seed": seed,
        "train": TRAIN_VIDEOS,
        "valid": HELD_OUT_VIDEOS,
        "frames": FRAMES_PER_VIDEO,
        "size": FRAME_SIZE,
    }
    if stamp.is_file() and read_json(stamp) == json.loads(json.dumps(description)):
        return
    write_synthetic_ytvos(root, TRAIN_VIDEOS, FRAMES_PER_VIDEO, FRAME_SIZE, seed=seed, split="train")
    write_synthetic_ytvos(root, HELD_OUT_VIDEOS, FRAMES_PER_VIDEO, FRAME_SIZE, seed=seed + 1, split="valid")
    write_json(stamp, description)


def moving_average(values: np.ndarray, window: int) -> np.ndarray:
    """Trailing mean over up to ``window`` previous values (the first values average what exists)."""
    sums = np.cumsum(np.insert(values, 0, 0.0))
    counts = np.minimum(np.arange(1, len(values) + 1), window)
    return (sums[1:] - sums[np.arange(1, len(values) + 1) - counts]) / counts


def plot_losses(tensorboard_dir: Path, path: Path) -> None:
    """Plot the per-step total loss and its mask, class and contrastive terms from the TensorBoard log."""
    events = EventAccumulator(str(tensorboard_dir))
    events.Reload()
    fig = Figure(figsize=(7, 4))
    ax = fig.subplots()
    curves = (
        ("train/loss", "total (weighted)"),
        ("train/loss_dice", "dice"),
        ("train/loss_cls", "class"),
        ("train/loss_con", "contrastive"),
    )
    for (tag, label), color in zip(curves, ("C0", "C1", "C2", "C3")):
        if tag in events.Tags()["scalars"]:
            points = events.Scalars(tag)
            steps = np.array([p.step for p in points])
            values = np.array([p.value for p in points])
            ax.plot(steps, values, color=color, alpha=0.2, linewidth=0.5)
            ax.plot(steps, moving_average(values, SMOOTHING), color=color, label=label, linewidth=1.5)
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(f"wavecl demo: training losses (faint: per step; solid: mean of {SMOOTHING} steps)")
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


@dataclass
class DemoResult:
    run_dir: Path
    metrics: dict[str, float]
    train_seconds: float
    overlays: list[Path]
    loss_curve: Path


def held_out_clips(data_root: Path, count: int) -> list[tuple[Path, list[str]]]:
    """The first ``count`` held-out videos with their sentences."""
    videos = read_expression_videos(data_root / "meta_expressions" / "valid" / "meta_expressions.json")
    clips = []
    for video_id, video in list(videos.items())[:count]:
        sentences = [e["exp"] for e in video["expressions"].values()][:3]
        clips.append((data_root / "valid" / "JPEGImages" / video_id, sentences))
    return clips


def run_demo(
    out_dir: str | Path = "runs/demo", minutes: float | None = None, seed: int = 0, device: str = "cpu"
) -> DemoResult:
    """Generate data, train, evaluate and draw; returns where everything is.

    Args:
        out_dir: the demo folder (data, run directory, pictures).
        minutes: approximate training budget on 2 CPU cores; 10 by default (scales the steps).
        seed: seed of the data and of training.
        device: ``cpu``, ``cuda`` or ``auto`` (:func:`wavecl.device.resolve_device`).
    """
    console = Console()
    out_dir = Path(out_dir)
    data_root = out_dir / "data"
    console.print(f"[bold]1/4[/bold] synthetic referring-video data → {data_root}")
    write_dataset(data_root, seed)

    steps = STEPS_PER_EPOCH if minutes is None else max(1, round(STEPS_PER_EPOCH * minutes / 10))
    config = demo_config(data_root, out_dir / "runs", seed, steps)
    dist = DistInfo(rank=0, world_size=1, local_rank=0, device=resolve_device(device))
    console.print(f"[bold]2/4[/bold] training a small WaveCL for {EPOCHS} × {steps} steps on {device}")
    started = time.perf_counter()
    trainer = Trainer(config, dist)
    metrics = trainer.fit()
    train_seconds = time.perf_counter() - started
    run_dir = trainer.run_dir

    console.print(
        "[bold]3/4[/bold] held-out evaluation: "
        + ", ".join(f"{k} {v:.3f}" for k, v in metrics.items() if k != "expressions")
    )
    console.print("[bold]4/4[/bold] pictures")
    overlays = []
    for frames_dir, sentences in held_out_clips(data_root, OVERLAY_CLIPS):
        paths = predict_video(
            run_dir,
            frames_dir,
            sentences,
            run_dir / "overlays" / frames_dir.name,
            device=dist.device,
            window=config.data.window_size,
            progress=False,
            fps=4,
        )
        overlays += [paths.contact_sheet, paths.overlay_video]
    loss_curve = run_dir / "loss_curve.png"
    plot_losses(run_dir / "tensorboard", loss_curve)
    write_json(run_dir / "demo_result.json", {"metrics": metrics, "train_seconds": train_seconds})

    console.print(f"\nrun directory: {run_dir}")
    console.print(
        f"  held-out J {metrics.get('J', float('nan')):.3f}, F {metrics.get('F', float('nan')):.3f}; "
        f"trained in {train_seconds / 60:.1f} min"
    )
    console.print(f"  loss curve:  {loss_curve}")
    for path in overlays:
        console.print(f"  overlay:     {path}")
    console.print(f"  checkpoint:  {run_dir / 'checkpoints'}  (try: wavecl predict --checkpoint {run_dir} ...)")
    return DemoResult(run_dir, metrics, train_seconds, overlays, loss_curve)
