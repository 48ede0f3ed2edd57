"""Ref-YouTube-VOS loader checked against an on-disk fixture (and the synthetic generator)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from support import box_cxcywh, frame_indices

from wavecl.data import ytvos as ytvos_module
from wavecl.data.index_png import save_index_png
from wavecl.data.synthetic import write_synthetic_ytvos
from wavecl.data.transforms import ClipTransform
from wavecl.data.types import ExpressionMetadata
from wavecl.data.windows import covering_windows, training_windows
from wavecl.data.ytvos import (
    YTVOS_CATEGORIES,
    RefYouTubeVOS,
    build_ytvos_train_samples,
    train_samples_cache_path,
)
from wavecl.testing.ytvos import YTVOSFixture, write_ytvos_fixture

NATIVE = ClipTransform(train=False, short_size=20, max_size=None)


def native(short: int) -> ClipTransform:
    """An evaluation transform that keeps frames whose short side is ``short`` at native size."""
    return ClipTransform(train=False, short_size=short, max_size=None)


@pytest.fixture(scope="module")
def fixture(tmp_path_factory: pytest.TempPathFactory) -> YTVOSFixture:
    return write_ytvos_fixture(tmp_path_factory.mktemp("data") / "ref-youtube-vos")


@pytest.fixture()
def fresh(tmp_path: Path) -> YTVOSFixture:
    return write_ytvos_fixture(tmp_path / "ref-youtube-vos")


def test_category_table() -> None:
    assert len(YTVOS_CATEGORIES) == 65 and list(YTVOS_CATEGORIES) == sorted(YTVOS_CATEGORIES)
    spec_examples = {"airplane": 0, "earless_seal": 17, "others": 36, "person": 42, "tennis_racket": 56, "zebra": 64}
    assert {name: YTVOS_CATEGORIES.index(name) for name in spec_examples} == spec_examples


def test_training_windows_rule() -> None:
    frames = [f"{5 * i:05d}" for i in range(11)]
    assert training_windows(frames, 4) == [frames[0:4], frames[4:8], frames[7:11]]  # last window overlaps
    assert training_windows(frames, 5) == [frames[0:5], frames[5:10], frames[6:11]]
    assert training_windows(frames, 11) == [frames]
    assert training_windows(frames[:3], 4) == [frames[:3] + [frames[2]]]  # short video: last frame repeated
    assert covering_windows(7, 4) == [range(0, 4), range(4, 7)]
    assert covering_windows(7, None) == [range(0, 7)]


@pytest.mark.parametrize("num_frames", [1, 3, 4, 5, 10, 11, 23])
@pytest.mark.parametrize(("size", "overlap"), [(4, 0), (4, 1), (4, 3), (1, 0), (5, 2)])
def test_overlapping_windows_cover_every_frame_and_share_overlap(num_frames: int, size: int, overlap: int) -> None:
    windows = covering_windows(num_frames, size, overlap)
    assert windows[0].start == 0 and windows[-1].stop == num_frames
    assert all(len(window) <= size for window in windows) and len(windows[-1]) > (overlap if len(windows) > 1 else 0)
    for previous, window in zip(windows, windows[1:]):
        assert len(previous) == size and window.start == previous.stop - overlap
    with pytest.raises(ValueError, match="overlap"):
        covering_windows(num_frames, size, size)


def test_train_samples_match_fixture(fixture: YTVOSFixture, tmp_path: Path) -> None:
    dataset = RefYouTubeVOS(fixture.root, "train", 4, transform=NATIVE, cache_dir=tmp_path)
    names = fixture.train["vid_long"].frame_names
    short = fixture.train["vid_short"].frame_names
    windows = [names[0:4], names[4:8], names[7:11]]
    expected = (
        [("vid_long", "0", 1, tuple(w)) for w in windows]
        + [("vid_long", "1", 2, tuple(windows[0]))]  # the dog is only in frames 0-2
        + [("vid_long", "2", 1, tuple(w)) for w in windows]
        + [("vid_short", "0", 1, (short[0], short[1], short[2], short[2]))]
    )
    assert [(s.video_id, s.exp_id, s.obj_id, s.frame_names) for s in dataset.samples] == expected
    assert train_samples_cache_path(tmp_path, fixture.root, 4).is_file()


def test_train_round_trip(fixture: YTVOSFixture, tmp_path: Path) -> None:
    categories = {"person": 42, "dog": 13, "zebra": 64}
    dataset = RefYouTubeVOS(fixture.root, "train", 4, transform=NATIVE, cache_dir=tmp_path)
    for index, sample in enumerate(dataset.samples):
        spec = fixture.train[sample.video_id]
        dataset.transform = native(min(spec.frames.shape[1:3]))
        item = dataset[index]
        positions = [spec.frame_names.index(name) for name in sample.frame_names]
        assert frame_indices(item.frames) == positions
        assert item.frames.shape[2:] == spec.frames.shape[1:3]
        sentence, obj = spec.expressions[sample.exp_id]
        assert item.text == " ".join(sentence.lower().split())
        assert item.metadata == ExpressionMetadata(
            sample.video_id, sample.exp_id, tuple(sample.frame_names), spec.frames.shape[1:3]
        )
        label = categories[spec.categories[obj]]
        for position, target in zip(positions, item.targets):
            assert target is not None
            mask = spec.labels[position] == int(obj)
            np.testing.assert_array_equal(target.masks[0].numpy(), mask)
            assert target.is_visible == bool(mask.any())
            assert target.boxes[0].tolist() == pytest.approx(box_cxcywh(mask) if mask.any() else [0, 0, 0, 0])
            assert target.labels.tolist() == [label]
    dataset.transform = native(24)
    dog = dataset[next(i for i, s in enumerate(dataset.samples) if s.exp_id == "1")]
    assert [t.is_visible for t in dog.targets] == [True, True, True, False]


def test_single_class_labels(fixture: YTVOSFixture, tmp_path: Path) -> None:
    dataset = RefYouTubeVOS(fixture.root, "train", 4, transform=NATIVE, cache_dir=tmp_path, num_classes=1)
    assert all(t.labels.tolist() == [0] for t in dataset[0].targets)


def test_cache_written_by_prepare_is_used(fresh: YTVOSFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    (fresh.root / "train_samples_metadata_win_size_4.json").write_text("corrupt reference list")
    cache = train_samples_cache_path(None, fresh.root, 4)
    built = build_ytvos_train_samples(fresh.root, 4, cache, num_workers=2)

    def fail(*args: object, **kwargs: object) -> None:
        raise AssertionError("the cached windows should have been used")

    monkeypatch.setattr(ytvos_module, "_build_train_samples", fail)
    dataset = RefYouTubeVOS(fresh.root, "train", 4, transform=NATIVE)
    assert [
        [s.video_id, list(s.frame_names), {"exp": s.expression, "obj_id": str(s.obj_id), "exp_id": s.exp_id}]
        for s in dataset.samples
    ] == built
    with pytest.raises(AssertionError, match="cached windows"):
        RefYouTubeVOS(fresh.root, "train", 5, transform=NATIVE)  # another window size is not in the cache


def test_valid_windows_cover_every_frame(fixture: YTVOSFixture) -> None:
    dataset = RefYouTubeVOS(fixture.root, "valid", 4, transform=NATIVE)
    assert {s.video_id for s in dataset.samples} == {"val_a", "val_b"}  # test_c subtracted
    for video, spec in fixture.valid.items():
        for exp_id in spec.expressions:
            clips = [(i, s) for i, s in enumerate(dataset.samples) if (s.video_id, s.exp_id) == (video, exp_id)]
            covered = [name for _, s in clips for name in s.frame_names]
            assert covered == spec.frame_names
            dataset.transform = native(min(spec.frames.shape[1:3]))
            for index, sample in clips:
                item = dataset[index]
                assert item.targets == [None] * len(sample.frame_names)
                start = item.metadata.window_start
                assert frame_indices(item.frames) == list(range(start, start + len(sample.frame_names)))
                assert item.metadata == ExpressionMetadata(
                    video_id=video,
                    exp_id=exp_id,
                    frame_names=tuple(sample.frame_names),
                    orig_size=spec.frames.shape[1:3],
                    window_start=start,
                    num_video_frames=len(spec.frame_names),
                )
                assert item.text == spec.expressions[exp_id][0]
    whole = RefYouTubeVOS(fixture.root, "valid", None, transform=NATIVE)
    assert [(s.video_id, len(s.frame_names)) for s in whole.samples] == [("val_a", 7), ("val_a", 7), ("val_b", 3)]


def test_valid_without_test_file_uses_videos_with_frames(fresh: YTVOSFixture, caplog: pytest.LogCaptureFixture) -> None:
    (fresh.root / "meta_expressions" / "test" / "meta_expressions.json").unlink()
    dataset = RefYouTubeVOS(fresh.root, "valid", 8, transform=NATIVE)
    assert sorted({s.video_id for s in dataset.samples}) == ["val_a", "val_b"]
    assert "predicting the 2 of 3 videos" in caplog.text, "the videos left out are counted in a warning"


def test_other_spelling_from_parent(tmp_path: Path) -> None:
    fixture = write_ytvos_fixture(tmp_path / "refer_youtube_vos")
    dataset = RefYouTubeVOS(tmp_path, "train", 4, transform=ClipTransform(True, 36, 64))
    assert len(dataset) == 8 and train_samples_cache_path(None, fixture.root, 4).is_file()
    assert not (fixture.root / "wavecl_ytvos_train_samples_ws4.json").exists(), "the dataset folder is only read"
    assert dataset[0].frames.shape == (4, 3, 36, 60)


def test_synthetic_dataset_loads(tmp_path: Path) -> None:
    info = write_synthetic_ytvos(tmp_path, num_videos=2, num_frames=6, size=(32, 48))
    dataset = RefYouTubeVOS(tmp_path, "train", 4, transform=native(32), num_classes=1)
    assert {s.video_id for s in dataset.samples} == {video.video_id for video in info.videos}
    item = dataset[0]
    assert item.frames.shape == (4, 3, 32, 48) and all(t is not None and t.is_visible for t in item.targets)


def test_errors_name_the_file(fresh: YTVOSFixture, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nowhere"):
        RefYouTubeVOS(tmp_path / "nowhere", "train", transform=NATIVE)

    png = fresh.root / "train" / "Annotations" / "vid_short" / "00005.png"
    Image.new("RGB", (20, 30)).save(png)
    with pytest.raises(ValueError, match=r"vid_short/00005.png: annotation must be a palette"):
        RefYouTubeVOS(fresh.root, "train", 4, transform=NATIVE, cache_dir=tmp_path / "a")
    save_index_png(fresh.train["vid_short"].labels[1], png)

    dataset = RefYouTubeVOS(fresh.root, "train", 4, transform=NATIVE, cache_dir=tmp_path / "b")
    save_index_png(np.zeros((30, 21), np.uint8), png)
    with pytest.raises(ValueError, match=r"00005.png is 30x21 but .*vid_short/00005.jpg is 30x20"):
        dataset[len(dataset) - 1]
    save_index_png(fresh.train["vid_short"].labels[1], png)

    meta = fresh.root / "train" / "meta.json"
    content = json.loads(meta.read_text())
    content["videos"]["vid_short"]["objects"]["1"]["category"] = "unicorn"
    meta.write_text(json.dumps(content))
    with pytest.raises(ValueError, match=r"meta.json: video 'vid_short' object 1 has unknown category 'unicorn'"):
        RefYouTubeVOS(fresh.root, "train", 4, transform=NATIVE, cache_dir=tmp_path / "b")
    del content["videos"]["vid_short"]
    meta.write_text(json.dumps(content))
    with pytest.raises(ValueError, match=r"meta.json: no category for video 'vid_short'"):
        RefYouTubeVOS(fresh.root, "train", 4, transform=NATIVE, cache_dir=tmp_path / "b")

    expressions = fresh.root / "meta_expressions" / "valid" / "meta_expressions.json"
    content = json.loads(expressions.read_text())
    content["videos"]["val_b"]["expressions"]["0"]["exp"] = " \t "
    expressions.write_text(json.dumps(content))
    message = r"empty referring expression in .*valid/meta_expressions.json \(video 'val_b', expression '0'\)"
    with pytest.raises(ValueError, match=message):
        RefYouTubeVOS(fresh.root, "valid", 4, transform=NATIVE)
    expressions.write_text("{")
    with pytest.raises(ValueError, match="malformed JSON in .*valid/meta_expressions.json"):
        RefYouTubeVOS(fresh.root, "valid", 4, transform=NATIVE)

    jpeg = fresh.root / "train" / "JPEGImages" / "vid_short" / "00000.jpg"
    jpeg.unlink()
    with pytest.raises(FileNotFoundError, match="vid_short/00000.jpg"):
        dataset[len(dataset) - 1]


def unpad_frame_names(fixture: YTVOSFixture) -> dict[str, list[str]]:
    """Rename every frame (JPEG, mask, expression files) of the fixture ``frame_<position + 1>``, listed
    in text order; returns ``{video: new names in frame order}``."""
    renamed: dict[str, list[str]] = {}
    for split, videos in (("train", fixture.train), ("valid", fixture.valid)):
        for video, spec in videos.items():
            renamed[video] = [f"frame_{position + 1}" for position in range(len(spec.frame_names))]
            for old, new in zip(spec.frame_names, renamed[video]):
                for folder, suffix in (("JPEGImages", ".jpg"), ("Annotations", ".png")):
                    path = fixture.root / split / folder / video / f"{old}{suffix}"
                    if path.exists():
                        path.rename(path.with_name(f"{new}{suffix}"))
    for split in ("train", "valid", "test"):
        path = fixture.root / "meta_expressions" / split / "meta_expressions.json"
        content = json.loads(path.read_text())
        for video, entry in content["videos"].items():
            entry["frames"] = sorted(renamed.get(video, entry["frames"]))  # text order: frame_1, frame_10, ...
        path.write_text(json.dumps(content))
    return renamed


def test_frames_are_ordered_naturally_like_predict(fresh: YTVOSFixture, tmp_path: Path) -> None:
    """Zero-padded names (the official ``00000``) sort the same in text and natural order; unpadded
    ``frame_1 .. frame_11`` differ, and windows, clips and ``predict`` all follow the natural order."""
    from wavecl.data.paths import natural_sorted
    from wavecl.inference.predictor import frame_files

    padded = fresh.train["vid_long"].frame_names
    assert sorted(padded) == natural_sorted(padded) == padded
    renamed = unpad_frame_names(fresh)
    names = renamed["vid_long"]
    assert natural_sorted(names) == names != sorted(names)

    train = RefYouTubeVOS(fresh.root, "train", 4, transform=native(24), cache_dir=tmp_path)
    windows = [s.frame_names for s in train.samples if (s.video_id, s.exp_id) == ("vid_long", "0")]
    assert windows == [tuple(names[0:4]), tuple(names[4:8]), tuple(names[7:11])]
    first = next(i for i, s in enumerate(train.samples) if s.video_id == "vid_long")
    assert frame_indices(train[first].frames) == [0, 1, 2, 3]  # the frames shown, by their grey level

    valid = RefYouTubeVOS(fresh.root, "valid", None, transform=native(24))
    clip = next(s for s in valid.samples if s.video_id == "val_a")
    folder = fresh.root / "valid" / "JPEGImages" / "val_a"
    assert list(clip.frame_names) == renamed["val_a"] == [path.stem for path in frame_files(folder)]
    assert frame_indices(valid[valid.samples.index(clip)].frames) == list(range(len(renamed["val_a"])))


def test_expressions_without_a_window_are_counted(fresh: YTVOSFixture, tmp_path: Path, caplog) -> None:
    path = fresh.root / "meta_expressions" / "train" / "meta_expressions.json"
    content = json.loads(path.read_text())
    content["videos"]["vid_short"]["expressions"]["0"]["obj_id"] = "5"  # in none of its masks
    path.write_text(json.dumps(content))
    dataset = RefYouTubeVOS(fresh.root, "train", 4, transform=NATIVE, num_classes=1, cache_dir=tmp_path / "a")
    listed = sum(len(spec.expressions) for spec in fresh.train.values())
    assert dataset.windowless == [("vid_short", "0")]
    assert {s.video_id for s in dataset.samples} == {"vid_long"}
    assert f"1 of {listed} expressions yield no training window" in caplog.text
    assert f"(1 of {len(fresh.train)} videos have none)" in caplog.text

    for video in content["videos"].values():
        for expression in video["expressions"].values():
            expression["obj_id"] = "9"
    path.write_text(json.dumps(content))
    with pytest.raises(ValueError, match=rf"none of the {listed} expressions of {len(fresh.train)} videos yields"):
        RefYouTubeVOS(fresh.root, "train", 4, transform=NATIVE, num_classes=1, cache_dir=tmp_path / "b")
