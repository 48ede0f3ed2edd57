"""Post-processing: upsample, threshold, crop, nearest-resize and query selection on hand-built cases."""

import math

import torch

from wavecl.model.postprocess import (
    a2d_postprocess,
    refcoco_postprocess,
    select_video_query,
    video_postprocess,
    video_probabilities,
)

POS, NEG = 10.0, -10.0


def logit(p: float) -> float:
    return math.log(p / (1 - p))


LEFT = torch.tensor([[POS, NEG], [POS, NEG]])  # stride-4 logits whose left column is foreground
RIGHT = LEFT.flip(1)
BOTTOM = LEFT.flip(1).T
EMPTY = torch.full((2, 2), NEG)


def block(height: int, width: int, rows: slice, cols: slice) -> torch.Tensor:
    mask = torch.zeros(height, width, dtype=torch.bool)
    mask[rows, cols] = True
    return mask


# Bilinear x4 (align_corners=False) of a 2-cell axis: output pixel x samples input coordinate
# (x + 0.5) / 4 - 0.5, so with cells (POS, NEG) pixels 0..7 get 10, 10, 7.5, 2.5, -2.5, -7.5, -10, -10:
# LEFT covers columns [0:4] of the 8x8 padded frame, RIGHT columns [4:8], BOTTOM rows [4:8].
# Nearest resizing from n to m samples source index floor(dst * n / m).


def test_a2d_postprocess_crops_padding_then_nearest_resizes():
    pred_masks = torch.stack([torch.stack([LEFT, BOTTOM]), torch.stack([LEFT, BOTTOM])])  # [B=2, Q=2, 2, 2]
    pred_cls = torch.tensor([[[0.0], [logit(0.8)]], [[logit(0.3)], [2.0]]])
    out = a2d_postprocess(pred_cls, pred_masks, (8, 8), sizes=[(6, 6), (4, 8)], orig_sizes=[(3, 3), (4, 8)])

    assert len(out) == 2
    torch.testing.assert_close(out[0]["scores"], torch.tensor([0.5, 0.8]))
    torch.testing.assert_close(out[1]["scores"], torch.sigmoid(torch.tensor([logit(0.3), 2.0])))
    # Sample 0: crop [:6, :6], then 6 -> 3 samples source rows/cols 0, 2, 4.
    assert out[0]["masks"].dtype == torch.bool and out[0]["masks"].shape == (2, 3, 3)
    assert torch.equal(out[0]["masks"][0], block(3, 3, slice(None), slice(0, 2)))
    assert torch.equal(out[0]["masks"][1], block(3, 3, slice(2, 3), slice(None)))
    # Sample 1: the crop [:4, :8] removes the bottom half entirely; resizing to the same size is the identity.
    assert out[1]["masks"].shape == (2, 4, 8)
    assert torch.equal(out[1]["masks"][0], block(4, 8, slice(None), slice(0, 4)))
    assert not out[1]["masks"][1].any()


def test_a2d_postprocess_non_square_original_size():
    pred_masks = torch.stack([LEFT, BOTTOM])[None]
    out = a2d_postprocess(torch.zeros(1, 2, 1), pred_masks, (8, 8), sizes=[(6, 6)], orig_sizes=[(3, 6)])
    # Rows 6 -> 3 sample source rows 0, 2, 4; columns keep their size.
    assert torch.equal(out[0]["masks"][0], block(3, 6, slice(None), slice(0, 4)))
    assert torch.equal(out[0]["masks"][1], block(3, 6, slice(2, 3), slice(None)))


def test_select_video_query_averages_over_time_before_max_over_classes():
    # Query 0: class 0 is 0.9 then 0.1, class 1 is 0.1 then 0.9 -> per-class means 0.5, 0.5 -> 0.5.
    # Query 1: class 0 is 0.6 at both frames -> 0.6. Max-then-mean would wrongly prefer query 0 (0.9).
    probs = torch.tensor(
        [
            [[0.9, 0.1], [0.6, 0.2], [0.3, 0.3]],
            [[0.1, 0.9], [0.6, 0.2], [0.3, 0.3]],
        ]
    )
    assert select_video_query(torch.logit(probs)) == 1


def test_select_video_query_ties_go_to_the_lowest_index():
    assert select_video_query(torch.zeros(3, 4, 1)) == 0


