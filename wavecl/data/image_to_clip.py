"""Still image -> pseudo-video for joint training on RefCOCO (docs/datasets.md#pseudo-videos).

A clip of ``T`` frames is the original image plus ``T - 1`` independent random augmentations of it,
shuffled. Each augmentation applies, in this order:

1. a brightness offset, one integer in ``[-40, 40]`` added to every channel (image only);
2. a perspective distortion: every corner of the image moves inwards by ``|N(0, 0.08)|`` of the image
   side and the resulting quadrilateral is stretched back to the full frame (image and mask);
3. an affine map: rotation uniform in ``±20°`` about the centre, translation uniform in ``±10 %`` of
   the width and height, scale 1; bilinear for the image, nearest for the mask, black outside;
4. with probability 0.25, motion blur along a random direction with a 9 or 11 pixel line kernel
   (image only).

The reference builds this with imgaug, which is not among our dependencies; this is the same pipeline
with the same parameters written with torchvision's functional transforms, so its random draws differ
from imgaug's. The reference seeds every frame from the wall clock; here every draw comes from a
``torch.Generator`` (or the global one, which the DataLoader seeds per worker), so clips are reproducible.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as TF


def motion_blur_kernel(size: int, angle: float) -> Tensor:
    """``[size, size]`` float kernel: a centred line of length ``size`` at ``angle`` degrees, summing to 1."""
    line = torch.zeros(1, size, size)
    line[0, size // 2, :] = 1.0
    rotated = TF.rotate(line, angle, interpolation=InterpolationMode.BILINEAR)[0]
    return rotated / rotated.sum()


class ImageToClipAugmenter:
    """Make ``T`` (image, mask) pairs from one pair; see the module docstring for the pipeline.

    Args:
        brightness: largest absolute brightness offset (integer levels).
        perspective_scale: standard deviation of the corner displacement, as a fraction of the side.
        translate: largest translation as a fraction of width/height.
        rotate: largest rotation in degrees.
        motion_blur_probability: chance of motion blur per augmented frame.
        motion_blur_sizes: kernel sizes to choose from.
    """

    def __init__(
        self,
        brightness: int = 40,
        perspective_scale: float = 0.08,
        translate: float = 0.1,
        rotate: float = 20.0,
        motion_blur_probability: float = 0.25,
        motion_blur_sizes: tuple[int, ...] = (9, 11),
    ) -> None:
        self.brightness = brightness
        self.perspective_scale = perspective_scale
        self.translate = translate
        self.rotate = rotate
        self.motion_blur_probability = motion_blur_probability
        self.motion_blur_sizes = motion_blur_sizes

    @staticmethod
    def _uniform(low: float, high: float, generator: torch.Generator | None) -> float:
        return low + (high - low) * float(torch.rand(1, generator=generator))

    def augment(self, image: Tensor, mask: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """One random augmentation.

        Args:
            image: ``[3, H, W]`` uint8.
            mask: ``[1, H, W]`` uint8 (0/1).

        Returns:
            The augmented ``[3, H, W]`` uint8 image and ``[1, H, W]`` uint8 mask.
        """
        height, width = image.shape[-2:]
        offset = int(torch.randint(-self.brightness, self.brightness + 1, (1,), generator=generator))
        image = (image.to(torch.int16) + offset).clamp(0, 255).to(torch.uint8)

        inward = (torch.randn(4, 2, generator=generator).abs() * self.perspective_scale).tolist()
        corners = [[0, 0], [width - 1, 0], [width - 1, height - 1], [0, height - 1]]
        signs = [(1, 1), (-1, 1), (-1, -1), (1, -1)]
        quad = [
            [x + sx * dx * width, y + sy * dy * height] for (x, y), (sx, sy), (dx, dy) in zip(corners, signs, inward)
        ]
        image = TF.perspective(image, quad, corners, interpolation=InterpolationMode.BILINEAR)
        mask = TF.perspective(mask, quad, corners, interpolation=InterpolationMode.NEAREST)

        angle = self._uniform(-self.rotate, self.rotate, generator)
        shift = [
            self._uniform(-self.translate, self.translate, generator) * width,
            self._uniform(-self.translate, self.translate, generator) * height,
        ]
        image = TF.affine(image, angle, shift, 1.0, [0.0, 0.0], interpolation=InterpolationMode.BILINEAR)
        mask = TF.affine(mask, angle, shift, 1.0, [0.0, 0.0], interpolation=InterpolationMode.NEAREST)

        if float(torch.rand(1, generator=generator)) < self.motion_blur_probability:
            size = self.motion_blur_sizes[int(torch.randint(len(self.motion_blur_sizes), (1,), generator=generator))]
            kernel = motion_blur_kernel(size, self._uniform(0.0, 360.0, generator))
            padded = F.pad(image[None].float(), [size // 2] * 4, mode="replicate")
            blurred = F.conv2d(padded, kernel.expand(3, 1, size, size), groups=3)[0]
            image = blurred.round().clamp(0, 255).to(torch.uint8)
        return image, mask

    def __call__(
        self,
        image: Image.Image,
        mask: np.ndarray,
        num_frames: int,
        generator: torch.Generator | None = None,
    ) -> tuple[list[Image.Image], list[np.ndarray]]:
        """Build a shuffled pseudo-video.

        Args:
            image: the RGB image, ``W x H``.
            mask: ``[H, W]`` bool mask of the referred object.
            num_frames: clip length ``T`` (the original image is one of the frames).
            generator: random source; the global torch generator when ``None``.

        Returns:
            ``T`` RGB images and ``T`` ``[H, W]`` bool masks, in a random order.
        """
        if num_frames < 1:
            raise ValueError(f"num_frames must be >= 1, got {num_frames}")
        image_tensor = TF.pil_to_tensor(image)
        mask_tensor = torch.from_numpy(np.ascontiguousarray(mask, dtype=np.uint8))[None]
        pairs = [(image_tensor, mask_tensor)]
        pairs += [self.augment(image_tensor, mask_tensor, generator) for _ in range(num_frames - 1)]
        order = torch.randperm(num_frames, generator=generator).tolist()
        frames = [TF.to_pil_image(pairs[i][0]) for i in order]
        masks = [pairs[i][1][0].numpy().astype(bool) for i in order]
        return frames, masks
