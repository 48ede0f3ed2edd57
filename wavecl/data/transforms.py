"""Clip transforms shared by every video dataset (docs/datasets.md#transforms).

Order: horizontal flip (train only; frames, masks and sentence together) -> per-frame resize
(DETR short-side rule) -> tensor in ``[0, 1]`` -> ImageNet normalisation. Targets are built here from
original-resolution masks: boxes are computed from the (flipped) mask as inclusive-max ``xyxy``, scaled by
the resize ratios and expressed as normalised ``(cx, cy, w, h)``.

Difference from the reference: the reference computes the box before flipping and maps it as
``[W - x2, y1, W - x1, y2]``, which, for inclusive-max boxes, is one pixel to the right of the box of the
flipped mask. Here the box is always the box of the mask that is returned.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange
from PIL import Image
from torch import Tensor
from torchvision.ops import box_convert, masks_to_boxes

from wavecl.config import DataConfig
from wavecl.data.types import FrameTarget, Split

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_PIXEL_MEAN = torch.tensor(IMAGENET_MEAN).view(3, 1, 1) * 255
_PIXEL_STD = torch.tensor(IMAGENET_STD).view(3, 1, 1) * 255

_LEFT_RIGHT_WORD = re.compile(r"\b(left|right)(most)?\b", flags=re.IGNORECASE)
_SWAPPED = {"left": "right", "right": "left"}


def clean_expression(text: str, source: str) -> str:
    """Lower-case and collapse whitespace, as every reference video dataset does at load time.

    Raises:
        ValueError: nothing is left; the message names ``source`` (file and sample).
    """
    cleaned = " ".join(text.lower().split())
    if not cleaned:
        raise ValueError(f"empty referring expression in {source}")
    return cleaned


def resize_shape(h: int, w: int, short_size: int, max_size: int | None) -> tuple[int, int]:
    """Output ``(H', W')`` of the DETR resize rule.

    The short side becomes ``short_size`` unless the long side would then exceed ``max_size``, in which
    case the short side is ``round(max_size * short / long)`` (half-to-even). The long side is truncated
    with ``int``. An image whose short side already has the target length is left unchanged.

    Examples: ``(720, 1280, 360, 640) -> (360, 640)``, ``(480, 854, 360, 640) -> (360, 640)``,
    ``(240, 320, 320, 576) -> (320, 426)``.

    Raises:
        ValueError: ``short_size`` is below one pixel, or the short side would shrink below one pixel (a
            picture far longer than wide, such as 1x5000 with ``max_size=640``); the message gives both sizes.
    """
    if short_size < 1:
        raise ValueError(f"the short side must be resized to at least one pixel, got short_size={short_size}")
    short, long = min(h, w), max(h, w)
    if max_size is not None and long / short * short_size > max_size:
        short_size = int(round(max_size * short / long))
        if short_size < 1:
            raise ValueError(
                f"a {w}x{h} picture resized to a long side of at most {max_size} pixels would have a short side of "
                f"less than one pixel; the long side must be less than {2 * max_size} times the short side"
            )
    if short == short_size:
        return h, w
    if w < h:
        return int(short_size * h / w), short_size
    return short_size, int(short_size * w / h)


def swap_left_right(text: str) -> str:
    """Swap the whole words "left" and "right" (also "leftmost"/"rightmost"), keeping their case.

    "bright", "upright" and "lefty" are untouched; "Left" becomes "Right", "LEFT" becomes "RIGHT".
    """

    def swap(match: re.Match[str]) -> str:
        word = match.group(1)
        swapped = _SWAPPED[word.lower()]
        if word.isupper():
            swapped = swapped.upper()
        elif word[0].isupper():
            swapped = swapped.capitalize()
        return swapped + (match.group(2) or "")

    return _LEFT_RIGHT_WORD.sub(swap, text)


def swap_left_right_reference(text: str) -> str:
    """The reference's substring swap through an "@" token (parity only).

    It also rewrites substrings ("bright" -> "bleft", "upright" -> "upleft") and turns a literal "@"
    into "right" (docs/differences.md#horizontal-flip).
    """
    return text.replace("left", "@").replace("right", "left").replace("@", "right")


@dataclass
class FrameAnnotation:
    """The referred object in one frame, at original resolution, before any transform.

    Attributes:
        mask: ``[H, W]`` bool mask of the referred object (may be empty).
        label: class index stored in :attr:`FrameTarget.labels`.
        image_id: COCO ground-truth key, or ``None``.
    """

    mask: np.ndarray
    label: int
    image_id: str | None = None


class ClipTransform:
    """Flip, resize, normalise a clip and build its :class:`FrameTarget` list.

    Args:
        train: enables the horizontal flip.
        short_size: target short side (320 for A2D/JHMDB, 360 for Ref-YTVOS/COCO/DAVIS).
        max_size: cap on the long side (576 / 640), or ``None``.
        horizontal_flip: whether training flips at all.
        flip_mode: ``"uniform"`` flips with probability 0.5 and swaps whole words (wavecl default);
            ``"reference"`` flips when a standard-normal draw exceeds 0.5 (p ≈ 0.31) and swaps
            substrings, as the reference does.
    """

    def __init__(
        self,
        train: bool,
        short_size: int,
        max_size: int | None,
        horizontal_flip: bool = True,
        flip_mode: Literal["uniform", "reference"] = "uniform",
    ) -> None:
        if flip_mode not in ("uniform", "reference"):
            raise ValueError(f"flip_mode must be 'uniform' or 'reference', got {flip_mode!r}")
        self.train = train
        self.short_size = short_size
        self.max_size = max_size
        self.horizontal_flip = horizontal_flip
        self.flip_mode = flip_mode

    def _draw_flip(self, generator: torch.Generator | None) -> bool:
        if not (self.train and self.horizontal_flip):
            return False
        if self.flip_mode == "uniform":
            return bool(torch.rand(1, generator=generator).item() < 0.5)
        return bool(torch.randn(1, generator=generator).item() > 0.5)

    def __call__(
        self,
        frames: list[Image.Image],
        annotations: list[FrameAnnotation | None],
        text: str,
        generator: torch.Generator | None = None,
    ) -> tuple[Tensor, list[FrameTarget | None], str]:
        """Transform one clip.

        Args:
            frames: ``T`` RGB images of identical size ``W x H``.
            annotations: ``T`` entries, ``None`` for frames without annotation; masks are ``[H, W]``.
            text: the cleaned expression.
            generator: random source of the flip draw (the global torch RNG when ``None``).

        Returns:
            frames ``[T, 3, H', W']`` float (normalised), ``T`` targets (``None`` kept), the text
            (left/right swapped when flipped).
        """
        if len(frames) == 0 or len(frames) != len(annotations):
            raise ValueError(f"a clip needs as many annotations as frames, got {len(frames)} and {len(annotations)}")
        width, height = frames[0].size
        for index, frame in enumerate(frames):
            if frame.size != (width, height):
                raise ValueError(f"frame {index} is {frame.size[0]}x{frame.size[1]}, frame 0 is {width}x{height}")
        for index, annotation in enumerate(annotations):
            if annotation is not None and annotation.mask.shape != (height, width):
                raise ValueError(
                    f"mask of frame {index} has shape {list(annotation.mask.shape)}, the frame is {height}x{width}"
                )

        flip = self._draw_flip(generator)
        if flip:
            frames = [frame.transpose(Image.Transpose.FLIP_LEFT_RIGHT) for frame in frames]
            swap = swap_left_right if self.flip_mode == "uniform" else swap_left_right_reference
            text = swap(text)

        out_h, out_w = resize_shape(height, width, self.short_size, self.max_size)
        if (out_h, out_w) != (height, width):
            frames = [frame.resize((out_w, out_h), Image.Resampling.BILINEAR) for frame in frames]
        pixels = rearrange(torch.from_numpy(np.stack([np.asarray(frame) for frame in frames])), "t h w c -> t c h w")
        video = pixels.to(torch.float32, memory_format=torch.contiguous_format)
        video = video.sub_(_PIXEL_MEAN).div_(_PIXEL_STD)  # (x / 255 - mean) / std in one pass

        targets = [
            None if annotation is None else self._target(annotation, flip, (height, width), (out_h, out_w))
            for annotation in annotations
        ]
        return video, targets, text

    @staticmethod
    def _target(
        annotation: FrameAnnotation, flip: bool, orig_size: tuple[int, int], size: tuple[int, int]
    ) -> FrameTarget:
        """Resize one mask (legacy nearest, then > 0.5) and derive its normalised box."""
        mask = torch.from_numpy(np.ascontiguousarray(annotation.mask, dtype=bool))
        if flip:
            mask = mask.flip(-1)
        is_visible = bool(mask.any())
        (height, width), (out_h, out_w) = orig_size, size
        boxes = torch.zeros(1, 4)
        if is_visible:
            scale = torch.tensor([out_w / width, out_h / height, out_w / width, out_h / height])
            boxes_xyxy = masks_to_boxes(mask[None]) * scale
            boxes = box_convert(boxes_xyxy, "xyxy", "cxcywh") / torch.tensor([out_w, out_h, out_w, out_h])
        resized = F.interpolate(mask[None, None].float(), size=(out_h, out_w), mode="nearest")[0] > 0.5
        return FrameTarget(
            masks=resized,
            boxes=boxes,
            labels=torch.tensor([annotation.label], dtype=torch.long),
            is_visible=is_visible,
            orig_size=orig_size,
            size=size,
            image_id=annotation.image_id,
        )


def build_transform(config: DataConfig, split: Split) -> ClipTransform:
    """The training augmentation, or the evaluation resize, that ``config`` describes."""
    if split == "train":
        return ClipTransform(
            train=True,
            short_size=config.train_short_size,
            max_size=config.train_max_size,
            horizontal_flip=config.horizontal_flip,
            flip_mode=config.flip_mode,
        )
    return ClipTransform(train=False, short_size=config.eval_short_size, max_size=config.eval_max_size)
