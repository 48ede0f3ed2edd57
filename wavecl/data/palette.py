"""Index ("P" mode) PNG masks as used by DAVIS and Ref-YouTube-VOS annotations.

Pixel values are object ids (0 = background, 255 = void in DAVIS); the palette only colours them for
viewing. Reading such a PNG with ``np.asarray(Image.open(path))`` yields the id array directly.
"""

from __future__ import annotations

import os

import numpy as np
from PIL import Image

from wavecl.atomic import save_image


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
