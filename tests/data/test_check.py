"""A Ref-YouTube-VOS-layout dataset is checked whole before anything trains on it (wavecl.data.check).

- every kind of damage (a missing frame or mask, a mask of another mode or size or no image at all, an
  expression without an ``obj_id`` or with one that is in none of its masks, an empty sentence, an unsafe
  id, a missing frame folder, the issue's ``valid/`` with an empty ``Annotations/`` and no ``obj_id``)
  stops ``wavecl train`` (and ``wavecl demo --data-root``) with an error naming the file, video and key,
  before the model is built and before any checkpoint;
- the summary's counts equal counts taken straight from the files;
- ``wavecl prepare check`` runs the check alone, lists the first problems and counts them all.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from support import run_cli, write_dataset

import wavecl.training.trainer as trainer_module
from wavecl.data.check import SHOWN_PROBLEMS, check_ytvos_dataset
from wavecl.data.paths import natural_sorted
from wavecl.testing.ytvos import write_ytvos_fixture

pytestmark = pytest.mark.usefixtures("single_thread")

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture()
def data_root(tmp_path: Path) -> Path:
    """6 training clips and 1 held-out clip (with ``valid/Annotations``) of 4 frames, 32x48."""
    return write_dataset(tmp_path / "data")


@pytest.fixture()
def models_built(monkeypatch) -> list[object]:
    """Records every model the trainer builds (there must be none when the data is refused)."""
    built: list[object] = []
    build = trainer_module.build_model

    def recording(config):
        built.append(config)
        return build(config)

    monkeypatch.setattr(trainer_module, "build_model", recording)
    return built


def meta_path(root: Path, split: str) -> Path:
    return root / "meta_expressions" / split / "meta_expressions.json"


def read_meta(root: Path, split: str) -> dict:
    return json.loads(meta_path(root, split).read_text())


def write_meta(root: Path, split: str, meta: dict) -> None:
    meta_path(root, split).write_text(json.dumps(meta))


def first_video(root: Path, split: str) -> tuple[str, list[str]]:
    """The first video of ``split`` and its frames in order."""
    videos = read_meta(root, split)["videos"]
    video = sorted(videos)[0]
    return video, natural_sorted(videos[video]["frames"])


# Each damage changes the dataset at ``root`` and returns the words the error must hold.
Damage = Callable[[Path], list[str]]


def missing_frame(root: Path) -> list[str]:
    video, frames = first_video(root, "train")
    path = root / "train" / "JPEGImages" / video / f"{frames[2]}.jpg"
    path.unlink()
    return [f"{path}: video '{video}' frame '{frames[2]}' missing: listed frame"]


def missing_mask(root: Path) -> list[str]:
    video, frames = first_video(root, "train")
    path = root / "train" / "Annotations" / video / f"{frames[1]}.png"
    path.unlink()
    return [f"{path}: video '{video}' frame '{frames[1]}' missing: mask of a listed frame"]


def rgb_mask(root: Path) -> list[str]:
    video, frames = first_video(root, "train")
    path = root / "train" / "Annotations" / video / f"{frames[0]}.png"
    Image.new("RGB", (48, 32)).save(path, format="PNG")
    return [f"{path}: video '{video}' frame '{frames[0]}' mask must be a palette or grey PNG, not RGB"]


def mask_of_another_size(root: Path) -> list[str]:
    video, frames = first_video(root, "valid")
    path = root / "valid" / "Annotations" / video / f"{frames[3]}.png"
    Image.new("L", (20, 10)).save(path, format="PNG")
    return [f"{path}: video '{video}' frame '{frames[3]}' mask is 20x10, its frame 48x32"]


def mask_that_is_no_image(root: Path) -> list[str]:
    video, frames = first_video(root, "train")
    path = root / "train" / "Annotations" / video / f"{frames[0]}.png"
    path.write_bytes(b"not a picture at all")
    return [f"{path}: video '{video}' frame '{frames[0]}' image {path} holds", "wavecl reads JPEG or PNG only"]


def expression_without_obj_id(root: Path) -> list[str]:
    meta = read_meta(root, "valid")
    video, _ = first_video(root, "valid")
    del meta["videos"][video]["expressions"]["0"]["obj_id"]
    write_meta(root, "valid", meta)
    return [f"{meta_path(root, 'valid')}: video '{video}' expression '0' needs an integer 'obj_id'"]


def obj_id_in_no_mask(root: Path) -> list[str]:
    meta = read_meta(root, "train")
    video, frames = first_video(root, "train")
    meta["videos"][video]["expressions"]["0"]["obj_id"] = "77"
    write_meta(root, "train", meta)
    return [
        f"{meta_path(root, 'train')}: video '{video}' expression '0' obj_id 77 appears in none of the video's "
        f"{len(frames)} listed masks"
    ]


def empty_sentence(root: Path) -> list[str]:
    meta = read_meta(root, "train")
    video, _ = first_video(root, "train")
    meta["videos"][video]["expressions"]["0"]["exp"] = "  "
    write_meta(root, "train", meta)
    return [f"empty referring expression in {meta_path(root, 'train')} (video '{video}', expression '0')"]


def unsafe_video_id(root: Path) -> list[str]:
    meta = read_meta(root, "valid")
    video, _ = first_video(root, "valid")
    meta["videos"]["../elsewhere"] = meta["videos"].pop(video)
    write_meta(root, "valid", meta)
    return [f"{meta_path(root, 'valid')}: video id '../elsewhere' holds a path separator"]


def no_valid_frames(root: Path) -> list[str]:
    shutil.rmtree(root / "valid" / "JPEGImages")
    return [f"{root / 'valid' / 'JPEGImages'}: missing: the frame folder of this split"]


def empty_valid_annotations_and_no_obj_id(root: Path) -> list[str]:
    """The issue's case: it trained for 20 minutes, then failed at the evaluation."""
    shutil.rmtree(root / "valid" / "Annotations")
    (root / "valid" / "Annotations").mkdir()
    meta = read_meta(root, "valid")
    for video in meta["videos"].values():
        for expression in video["expressions"].values():
            del expression["obj_id"]
    write_meta(root, "valid", meta)
    video, frames = first_video(root, "valid")
    return [
        f"{root / 'valid' / 'Annotations' / video / f'{frames[0]}.png'}: video '{video}' frame '{frames[0]}' "
        "missing: mask of a listed frame",
        f"{meta_path(root, 'valid')}: video '{video}' expression '0' needs an integer 'obj_id'",
    ]


