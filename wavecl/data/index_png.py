"""Index PNGs: ``[H, W]`` uint8 object-id masks stored as palette ("P") PNGs, read and written.

The DAVIS and Ref-YouTube-VOS annotations and the predictions written for their protocols use them.
Pixel values are object ids (0 = background, 255 = void in DAVIS); the palette only colours them for
viewing.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from wavecl.atomic import save_image
from wavecl.data.paths import read_image


def index_palette() -> list[int]:
    """The 256-entry PASCAL VOC / DAVIS colour map as a flat ``[r0, g0, b0, r1, ...]`` list (768 ints).

    Entry ``i`` spreads the bits of ``i`` over the three channels, most significant bit first:
    0 is black, 1 dark red, 2 dark green, 3 olive, ... so neighbouring ids get distinct colours.
    """
    palette: list[int] = []
    for index in range(256):
        rgb = [0, 0, 0]
        bits = index
        for shift in range(7, -1, -1):
            for channel in range(3):
                rgb[channel] |= ((bits >> channel) & 1) << shift
            bits >>= 3
        palette.extend(rgb)
    return palette


def save_index_png(labels: np.ndarray, path: str | os.PathLike[str], palette: list[int] | None = None) -> None:
    """Write an ``[H, W]`` uint8 id array as a palette PNG, atomically.

    Args:
        labels: ``[H, W]`` uint8 object ids.
        path: destination ``.png``.
        palette: flat 768-int palette; :func:`index_palette` when omitted.
    """
    if labels.dtype != np.uint8 or labels.ndim != 2:
        raise ValueError(f"{path}: expected an [H, W] uint8 id array, got {labels.dtype} {labels.shape}")
    image = Image.fromarray(labels)  # mode "L"; putpalette turns it into "P" keeping the values
    image.putpalette(palette if palette is not None else index_palette())
    save_image(image, path, format="PNG")


def read_index_mask(path: Path) -> np.ndarray:
    """``[H, W]`` uint8 object ids of a palette ("P") or grey ("L") annotation PNG."""
    image = read_image(path, mode=None)
    if image.mode not in ("P", "L"):
        raise ValueError(f"{path}: annotation must be a palette or grey PNG of object ids, found mode {image.mode}")
    return np.asarray(image, dtype=np.uint8)
