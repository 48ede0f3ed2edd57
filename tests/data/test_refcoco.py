"""RefCOCO loader, ground-truth builder and pseudo-video augmenter against the raw-format fixture."""

from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as coco_mask
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from wavecl.data.collate import collate_clips
from wavecl.data.image_to_clip import ImageToClipAugmenter, motion_blur_kernel
from wavecl.data.refcoco import RefCOCO, build_refcoco_gt, refcoco_annotation_path
from wavecl.data.transforms import IMAGENET_MEAN, IMAGENET_STD, ClipTransform
from wavecl.testing.refcoco import write_refcoco_fixture


@pytest.fixture(scope="module")
def fixture(tmp_path_factory):
    return write_refcoco_fixture(tmp_path_factory.mktemp("coco"))


def _identity_transform(height: int, width: int) -> ClipTransform:
    """An eval transform that keeps the original size (short side already at its target)."""
    return ClipTransform(train=False, short_size=min(height, width), max_size=None)


def _denormalise(frames: torch.Tensor) -> np.ndarray:
    """``[T, 3, H, W]`` normalised -> ``[T, H, W, 3]`` uint8."""
    mean = torch.tensor(IMAGENET_MEAN)[:, None, None]
    std = torch.tensor(IMAGENET_STD)[:, None, None]
    return ((frames * std + mean) * 255).round().clamp(0, 255).byte().permute(0, 2, 3, 1).numpy()


def test_round_trip_masks_boxes_sentences_pixels(fixture):
    dataset = RefCOCO(fixture.root, "refcoco", "val", transform=_identity_transform(1, 1))
    assert len(dataset) == len(fixture.expressions) == 4
    assert dataset.num_dropped == fixture.num_dropped == 2
    for index, expected in enumerate(fixture.expressions):
        height, width = expected.mask.shape
        dataset.transform = _identity_transform(height, width)
        sample = dataset[index]
        assert sample.frames.shape == (1, 3, height, width)
        assert sample.text == " ".join(expected.caption.lower().split())
        (target,) = sample.targets
        assert target.image_id == str(expected.image_id)
        assert target.labels.tolist() == [expected.category_id]
        assert target.is_visible
        assert target.orig_size == (height, width) and target.size == (height, width)
        assert torch.equal(target.masks[0], torch.from_numpy(expected.mask))
        ys, xs = np.nonzero(expected.mask)  # inclusive-max box of the mask, normalised cxcywh
        cx, cy = (xs.min() + xs.max()) / 2 / width, (ys.min() + ys.max()) / 2 / height
        w, h = (xs.max() - xs.min()) / width, (ys.max() - ys.min()) / height
        torch.testing.assert_close(target.boxes, torch.tensor([[cx, cy, w, h]], dtype=torch.float32))
        decoded = np.asarray(Image.open(fixture.root / "train2014" / expected.file_name).convert("RGB"))
        assert np.abs(_denormalise(sample.frames)[0].astype(int) - decoded.astype(int)).max() <= 1
        assert sample.metadata.original_image_id == expected.original_image_id
        assert sample.metadata.orig_size == (height, width)


def test_segmentation_kinds_are_all_covered(fixture):
    assert {e.segmentation_kind for e in fixture.expressions} == {"polygon", "rle", "compressed_rle"}


def test_other_dataset_names_and_splits(tmp_path):
    written = write_refcoco_fixture(tmp_path, dataset="refcoco+", split="train")
    assert (
        refcoco_annotation_path(tmp_path, "refcoco+", "train")
        == tmp_path / "refcoco+" / "instances_refcoco+_train.json"
    )
    assert written.annotation_path == refcoco_annotation_path(tmp_path, "refcoco+", "train")
    dataset = RefCOCO(tmp_path, "refcoco+", "train", transform=ClipTransform(True, 32, 64))
    assert len(dataset) == 4
    sample = dataset[0]
    assert sample.frames.shape[:2] == (1, 3) and min(sample.frames.shape[-2:]) == 32
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "coco").symlink_to(tmp_path)
    from_parent = RefCOCO(tmp_path / "data", "refcoco+", "train", transform=ClipTransform(True, 32, 64))
    assert from_parent.annotation_path == tmp_path / "data" / "coco" / "refcoco+" / "instances_refcoco+_train.json"
    assert len(from_parent[3].targets) == 1
    with pytest.raises(ValueError, match="dataset must be one of"):
        RefCOCO(tmp_path, "refclef", "train", transform=ClipTransform(False, 32, 64))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="split must be one of"):
        RefCOCO(tmp_path, "refcoco+", "testA", transform=ClipTransform(False, 32, 64))  # type: ignore[arg-type]


