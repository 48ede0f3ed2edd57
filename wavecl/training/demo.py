"""``wavecl demo``: the quick start, end to end on one CPU with nothing to download.

1. Writes a synthetic referring-video dataset in the Ref-YouTube-VOS on-disk format (moving coloured
   shapes, sentences such as "the red circle moving to the left"): a training split and a held-out
   split with ground truth. With ``data.root`` given (``wavecl demo --data-root``), one's own data in
   that layout is used instead.
2. Trains a small WaveCL with the packaged recipe ``demo`` (reduced Video-Swin, the packaged
   all-MiniLM-L6-v2 sentence encoder) with the same trainer, losses and checkpoints as the full recipes.
3. Evaluates region similarity J and boundary F on the held-out clips (when they have ground truth).
4. Writes pictures into the run directory: mask overlays of held-out clips (a contact-sheet PNG and
   an mp4 per clip) and the loss curve.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from rich.console import Console
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from wavecl.atomic import write_json
from wavecl.config import Config, apply_overrides, load_config
from wavecl.data.synthetic import write_synthetic_ytvos
from wavecl.data.ytvos import YTVOSPaths, evaluated_videos
from wavecl.device import resolve_device
from wavecl.distributed import DistInfo
from wavecl.inference.prediction_folder import predict_video
from wavecl.jsonio import read_json
from wavecl.run_directory import RunLock
from wavecl.training.trainer import Trainer

log = logging.getLogger("wavecl.training.demo")

TRAIN_VIDEOS = 300
HELD_OUT_VIDEOS = 24
FRAMES_PER_VIDEO = 8
FRAME_SIZE = (64, 96)
DEMO_CONFIG = "demo"
"""The demo's recipe (model, data sizes, schedule), a packaged config; about 10 minutes on 2 CPU cores."""
RECIPE_MINUTES = 10
OVERLAY_CLIPS = 3
SMOOTHING = 50


def demo_config(
    out_dir: Path,
    seed: int = 0,
    minutes: float | None = None,
    config_path: str | Path = DEMO_CONFIG,
    overrides: dict[str, Any] | None = None,
) -> Config:
    """The demo's recipe (the packaged config ``demo``) set up to write under ``out_dir``.

    Args:
        out_dir: the demo folder; the run directory is ``<out_dir>/runs/<dataset>/run``.
        seed: training seed (and seed of the synthetic data).
        minutes: approximate training budget on 2 CPU cores: scales ``train.max_steps_per_epoch`` of the
            recipe, which takes :data:`RECIPE_MINUTES`; ``None`` keeps it.
        config_path: the recipe, a packaged config's name or a file (:func:`wavecl.config.config_file`).
        overrides: fields given explicitly (``--set``, ``--data-root``, ...), applied last. Without
            ``data.root``, the demo trains on the synthetic data it writes to ``<out_dir>/data``.

    Raises:
        FileNotFoundError: no such recipe.
    """
    config = load_config(config_path)
    overrides = dict(overrides or {})
    steps = config.train.max_steps_per_epoch
    if minutes is not None and steps is not None:
        steps = max(1, round(steps * minutes / RECIPE_MINUTES))
    settings: dict[str, Any] = {
        "train.output_dir": str(out_dir / "runs"),
        "train.version": "run",
        "train.seed": seed,
        "train.max_steps_per_epoch": steps,
    }
    if "data.root" not in overrides:
        settings |= {"data.dataset_name": "synthetic", "data.root": str(out_dir / "data")}
    return apply_overrides(config, settings | overrides)


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
    """The first ``count`` evaluated videos of the ``valid`` split that have frames, with up to 3 sentences each."""
    paths = YTVOSPaths.find(data_root)
    clips: list[tuple[Path, list[str]]] = []
    for video_id, video in evaluated_videos(paths, "valid").items():
        frames_dir = paths.root / "valid" / "JPEGImages" / video_id
        if frames_dir.is_dir() and len(clips) < count:
            clips.append((frames_dir, [e["exp"] for e in video["expressions"].values()][:3]))
    return clips


