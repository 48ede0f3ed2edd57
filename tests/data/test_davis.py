"""Ref-DAVIS17 conversion and inference dataset against the raw-format fixture."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from wavecl.data.davis import (
    RefDAVIS17,
    convert_davis,
    davis_result_path,
    read_davis_expression_file,
)
from wavecl.data.transforms import IMAGENET_MEAN, IMAGENET_STD, ClipTransform
from wavecl.testing.davis import write_davis_fixture

HEIGHT, WIDTH = 24, 40


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    raw = write_davis_fixture(tmp_path_factory.mktemp("refer-davis"), num_frames=5, size=(HEIGHT, WIDTH))
    out = raw.root.parent / "converted"
    return raw, out, convert_davis(raw.root, out)


def _eval_transform() -> ClipTransform:
    return ClipTransform(train=False, short_size=HEIGHT, max_size=None)


def _expected_meta(raw, videos):
    """Expected meta_expressions.json, built from the fixture: object k -> ids 4k..4k+3 in slot order."""
    expected = {}
    for video in videos:
        expressions = {}
        for obj in raw.objects[video]:
            for sentence in obj.sentences:
                expressions[str(len(expressions))] = {"exp": " ".join(sentence.split()), "obj_id": obj.obj_id}
        expected[video] = {"expressions": expressions, "frames": raw.frame_names[video]}
    return {"videos": expected}


def test_meta_expressions_follow_the_4k_plus_a_rule(converted):
    raw, out, info = converted
    assert info.videos == {"train": raw.splits["train"], "valid": raw.splits["val"]}
    for image_set, split in (("train", "train"), ("val", "valid")):
        written = json.loads((out / "meta_expressions" / split / "meta_expressions.json").read_text(encoding="utf-8"))
        assert written == _expected_meta(raw, raw.splits[image_set])
        assert info.meta_expressions[split] == out / "meta_expressions" / split / "meta_expressions.json"
    assert info.num_expressions == {"train": 4, "valid": 4 * (2 + 3)}
    valid = json.loads(info.meta_expressions["valid"].read_text(encoding="utf-8"))
    assert "classic-car" in valid["videos"] and "clasic-car" not in valid["videos"]
    assert valid["videos"]["blackswan"]["expressions"]["2"]["exp"] == "a swan number 1 café"  # Latin-1 decoded


def test_meta_json_lists_categories(converted):
    raw, out, _ = converted
    meta = json.loads((out / "valid" / "meta.json").read_text())
    assert meta == {
        "videos": {
            video: {"objects": {o.obj_id: {"category": o.category} for o in raw.objects[video]}}
            for video in raw.splits["val"]
        }
    }


def test_ground_truth_is_not_moved(converted):
    raw, out, _ = converted
    for split, videos in (("train", raw.splits["train"]), ("valid", raw.splits["val"])):
        for video in videos:
            for t, name in enumerate(raw.frame_names[video]):
                source = raw.root / "DAVIS" / "Annotations_unsupervised" / "480p" / video / f"{name}.png"
                assert source.is_file()
                assert np.array_equal(np.asarray(Image.open(source)), raw.labels[video][t])
                assert np.array_equal(
                    np.asarray(Image.open(out / split / "Annotations" / video / f"{name}.png")), raw.labels[video][t]
                )
                assert (raw.root / "DAVIS" / "JPEGImages" / "480p" / video / f"{name}.jpg").is_file()
                assert (out / split / "JPEGImages" / video / f"{name}.jpg").is_file()


def test_copy_mode_and_rerun(tmp_path):
    raw = write_davis_fixture(tmp_path / "raw", num_frames=3)
    convert_davis(raw.root, tmp_path / "out", mode="symlink")
    assert (tmp_path / "out" / "valid" / "Annotations" / "blackswan").is_symlink()
    info = convert_davis(raw.root, tmp_path / "out", mode="copy")  # replaces the links
    folder = tmp_path / "out" / "valid" / "Annotations" / "blackswan"
    assert folder.is_dir() and not folder.is_symlink()
    assert sorted(p.name for p in folder.iterdir()) == ["00000.png", "00001.png", "00002.png"]
    assert np.array_equal(np.asarray(Image.open(folder / "00001.png")), raw.labels["blackswan"][1])
    assert info.num_expressions["valid"] == 20
    convert_davis(raw.root, raw.root)  # converting in place (the reference's default) keeps the raw tree
    assert (raw.root / "DAVIS" / "Annotations_unsupervised" / "480p" / "bear" / "00000.png").is_file()
    assert (raw.root / "train" / "JPEGImages" / "bear" / "00002.jpg").is_file()


def test_expression_file_parsing(tmp_path):
    path = tmp_path / "annot.txt"
    path.write_text('dog-scale 2 "the  second dog"\n\nmotor-bike 1 "a bike"\ndog-scale 1 "first"\n', encoding="utf-8")
    parsed = read_davis_expression_file(path, "utf-8")
    assert list(parsed) == ["dogs-scale", "motorbike"]
    assert [(e.obj_id, e.text) for e in parsed["dogs-scale"]] == [("1", "first"), ("2", "the second dog")]
    path.write_text('bear 1 "ok"\nbear 2\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"annot\.txt:2: expected"):
        read_davis_expression_file(path, "utf-8")
    with pytest.raises(FileNotFoundError, match="missing.txt"):
        read_davis_expression_file(tmp_path / "missing.txt", "utf-8")


def test_samples_order_chunks_and_metadata(converted):
    raw, out, _ = converted
    dataset = RefDAVIS17(out, _eval_transform(), chunk_size=2)
    chunks = [["00000", "00001"], ["00002", "00003"], ["00004"]]
    expected = [
        (video, annotator, k, chunk_index)
        for video in raw.splits["val"]
        for annotator in range(4)
        for k in range(len(raw.objects[video]))
        for chunk_index in range(len(chunks))
    ]
    assert len(dataset) == len(expected)
    for index, (video, annotator, k, chunk_index) in enumerate(expected):
        metadata = dataset[index].metadata
        obj = raw.objects[video][k]
        assert metadata.video_id == video and metadata.annotator == annotator
        assert metadata.object_index == k and metadata.obj_id == obj.obj_id
        assert metadata.exp_id == str(4 * k + annotator)
        assert metadata.num_objects == len(raw.objects[video])
        assert list(metadata.frame_names) == chunks[chunk_index]
        assert metadata.chunk_index == chunk_index and metadata.num_chunks == 3
        assert metadata.orig_size == (HEIGHT, WIDTH)
        assert metadata.size == (HEIGHT, WIDTH)
        assert dataset.clip_key(index) == (video, *chunks[chunk_index])


def test_frames_masks_and_text_round_trip(converted):
    raw, out, _ = converted
    dataset = RefDAVIS17(out, _eval_transform(), chunk_size=None)
    mean = torch.tensor(IMAGENET_MEAN)[:, None, None]
    std = torch.tensor(IMAGENET_STD)[:, None, None]
    for index in range(len(dataset)):
        sample = dataset[index]
        video, obj_id = sample.metadata.video_id, sample.metadata.obj_id
        obj = next(o for o in raw.objects[video] if o.obj_id == obj_id)
        assert sample.text == " ".join(obj.sentences[sample.metadata.annotator].split())
        assert sample.frames.shape == (5, 3, HEIGHT, WIDTH)
        for t, target in enumerate(sample.targets):
            expected_mask = raw.labels[video][t] == int(obj_id)  # void (255) is not the object
            assert torch.equal(target.masks[0], torch.from_numpy(expected_mask))
            assert target.is_visible == bool(expected_mask.any())
            jpeg = np.asarray(Image.open(raw.root / "DAVIS" / "JPEGImages" / "480p" / video / f"{t:05d}.jpg"))
            pixels = ((sample.frames[t] * std + mean) * 255).round().permute(1, 2, 0).numpy()
            assert np.abs(pixels - jpeg).max() <= 1
    invisible = [
        t.is_visible for s in (dataset[i] for i in range(len(dataset))) if s.metadata.obj_id == "2" for t in s.targets
    ]
    assert False in invisible  # object 2 leaves the scene in the last frame


def test_without_masks_and_with_resize(converted):
    _, out, _ = converted
    dataset = RefDAVIS17(out, ClipTransform(train=False, short_size=12, max_size=None), load_masks=False)
    sample = dataset[0]
    assert sample.targets == [None] * 5
    assert sample.frames.shape == (5, 3, 12, 20)
    assert sample.metadata.size == (12, 20) and sample.metadata.orig_size == (
        HEIGHT,
        WIDTH,
    )


def test_annotator_subset_and_parent_root(converted, tmp_path):
    raw, out, _ = converted
    dataset = RefDAVIS17(out, _eval_transform(), annotators=[2], load_masks=False)
    assert [s.metadata.exp_id for s in (dataset[i] for i in range(len(dataset)))] == ["2", "6", "2", "6", "10"]
    with pytest.raises(ValueError, match="annotators must be slots"):
        RefDAVIS17(out, _eval_transform(), annotators=[4])
    (tmp_path / "refer-davis").symlink_to(out)
    assert RefDAVIS17(tmp_path, _eval_transform()).root == tmp_path / "refer-davis"
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "refer-davis").symlink_to(raw.root)
    info = convert_davis(tmp_path / "data", tmp_path / "again")  # the raw root's parent is accepted too
    assert info.num_expressions["valid"] == 20


def test_result_path():
    assert str(davis_result_path("runs/davis", 2, "bmx-trees", "00042")) == "runs/davis/anno_2/bmx-trees/00042.png"


def test_bad_input_errors_name_the_file(tmp_path):
    raw = write_davis_fixture(tmp_path / "raw", num_frames=2)
    (raw.root / "davis_text_annotations" / "Davis17_annot2.txt").unlink()
    with pytest.raises(FileNotFoundError, match="Davis17_annot2.txt"):
        convert_davis(raw.root, tmp_path / "out")

    raw = write_davis_fixture(tmp_path / "raw2", num_frames=2)
    list_path = raw.root / "DAVIS" / "ImageSets" / "2017" / "val.txt"
    list_path.write_text(list_path.read_text() + "drift-chicane\n")
    with pytest.raises(ValueError, match="'drift-chicane' of val.txt has no expressions in .*Davis17_annot1.txt"):
        convert_davis(raw.root, tmp_path / "out")

    with pytest.raises(FileNotFoundError, match="meta_expressions.json"):
        RefDAVIS17(tmp_path / "nowhere", _eval_transform())

    raw = write_davis_fixture(tmp_path / "raw3", num_frames=2)
    convert_davis(raw.root, tmp_path / "out3")
    (raw.root / "DAVIS" / "JPEGImages" / "480p" / "blackswan" / "00001.jpg").unlink()
    dataset = RefDAVIS17(tmp_path / "out3", _eval_transform())
    with pytest.raises(FileNotFoundError, match="blackswan/00001.jpg"):
        dataset[0]
