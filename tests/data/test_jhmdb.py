"""JHMDB-Sentences loader checked against an on-disk fixture."""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import h5py
import hdf5storage
import numpy as np
import pytest
import scipy.io
import torch
from PIL import Image
from support import frame_indices

from wavecl.data.jhmdb import JHMDBSentences, build_jhmdb_samples, read_puppet_masks
from wavecl.data.transforms import ClipTransform
from wavecl.data.windows import centred_window
from wavecl.testing.jhmdb import JHMDBFixture, write_jhmdb_fixture

IDENTITY = ClipTransform(train=False, short_size=24, max_size=None)  # fixture frames are 24 x 32


@pytest.fixture(scope="module")
def fixture(tmp_path_factory: pytest.TempPathFactory) -> JHMDBFixture:
    return write_jhmdb_fixture(tmp_path_factory.mktemp("data") / "jhmdb_sentences")


@pytest.fixture()
def fresh(tmp_path: Path) -> JHMDBFixture:
    return write_jhmdb_fixture(tmp_path / "jhmdb_sentences")


def test_drawn_samples_follow_the_reference_rule(fixture: JHMDBFixture) -> None:
    samples = build_jhmdb_samples(fixture.root, seed=7)
    rng = random.Random(7)
    expected = []
    for video, spec in fixture.videos.items():  # file order
        usable = min(len(spec.frames), len(spec.masks))
        expected += [(video, frame, usable) for frame in sorted(rng.sample(range(1, usable + 1), 3))]
    assert [(s.video_id, s.frame, s.num_frames) for s in samples] == expected
    assert [s.num_frames for s in samples if s.video_id == "run_man_2"] == [8, 8, 8]  # 10 PNGs, 8 masks
    assert build_jhmdb_samples(fixture.root, seed=7) == samples


def test_metadata_file_is_rerooted(fixture: JHMDBFixture) -> None:
    samples = build_jhmdb_samples(fixture.root, fixture.samples_metadata)
    expected = [(video, frame) for video, frames in fixture.metadata_frames.items() for frame in frames]
    assert [(s.video_id, s.frame) for s in samples] == expected
    assert {s.action for s in samples} == {spec.action for spec in fixture.videos.values()}


def test_round_trip_every_sample(fixture: JHMDBFixture) -> None:
    dataset = JHMDBSentences(fixture.root, transform=IDENTITY, samples_metadata=fixture.samples_metadata)
    assert len(dataset) == 9
    for index, sample in enumerate(dataset.samples):
        spec = fixture.videos[sample.video_id]
        item = dataset[index]
        usable = len(spec.masks)
        window = [min(max(sample.frame - 1 + k, 0), usable - 1) for k in range(-4, 4)]
        assert frame_indices(item.frames) == window
        assert item.text == " ".join(spec.query.lower().split())
        assert [t is None for t in item.targets] == [True] * 4 + [False] + [True] * 3
        target = item.targets[4]
        assert target is not None
        np.testing.assert_array_equal(target.masks[0].numpy(), spec.masks[sample.frame - 1])
        assert target.image_id == f"v_{sample.video_id}_f_{sample.frame}" == item.metadata.image_id
        assert target.labels.tolist() == [0]


def test_window_clamped_to_frames_with_masks(fixture: JHMDBFixture) -> None:
    dataset = JHMDBSentences(fixture.root, transform=IDENTITY, samples_metadata=fixture.samples_metadata)
    index = next(i for i, s in enumerate(dataset.samples) if (s.video_id, s.frame) == ("run_man_2", 8))
    assert frame_indices(dataset[index].frames) == [3, 4, 5, 6, 7, 7, 7, 7]  # PNGs 9 and 10 have no mask
    index = next(i for i, s in enumerate(dataset.samples) if (s.video_id, s.frame) == ("jump_kid_3", 3))
    assert frame_indices(dataset[index].frames) == centred_window(2, 8, 5) == [0, 0, 0, 1, 2, 3, 4, 4]


def test_evaluation_resize(fixture: JHMDBFixture) -> None:
    dataset = JHMDBSentences(fixture.root, window_size=4, transform=ClipTransform(False, 320, 576))
    item = dataset[0]
    assert item.frames.shape == (4, 3, 320, 426)  # 24x32 has JHMDB's 240x320 aspect ratio
    assert item.targets[2] is not None and item.targets[2].orig_size == (24, 32)


@pytest.mark.parametrize("layout", ["dataset", "parent", "data"])
def test_root_layouts(tmp_path: Path, layout: str) -> None:
    folder = tmp_path / "data" / "jhmdb_sentences" if layout == "data" else tmp_path / "jhmdb_sentences"
    write_jhmdb_fixture(folder)
    root = {"dataset": folder, "parent": tmp_path, "data": tmp_path}[layout]
    assert len(JHMDBSentences(root, transform=IDENTITY)) == 9


def resave_as_v73(mat: Path) -> None:
    """Rewrite a v5 ``puppet_mask.mat`` as MATLAB v7.3 (HDF5), written by hdf5storage, an independent
    MATLAB-compatible writer (512-byte header, column-major storage)."""
    part_mask = scipy.io.loadmat(str(mat))["part_mask"]
    mat.unlink()
    hdf5storage.savemat(str(mat), {"part_mask": part_mask}, format="7.3", matlab_compatible=True)
    assert h5py.is_hdf5(mat)
    with pytest.raises(NotImplementedError):
        scipy.io.loadmat(str(mat))  # what failed before: scipy refuses v7.3


