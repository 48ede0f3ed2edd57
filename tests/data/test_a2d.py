"""A2D-Sentences loader, PyAV video I/O and SkipBadSamples, checked against an on-disk fixture."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
from support import box_cxcywh, frame_indices, level_index
from torch.utils.data import DataLoader

from wavecl.data import a2d as a2d_module
from wavecl.data.a2d import A2DSentences, read_instance_masks
from wavecl.data.collate import collate_clips
from wavecl.data.robust import SkipBadSamples
from wavecl.data.sample_cache import dataset_cache_dir
from wavecl.data.transforms import ClipTransform
from wavecl.data.video_files import count_video_frames, read_video_frames, read_video_window, write_video
from wavecl.data.windows import centred_window
from wavecl.testing.a2d import A2DFixture, write_a2d_fixture, write_matlab_h5_masks
from wavecl.testing.frames import frame_level

IDENTITY = ClipTransform(train=False, short_size=32, max_size=None)  # fixture frames are 32 x 48


def image_indices(images: list) -> list[int]:
    return [level_index(float(np.asarray(image)[..., 0].mean())) for image in images]


@pytest.fixture(scope="module")
def fixture(tmp_path_factory: pytest.TempPathFactory) -> A2DFixture:
    return write_a2d_fixture(tmp_path_factory.mktemp("data") / "a2d_sentences")


@pytest.fixture()
def fresh(tmp_path: Path) -> A2DFixture:
    """A private copy that a test may damage."""
    return write_a2d_fixture(tmp_path / "a2d_sentences")


# ------------------------------------------------------------------------------------------ video


def test_video_round_trip(tmp_path: Path) -> None:
    frames = [np.full((16, 24, 3), frame_level(i), np.uint8) for i in range(9)]
    write_video(tmp_path / "clip.mp4", frames, fps=25)
    assert count_video_frames(tmp_path / "clip.mp4") == 9
    images = read_video_frames(tmp_path / "clip.mp4")
    assert image_indices(images) == list(range(9))
    assert images[0].size == (24, 16) and images[0].mode == "RGB"
    assert image_indices(read_video_frames(tmp_path / "clip.mp4", [8, 0, 0, 3])) == [8, 0, 0, 3]
    assert image_indices(read_video_window(tmp_path / "clip.mp4", 1, 8)) == [0, 0, 0, 0, 1, 2, 3, 4]
    assert not list(tmp_path.glob(".*tmp")), "the atomic write left a temporary file"


def test_video_odd_size(tmp_path: Path) -> None:
    write_video(tmp_path / "odd.mp4", [np.full((15, 21, 3), 100, np.uint8)] * 3, fps=10)
    images = read_video_frames(tmp_path / "odd.mp4")
    assert len(images) == 3 and images[0].size == (21, 15)


def test_video_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="missing.mp4"):
        read_video_frames(tmp_path / "missing.mp4")
    (tmp_path / "garbage.mp4").write_bytes(b"not a video" * 50)
    with pytest.raises(ValueError, match="garbage.mp4"):
        count_video_frames(tmp_path / "garbage.mp4")
    write_video(tmp_path / "short.mp4", [np.zeros((8, 8, 3), np.uint8)] * 3, fps=10)
    with pytest.raises(IndexError, match=r"frame index 3 .*short.mp4"):
        read_video_frames(tmp_path / "short.mp4", [0, 3])
    with pytest.raises(ValueError, match=r"short.mp4 has 3 frames but frame 5"):
        read_video_window(tmp_path / "short.mp4", 4, 8)
    with pytest.raises(ValueError, match="uint8"):
        write_video(tmp_path / "bad.mp4", [np.zeros((8, 8, 3), np.float32)], fps=10)


def test_centred_window_matches_spec_examples() -> None:
    # ws = 8: 1-based frames f-4 .. f+3, annotated frame at position 4, edges repeated.
    assert centred_window(9, 8, 20) == [5, 6, 7, 8, 9, 10, 11, 12]
    assert centred_window(0, 8, 10) == [0, 0, 0, 0, 0, 1, 2, 3]
    assert centred_window(9, 8, 10) == [5, 6, 7, 8, 9, 9, 9, 9]
    assert centred_window(2, 5, 4) == [0, 1, 2, 3, 3]


# ------------------------------------------------------------------------------------ sample list


@pytest.mark.parametrize("subset", ["train", "test"])
def test_sample_list_matches_fixture(fixture: A2DFixture, subset: str, tmp_path: Path) -> None:
    dataset = A2DSentences(fixture.root, subset, transform=IDENTITY, cache_dir=tmp_path)  # type: ignore[arg-type]
    expected = [(s.query.lower(), s.video_id, s.frame, s.instance_id) for s in fixture.samples[subset]]
    assert [(s.query, s.video_id, s.frame, s.instance_id) for s in dataset.samples] == expected
    assert all(s.video_id not in fixture.missed_videos for s in dataset.samples)
    assert (dataset_cache_dir(tmp_path, fixture.root) / f"wavecl_a2d_{subset}_samples.json").is_file()


def test_copy_row_dropped(fixture: A2DFixture, tmp_path: Path) -> None:
    dataset = A2DSentences(fixture.root, "train", transform=IDENTITY, cache_dir=tmp_path)
    copies = [s for s in dataset.samples if s.video_id == "T6bNPuKV-wY"]
    assert [(s.frame, s.instance_id) for s in copies] == [(5, 1)]


def test_round_trip_every_sample(fixture: A2DFixture, tmp_path: Path) -> None:
    num_frames = len(fixture.frames["vidTrainA"])
    for subset in ("train", "test"):
        dataset = A2DSentences(fixture.root, subset, transform=IDENTITY, cache_dir=tmp_path)  # type: ignore[arg-type]
        for index, expected in enumerate(fixture.samples[subset]):
            sample = dataset[index]
            window = [min(max(expected.frame - 1 + k, 0), num_frames - 1) for k in range(-4, 4)]
            assert frame_indices(sample.frames) == window
            assert sample.text == " ".join(expected.query.lower().split())
            assert [t is None for t in sample.targets] == [True] * 4 + [False] + [True] * 3
            target = sample.targets[4]
            assert target is not None
            mask = fixture.masks[expected.video_id, expected.frame][expected.instance_id]
            np.testing.assert_array_equal(target.masks[0].numpy(), mask)
            np.testing.assert_allclose(target.boxes[0].tolist(), box_cxcywh(mask), rtol=1e-6)
            image_id = f"v_{expected.video_id}_f_{expected.frame}_i_{expected.instance_id}"
            assert target.image_id == image_id and sample.metadata.image_id == image_id
            assert target.labels.tolist() == [0] and target.is_visible
            assert target.orig_size == (32, 48) and target.size == (32, 48)


def test_edge_clamped_windows(fixture: A2DFixture, tmp_path: Path) -> None:
    dataset = A2DSentences(fixture.root, "train", transform=IDENTITY, cache_dir=tmp_path)
    by_frame = {(s.video_id, s.frame): i for i, s in enumerate(dataset.samples)}
    assert frame_indices(dataset[by_frame["vidTrainB", 1]].frames) == [0, 0, 0, 0, 0, 1, 2, 3]
    assert frame_indices(dataset[by_frame["vidTrainB", 10]].frames) == [5, 6, 7, 8, 9, 9, 9, 9]


def test_single_instance_file_is_squeezed(fixture: A2DFixture) -> None:
    assert fixture.single_instance_files
    for path in fixture.single_instance_files:
        with h5py.File(path, "r") as handle:
            assert handle["reMask"].ndim == 2  # stored [W, H]
            assert handle["reMask"].shape == (48, 32)
        masks = read_instance_masks(path)
        video, frame = path.parent.name, int(path.stem)
        ((instance, expected),) = fixture.masks[video, frame].items()
        assert masks.instance_ids == [instance] and masks.masks.shape == (1, 32, 48)
        np.testing.assert_array_equal(masks.masks[0], expected)


def test_resize_to_training_size(fixture: A2DFixture, tmp_path: Path) -> None:
    dataset = A2DSentences(fixture.root, "test", transform=ClipTransform(False, 320, 576), cache_dir=tmp_path)
    sample = dataset[0]
    assert sample.frames.shape == (8, 3, 320, 480)
    assert sample.targets[4] is not None and sample.targets[4].size == (320, 480)


def test_other_clip_folder_spelling_and_parent_root(tmp_path: Path) -> None:
    fixture = write_a2d_fixture(tmp_path / "a2d_sentences", clips_folder="CLIPS320", num_frames=10)
    dataset = A2DSentences(tmp_path, "test", transform=IDENTITY)
    assert len(dataset) == len(fixture.samples["test"])
    assert frame_indices(dataset[0].frames) == centred_window(fixture.samples["test"][0].frame - 1, 8, 10)
    assert (dataset_cache_dir(None, fixture.root) / "wavecl_a2d_test_samples.json").is_file()  # the default cache
    assert not (fixture.root / "wavecl_a2d_test_samples.json").exists()  # nothing is written to the dataset


def test_cache_is_reused_and_rebuilt_when_inputs_change(fresh: A2DFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    first = A2DSentences(fresh.root, "train", transform=IDENTITY)

    def fail(*args: object) -> None:
        raise AssertionError("the cached sample list should have been used")

    with monkeypatch.context() as patch:
        patch.setattr(a2d_module, "build_a2d_samples", fail)
        assert A2DSentences(fresh.root, "train", transform=IDENTITY).samples == first.samples

    cache = dataset_cache_dir(None, fresh.root) / "wavecl_a2d_train_samples.json"
    content = json.loads(cache.read_text())
    content["samples"][0] = ["a query", "vidTrainA"]  # the right key, a malformed row
    cache.write_text(json.dumps(content))
    assert A2DSentences(fresh.root, "train", transform=IDENTITY).samples == first.samples
    assert json.loads(cache.read_text())["samples"][0] != ["a query", "vidTrainA"], "the cache was rebuilt"

    blocked = fresh.root.parent / "not_a_folder"
    blocked.write_text("a file where the cache folder should be")
    assert A2DSentences(fresh.root, "train", transform=IDENTITY, cache_dir=blocked).samples == first.samples

    annotations = fresh.root / "text_annotations" / "a2d_annotation.txt"
    annotations.write_text(annotations.read_text().replace("vidTrainA,2,", "vidTrainA,1,"))
    rebuilt = A2DSentences(fresh.root, "train", transform=IDENTITY)
    assert len(rebuilt) == len(first) + 1  # instance 1 is in two frames, instance 2 in one


def test_dataloader_with_two_workers(fixture: A2DFixture, tmp_path: Path) -> None:
    dataset = A2DSentences(fixture.root, "train", transform=ClipTransform(True, 32, None), cache_dir=tmp_path)
    loader = DataLoader(dataset, batch_size=2, num_workers=2, collate_fn=collate_clips)
    batches = list(loader)
    assert sum(batch.batch_size for batch in batches) == len(dataset)
    for batch in batches:
        assert batch.frames.shape[0] == 8 and batch.frames.shape[2:] == (3, 32, 48)
        valid, targets = batch.valid_frames()
        assert valid is not None and valid.tolist() == [4 + 8 * b for b in range(batch.batch_size)]


# ----------------------------------------------------------------------------------------- errors


def test_missing_root_and_files(tmp_path: Path, fresh: A2DFixture) -> None:
    with pytest.raises(FileNotFoundError, match="nowhere"):
        A2DSentences(tmp_path / "nowhere", "train", transform=IDENTITY)
    (fresh.root / "text_annotations" / "a2d_missed_videos.txt").unlink()
    with pytest.raises(FileNotFoundError, match="a2d_missed_videos.txt"):
        A2DSentences(fresh.root, "train", transform=IDENTITY)


def test_malformed_text_files(fresh: A2DFixture) -> None:
    annotations = fresh.root / "text_annotations" / "a2d_annotation.txt"
    original = annotations.read_text()
    annotations.write_text(original + "vidTest,two,a bird\n")
    with pytest.raises(ValueError, match=r"a2d_annotation.txt:10: instance_id 'two'"):
        A2DSentences(fresh.root, "test", transform=IDENTITY)
    annotations.write_text(original + "vidTest,1,   \n")
    with pytest.raises(ValueError, match=r"empty referring expression in .*a2d_annotation.txt:10"):
        A2DSentences(fresh.root, "test", transform=IDENTITY)
    annotations.write_text(original.replace("video_id,instance_id,query", "video,instance,query"))
    with pytest.raises(ValueError, match="expected header"):
        A2DSentences(fresh.root, "test", transform=IDENTITY)
    videoset = fresh.root / "Release" / "videoset.csv"
    videoset.write_text(videoset.read_text() + "extra,1,2\n")
    with pytest.raises(ValueError, match=r"videoset.csv:6: expected 9 columns"):
        A2DSentences(fresh.root, "test", transform=IDENTITY)


def test_item_errors_name_the_file(fresh: A2DFixture) -> None:
    dataset = A2DSentences(fresh.root, "test", transform=IDENTITY)
    video = fresh.root / "Release" / "clips320H" / "vidTest.mp4"

    write_video(video, list(fresh.frames["vidTest"][:3]), fps=24)  # annotated frames are 5 and 9
    with pytest.raises(ValueError, match=r"vidTest.mp4 has 3 frames but frame 5"):
        dataset[0]

    video.write_bytes(b"\x00" * 2048)
    with pytest.raises(ValueError, match="vidTest.mp4"):
        dataset[0]

    write_video(video, list(fresh.frames["vidTest"]), fps=24)
    mask_file = fresh.root / "text_annotations" / "a2d_annotation_with_instances" / "vidTest" / "00005.h5"
    wrong = [np.ones((30, 48), bool), np.ones((30, 48), bool)]
    write_matlab_h5_masks(mask_file, [1, 2], wrong, [[0, 0, 1, 1]] * 2)
    with pytest.raises(ValueError, match=r"00005.h5 is 30x48 but frames of .*vidTest.mp4 are 32x48"):
        dataset[0]

    mask_file.write_bytes(b"garbage")
    with pytest.raises(ValueError, match="00005.h5"):
        dataset[0]


def test_skip_bad_samples_counts_and_substitutes(fresh: A2DFixture, caplog: pytest.LogCaptureFixture) -> None:
    dataset = A2DSentences(fresh.root, "train", transform=IDENTITY)
    bad = {i for i, s in enumerate(dataset.samples) if s.video_id == "vidTrainA"}
    (fresh.root / "Release" / "clips320H" / "vidTrainA.mp4").write_bytes(b"broken")
    robust = SkipBadSamples(dataset)
    first_good = min(set(range(len(dataset))) - bad)
    with caplog.at_level(logging.WARNING):
        sample = robust[0]
    assert sample.metadata.image_id == dataset.samples[first_good].image_id
    assert robust.num_skipped == first_good == len(bad)
    assert "vidTrainA.mp4" in caplog.text and "A2D train sample 0" in caplog.text

    loader = DataLoader(robust, batch_size=1, num_workers=2, collate_fn=collate_clips)
    texts = [batch.texts[0] for batch in loader]
    assert len(texts) == len(dataset)
    # item i < k retries the k - i bad items from i on; counted in the worker processes, read here
    assert bad == set(range(len(bad)))
    assert robust.num_skipped == len(bad) + len(bad) * (len(bad) + 1) // 2

    for path in (fresh.root / "Release" / "clips320H").glob("*.mp4"):
        path.write_bytes(b"broken")
    with pytest.raises(RuntimeError, match="3 consecutive samples failed"):
        SkipBadSamples(dataset, max_consecutive_failures=3)[0]


def test_skip_counter_shared_with_spawned_workers(fresh: A2DFixture) -> None:
    dataset = A2DSentences(fresh.root, "train", transform=IDENTITY)
    assert [s.video_id for s in dataset.samples][-2:] == ["vidTrainB", "vidTrainB"]
    (fresh.root / "Release" / "clips320H" / "vidTrainB.mp4").write_bytes(b"broken")
    robust = SkipBadSamples(dataset)
    loader = DataLoader(robust, batch_size=1, num_workers=1, collate_fn=collate_clips, multiprocessing_context="spawn")
    assert len(list(loader)) == len(dataset)
    assert robust.num_skipped == 3  # the last item skips itself, the one before skips two


def test_missing_mask_folder_is_named(fresh: A2DFixture) -> None:
    shutil.rmtree(fresh.root / "text_annotations" / "a2d_annotation_with_instances" / "vidTrainB")
    with pytest.raises(FileNotFoundError, match="vidTrainB"):
        A2DSentences(fresh.root, "train", transform=IDENTITY)
