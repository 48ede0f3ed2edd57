"""Ref-YouTube-VOS submission: PNG layout and content, zip member names."""

import zipfile

import numpy as np
import pytest
import torch
from PIL import Image

from wavecl.evaluation.ytvos import write_ytvos_masks, zip_submission


def random_masks(frames: int, height: int, width: int, seed: int) -> torch.Tensor:
    return torch.rand(frames, height, width, generator=torch.Generator().manual_seed(seed)) > 0.5


def test_write_ytvos_masks_layout_and_content(tmp_path):
    masks = random_masks(3, 7, 9, seed=0)
    paths = write_ytvos_masks(tmp_path, "0a7a2514aa", "1", ["00000", "00005", "00010"], masks)
    assert [p.relative_to(tmp_path).as_posix() for p in paths] == [
        "Annotations/0a7a2514aa/1/00000.png",
        "Annotations/0a7a2514aa/1/00005.png",
        "Annotations/0a7a2514aa/1/00010.png",
    ]
    for path, mask in zip(paths, masks):
        with Image.open(path) as image:
            assert image.mode == "L" and image.size == (9, 7)
            pixels = np.asarray(image)
        np.testing.assert_array_equal(pixels, mask.numpy().astype(np.uint8) * 255)
    assert sorted(p.name for p in paths[0].parent.iterdir()) == ["00000.png", "00005.png", "00010.png"]


def test_write_ytvos_masks_rejects_frame_count_mismatch(tmp_path):
    with pytest.raises(ValueError, match="frame names"):
        write_ytvos_masks(tmp_path, "v", "0", ["00000"], random_masks(2, 4, 4, seed=1))


def test_zip_submission_member_names_and_bytes(tmp_path):
    run = tmp_path / "run"
    write_ytvos_masks(run, "vid_b", "0", ["00000", "00005"], random_masks(2, 4, 6, seed=2))
    write_ytvos_masks(run, "vid_a", "3", ["00010"], random_masks(1, 4, 6, seed=3))
    zip_path = zip_submission(run / "Annotations", tmp_path / "submission.zip")

    with zipfile.ZipFile(zip_path) as archive:
        names = archive.namelist()
        assert names == [
            "Annotations/",
            "Annotations/vid_a/",
            "Annotations/vid_a/3/",
            "Annotations/vid_a/3/00010.png",
            "Annotations/vid_b/",
            "Annotations/vid_b/0/",
            "Annotations/vid_b/0/00000.png",
            "Annotations/vid_b/0/00005.png",
        ]
        assert archive.read("Annotations/vid_b/0/00005.png") == (run / "Annotations/vid_b/0/00005.png").read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run", "submission.zip"]  # no temporary left


def test_zip_submission_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="Annotations"):
        zip_submission(tmp_path / "Annotations", tmp_path / "submission.zip")