def run_demo(
    out_dir: str | Path = "runs/demo",
    minutes: float | None = None,
    seed: int = 0,
    device: str = "cpu",
    config_path: str | Path = DEMO_CONFIG,
    overrides: dict[str, Any] | None = None,
) -> DemoResult:
    """Generate data (unless ``data.root`` is given), train, evaluate and draw; returns where everything is.

    Args:
        out_dir: the demo folder (synthetic data, run directory, pictures); the run of a previous demo in it is
            replaced (unless a process still trains there).
        minutes: approximate training budget on 2 CPU cores; the recipe's 10 by default (scales the steps).
        seed: seed of the data and of training.
        device: ``cpu``, ``cuda`` or ``auto`` (:func:`wavecl.device.resolve_device`).
        config_path: the recipe, the packaged ``demo`` by default.
        overrides: explicit config fields (see :func:`demo_config`); ``data.root`` trains on one's own
            Ref-YouTube-VOS-layout data instead of synthetic data, and J, F and J&F are reported when
            its ``valid`` split has ``Annotations/``.
    """
    console = Console(soft_wrap=True)  # paths stay on one line, ready to copy
    out_dir = Path(out_dir)
    config = demo_config(out_dir, seed, minutes, config_path, overrides)
    data_root = Path(config.data.root)
    if overrides and "data.root" in overrides:
        console.print(f"[bold]1/4[/bold] your data: {data_root} ({config.data.dataset_name})")
    else:
        console.print(f"[bold]1/4[/bold] synthetic referring-video data → {data_root}")
        write_dataset(data_root, seed)

    steps = config.train.max_steps_per_epoch
    dist = DistInfo(rank=0, world_size=1, local_rank=0, device=resolve_device(device))
    previous = config.run_directory()
    if previous.is_dir():
        RunLock(previous).release()  # refuses while another demo trains there
        console.print(f"replacing the previous demo run in {previous}")
        shutil.rmtree(previous)
    console.print(f"[bold]2/4[/bold] training a small WaveCL for {config.train.epochs} × {steps} steps on {device}")
    started = time.perf_counter()
    trainer = Trainer(config, dist, explicit_overrides=overrides)
    metrics = trainer.fit()
    train_seconds = time.perf_counter() - started
    run, run_dir = trainer.run, trainer.run_dir

    console.print(
        "[bold]3/4[/bold] held-out evaluation: "
        + ", ".join(f"{k} {v:.3f}" for k, v in metrics.items() if k in ("J", "F", "J&F", "windows"))
    )
    console.print("[bold]4/4[/bold] pictures")
    overlays: list[Path] = []
    for frames_dir, sentences in held_out_clips(data_root, OVERLAY_CLIPS):
        paths = predict_video(
            run_dir,
            frames_dir,
            sentences,
            run_dir / "overlays" / frames_dir.name,
            device=str(dist.device),
            progress=False,
            fps=4,
        )
        overlays += [
            path for path in (paths.contact_sheet, paths.overlay_video) if path is not None
        ]  # no mp4 without PyAV
    loss_curve = run_dir / "loss_curve.png"
    plot_losses(run.tensorboard, loss_curve)
    write_json(run_dir / "demo_result.json", {"metrics": metrics, "train_seconds": train_seconds})

    console.print(f"\nrun directory: {run_dir}")
    if "J" in metrics:
        console.print(
            f"  held-out J {metrics['J']:.3f}, F {metrics['F']:.3f}, J&F {metrics['J&F']:.3f}; "
            f"trained in {train_seconds / 60:.1f} min"
        )
    else:
        console.print(f"  no held-out ground truth (valid/Annotations); trained in {train_seconds / 60:.1f} min")
    console.print(f"  loss curve:  {loss_curve}")
    for path in overlays:
        console.print(f"  overlay:     {path}")
    console.print(f"  checkpoint:  {run.checkpoints}  (try: wavecl predict --checkpoint {run_dir} ...)")
    return DemoResult(run_dir, metrics, train_seconds, overlays, loss_curve)
