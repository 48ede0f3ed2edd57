"""Pictures of predictions: masks blended over frames, and a contact sheet of sampled frames.

Colours are the DAVIS / PASCAL VOC palette (:func:`wavecl.data.palette.index_palette`) from entry 1
on, so sentence ``i`` is drawn in the colour that object id ``i + 1`` has in an index PNG.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from scipy import ndimage

from wavecl.atomic import save_image
from wavecl.data.palette import index_palette

LEGEND_PADDING = 6
SWATCH_SIZE = 12


def sentence_colors(count: int) -> np.ndarray:
    """``[count, 3]`` uint8 RGB colours, one per sentence (palette entries 1, 2, ..., cycling over 1-255)."""
    palette = np.asarray(index_palette(), dtype=np.uint8).reshape(256, 3)
    return palette[1 + np.arange(count) % 255]


def mask_contours(masks: np.ndarray) -> np.ndarray:
    """``[N, H, W]`` bool: the pixels of each mask that touch a pixel outside it (4-connectivity).

    The image border counts as outside, so a mask reaching the border is outlined there too.
    """
    inner = np.stack([ndimage.binary_erosion(mask, border_value=0) for mask in masks]) if len(masks) else masks
    return masks & ~inner


def overlay_masks(
    frame: np.ndarray, masks: np.ndarray, colors: np.ndarray | None = None, alpha: float = 0.5
) -> np.ndarray:
    """Blend each mask over ``frame`` in its own colour and outline it in that colour.

    Masks are painted in order, so a later sentence's mask is drawn over an earlier one where they
    overlap; contours are drawn last, fully opaque.

    Args:
        frame: ``[H, W, 3]`` uint8 RGB.
        masks: ``[N, H, W]`` bool (a torch tensor is accepted).
        colors: ``[N, 3]`` uint8 RGB; :func:`sentence_colors` when omitted.
        alpha: opacity of the mask fill, in ``[0, 1]``.

    Returns:
        A new ``[H, W, 3]`` uint8 image.
    """
    masks = np.asarray(masks, dtype=bool)
    if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError(f"frame must be an [H, W, 3] uint8 array, got {frame.dtype} {list(frame.shape)}")
    if masks.ndim != 3 or masks.shape[1:] != frame.shape[:2]:
        raise ValueError(
            f"masks must be [N, {frame.shape[0]}, {frame.shape[1]}] to match the frame, got {list(masks.shape)}"
        )
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    colors = sentence_colors(len(masks)) if colors is None else np.asarray(colors, dtype=np.uint8)
    if colors.shape != (len(masks), 3):
        raise ValueError(f"colors must be [{len(masks)}, 3], got {list(colors.shape)}")
    blended = frame.astype(np.float32)
    for mask, color in zip(masks, colors):
        blended[mask] = (1.0 - alpha) * blended[mask] + alpha * color.astype(np.float32)
    image = np.round(blended).astype(np.uint8)
    for contour, color in zip(mask_contours(masks), colors):
        image[contour] = color
    return image


def _fit_text(draw: ImageDraw.ImageDraw, text: str, font: ImageFont.ImageFont, width: float) -> str:
    """``text``, shortened with a trailing "..." until it is at most ``width`` pixels wide."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "...", font=font) > width:
        text = text[:-1]
    return text + "..."


def legend_height(num_labels: int) -> int:
    """Height in pixels of the legend :func:`contact_sheet` puts under the grid (0 without labels)."""
    if num_labels == 0:
        return 0
    return LEGEND_PADDING + num_labels * (SWATCH_SIZE + LEGEND_PADDING)


def contact_sheet(
    frames: Sequence[np.ndarray],
    columns: int,
    labels: Sequence[str] | None = None,
    colors: np.ndarray | None = None,
    captions: Sequence[str] | None = None,
) -> np.ndarray:
    """Tile frames into a grid, row by row, with a legend of label → colour underneath.

    Args:
        frames: ``F`` uint8 RGB images ``[h, w, 3]`` of one size (typically :func:`overlay_masks` output).
        columns: tiles per row; the grid has ``ceil(F / columns)`` rows, unused cells are black.
        labels: the sentences, listed under the grid each beside a swatch of its colour; none when omitted.
        colors: ``[len(labels), 3]`` uint8 swatch colours; :func:`sentence_colors` when omitted.
        captions: ``F`` short texts (e.g. ``"frame 12"``) written in each tile's top-left corner.

    Returns:
        ``[rows * h + legend_height(len(labels)), columns * w, 3]`` uint8 RGB.
    """
    if len(frames) == 0:
        raise ValueError("contact_sheet needs at least one frame")
    if columns < 1:
        raise ValueError(f"columns must be positive, got {columns}")
    height, width = frames[0].shape[:2]
    for index, frame in enumerate(frames):
        if frame.dtype != np.uint8 or frame.shape != (height, width, 3):
            raise ValueError(
                f"frame {index} must be uint8 [{height}, {width}, 3] like frame 0, "
                f"got {frame.dtype} {list(frame.shape)}"
            )
    if captions is not None and len(captions) != len(frames):
        raise ValueError(f"expected {len(frames)} captions, got {len(captions)}")
    labels = list(labels or [])
    colors = sentence_colors(len(labels)) if colors is None else np.asarray(colors, dtype=np.uint8)
    if colors.shape != (len(labels), 3):
        raise ValueError(f"colors must be [{len(labels)}, 3], got {list(colors.shape)}")

    rows = math.ceil(len(frames) / columns)
    grid_height = rows * height
    sheet = np.zeros((grid_height + legend_height(len(labels)), columns * width, 3), dtype=np.uint8)
    for index, frame in enumerate(frames):
        row, column = divmod(index, columns)
        sheet[row * height : (row + 1) * height, column * width : (column + 1) * width] = frame
    if not labels and captions is None:
        return sheet

    image = Image.fromarray(sheet)
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default()
    for index, caption in enumerate(captions or []):
        row, column = divmod(index, columns)
        draw.text(
            (column * width + 3, row * height + 2),
            caption,
            fill=(255, 255, 255),
            font=font,
            stroke_width=1,
            stroke_fill=(0, 0, 0),
        )
    text_x = LEGEND_PADDING + SWATCH_SIZE + LEGEND_PADDING
    for index, (label, color) in enumerate(zip(labels, colors)):
        top = grid_height + LEGEND_PADDING + index * (SWATCH_SIZE + LEGEND_PADDING)
        draw.rectangle(
            (LEGEND_PADDING, top, LEGEND_PADDING + SWATCH_SIZE - 1, top + SWATCH_SIZE - 1),
            fill=tuple(int(c) for c in color),
        )
        text = _fit_text(draw, f"{index}: {label}", font, sheet.shape[1] - text_x - LEGEND_PADDING)
        draw.text((text_x, top), text, fill=(255, 255, 255), font=font)
    return np.asarray(image)


def save_png(path: str | os.PathLike[str], image: np.ndarray) -> None:
    """Write an ``[H, W, 3]`` (RGB) or ``[H, W]`` (grey) uint8 array as a PNG, atomically."""
    if image.dtype != np.uint8 or image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] != 3):
        raise ValueError(f"{path}: expected an [H, W, 3] or [H, W] uint8 array, got {image.dtype} {list(image.shape)}")
    save_image(Image.fromarray(image), path, format="PNG")