def test_ground_truth_matches_fixture_and_scores_perfect_predictions(fixture):
    dataset = RefCOCO(fixture.root, "refcoco", "val", transform=_identity_transform(40, 40))
    coco = build_refcoco_gt(dataset)
    assert sorted(coco.getImgIds()) == sorted(e.image_id for e in fixture.expressions)
    predictions = []
    for expected in fixture.expressions:
        (annotation,) = coco.imgToAnns[expected.image_id]
        assert np.array_equal(coco.annToMask(annotation).astype(bool), expected.mask)
        assert annotation["bbox"] == expected.bbox
        assert annotation["category_id"] == expected.category_id
        assert coco.imgs[expected.image_id]["height"] == expected.mask.shape[0]
        rle = coco_mask.encode(np.asfortranarray(expected.mask.astype(np.uint8)))
        predictions.append({"image_id": expected.image_id, "category_id": 1, "segmentation": rle, "score": 0.9})
        wrong = np.roll(expected.mask, 7, axis=1) & ~expected.mask
        predictions.append(
            {
                "image_id": expected.image_id,
                "category_id": 1,
                "segmentation": coco_mask.encode(np.asfortranarray(wrong.astype(np.uint8))),
                "score": 0.1,
            }
        )
    with contextlib.redirect_stdout(io.StringIO()):
        evaluator = COCOeval(coco, coco.loadRes(predictions), iouType="segm")
        evaluator.params.useCats = 0
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    assert evaluator.stats[0] == pytest.approx(1.0)  # the correct masks rank first on every image


def test_ground_truth_equals_file_loaded_by_pycocotools(fixture):
    with contextlib.redirect_stdout(io.StringIO()):
        reference = COCO(str(fixture.annotation_path))
    dataset = RefCOCO(fixture.root, "refcoco", "val", transform=_identity_transform(40, 40))
    built = build_refcoco_gt(dataset)
    for expected in fixture.expressions:
        (from_file,) = reference.imgToAnns[expected.image_id]
        (ours,) = built.imgToAnns[expected.image_id]
        assert np.array_equal(reference.annToMask(from_file), built.annToMask(ours))
        assert from_file["bbox"] == ours["bbox"] and from_file["area"] == ours["area"]


def test_pseudo_video_frames_and_targets(fixture):
    expected = fixture.expressions[0]
    height, width = expected.mask.shape
    dataset = RefCOCO(fixture.root, "refcoco", "val", transform=_identity_transform(height, width), num_frames=5)
    torch.manual_seed(3)
    sample = dataset[0]
    torch.manual_seed(3)
    again = dataset[0]
    assert torch.equal(sample.frames, again.frames)
    assert sample.frames.shape == (5, 3, height, width) and len(sample.targets) == 5
    assert all(
        t.labels.tolist() == [expected.category_id] and t.image_id == str(expected.image_id) for t in sample.targets
    )
    original = torch.from_numpy(expected.mask)
    untouched = [t for t in range(5) if torch.equal(sample.targets[t].masks[0], original)]
    assert len(untouched) == 1  # the original image is one of the frames, the others are warped
    decoded = np.asarray(Image.open(fixture.root / "train2014" / expected.file_name).convert("RGB"))
    assert np.abs(_denormalise(sample.frames)[untouched[0]].astype(int) - decoded.astype(int)).max() <= 1
    batch = collate_clips([sample, dataset[1]])
    assert batch.frames.shape == (5, 2, 3, height, width)


def test_augmenter_moves_image_and_mask_together():
    height, width = 60, 80
    mask = np.zeros((height, width), dtype=bool)
    mask[15:45, 20:55] = True
    image = Image.fromarray(np.where(mask[..., None], 255, 0).astype(np.uint8).repeat(3, axis=2))
    augmenter = ImageToClipAugmenter(brightness=0, motion_blur_probability=0.0)
    generator = torch.Generator().manual_seed(0)
    frames, masks = augmenter(image, mask, num_frames=6, generator=generator)
    changed = 0
    for frame, frame_mask in zip(frames, masks):
        bright = np.asarray(frame)[..., 0] > 127
        iou = (bright & frame_mask).sum() / (bright | frame_mask).sum()
        assert iou > 0.9
        changed += not np.array_equal(frame_mask, mask)
    assert changed == 5


