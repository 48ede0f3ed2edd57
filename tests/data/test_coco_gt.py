"""COCO-format ground truth of A2D-Sentences and JHMDB-Sentences, checked with pycocotools."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from wavecl.data.a2d import A2DSentences, build_a2d_coco_gt
from wavecl.data.jhmdb import JHMDBSentences, build_jhmdb_coco_gt
from wavecl.data.transforms import ClipTransform
from wavecl.testing.a2d import write_a2d_fixture
from wavecl.testing.frames import mask_box_xyxy
from wavecl.testing.jhmdb import write_jhmdb_fixture


def self_evaluation_ap(gt_path: Path) -> float:
    """Segmentation AP (``useCats=0``) of the ground truth submitted as its own prediction."""
    with contextlib.redirect_stdout(io.StringIO()):
        ground_truth = COCO(str(gt_path))
        predictions = [
            {"image_id": a["image_id"], "category_id": 1, "segmentation": a["segmentation"], "score": 1.0}
            for a in ground_truth.dataset["annotations"]
        ]
        evaluation = COCOeval(ground_truth, ground_truth.loadRes(predictions), iouType="segm")
        evaluation.params.useCats = 0
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    return float(evaluation.stats[0])


def test_a2d_ground_truth(tmp_path: Path) -> None:
    fixture = write_a2d_fixture(tmp_path / "a2d_sentences")
    out = tmp_path / "gt" / "a2d_test_gt.json"
    document = build_a2d_coco_gt(tmp_path, out)
    assert json.loads(out.read_text()) == document
    assert {"info", "images", "annotations", "categories"} <= set(document)

    expected = fixture.samples["test"]
    image_ids = [f"v_{s.video_id}_f_{s.frame}_i_{s.instance_id}" for s in expected]
    assert [image["id"] for image in document["images"]] == image_ids
    dataset = A2DSentences(fixture.root, "test", transform=ClipTransform(False, 32, None), cache_dir=tmp_path)
    assert [s.image_id for s in dataset.samples] == image_ids  # predictions join on these ids
    for number, (sample, annotation) in enumerate(zip(expected, document["annotations"], strict=True), start=1):
        mask = fixture.masks[sample.video_id, sample.frame][sample.instance_id]
        np.testing.assert_array_equal(mask_utils.decode(annotation["segmentation"]), mask)
        x1, y1, x2, y2 = mask_box_xyxy(mask)
        assert annotation["bbox"] == [x1, y1, x2 - x1, y2 - y1]
        assert annotation["area"] == mask.sum() and annotation["id"] == number
        assert annotation["category_id"] == 1 and annotation["iscrowd"] == 0
    assert self_evaluation_ap(out) == pytest.approx(1.0)


def test_jhmdb_ground_truth(tmp_path: Path) -> None:
    fixture = write_jhmdb_fixture(tmp_path / "jhmdb_sentences")
    out = tmp_path / "jhmdb_gt.json"
    document = build_jhmdb_coco_gt(fixture.root, out, samples_metadata=fixture.samples_metadata)
    expected = [(video, frame) for video, frames in fixture.metadata_frames.items() for frame in frames]
    assert [image["id"] for image in document["images"]] == [f"v_{v}_f_{f}" for v, f in expected]
    for (video, frame), annotation in zip(expected, document["annotations"], strict=True):
        expected_mask = fixture.videos[video].masks[frame - 1]
        np.testing.assert_array_equal(mask_utils.decode(annotation["segmentation"]), expected_mask)
        assert "bbox" not in annotation
    assert self_evaluation_ap(out) == pytest.approx(1.0)

    drawn = build_jhmdb_coco_gt(fixture.root, tmp_path / "drawn.json", seed=3)
    dataset = JHMDBSentences(fixture.root, transform=ClipTransform(False, 24, None), seed=3)
    assert [image["id"] for image in drawn["images"]] == [s.image_id for s in dataset.samples]


def test_malformed_inputs_are_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nowhere"):
        build_a2d_coco_gt(tmp_path / "nowhere", tmp_path / "gt.json")
    fixture = write_a2d_fixture(tmp_path / "a2d_sentences")
    mask_file = fixture.root / "text_annotations" / "a2d_annotation_with_instances" / "vidTest" / "00009.h5"
    mask_file.write_bytes(b"not hdf5")
    with pytest.raises(ValueError, match="vidTest/00009.h5"):
        build_a2d_coco_gt(fixture.root, tmp_path / "gt.json")
    assert not (tmp_path / "gt.json").exists()

    jhmdb = write_jhmdb_fixture(tmp_path / "jhmdb_sentences")
    (jhmdb.root / "puppet_mask" / "jump" / "jump_kid_3" / "puppet_mask.mat").unlink()
    with pytest.raises(FileNotFoundError, match="jump_kid_3/puppet_mask.mat"):
        build_jhmdb_coco_gt(jhmdb.root, tmp_path / "jhmdb.json", samples_metadata=jhmdb.samples_metadata)
