"""Small helpers shared by several test modules (independent computations, not library code)."""

from pathlib import Path

import numpy as np
import torch

from wavecl.config import ModelConfig
from wavecl.model.output import WaveCLOutput
from wavecl.model.wavecl import WaveCL
from wavecl.testing.datasets import frame_level

TINY_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "tiny.yaml"
MEAN = torch.tensor([0.485, 0.456, 0.406])[:, None, None]
STD = torch.tensor([0.229, 0.224, 0.225])[:, None, None]


def box_cxcywh(mask: np.ndarray) -> list[float]:
    """Normalised (cx, cy, w, h) of a mask's inclusive pixel extent, computed naively."""
    ys, xs = np.nonzero(mask)
    h, w = mask.shape
    x1, x2, y1, y2 = xs.min(), xs.max(), ys.min(), ys.max()
    return [(x1 + x2) / 2 / w, (y1 + y2) / 2 / h, (x2 - x1) / w, (y2 - y1) / h]


def level_index(level: float) -> int:
    """The fixture frame index whose grey level (``frame_level``) is nearest to ``level``."""
    return round((level - frame_level(0)) / (frame_level(1) - frame_level(0)))


def frame_indices(frames: torch.Tensor) -> list[int]:
    """Recover each frame's index of a normalised ``[T, 3, H, W]`` clip from its grey level (red channel)."""
    levels = ((frames * STD + MEAN) * 255)[:, 0].mean(dim=(1, 2))
    return [level_index(float(level)) for level in levels]


def constant_prediction(batch, logit: float) -> WaveCLOutput:
    """Outputs whose masks are everywhere ``logit`` (all foreground when positive, empty when negative)."""
    T, B, _, H, W = batch.frames.shape
    Q = 3
    return WaveCLOutput(
        pred_masks=torch.full((T, B, Q, (H + 3) // 4, (W + 3) // 4), logit),
        pred_cls=torch.zeros(T, B, Q, 1),
        pred_boxes=torch.full((T, B, Q, 4), 0.5),
        video_queries=torch.zeros(B, Q, 8),
        text_sentence_feature=torch.zeros(B, 8),
    )


def tiny_train_arguments(epochs: int, output_dir: Path, data_root: Path, settings: dict) -> list[str]:
    """``wavecl train`` arguments (after the command name) for configs/tiny.yaml on the CPU, with
    ``settings`` as ``--set key=value`` overrides."""
    arguments = ["-c", str(TINY_CONFIG), "--device", "cpu", "--epochs", str(epochs)]
    arguments += ["--output-dir", str(output_dir), "--data-root", str(data_root)]
    for key, value in settings.items():
        arguments += ["--set", f"{key}={value}"]
    return arguments


def perturbed_model(config: ModelConfig) -> WaveCL:
    """``WaveCL(config)`` (seed 0) with every trainable parameter moved by 0.02 x N(0, 1) noise (seed 1),
    away from the zero initialisations, so that every path of the network carries a signal."""
    torch.manual_seed(0)
    model = WaveCL(config)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.requires_grad:
                parameter.add_(0.02 * torch.randn(parameter.shape, generator=generator))
    return model


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    """Run ``wavecl argv`` in this process; returns the exit code (0 if it returned) and the output."""
    from wavecl.cli import main

    try:
        main(argv)
        code = 0
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def tree_state(root: Path) -> dict[str, tuple[int, int, int]]:
    """``{relative path: (size, mtime_ns, mode)}`` of every file and folder under ``root``."""
    state = {}
    for path in sorted(root.rglob("*")):
        info = path.lstat()
        state[path.relative_to(root).as_posix()] = (
            info.st_size if path.is_file() else 0,
            info.st_mtime_ns,
            info.st_mode,
        )
    return state


def set_writable(root: Path, writable: bool) -> None:
    for path in [root, *root.rglob("*")]:
        mode = path.stat().st_mode
        path.chmod(mode | 0o200 if writable else mode & ~0o222)
