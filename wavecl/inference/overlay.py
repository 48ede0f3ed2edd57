"""Pictures of predictions: masks blended over frames, and a contact sheet of sampled frames.

Every sentence gets its own bright colour (:func:`sentence_colors`, hues a golden-ratio step apart).
:func:`overlay_masks` keeps every mask readable:

- where masks overlap (two sentences on one object), the fill and the outline alternate between
  their colours in diagonal stripes, so both stay visible instead of blending into one colour;
- each mask is outlined in its colour, and the union of the masks gets a one-pixel halo outside it,
  black over light pixels and white over dark ones, so a mask on an object of its own colour still
  shows its extent.
"""

from __future__ import annotations

import colorsys
import math
import os
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from scipy import ndimage

from wavecl.atomic import save_image

LEGEND_PADDING = 6
SWATCH_SIZE = 12
TITLE_HEIGHT = 16
STRIPE_WIDTH = 4
"""Width in pixels of the diagonal stripes that alternate the colours of overlapping masks."""
_GOLDEN_RATIO_CONJUGATE = (math.sqrt(5) - 1) / 2
_LIGHT = 128


def sentence_colors(count: int) -> np.ndarray:
    """``[count, 3]`` uint8 RGB colours, one per sentence: saturated, bright, hues a golden-ratio turn apart
    (so neighbours in the list differ most), darker on every other turn of the hue circle."""
    colors = []
    for index in range(count):
        hue = (index * _GOLDEN_RATIO_CONJUGATE) % 1.0
        value = 1.0 if (index * _GOLDEN_RATIO_CONJUGATE) % 2.0 < 1.0 else 0.75
        colors.append(colorsys.hsv_to_rgb(hue, 0.85, value))
    return np.round(np.asarray(colors, dtype=np.float64).reshape(count, 3) * 255).astype(np.uint8)


def mask_contours(masks: np.ndarray) -> np.ndarray:
    """``[N, H, W]`` bool: the pixels of each mask that touch a pixel outside it (4-connectivity).

    The image border counts as outside, so a mask reaching the border is outlined there too.
    """
    inner = np.stack([ndimage.binary_erosion(mask, border_value=0) for mask in masks]) if len(masks) else masks
    return masks & ~inner


def striped_owner(masks: np.ndarray) -> np.ndarray:
    """``[H, W]`` int: which of the ``[N, H, W]`` masks colours each pixel, ``-1`` where none covers it.

    A pixel covered by ``k`` masks takes the ``j``-th of them (in order) with
    ``j = ((x + y) // STRIPE_WIDTH) % k``: diagonal stripes that cycle through the overlapping masks.
    """
    count = masks.sum(axis=0)
    height, width = masks.shape[1:]
    diagonal = (np.arange(height)[:, None] + np.arange(width)[None, :]) // STRIPE_WIDTH
    choice = diagonal % np.maximum(count, 1)
    rank = np.cumsum(masks, axis=0) - 1
    selected = masks & (rank == choice[None])
    return np.where(count > 0, selected.argmax(axis=0), -1)


def overlay_masks(
    frame: np.ndarray, masks: np.ndarray, colors: np.ndarray | None = None, alpha: float = 0.5
) -> np.ndarray:
    """Blend each mask over ``frame`` in its own colour, outline it, and halo the union of the masks.

    Where masks overlap, fill and outline alternate between their colours in diagonal stripes
    (:func:`striped_owner`); the outlines (:func:`mask_contours`) are opaque; the one-pixel ring just
    outside the union of the masks is black where the frame is light and white where it is dark.

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
    image = frame.copy()
    if len(masks) == 0:
        return image
    owner = striped_owner(masks)
    filled = owner >= 0
    blended = (1.0 - alpha) * frame[filled].astype(np.float32) + alpha * colors[owner[filled]].astype(np.float32)
    image[filled] = np.round(blended).astype(np.uint8)
    outline = striped_owner(mask_contours(masks))
    image[outline >= 0] = colors[outline[outline >= 0]]
    union = masks.any(axis=0)
    halo = ndimage.binary_dilation(union) & ~union
    luminance = frame[halo].astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    image[halo] = np.where(luminance[:, None] >= _LIGHT, 0, 255).astype(np.uint8)
    return image


def _fit_text(draw: ImageDraw.ImageDraw, text: str, font: ImageFont.ImageFont, width: float) -> str:
    """``text``, shortened with a trailing "..." until it is at most ``width`` pixels wide."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "...", font=font) > width:
        text = text[:-1]
    return text + "..."


def title_height(title: str | None) -> int:
    """Height in pixels of the title band :func:`contact_sheet` puts above the grid (0 without a title)."""
    return TITLE_HEIGHT if title else 0


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
    title: str | None = None,
) -> np.ndarray:
    """Tile frames into a grid, row by row, with a title above and a legend of label → colour underneath.

    Args:
        frames: ``F`` uint8 RGB images ``[h, w, 3]`` of one size (typically :func:`overlay_masks` output).
        columns: tiles per row; the grid has ``ceil(F / columns)`` rows, unused cells are black.
        labels: the sentences, listed under the grid each beside a swatch of its colour; none when omitted.
        colors: ``[len(labels), 3]`` uint8 swatch colours; :func:`sentence_colors` when omitted.
        captions: ``F`` short texts (e.g. ``"frame 12"``) written in each tile's top-left corner.
        title: one line written above the grid (e.g. which frames the sheet shows); none when omitted.

    Returns:
        ``[title_height(title) + rows * h + legend_height(len(labels)), columns * w, 3]`` uint8 RGB.
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
    top = title_height(title)
    grid_height = top + rows * height
    sheet = np.zeros((grid_height + legend_height(len(labels)), columns * width, 3), dtype=np.uint8)
    for index, frame in enumerate(frames):
        row, column = divmod(index, columns)
        sheet[top + row * height : top + (row + 1) * height, column * width : (column + 1) * width] = frame
    if not labels and captions is None and not title:
        return sheet

    image = Image.fromarray(sheet)
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default()
    if title:
        draw.text((3, 2), _fit_text(draw, title, font, sheet.shape[1] - 6), fill=(255, 255, 255), font=font)
    for index, caption in enumerate(captions or []):
        row, column = divmod(index, columns)
        draw.text(
            (column * width + 3, top + row * height + 2),
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
