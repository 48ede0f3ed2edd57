"""Pictures of predictions: masks drawn over frames, an overlay video frame with its legend, a contact sheet.

Readable at a glance:

- every sentence gets a colour of :data:`PALETTE` that contrasts with the mean colour of the pixels
  its mask covers (:func:`sentence_colors`; CIELAB distance), so a yellow object is never tinted
  orange nor drawn in yellow, and two sentences never share a colour;
- the fill is a light tint and the outline opaque; where masks overlap (two sentences on one object)
  fill and outline alternate between their colours in diagonal stripes; the union of the masks gets a
  one-pixel halo outside it, black over light pixels and white over dark ones;
- small frames are enlarged by a whole factor (every pixel a square block: no blur) so a video frame's
  long side nears :data:`VIDEO_LONG_SIDE` and a contact-sheet tile's :data:`TILE_LONG_SIDE` (larger
  videos keep their size, larger tiles are shrunk to it);
- text never covers a frame: the video frame has its legend (colour swatch, ``i: sentence``) in a band
  under the picture, the contact sheet its title above, each tile's caption in a band above the tile
  and the legend under the grid.
"""

from __future__ import annotations

import colorsys
import functools
import math
import os
from collections.abc import Sequence

import numpy as np
from einops import repeat
from PIL import Image, ImageDraw, ImageFont
from scipy import ndimage

from wavecl.atomic import save_image

STRIPE_WIDTH = 4
"""Width in pixels of the diagonal stripes that alternate the colours of overlapping masks."""
FILL_ALPHA = 0.25
"""Opacity of a mask's tint: light, so the object keeps its own colour; the outline carries the sentence's."""
PALETTE = np.round(
    255 * np.array([colorsys.hsv_to_rgb(hue / 12, 0.9, 1.0) for hue in range(12)], dtype=np.float64)
).astype(np.uint8)
"""``[12, 3]`` uint8 RGB: twelve saturated hues 30 degrees apart, red first."""
COLOR_MARGIN = 60.0
"""Least CIELAB distance (delta E 1976) between a sentence's colour and its object's mean colour; every
sRGB colour has at least 7 of the 12 palette colours this far, so up to 7 sentences always keep it."""
VIDEO_LONG_SIDE = 480
TILE_LONG_SIDE = 320
FONT_SIZE = 14
TITLE_FONT_SIZE = 16
PADDING = 6
"""Pixels around and between the parts of a picture (tiles, bands, swatches)."""
ROW_HEIGHT = FONT_SIZE + PADDING
"""Height of one line of text (a legend row, a tile's caption band)."""
SWATCH_SIZE = FONT_SIZE
LEGEND_MIN_WIDTH = 320
"""Narrower video frames are centred on a band this wide so their legend stays readable."""
_LIGHT = 128
_TEXT = (255, 255, 255)
_SRGB_TO_XYZ = np.array(
    [[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]], dtype=np.float64
)
_D65_WHITE = np.array([0.9505, 1.0, 1.089], dtype=np.float64)


def cielab(rgb: np.ndarray) -> np.ndarray:
    """``[..., 3]`` sRGB in ``[0, 255]`` to CIELAB ``[..., 3]`` (D65 white; L in ``[0, 100]``); NaN stays NaN."""
    value = np.asarray(rgb, dtype=np.float64) / 255.0
    linear = np.where(value <= 0.04045, value / 12.92, ((value + 0.055) / 1.055) ** 2.4)
    xyz = linear @ _SRGB_TO_XYZ.T / _D65_WHITE
    edge = (6 / 29) ** 3
    f = np.where(xyz > edge, np.cbrt(xyz), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    return np.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], axis=-1)