def test_video_postprocess_uses_the_selected_query_for_every_frame():
    frames = 3
    pred_cls = torch.full((frames, 3, 1), -5.0)
    pred_cls[:, 2, 0] = 5.0
    pred_masks = LEFT.repeat(frames, 3, 1, 1)
    pred_masks[:, 2] = RIGHT
    pred_masks[1, 2] = EMPTY  # the object disappears in frame 1
    query, masks = video_postprocess(pred_cls, pred_masks, (8, 8), (8, 8), (4, 4))
    assert query == 2
    assert masks.shape == (frames, 4, 4) and masks.dtype == torch.bool
    expected = block(4, 4, slice(None), slice(2, 4))  # columns [4:8] sampled at source 0, 2, 4, 6
    assert torch.equal(masks[0], expected) and torch.equal(masks[2], expected)
    assert not masks[1].any()


def test_video_probabilities_agree_with_binary_masks_without_resizing():
    generator = torch.Generator().manual_seed(0)
    pred_cls = torch.randn(4, 5, 2, generator=generator)
    pred_masks = torch.randn(4, 5, 3, 4, generator=generator) * 4
    query, masks = video_postprocess(pred_cls, pred_masks, (12, 16), (12, 16), (12, 16))
    query_p, probabilities = video_probabilities(pred_cls, pred_masks, (12, 16), (12, 16), (12, 16))
    assert query_p == query
    assert probabilities.shape == (4, 12, 16)
    assert ((probabilities > 0) & (probabilities < 1)).all()
    assert torch.equal(probabilities > 0.5, masks)


def test_video_postprocess_threshold_selects_pixels_above_that_probability():
    generator = torch.Generator().manual_seed(1)
    pred_cls = torch.randn(3, 4, 1, generator=generator)
    pred_masks = torch.randn(3, 4, 3, 4, generator=generator) * 3
    query, probabilities = video_probabilities(pred_cls, pred_masks, (12, 16), (12, 16), (12, 16))
    for threshold in (0.2, 0.5, 0.8):
        query_t, masks = video_postprocess(pred_cls, pred_masks, (12, 16), (12, 16), (12, 16), threshold=threshold)
        assert query_t == query
        assert torch.equal(masks, probabilities > threshold)
    low, high = (
        video_postprocess(pred_cls, pred_masks, (12, 16), (12, 16), (12, 16), threshold=t)[1] for t in (0.2, 0.8)
    )
    assert high.sum() < low.sum() and not (high & ~low).any()


def test_video_probabilities_crop_padding():
    pred_cls = torch.zeros(1, 1, 1)
    _, probabilities = video_probabilities(pred_cls, LEFT[None, None], (8, 8), (8, 4), (8, 4))
    # The crop keeps the foreground columns [0:4] only (logits 10, 10, 7.5, 2.5); resizing the uncropped
    # 8 columns to 4 instead would make columns 2-3 background.
    assert probabilities.shape == (1, 8, 4)
    torch.testing.assert_close(probabilities[0, 0], torch.sigmoid(torch.tensor([10.0, 10.0, 7.5, 2.5])))


def test_refcoco_postprocess_sorts_queries_and_scales_boxes():
    pred_cls = torch.logit(torch.tensor([[[0.2], [0.9], [0.5]]]))
    pred_boxes = torch.tensor([[[0.5, 0.5, 0.5, 0.25], [0.25, 0.5, 0.5, 1.0], [0.5, 0.5, 1.0, 1.0]]])
    pred_masks = torch.stack([LEFT, BOTTOM, EMPTY])[None]
    (out,) = refcoco_postprocess(pred_cls, pred_boxes, pred_masks, sizes=[(6, 6)], orig_sizes=[(100, 200)])

    torch.testing.assert_close(out["scores"], torch.tensor([0.9, 0.5, 0.2]))
    assert out["queries"].tolist() == [1, 2, 0]
    # (cx, cy, w, h) normalised -> xyxy times (W, H, W, H) = (200, 100, 200, 100).
    torch.testing.assert_close(
        out["boxes"],
        torch.tensor([[0.0, 0.0, 100.0, 100.0], [0.0, 0.0, 200.0, 100.0], [50.0, 37.5, 150.0, 62.5]]),
    )
    assert out["masks"].shape == (3, 100, 200)
    # Query 1 (rows [4:8] of the x4 upsampling, crop to 6x6 -> rows [4:6]) resized nearest 6 -> 100 rows:
    # destination row y samples floor(y * 6 / 100), so rows 67..99 are foreground.
    rows = torch.tensor([math.floor(y * 6 / 100) for y in range(100)])
    assert torch.equal(out["masks"][0], (rows >= 4)[:, None].expand(100, 200))
    assert not out["masks"][1].any()
    # Query 0: columns [0:4] of 6, destination column x samples floor(x * 6 / 200).
    cols = torch.tensor([math.floor(x * 6 / 200) for x in range(200)])
    assert torch.equal(out["masks"][2], (cols < 4)[None, :].expand(100, 200))