def test_augmenter_is_reproducible_from_a_generator():
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (32, 48, 3), dtype=np.uint8))
    mask = rng.random((32, 48)) > 0.5
    augmenter = ImageToClipAugmenter(motion_blur_probability=0.5)
    first = augmenter(image, mask, 4, torch.Generator().manual_seed(7))
    second = augmenter(image, mask, 4, torch.Generator().manual_seed(7))
    third = augmenter(image, mask, 4, torch.Generator().manual_seed(8))
    assert all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(first[0], second[0]))
    assert all(np.array_equal(a, b) for a, b in zip(first[1], second[1]))
    assert not all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(first[0], third[0]))


def test_motion_blur_kernel_is_a_normalised_line():
    kernel = motion_blur_kernel(9, 0.0)
    assert kernel.sum().item() == pytest.approx(1.0)
    assert torch.allclose(kernel[4], torch.full((9,), 1 / 9)) and kernel[:4].abs().sum() == 0
    vertical = motion_blur_kernel(9, 90.0)
    assert torch.allclose(vertical[:, 4], torch.full((9,), 1 / 9), atol=1e-6)


def _rewrite(fixture, tmp_path, edit) -> None:
    """Copy the fixture's json and images under ``tmp_path`` after ``edit(data)``."""
    data = json.loads(fixture.annotation_path.read_text())
    edit(data)
    (tmp_path / "refcoco").mkdir(exist_ok=True)
    (tmp_path / "refcoco" / "instances_refcoco_val.json").write_text(json.dumps(data))


def test_bad_input_errors_name_the_file(fixture, tmp_path):
    transform = ClipTransform(False, 40, None)
    with pytest.raises(FileNotFoundError, match="instances_refcoco_val.json"):
        RefCOCO(tmp_path, "refcoco", "val", transform)

    (tmp_path / "refcoco").mkdir()
    (tmp_path / "refcoco" / "instances_refcoco_val.json").write_text("{not json")
    with pytest.raises(ValueError, match="malformed JSON in .*instances_refcoco_val.json"):
        RefCOCO(tmp_path, "refcoco", "val", transform)

    _rewrite(fixture, tmp_path, lambda data: data["annotations"][0].pop("segmentation"))
    with pytest.raises(ValueError, match=r"instances_refcoco_val\.json: annotation of image 1 has no 'segmentation'"):
        RefCOCO(tmp_path, "refcoco", "val", transform)

    _rewrite(fixture, tmp_path, lambda data: data["images"][2].pop("caption"))
    with pytest.raises(ValueError, match=r"images\[2\] has no 'caption'"):
        RefCOCO(tmp_path, "refcoco", "val", transform)

    def orphan(data):
        data["annotations"][0]["image_id"] = 999

    _rewrite(fixture, tmp_path, orphan)
    with pytest.raises(ValueError, match="image_id 999"):
        RefCOCO(tmp_path, "refcoco", "val", transform)

    def bad_segmentation(data):
        data["annotations"][0]["segmentation"] = {"size": [48, 64]}

    _rewrite(fixture, tmp_path, bad_segmentation)
    dataset = RefCOCO(tmp_path, "refcoco", "val", transform, image_dir=fixture.root / "train2014")
    with pytest.raises(ValueError, match="instances_refcoco_val.json: image 1: cannot decode 'segmentation'"):
        dataset[0]

    _rewrite(fixture, tmp_path, lambda data: None)
    with pytest.raises(FileNotFoundError, match="COCO_train2014_000000000009.jpg"):
        RefCOCO(tmp_path, "refcoco", "val", transform)[0]

    def wrong_size(data):
        data["images"][0]["height"] = 50

    _rewrite(fixture, tmp_path, wrong_size)
    dataset = RefCOCO(tmp_path, "refcoco", "val", transform, image_dir=fixture.root / "train2014")
    with pytest.raises(
        ValueError, match="COCO_train2014_000000000009.jpg is 64x48 but .*instances_refcoco_val.json says 64x50"
    ):
        dataset[0]