def object_colors(frames: Sequence[np.ndarray], masks: Sequence[np.ndarray]) -> np.ndarray:
    """The mean colour of the pixels each sentence's masks cover, over all the given frames.

    Args:
        frames: ``T`` uint8 RGB frames ``[H, W, 3]``.
        masks: ``T`` bool arrays ``[N, H, W]``, the masks of each frame.

    Returns:
        ``[N, 3]`` float64 RGB in ``[0, 255]``; NaN rows for sentences whose masks are all empty.
    """
    if len(frames) != len(masks):
        raise ValueError(f"object_colors needs one mask array per frame, got {len(frames)} frames, {len(masks)}")
    if not len(masks):
        raise ValueError("object_colors needs at least one frame")
    sums = np.zeros((len(masks[0]), 3), dtype=np.float64)
    counts = np.zeros(len(masks[0]), dtype=np.float64)
    for frame, mask in zip(frames, masks):
        weights = np.asarray(mask, dtype=np.float64)
        sums += np.einsum("nhw,hwc->nc", weights, frame.astype(np.float64))
        counts += weights.sum(axis=(1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts[:, None] > 0, sums / counts[:, None], np.nan)


def sentence_colors(count: int, objects: np.ndarray | None = None) -> np.ndarray:
    """A colour of :data:`PALETTE` per sentence, chosen in sentence order, deterministic.

    Sentence ``i`` takes, among the colours no earlier sentence took, one at least :data:`COLOR_MARGIN`
    from its own object's colour (the farthest one when none is), and of those the one farthest from
    every object's colour and every colour already taken: a blue square beside a yellow triangle
    makes neither sentence blue or yellow. Without object colours the choice spreads the colours apart.

    Args:
        count: sentences.
        objects: ``[count, 3]`` RGB mean colour of each sentence's object (:func:`object_colors`), NaN
            rows where unknown; all unknown when ``None``.

    Returns:
        ``[count, 3]`` uint8 RGB; the palette is reused after its twelve colours.
    """
    known = np.full((count, 3), np.nan) if objects is None else np.asarray(objects, dtype=np.float64)
    if known.shape != (count, 3):
        raise ValueError(f"objects must be [{count}, 3], got {list(known.shape)}")
    palette = cielab(PALETTE)
    targets = cielab(known)
    seen = targets[~np.isnan(targets).any(axis=1)]
    chosen: list[int] = []
    for index in range(count):
        taken = chosen[len(chosen) // len(PALETTE) * len(PALETTE) :]
        candidates = np.array([k for k in range(len(PALETTE)) if k not in taken])
        own = targets[index]
        if not np.isnan(own).any():
            to_own = np.linalg.norm(palette[candidates] - own, axis=1)
            far = candidates[to_own >= COLOR_MARGIN]
            candidates = far if len(far) else candidates[[int(to_own.argmax())]]
        avoid = np.concatenate([seen, palette[chosen]])
        nearest = np.linalg.norm(palette[candidates][:, None] - avoid[None], axis=-1).min(axis=1, initial=np.inf)
        chosen.append(int(candidates[int(nearest.argmax())]))
    return PALETTE[chosen].reshape(count, 3)


def mask_contours(masks: np.ndarray, width: int = 1) -> np.ndarray:
    """``[N, H, W]`` bool: the pixels of each mask within ``width`` steps (4-connectivity) of a pixel
    outside it. The image border counts as outside, so a mask reaching the border is outlined there too."""
    if not len(masks):
        return masks
    inner = np.stack([ndimage.binary_erosion(mask, iterations=width, border_value=0) for mask in masks])
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
    frame: np.ndarray, masks: np.ndarray, colors: np.ndarray | None = None, alpha: float = FILL_ALPHA, outline: int = 1
) -> np.ndarray:
    """Tint each mask over ``frame`` in its own colour, outline it, and halo the union of the masks.

    Where masks overlap, fill and outline alternate between their colours in diagonal stripes
    (:func:`striped_owner`); the outlines (:func:`mask_contours`) are opaque; the one-pixel ring just
    outside the union of the masks is black where the frame is light and white where it is dark.

    Args:
        frame: ``[H, W, 3]`` uint8 RGB.
        masks: ``[N, H, W]`` bool (a torch tensor is accepted).
        colors: ``[N, 3]`` uint8 RGB; :func:`sentence_colors` of the masked pixels when omitted.
        alpha: opacity of the mask fill, in ``[0, 1]``.
        outline: width of the outlines in pixels, ``>= 1``.

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
    if colors is None:
        colors = sentence_colors(len(masks), object_colors([frame], [masks]))
    colors = np.asarray(colors, dtype=np.uint8)
    if colors.shape != (len(masks), 3):
        raise ValueError(f"colors must be [{len(masks)}, 3], got {list(colors.shape)}")
    image = frame.copy()
    if len(masks) == 0:
        return image
    owner = striped_owner(masks)
    filled = owner >= 0
    blended = (1.0 - alpha) * frame[filled].astype(np.float32) + alpha * colors[owner[filled]].astype(np.float32)
    image[filled] = np.round(blended).astype(np.uint8)
    edge = striped_owner(mask_contours(masks, outline))
    image[edge >= 0] = colors[edge[edge >= 0]]
    union = masks.any(axis=0)
    halo = ndimage.binary_dilation(union) & ~union
    luminance = frame[halo].astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    image[halo] = np.where(luminance[:, None] >= _LIGHT, 0, 255).astype(np.uint8)
    return image


def enlargement(height: int, width: int, long_side: int) -> int:
    """The whole factor ``>= 1`` that brings a ``height x width`` picture's long side closest to
    ``long_side`` without passing it (1 for pictures already that large)."""
    return max(1, long_side // max(height, width))


def enlarge(frame: np.ndarray, masks: np.ndarray, factor: int) -> tuple[np.ndarray, np.ndarray]:
    """``frame`` ``[H, W, 3]`` and ``masks`` ``[N, H, W]`` with every pixel repeated into a
    ``factor x factor`` block (nearest neighbour: edges stay sharp)."""
    if factor == 1:
        return frame, masks
    return (
        repeat(frame, "h w c -> (h a) (w b) c", a=factor, b=factor),
        repeat(masks, "n h w -> n (h a) (w b)", a=factor, b=factor),
    )


def outline_width(height: int, width: int) -> int:
    """Outline width in pixels for a picture of that size: one pixel per 160 on the long side, 1 to 4."""
    return min(4, max(1, round(max(height, width) / 160)))


def paint(frame: np.ndarray, masks: np.ndarray, colors: np.ndarray, long_side: int) -> np.ndarray:
    """:func:`overlay_masks` on the frame enlarged by :func:`enlargement` (a whole factor, so a frame
    shorter than ``long_side`` gets close to it; larger frames keep their size), outlines as wide as
    :func:`outline_width` of the result.

    Args:
        frame: ``[H, W, 3]`` uint8 RGB.
        masks: ``[N, H, W]`` bool.
        colors: ``[N, 3]`` uint8 RGB.
        long_side: the long side wanted, pixels.

    Returns:
        ``[k * H, k * W, 3]`` uint8 with ``k = enlargement(H, W, long_side)``.
    """
    height, width = frame.shape[:2]
    big_frame, big_masks = enlarge(frame, np.asarray(masks, dtype=bool), enlargement(height, width, long_side))
    return overlay_masks(big_frame, big_masks, colors, outline=outline_width(*big_frame.shape[:2]))


def sheet_tile(frame: np.ndarray, masks: np.ndarray, colors: np.ndarray) -> np.ndarray:
    """A contact-sheet tile: :func:`paint` to :data:`TILE_LONG_SIDE`, then shrunk to it (bilinear) when
    the frame is larger.

    Returns:
        ``[h, w, 3]`` uint8 with the frame's aspect ratio and ``max(h, w) <= TILE_LONG_SIDE``.
    """
    image = paint(frame, masks, colors, TILE_LONG_SIDE)
    height, width = image.shape[:2]
    if max(height, width) <= TILE_LONG_SIDE:
        return image
    scale = TILE_LONG_SIDE / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BILINEAR))


@functools.cache
def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def _fit_text(
    draw: ImageDraw.ImageDraw, text: str, font: ImageFont.FreeTypeFont | ImageFont.ImageFont, width: float
) -> str:
    """``text``, shortened with a trailing "..." until it is at most ``width`` pixels wide."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "...", font=font) > width:
        text = text[:-1]
    return text + "..."


def legend_height(num_labels: int) -> int:
    """Height in pixels of :func:`legend_band` (0 without labels)."""
    return 0 if num_labels == 0 else 2 * PADDING + num_labels * ROW_HEIGHT


def legend_band(labels: Sequence[str], colors: np.ndarray, width: int) -> np.ndarray:
    """A black band listing ``i: label`` beside a swatch of each label's colour, one label per row.

    Args:
        labels: the sentences.
        colors: ``[len(labels), 3]`` uint8 RGB.
        width: band width in pixels; longer labels end in "...".

    Returns:
        ``[legend_height(len(labels)), width, 3]`` uint8.
    """
    colors = np.asarray(colors, dtype=np.uint8)
    if colors.shape != (len(labels), 3):
        raise ValueError(f"colors must be [{len(labels)}, 3], got {list(colors.shape)}")
    image = Image.new("RGB", (width, legend_height(len(labels))))
    draw = ImageDraw.Draw(image)
    font = _font(FONT_SIZE)
    text_x = 2 * PADDING + SWATCH_SIZE
    for index, (label, color) in enumerate(zip(labels, colors)):
        top = PADDING + index * ROW_HEIGHT + (ROW_HEIGHT - SWATCH_SIZE) // 2
        box = (PADDING, top, PADDING + SWATCH_SIZE - 1, top + SWATCH_SIZE - 1)
        draw.rectangle(box, fill=tuple(int(c) for c in color))
        text = _fit_text(draw, f"{index}: {label}", font, width - text_x - PADDING)
        draw.text((text_x, top + SWATCH_SIZE // 2), text, fill=_TEXT, font=font, anchor="lm")
    return np.asarray(image)


def video_frame(picture: np.ndarray, legend: np.ndarray) -> np.ndarray:
    """A frame of the overlay video: ``picture`` ``[h, w, 3]`` above ``legend`` ``[l, W, 3]``
    (:func:`legend_band` of width ``max(w, LEGEND_MIN_WIDTH)``), centred on black when narrower.

    Returns:
        ``[h + l, max(w, W), 3]`` uint8.
    """
    height, width = picture.shape[:2]
    total = max(width, legend.shape[1])
    frame = np.zeros((height + legend.shape[0], total, 3), dtype=np.uint8)
    left = (total - width) // 2
    frame[:height, left : left + width] = picture
    frame[height:, : legend.shape[1]] = legend
    return frame


def title_height(title: str | None) -> int:
    """Height in pixels of the title band :func:`contact_sheet` puts above the grid (0 without a title)."""
    return TITLE_FONT_SIZE + 2 * PADDING if title else 0


def contact_sheet(
    tiles: Sequence[np.ndarray],
    columns: int,
    labels: Sequence[str] | None = None,
    colors: np.ndarray | None = None,
    captions: Sequence[str] | None = None,
    title: str | None = None,
) -> np.ndarray:
    """Tiles in a grid on black, row by row, each under its caption, with a title above and a legend under.

    Every tile sits in a cell of a caption band (:data:`ROW_HEIGHT`) over the tile, cells
    :data:`PADDING` apart and from the edges; no text is drawn on a tile.

    Args:
        tiles: ``F`` uint8 RGB images ``[h, w, 3]`` of one size (typically :func:`sheet_tile` output).
        columns: tiles per row; the grid has ``ceil(F / columns)`` rows, unused cells stay black.
        labels: the sentences, listed under the grid each beside a swatch of its colour; none when omitted.
        colors: ``[len(labels), 3]`` uint8 swatch colours; :func:`sentence_colors` when omitted.
        captions: ``F`` short texts (e.g. ``"frame 12"``), each written above its tile.
        title: one line written above the grid (e.g. which frames the sheet shows); none when omitted.

    Returns:
        ``[title_height(title) + rows * (ROW_HEIGHT + h + PADDING) + legend_height(len(labels)),
        PADDING + columns * (w + PADDING), 3]`` uint8 RGB.
    """
    if len(tiles) == 0:
        raise ValueError("contact_sheet needs at least one tile")
    if columns < 1:
        raise ValueError(f"columns must be positive, got {columns}")
    height, width = tiles[0].shape[:2]
    for index, tile in enumerate(tiles):
        if tile.dtype != np.uint8 or tile.shape != (height, width, 3):
            raise ValueError(
                f"tile {index} must be uint8 [{height}, {width}, 3] like tile 0, got {tile.dtype} {list(tile.shape)}"
            )
    if captions is not None and len(captions) != len(tiles):
        raise ValueError(f"expected {len(tiles)} captions, got {len(captions)}")
    labels = list(labels or [])
    colors = sentence_colors(len(labels)) if colors is None else np.asarray(colors, dtype=np.uint8)

    rows = math.ceil(len(tiles) / columns)
    top = title_height(title)
    cell_height = ROW_HEIGHT + height + PADDING
    sheet_width = PADDING + columns * (width + PADDING)
    grid_height = top + rows * cell_height
    sheet = np.zeros((grid_height + legend_height(len(labels)), sheet_width, 3), dtype=np.uint8)
    corners = [
        (top + row * cell_height + ROW_HEIGHT, PADDING + column * (width + PADDING))
        for row, column in (divmod(index, columns) for index in range(len(tiles)))
    ]
    for (y, x), tile in zip(corners, tiles):
        sheet[y : y + height, x : x + width] = tile
    if labels:
        sheet[grid_height:] = legend_band(labels, colors, sheet_width)

    image = Image.fromarray(sheet)
    draw = ImageDraw.Draw(image)
    if title:
        font = _font(TITLE_FONT_SIZE)
        text = _fit_text(draw, title, font, sheet_width - 2 * PADDING)
        draw.text((PADDING, top // 2), text, fill=_TEXT, font=font, anchor="lm")
    font = _font(FONT_SIZE)
    for (y, x), caption in zip(corners, captions or []):
        draw.text((x, y - ROW_HEIGHT // 2), _fit_text(draw, caption, font, width), fill=_TEXT, font=font, anchor="lm")
    return np.asarray(image)


def save_png(path: str | os.PathLike[str], image: np.ndarray) -> None:
    """Write an ``[H, W, 3]`` (RGB) or ``[H, W]`` (grey) uint8 array as a PNG, atomically."""
    if image.dtype != np.uint8 or image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] != 3):
        raise ValueError(f"{path}: expected an [H, W, 3] or [H, W] uint8 array, got {image.dtype} {list(image.shape)}")
    save_image(Image.fromarray(image), path, format="PNG")
