"""Ref-YouTube-VOS submission files (docs/datasets.md#ref-youtube-vos).

There is no local ground truth for the validation set: predictions are written as
``Annotations/<video_id>/<exp_id>/<frame>.png`` (single-channel, 0 or 255, original frame size) and
uploaded as a zip whose top-level folder is ``Annotations/``; the server computes J, F and J&F.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image
from torch import Tensor

from wavecl.atomic import atomic_path, save_image

ANNOTATIONS_FOLDER = "Annotations"


def write_ytvos_masks(
    output_root: str | os.PathLike[str],
    video_id: str,
    exp_id: str,
    frame_names: Sequence[str],
    masks: Tensor,
) -> list[Path]:
    """Write one expression's masks as submission PNGs, atomically.

    Args:
        output_root: folder that receives ``Annotations/``.
        video_id: Ref-YouTube-VOS video id.
        exp_id: expression id within the video.
        frame_names: ``T`` frame names without extension.
        masks: ``[T, H, W]`` bool masks at the original frame size.

    Returns:
        The written paths ``<output_root>/Annotations/<video_id>/<exp_id>/<frame>.png``, in frame order.
    """
    if masks.ndim != 3 or masks.shape[0] != len(frame_names):
        raise ValueError(f"masks {tuple(masks.shape)} must be [T, H, W] with T = {len(frame_names)} frame names")
    folder = Path(output_root) / ANNOTATIONS_FOLDER / str(video_id) / str(exp_id)
    pixels = masks.detach().cpu().numpy().astype(np.uint8) * 255
    paths = []
    for name, frame in zip(frame_names, pixels):
        path = folder / f"{name}.png"
        save_image(Image.fromarray(frame), path, format="PNG")
        paths.append(path)
    return paths


def zip_submission(annotations_root: str | os.PathLike[str], zip_path: str | os.PathLike[str]) -> Path:
    """Zip an ``Annotations`` folder for the evaluation server, atomically.

    Args:
        annotations_root: the folder holding ``<video_id>/<exp_id>/<frame>.png`` (normally
            ``<output_root>/Annotations``).
        zip_path: the archive to write.

    Returns:
        ``zip_path``. Members are ``Annotations/`` and every folder and file below it as
        ``Annotations/<relative path>``, in sorted order; PNGs are stored without recompression.
    """
    root = Path(annotations_root)
    if not root.is_dir():
        raise FileNotFoundError(f"annotations folder not found: {root}")
    zip_path = Path(zip_path)
    with atomic_path(zip_path) as temporary, zipfile.ZipFile(temporary, "w", compression=zipfile.ZIP_STORED) as archive:
        archive.write(root, ANNOTATIONS_FOLDER)
        for path in sorted(root.rglob("*")):
            if path.name.startswith("."):
                continue
            archive.write(path, f"{ANNOTATIONS_FOLDER}/{path.relative_to(root).as_posix()}")
    return zip_path