DAMAGES = [
    missing_frame,
    missing_mask,
    rgb_mask,
    mask_of_another_size,
    mask_that_is_no_image,
    expression_without_obj_id,
    obj_id_in_no_mask,
    empty_sentence,
    unsafe_video_id,
    no_valid_frames,
    empty_valid_annotations_and_no_obj_id,
]


@pytest.mark.parametrize("damage", DAMAGES, ids=[damage.__name__ for damage in DAMAGES])
def test_train_refuses_a_damaged_dataset_before_building_the_model(damage, data_root, tmp_path, capsys, models_built):
    expected = damage(data_root)
    output = tmp_path / "runs"
    argv = ["train", "-c", "tiny", "--device", "cpu", "--output-dir", str(output)]
    code, _, err = run_cli([*argv, "--data-root", str(data_root)], capsys)
    message = " ".join(err.split())
    assert code == 2 and "Traceback" not in err
    for words in expected:
        assert " ".join(words.split()) in message
    assert f"dataset {data_root}" in message and re.search(r"\b\d+ problems?:", message)
    assert models_built == []
    assert not output.exists() or not list(output.rglob("checkpoints"))


def test_demo_on_own_data_refuses_it_before_training(data_root, tmp_path, capsys, models_built):
    expected = empty_valid_annotations_and_no_obj_id(data_root)
    argv = ["demo", "--data-root", str(data_root), "--out-dir", str(tmp_path / "demo"), "--minutes", "1"]
    code, _, err = run_cli(argv, capsys)
    message = " ".join(err.split())
    assert code == 2 and all(" ".join(words.split()) in message for words in expected)
    assert models_built == []
    assert not list((tmp_path / "demo").rglob("checkpoints"))


