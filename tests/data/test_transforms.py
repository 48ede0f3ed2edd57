"""Clip transforms and clip collation, checked against hand computations and naive loops."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from wavecl.data.collate import collate_clips
from wavecl.data.transforms import (
    ClipTransform,
    FrameAnnotation,
    clean_expression,
    resize_shape,
    swap_left_right,
    swap_left_right_reference,
)
from wavecl.data.types import A2DMetadata, ClipSample, FrameTarget

MEAN = np.array([0.485, 0.456, 0.406])
STD = np.array([0.229, 0.224, 0.225])


def normalised(image: Image.Image) -> np.ndarray:
    """``[3, H, W]`` ImageNet-normalised array, computed without torchvision."""
    array = np.asarray(image, dtype=np.float64) / 255.0
    return ((array - MEAN) / STD).transpose(2, 0, 1)


def naive_box_cxcywh(mask: np.ndarray, out_h: int, out_w: int) -> list[float]:
    """Inclusive-max box of ``mask`` by loops, scaled to ``(out_h, out_w)``, as normalised cx, cy, w, h."""
    h, w = mask.shape
    xs = [x for y in range(h) for x in range(w) if mask[y, x]]
    ys = [y for y in range(h) for x in range(w) if mask[y, x]]
    x1, x2 = min(xs) * out_w / w, max(xs) * out_w / w
    y1, y2 = min(ys) * out_h / h, max(ys) * out_h / h
    return [(x1 + x2) / 2 / out_w, (y1 + y2) / 2 / out_h, (x2 - x1) / out_w, (y2 - y1) / out_h]


def naive_nearest(mask: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """Legacy nearest: output pixel (i, j) reads input (floor(i * H / H'), floor(j * W / W'))."""
    h, w = mask.shape
    return np.array([[mask[(i * h) // out_h, (j * w) // out_w] for j in range(out_w)] for i in range(out_h)])


def random_clip(rng: np.random.Generator, frames: int, height: int, width: int) -> list[Image.Image]:
    return [Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)) for _ in range(frames)]


# ------------------------------------------------------------------------------------ resize rule


@pytest.mark.parametrize(
    ("size", "short", "cap", "expected"),
    [
        ((720, 1280), 360, 640, (360, 640)),  # Ref-YTVOS
        ((480, 854), 360, 640, (360, 640)),  # DAVIS: the cap gives round(359.7) = 360
        ((240, 320), 320, 576, (320, 426)),  # JHMDB: int(426.67) truncates
        ((1280, 720), 360, 640, (640, 360)),  # portrait
        ((320, 426), 320, 576, (320, 426)),  # short side already 320: unchanged
        ((5, 1152), 320, 576, (2, 460)),  # cap: round(2.5) = 2 (half to even), int(460.8) = 460
        ((7, 1152), 320, 576, (4, 658)),  # cap: round(3.5) = 4, int(658.3) = 658
        ((300, 300), 320, None, (320, 320)),  # square, no cap
    ],
)
def test_resize_shape(size: tuple[int, int], short: int, cap: int | None, expected: tuple[int, int]) -> None:
    assert resize_shape(*size, short, cap) == expected


@pytest.mark.parametrize("cap", [None, 640])
def test_resize_shape_refuses_a_short_side_below_one_pixel(cap: int | None) -> None:
    with pytest.raises(ValueError, match="short_size=0"):
        resize_shape(480, 640, 0, cap)
    with pytest.raises(ValueError, match="short side of less than one pixel"):
        resize_shape(1, 5000, 360, 640)


# ------------------------------------------------------------------------------------- text swap


def test_swap_left_right_whole_words() -> None:
    assert swap_left_right("the left man and the right dog") == "the right man and the left dog"
    assert swap_left_right("bright upright lefty") == "bright upright lefty"
    assert swap_left_right("Left hand, RIGHT foot") == "Right hand, LEFT foot"
    assert swap_left_right("the leftmost car, left-hand side") == "the rightmost car, right-hand side"


def test_swap_left_right_reference_mangles_substrings() -> None:
    assert swap_left_right_reference("the bright left car on the right") == "the bleft right car on the left"
    assert swap_left_right_reference("an upright man @ home") == "an upleft man right home"


def test_clean_expression() -> None:
    assert clean_expression("  The  Man\tRunning \n", "file") == "the man running"
    with pytest.raises(ValueError, match="annotations.txt line 3"):
        clean_expression(" \t ", "annotations.txt line 3")


# --------------------------------------------------------------------------------------- transform


def test_eval_transform_matches_independent_resize_and_normalisation() -> None:
    rng = np.random.default_rng(0)
    frames = random_clip(rng, 3, 24, 36)
    mask = np.zeros((24, 36), dtype=bool)
    mask[5:17, 7:30] = True
    mask[3, 2] = True
    transform = ClipTransform(train=False, short_size=16, max_size=None)
    annotations = [None, FrameAnnotation(mask, label=3, image_id="v_x_f_2"), None]
    video, targets, text = transform(frames, annotations, "a left dog")

    assert text == "a left dog"
    assert video.shape == (3, 3, 16, 24)
    for frame, expected in zip(video, frames):
        reference = normalised(expected.resize((24, 16), Image.Resampling.BILINEAR))
        np.testing.assert_allclose(frame.numpy(), reference, atol=1e-5)
    assert targets[0] is None and targets[2] is None
    target = targets[1]
    assert isinstance(target, FrameTarget)
    np.testing.assert_array_equal(target.masks[0].numpy(), naive_nearest(mask, 16, 24))
    assert target.masks.dtype == torch.bool and target.masks.shape == (1, 16, 24)
    np.testing.assert_allclose(target.boxes[0].tolist(), naive_box_cxcywh(mask, 16, 24), rtol=1e-6)
    assert target.labels.tolist() == [3]
    assert target.is_visible and target.orig_size == (24, 36) and target.size == (16, 24)
    assert target.image_id == "v_x_f_2"


def test_visibility_is_decided_on_the_original_mask() -> None:
    mask = np.zeros((4, 4), dtype=bool)
    mask[1, 1] = True  # not sampled by nearest when downscaling 4 -> 2
    frames = [Image.new("RGB", (4, 4))]
    _, (target,), _ = ClipTransform(False, 2, None)(frames, [FrameAnnotation(mask, 0)], "x")
    assert target is not None
    assert target.is_visible and not target.masks.any()
    np.testing.assert_allclose(target.boxes[0].tolist(), naive_box_cxcywh(mask, 2, 2))

    _, (empty,), _ = ClipTransform(False, 2, None)(frames, [FrameAnnotation(np.zeros((4, 4), bool), 0)], "x")
    assert empty is not None and not empty.is_visible
    assert empty.boxes.tolist() == [[0.0, 0.0, 0.0, 0.0]]


def test_flip_changes_frames_masks_boxes_and_sentence_together() -> None:
    rng = np.random.default_rng(1)
    frames = random_clip(rng, 2, 10, 14)
    mask = np.zeros((10, 14), dtype=bool)
    mask[2:6, 1:5] = True
    transform = ClipTransform(train=True, short_size=10, max_size=None)
    seen = set()
    for seed in range(12):
        generator = torch.Generator().manual_seed(seed)
        video, (_, target), text = transform(frames, [None, FrameAnnotation(mask, 0)], "the left bright cup", generator)
        flipped = text != "the left bright cup"
        seen.add(flipped)
        expected_frames = [f.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if flipped else f for f in frames]
        expected_mask = mask[:, ::-1] if flipped else mask
        assert text == ("the right bright cup" if flipped else "the left bright cup")
        for frame, expected in zip(video, expected_frames):
            np.testing.assert_allclose(frame.numpy(), normalised(expected), atol=1e-5)
        assert target is not None
        np.testing.assert_array_equal(target.masks[0].numpy(), expected_mask)
        np.testing.assert_allclose(target.boxes[0].tolist(), naive_box_cxcywh(expected_mask, 10, 14), rtol=1e-6)
    assert seen == {True, False}


def test_reference_flip_mode_swaps_substrings() -> None:
    transform = ClipTransform(train=True, short_size=2, max_size=None, flip_mode="reference")
    frames = [Image.new("RGB", (2, 2))]
    texts = {transform(frames, [None], "bright left", torch.Generator().manual_seed(s))[2] for s in range(20)}
    assert texts == {"bright left", "bleft right"}


@pytest.mark.parametrize(("mode", "probability"), [("uniform", 0.5), ("reference", 0.3085)])
def test_flip_probability(mode: str, probability: float) -> None:
    transform = ClipTransform(train=True, short_size=1, max_size=None, flip_mode=mode)  # type: ignore[arg-type]
    frames = [Image.new("RGB", (1, 1))]
    generator = torch.Generator().manual_seed(0)
    draws = 3000
    flips = sum(transform(frames, [None], "left", generator)[2] == "right" for _ in range(draws))
    assert abs(flips / draws - probability) < 0.035  # > 3.5 standard deviations


def test_no_flip_in_eval_or_when_disabled() -> None:
    frames = [Image.new("RGB", (2, 2))]
    for transform in (ClipTransform(False, 2, None), ClipTransform(True, 2, None, horizontal_flip=False)):
        assert all(transform(frames, [None], "left", torch.Generator().manual_seed(s))[2] == "left" for s in range(20))


def test_transform_rejects_mismatched_mask_and_frames() -> None:
    transform = ClipTransform(False, 4, None)
    with pytest.raises(ValueError, match="mask of frame 0"):
        transform([Image.new("RGB", (4, 4))], [FrameAnnotation(np.zeros((4, 5), bool), 0)], "x")
    with pytest.raises(ValueError, match="frame 1"):
        transform([Image.new("RGB", (4, 4)), Image.new("RGB", (5, 4))], [None, None], "x")
    with pytest.raises(ValueError, match="flip_mode"):
        ClipTransform(True, 4, None, flip_mode="gaussian")  # type: ignore[arg-type]


# ----------------------------------------------------------------------------------------- collate


def make_target(height: int, width: int, value: int) -> FrameTarget:
    return FrameTarget(
        masks=torch.zeros(1, height, width, dtype=torch.bool),
        boxes=torch.full((1, 4), value / 10),
        labels=torch.tensor([value]),
        is_visible=True,
        orig_size=(height, width),
        size=(height, width),
    )


def test_collate_pads_and_makes_time_major() -> None:
    torch.manual_seed(0)
    first = ClipSample(
        frames=torch.randn(3, 3, 5, 7),
        targets=[None, make_target(5, 7, 1), None],
        text="a",
        metadata=A2DMetadata("v1", 2, "v_v1_f_2"),
    )
    second = ClipSample(
        frames=torch.randn(2, 3, 6, 4),
        targets=[make_target(6, 4, 2), make_target(6, 4, 3)],
        text="b",
        metadata=A2DMetadata("v2", 1, "v_v2_f_1"),
    )
    batch = collate_clips([first, second])

    assert batch.frames.shape == (3, 2, 3, 6, 7) and batch.pad_mask.shape == (3, 2, 6, 7)
    assert batch.image_sizes.tolist() == [[5, 7], [6, 4]]
    assert batch.texts == ["a", "b"] and batch.metadata == [first.metadata, second.metadata]
    for b, sample in enumerate((first, second)):
        t_b, _, h_b, w_b = sample.frames.shape
        for t in range(3):
            for y in range(6):
                for x in range(7):
                    real = t < t_b and y < h_b and x < w_b
                    assert bool(batch.pad_mask[t, b, y, x]) is (not real)
                    expected = sample.frames[t, :, y, x] if real else torch.zeros(3)
                    assert torch.equal(batch.frames[t, b, :, y, x], expected)
            expected_target = sample.targets[t] if t < t_b else None
            assert batch.targets[t][b] is expected_target
    assert batch.num_frames == 3 and batch.batch_size == 2


def test_collate_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="empty"):
        collate_clips([])
    with pytest.raises(ValueError, match="2 frames but 1 targets"):
        collate_clips([ClipSample(torch.zeros(2, 3, 2, 2), [None], "x")])