def test_v73_masks_equal_the_v5_masks(fresh: JHMDBFixture) -> None:
    dataset = JHMDBSentences(fresh.root, transform=IDENTITY, samples_metadata=fresh.samples_metadata)
    v5 = [dataset[i].targets for i in range(len(dataset))]
    v5_masks = {
        video: read_puppet_masks(fresh.root / "puppet_mask" / spec.action / video / "puppet_mask.mat")
        for video, spec in fresh.videos.items()
    }
    for video, spec in fresh.videos.items():
        resave_as_v73(fresh.root / "puppet_mask" / spec.action / video / "puppet_mask.mat")

    for video, spec in fresh.videos.items():
        masks = read_puppet_masks(fresh.root / "puppet_mask" / spec.action / video / "puppet_mask.mat")
        assert masks.shape == v5_masks[video].shape == spec.masks.shape, "[T, H, W], not transposed"
        assert np.array_equal(masks, v5_masks[video]) and np.array_equal(masks, spec.masks != 0)
    samples = build_jhmdb_samples(fresh.root, seed=3)
    assert samples == build_jhmdb_samples(fresh.root, seed=3) and len(samples) == 9
    v73 = JHMDBSentences(fresh.root, transform=IDENTITY, samples_metadata=fresh.samples_metadata)
    for index in range(len(v73)):
        for ours, theirs in zip(v73[index].targets, v5[index]):
            assert (ours is None) == (theirs is None)
            if ours is not None:
                assert torch.equal(ours.masks, theirs.masks)


def test_v73_read_errors_name_the_file(tmp_path: Path) -> None:
    mat = tmp_path / "puppet_mask.mat"
    hdf5storage.savemat(str(mat), {"other": np.zeros((2, 2))}, format="7.3", matlab_compatible=True)
    with pytest.raises(ValueError, match=rf"{tmp_path}/puppet_mask.mat: missing HDF5 dataset 'part_mask'"):
        read_puppet_masks(mat)
    hdf5storage.savemat(str(mat), {"part_mask": np.ones((4, 5), np.uint8)}, format="7.3", matlab_compatible=True)
    with pytest.raises(ValueError, match=r"puppet_mask.mat: part_mask has shape \[4, 5\]"):
        read_puppet_masks(mat)
    data = bytearray(mat.read_bytes())
    mat.write_bytes(bytes(data[: len(data) // 2]))  # truncated: still carries the HDF5 signature
    with pytest.raises(ValueError, match=r"puppet_mask.mat"):
        read_puppet_masks(mat)


def test_errors_name_the_file(fresh: JHMDBFixture, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nowhere"):
        JHMDBSentences(tmp_path / "nowhere", transform=IDENTITY)

    mat = fresh.root / "puppet_mask" / "run" / "run_man_2" / "puppet_mask.mat"
    original = mat.read_bytes()
    mat.write_bytes(b"not a mat file at all" * 10)
    with pytest.raises(ValueError, match="run_man_2/puppet_mask.mat"):
        JHMDBSentences(fresh.root, transform=IDENTITY)
    scipy.io.savemat(mat, {"other": np.zeros((2, 2))})
    with pytest.raises(ValueError, match="no variable 'part_mask'"):
        JHMDBSentences(fresh.root, transform=IDENTITY)
    scipy.io.savemat(mat, {"part_mask": np.ones((24, 32, 2), np.uint8)})
    with pytest.raises(ValueError, match="run_man_2 has 2 frames with a mask"):
        JHMDBSentences(fresh.root, transform=IDENTITY)
    mat.write_bytes(original)

    dataset = JHMDBSentences(fresh.root, transform=IDENTITY, samples_metadata=fresh.samples_metadata)
    scipy.io.savemat(mat, {"part_mask": np.ones((20, 32, 8), np.uint8)})
    index = next(i for i, s in enumerate(dataset.samples) if s.video_id == "run_man_2")
    with pytest.raises(ValueError, match=r"puppet_mask.mat are 20x32 but frames of run_man_2 are 24x32"):
        dataset[index]
    mat.write_bytes(original)

    png = fresh.root / "Rename_Images" / "run" / "run_man_2" / "00004.png"
    png.write_bytes(b"broken png")
    with pytest.raises(ValueError, match="00004.png"):
        dataset[index]  # frame 2: window 1..6
    Image.fromarray(fresh.videos["run_man_2"].frames[3]).save(png)

    shutil.rmtree(fresh.root / "Rename_Images" / "jump")
    with pytest.raises(FileNotFoundError, match="jump_kid_3"):
        JHMDBSentences(fresh.root, transform=IDENTITY)


def test_malformed_sample_list(fresh: JHMDBFixture) -> None:
    fresh.samples_metadata.write_text('[["brush_hair_girl_1", "x.png"]]')
    with pytest.raises(ValueError, match="entry 0"):
        JHMDBSentences(fresh.root, transform=IDENTITY, samples_metadata=fresh.samples_metadata)
    fresh.samples_metadata.write_text("{broken")
    with pytest.raises(ValueError, match="malformed JSON"):
        JHMDBSentences(fresh.root, transform=IDENTITY, samples_metadata=fresh.samples_metadata)
    annotations = fresh.root / "jhmdb_annotation.txt"
    annotations.write_text(annotations.read_text().replace("a kid jumping", "  "))
    with pytest.raises(ValueError, match=r"empty referring expression in .*jhmdb_annotation.txt \(video jump_kid_3\)"):
        JHMDBSentences(fresh.root, transform=IDENTITY)
