"""Synthetic referring-video dataset: layout, determinism, sentence truth, and reading it with RefYouTubeVOS."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from wavecl.data.synthetic import (
    COLOURS,
    FRAME_STRIDE,
    KINDS,
    sample_synthetic_video,
    write_synthetic_ytvos,
)
from wavecl.data.transforms import IMAGENET_MEAN, IMAGENET_STD, ClipTransform
from wavecl.data.ytvos import RefYouTubeVOS, YTVOSGroundTruth

SIZE = (64, 96)
NUM_FRAMES = 8


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    train = write_synthetic_ytvos(root, num_videos=6, num_frames=NUM_FRAMES, size=SIZE, seed=5, split="train")
    valid = write_synthetic_ytvos(root, num_videos=3, num_frames=NUM_FRAMES, size=SIZE, seed=5, split="valid")
    return root, train, valid


def _tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(path.relative_to(root)): path.read_bytes() for path in sorted(root.rglob("*")) if path.is_file()}


def test_same_seed_same_bytes_different_seed_different(tmp_path):
    for name, seed in (("a", 11), ("b", 11), ("c", 12)):
        write_synthetic_ytvos(tmp_path / name, num_videos=3, num_frames=4, size=(40, 48), seed=seed)
    first, second, other = (_tree_bytes(tmp_path / name) for name in "abc")
    assert first == second
    assert first.keys() == other.keys()
    differing = [key for key in first if first[key] != other[key]]
    assert len(differing) > len(first) // 2
    prefix = write_synthetic_ytvos(tmp_path / "d", num_videos=2, num_frames=4, size=(40, 48), seed=11)
    full = write_synthetic_ytvos(tmp_path / "e", num_videos=3, num_frames=4, size=(40, 48), seed=11)
    assert prefix.videos == full.videos[:2]  # a clip does not depend on how many are generated


def test_layout_matches_ref_youtube_vos(written):
    root, train, valid = written
    for info in (train, valid):
        expressions = json.loads((root / "meta_expressions" / info.split / "meta_expressions.json").read_text())
        meta = json.loads((root / info.split / "meta.json").read_text())
        assert list(expressions["videos"]) == [v.video_id for v in info.videos]
        for video in info.videos:
            names = [f"{FRAME_STRIDE * t:05d}" for t in range(NUM_FRAMES)]
            entry = expressions["videos"][video.video_id]
            assert entry["frames"] == names == list(video.frame_names)
            assert entry["expressions"] == {
                e.exp_id: {"exp": e.text, "obj_id": str(e.obj_id)} for e in video.expressions
            }
            assert list(entry["expressions"]) == [str(i) for i in range(len(video.expressions))]
            frames, labels = video.render()
            assert frames.shape == (NUM_FRAMES, *SIZE, 3) and labels.shape == (NUM_FRAMES, *SIZE)
            for t, name in enumerate(names):
                png = Image.open(root / info.split / "Annotations" / video.video_id / f"{name}.png")
                assert png.mode == "P"
                assert np.array_equal(np.asarray(png), labels[t])
                jpeg = np.asarray(Image.open(root / info.split / "JPEGImages" / video.video_id / f"{name}.jpg"))
                assert jpeg.shape == (*SIZE, 3)
                assert np.abs(jpeg.astype(int) - frames[t].astype(int)).mean() < 6
            objects = meta["videos"][video.video_id]["objects"]
            assert set(objects) == {str(o.obj_id) for o in video.objects}
            for obj in video.objects:
                visible = [names[t] for t in range(NUM_FRAMES) if (labels[t] == obj.obj_id).any()]
                assert objects[str(obj.obj_id)]["frames"] == visible
    assert json.loads((root / "meta_expressions" / "test" / "meta_expressions.json").read_text()) == {"videos": {}}


def test_clip_contents(written):
    _, train, valid = written
    videos = [*train.videos, *valid.videos]
    assert len({v.video_id for v in videos}) == len(videos)
    for video in videos:
        assert 2 <= len(video.objects) <= 4
        assert [o.obj_id for o in video.objects] == list(range(1, len(video.objects) + 1))
        assert all(o.colour in COLOURS and o.kind in KINDS for o in video.objects)
        per_object = {o.obj_id: sum(e.obj_id == o.obj_id for e in video.expressions) for o in video.objects}
        assert all(1 <= count <= 3 for count in per_object.values())
        _, labels = video.render()
        for obj in video.objects:
            assert (labels == obj.obj_id).any(axis=(1, 2)).sum() >= NUM_FRAMES // 2


def _mentions(text: str) -> dict[str, str | None]:
    """Attributes named by a sentence, parsed independently of the generator's templates."""
    words = text.split()
    colour = next(word for word in words if word in COLOURS)
    kind = next(word for word in words if word in KINDS)
    motion = re.search(r"moving (?:to the )?(left|right|up|down)", text)
    position = re.search(r"(?:at|on) the (top|bottom|left|right)", text)
    return {
        "colour": colour,
        "kind": kind,
        "direction": motion.group(1) if motion else None,
        "position": position.group(1) if position else None,
    }


def _centroids(labels: np.ndarray, obj_id: int) -> list[tuple[float, float]]:
    """``(x, y)`` mask centroids in the frames where the object is (nearly) unoccluded."""
    areas = (labels == obj_id).sum(axis=(1, 2))
    result = []
    for t in np.flatnonzero(areas >= 0.95 * areas.max()):
        ys, xs = np.nonzero(labels[t] == obj_id)
        result.append((xs.mean(), ys.mean()))
    return result