def counted_from_files(root: Path, split: str, evaluated: list[str]) -> dict[str, int]:
    """What a split holds, counted from the files on disk and the expression file, independently of the checker."""
    videos = read_meta(root, split)["videos"]
    annotated = (root / split / "Annotations").is_dir()
    return {
        "videos": len(evaluated),
        "expressions": sum(len(videos[video]["expressions"]) for video in evaluated),
        "frames": sum(len(list((root / split / "JPEGImages" / video).glob("*.jpg"))) for video in evaluated),
        "masks": sum(len(list((root / split / "Annotations" / video).glob("*.png"))) for video in evaluated)
        if annotated
        else 0,
        "objects": len(
            {(video, str(e["obj_id"])) for video in evaluated for e in videos[video]["expressions"].values()}
        )
        if annotated
        else 0,
    }


def test_summary_counts_equal_counts_from_the_files(data_root, tmp_path, capsys):
    report = check_ytvos_dataset(data_root)
    assert report.problems == []
    for summary in report.splits:
        counted = counted_from_files(data_root, summary.split, sorted(read_meta(data_root, summary.split)["videos"]))
        assert {key: getattr(summary, key) for key in counted} == counted

    # the real layout: valid has no Annotations/, and its test videos (listed in the test file) are not checked
    fixture = write_ytvos_fixture(tmp_path / "ref-youtube-vos")
    report = check_ytvos_dataset(tmp_path)
    assert report.problems == []
    train, valid = report.splits
    assert {key: getattr(train, key) for key in counted_from_files(fixture.root, "train", sorted(fixture.train))} == (
        counted_from_files(fixture.root, "train", sorted(fixture.train))
    )
    assert train.objects == sum(len({obj for _, obj in v.expressions.values()}) for v in fixture.train.values())
    assert {key: getattr(valid, key) for key in ("videos", "expressions", "frames", "masks")} == {
        "videos": len(fixture.valid),
        "expressions": sum(len(v.expressions) for v in fixture.valid.values()),
        "frames": sum(len(v.frame_names) for v in fixture.valid.values()),
        "masks": 0,
    }
    assert not valid.annotated

    code, out, _ = run_cli(["prepare", "check", "--root", str(tmp_path)], capsys)
    assert code == 0
    assert f"train: {train.videos} videos, {train.expressions} expressions, {train.frames} frames" in out
    assert "no problems found" in out


def test_prepare_check_lists_the_first_problems_and_counts_them_all(data_root, capsys):
    removed = sorted((data_root / "train" / "JPEGImages").rglob("*.jpg"))[: SHOWN_PROBLEMS + 3]
    for path in removed:
        path.unlink()
    code, out, err = run_cli(["prepare", "check", "--root", str(data_root), "--splits", "train"], capsys)
    assert code == 2 and out == ""
    assert f"{len(removed)} problems:" in err
    assert f"... and {len(removed) - SHOWN_PROBLEMS} more" in err
    assert sum(str(path) in " ".join(err.split()) for path in removed) == SHOWN_PROBLEMS
    frames = sum(len(v["frames"]) for v in read_meta(data_root, "train")["videos"].values())
    assert f"{frames - len(removed)} frames" in err
    in_workers = check_ytvos_dataset(data_root, ["train"], workers=2)
    assert in_workers == check_ytvos_dataset(data_root, ["train"]) and len(in_workers.problems) == len(removed)


def test_masks_are_decoded_only_until_every_referred_object_is_seen(data_root, monkeypatch):
    """The check stays fast: headers only, and per video the masks up to the one where the last referred
    object appears."""
    import wavecl.data.check as check_module

    decoded: list[Path] = []
    read = check_module.read_image

    def counting(path, mode="RGB", exif_orientation=False):
        decoded.append(path)
        return read(path, mode, exif_orientation)

    monkeypatch.setattr(check_module, "read_image", counting)
    assert check_ytvos_dataset(data_root).problems == []
    needed = 0
    for split in ("train", "valid"):
        for video, entry in read_meta(data_root, split)["videos"].items():
            unseen = {int(e["obj_id"]) for e in entry["expressions"].values()}
            for frame in natural_sorted(entry["frames"]):
                needed += 1
                unseen -= set(
                    np.unique(np.asarray(Image.open(data_root / split / "Annotations" / video / f"{frame}.png")))
                )
                if not unseen:
                    break
    assert len(decoded) == needed < sum(1 for _ in data_root.rglob("Annotations/*/*.png"))