def test_sentences_name_colour_and_kind_and_are_true_and_unambiguous():
    checked_motion = checked_position = twins = 0
    for index in range(40):
        video = sample_synthetic_video(seed=3, split="train", index=index, num_frames=NUM_FRAMES, size=SIZE)
        _, labels = video.render()
        height, width = SIZE
        pairs = [(o.colour, o.kind) for o in video.objects]
        twins += len(pairs) != len(set(pairs))
        for expression in video.expressions:
            named = _mentions(expression.text)
            referred = next(o for o in video.objects if o.obj_id == expression.obj_id)
            assert (named["colour"], named["kind"]) == (referred.colour, referred.kind)
            matching = [
                o
                for o in video.objects
                if (o.colour, o.kind) == (named["colour"], named["kind"])
                and named["direction"] in (None, o.direction)
                and named["position"] in (None, o.position)
            ]
            assert matching == [referred], expression.text
            centroids = _centroids(labels, referred.obj_id)
            if named["direction"] is not None and len(centroids) >= 2:
                (x0, y0), (x1, y1) = centroids[0], centroids[-1]
                moved = {"left": x0 - x1, "right": x1 - x0, "up": y0 - y1, "down": y1 - y0}[named["direction"]]
                assert moved > 0, expression.text
                checked_motion += 1
            if named["position"] is not None:
                axis, half = {"top": (1, -1), "bottom": (1, 1), "left": (0, -1), "right": (0, 1)}[named["position"]]
                middle = (width, height)[axis] / 2
                assert all(half * (c[axis] - middle) > 0 for c in centroids), expression.text
                checked_position += 1
    assert checked_motion > 20 and checked_position > 20 and twins > 3


def test_ref_youtube_vos_loader_reads_the_training_split(written, tmp_path):
    root, train, _ = written
    transform = ClipTransform(train=False, short_size=SIZE[0], max_size=None)
    dataset = RefYouTubeVOS(root, "train", window_size=4, transform=transform, cache_dir=tmp_path, num_classes=65)
    videos = {v.video_id: v for v in train.videos}
    rendered = {v.video_id: v.render() for v in train.videos}
    assert len(dataset) >= train.num_expressions  # 8 frames in windows of 4: one or two windows each
    mean = torch.tensor(IMAGENET_MEAN)[:, None, None]
    std = torch.tensor(IMAGENET_STD)[:, None, None]
    seen = set()
    for index in range(len(dataset)):
        sample = dataset[index]
        video = videos[sample.metadata.video_id]
        expression = next(e for e in video.expressions if e.exp_id == sample.metadata.exp_id)
        seen.add((video.video_id, expression.exp_id))
        assert sample.text == expression.text
        assert sample.frames.shape == (4, 3, *SIZE)
        frames, labels = rendered[video.video_id]
        for name, target, clip_frame in zip(sample.metadata.frame_names, sample.targets, sample.frames):
            t = video.frame_names.index(name)
            assert torch.equal(target.masks[0], torch.from_numpy(labels[t] == expression.obj_id))
            assert target.labels.tolist() == [36]  # "others"
            pixels = ((clip_frame * std + mean) * 255).permute(1, 2, 0).numpy()
            assert np.abs(pixels - frames[t]).mean() < 6
    assert seen == {(v.video_id, e.exp_id) for v in train.videos for e in v.expressions}


def test_ref_youtube_vos_loader_reads_the_held_out_split(written):
    root, _, valid = written
    transform = ClipTransform(train=False, short_size=SIZE[0], max_size=None)
    dataset = RefYouTubeVOS(root, "valid", window_size=None, transform=transform)
    assert len(dataset) == valid.num_expressions
    assert {(s.metadata.video_id, s.metadata.exp_id) for s in (dataset[i] for i in range(len(dataset)))} == {
        (v.video_id, e.exp_id) for v in valid.videos for e in v.expressions
    }
    ground_truth = YTVOSGroundTruth(root, "valid")
    assert len(ground_truth.expressions) == valid.num_expressions
    for video in valid.videos:
        _, labels = video.render()
        for expression in video.expressions:
            truth = ground_truth.masks(video.video_id, expression.exp_id)
            assert np.array_equal(truth, labels == expression.obj_id)
    with pytest.raises(KeyError, match="no expression '99'"):
        ground_truth.masks(valid.videos[0].video_id, "99")


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="num_frames must be >= 1"):
        write_synthetic_ytvos(tmp_path, num_videos=1, num_frames=0)
    with pytest.raises(ValueError, match="at least 24x24"):
        write_synthetic_ytvos(tmp_path, num_videos=1, size=(16, 96))
    single = write_synthetic_ytvos(tmp_path, num_videos=1, num_frames=1, size=(32, 32))
    assert single.videos[0].frame_names == ("00000",)


@pytest.mark.parametrize("seed", range(3))
def test_long_clips_keep_every_centre_inside_the_frame(seed):
    """48 frames at 240x320 drive fast movers to the speed cap, where the range of start positions is
    empty up to rounding (it used to raise): every clip is drawn, and every centre stays at least a
    radius inside the frame in every frame."""
    height, width = 240, 320
    for index in range(20):
        video = sample_synthetic_video(seed, "valid", index, 48, (height, width))
        for obj in video.objects:
            x, y = obj.start
            dx, dy = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}[obj.direction]
            for t in range(48):
                cx, cy = x + dx * obj.speed * t, y + dy * obj.speed * t
                assert obj.radius - 1e-6 <= cx <= width - obj.radius + 1e-6
                assert obj.radius - 1e-6 <= cy <= height - obj.radius + 1e-6
