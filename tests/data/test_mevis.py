"""MeViS: the reader's targets, the J / F / J&F of saved predictions, the submission layout and the PNG
converter, each against the masks that :func:`wavecl.testing.mevis.write_mevis_fixture` encoded."""

from __future__ import annotations

import csv
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from wavecl.data.check import check_mevis_dataset
from wavecl.data.mevis import MeViS, write_mevis_png
from wavecl.data.transforms import ClipTransform
from wavecl.data.windows import training_windows
from wavecl.evaluation.jf import db_eval_boundary
from wavecl.evaluation.mevis import evaluate_mevis_predictions
from wavecl.evaluation.ytvos import ANNOTATIONS_FOLDER, write_ytvos_masks, zip_submission
from wavecl.testing.mevis import MeViSFixture, MeViSFixtureVideo, write_mevis_fixture


def native(short: int) -> ClipTransform:
    """A transform that keeps frames whose short side is ``short`` at their size."""
    return ClipTransform(train=False, short_size=short, max_size=None)


@pytest.fixture(scope="module")
def fixture(tmp_path_factory: pytest.TempPathFactory) -> MeViSFixture:
    return write_mevis_fixture(tmp_path_factory.mktemp("data") / "mevis")


def union_masks(video: MeViSFixtureVideo, exp_id: str) -> np.ndarray:
    """``[T, H, W]`` union of the expression's objects, from the masks before encoding."""
    truth = np.zeros((len(video.frame_names), *video.size), dtype=bool)
    for anno_id in video.expressions[exp_id][1]:
        truth |= video.objects[anno_id]
    return truth


def test_training_windows_and_targets_are_the_union_of_the_objects(fixture: MeViSFixture) -> None:
    dataset = MeViS(fixture.root.parent, "train", 3, transform=native(16))
    expected = []
    for video_id, video in fixture.splits["train"].items():
        for exp_id in video.expressions:
            truth = union_masks(video, exp_id)
            for window in training_windows(list(range(len(video.frame_names))), 3):
                if truth[window].any():
                    expected.append((video_id, exp_id, tuple(video.frame_names[i] for i in window)))
    assert [(s.video_id, s.exp_id, s.frame_names) for s in dataset.samples] == expected
    assert dataset.windowless == [("mv_a", "2")]  # anno 12 never appears
    for index, sample in enumerate(dataset.samples):
        video = fixture.splits["train"][sample.video_id]
        truth = union_masks(video, sample.exp_id)
        dataset.transform = native(min(video.size))  # frames at their own size
        item = dataset[index]
        for name, target in zip(sample.frame_names, item.targets):
            frame_truth = truth[video.frame_names.index(name)]
            assert torch.equal(target.masks[0], torch.from_numpy(frame_truth))
            assert target.is_visible == bool(frame_truth.any())  # absent where every object is absent
    # the two objects of mv_a "0" overlap and are absent at different frames: the union is neither
    video = fixture.splits["train"]["mv_a"]
    assert (union_masks(video, "0") != video.objects[10]).any() and (union_masks(video, "0") != video.objects[11]).any()


def test_an_rle_of_another_size_than_its_frame_is_named(tmp_path: Path) -> None:
    fixture = write_mevis_fixture(tmp_path / "mevis")
    path = fixture.root / "train" / "mask_dict.json"
    masks = json.loads(path.read_text())
    masks["20"][1]["size"] = [5, 5]
    path.write_text(json.dumps(masks))
    dataset = MeViS(tmp_path, "train", 3, transform=native(16))
    index = next(i for i, s in enumerate(dataset.samples) if s.video_id == "mv_b")
    with pytest.raises(ValueError, match=r"mask_dict.json: anno_id 20 frame 1 of video 'mv_b': RLE size \[5, 5\]"):
        dataset[index]


def test_an_expression_without_anno_id_is_named(tmp_path: Path) -> None:
    fixture = write_mevis_fixture(tmp_path / "mevis")
    path = fixture.root / "valid_u" / "meta_expressions.json"
    meta = json.loads(path.read_text())
    del meta["videos"]["vu_b"]["expressions"]["0"]["anno_id"]
    path.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="video 'vu_b' expression '0' needs an 'anno_id' list"):
        MeViS(tmp_path, "valid_u", 3, transform=native(16))


def test_unsafe_video_id_is_refused(tmp_path: Path) -> None:
    fixture = write_mevis_fixture(tmp_path / "mevis")
    path = fixture.root / "valid" / "meta_expressions.json"
    meta = json.loads(path.read_text())
    meta["videos"]["../x"] = meta["videos"].pop("vv_a")
    path.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="holds a path separator"):
        MeViS(tmp_path, "valid", 3, transform=native(16))


def naive_scores(
    truths: dict[tuple[str, str], np.ndarray], predictions: dict[tuple[str, str], np.ndarray]
) -> dict[str, float]:
    """The official definitions with loops: per frame J = |A and B| / |A or B| (1 when both are empty) and the
    DAVIS boundary F; per expression the means over frames; J, F the means over expressions, J&F their mean."""
    js, fs = [], []
    for key, truth in truths.items():
        frame_j, frame_f = [], []
        for t in range(truth.shape[0]):
            inter = union = 0
            for y in range(truth.shape[1]):
                for x in range(truth.shape[2]):
                    a, b = bool(truth[t, y, x]), bool(predictions[key][t, y, x])
                    inter += a and b
                    union += a or b
            frame_j.append(1.0 if union == 0 else inter / union)
            frame_f.append(float(db_eval_boundary(truth[t], predictions[key][t])))
        js.append(sum(frame_j) / len(frame_j))
        fs.append(sum(frame_f) / len(frame_f))
    j, f = sum(js) / len(js), sum(fs) / len(fs)
    return {"J": j, "F": f, "J&F": (j + f) / 2}


def write_predictions(fixture: MeViSFixture, out: Path, seed: int, empty: set[tuple[str, str]]):
    """Random predictions (the truth with noise) of every valid_u expression; the keys of ``empty`` predict
    nothing. Returns ``(truths, predictions)`` keyed by ``(video, exp_id)``."""
    rng = np.random.default_rng(seed)
    truths, predictions = {}, {}
    for video_id, video in fixture.splits["valid_u"].items():
        for exp_id in video.expressions:
            truth = union_masks(video, exp_id)
            predicted = truth ^ (rng.random(truth.shape) < 0.1)
            if (video_id, exp_id) in empty:
                predicted[:] = False
            truths[video_id, exp_id], predictions[video_id, exp_id] = truth, predicted
            write_ytvos_masks(out, video_id, exp_id, video.frame_names, torch.from_numpy(predicted))
    return truths, predictions


def test_saved_predictions_score_as_the_official_definitions(fixture: MeViSFixture, tmp_path: Path) -> None:
    """Every expression counts, the one whose object never appears (vu_a "2") too: predicted empty it
    scores J = F = 1, as in the official scorer."""
    truths, predictions = write_predictions(fixture, tmp_path / "run", seed=3, empty={("vu_a", "2")})
    table = tmp_path / "tables" / "per_expression.csv"
    scores = evaluate_mevis_predictions(tmp_path / "run", fixture.root, "valid_u", table)
    assert {key: scores[key] for key in ("J", "F", "J&F")} == pytest.approx(naive_scores(truths, predictions))
    assert scores["expressions"] == 4 and scores["videos"] == 2 and scores["frames"] == 18
    assert scores["missing_masks"] == 0 and scores["extra_masks"] == 0
    rows = {(row["video"], row["exp_id"]): row for row in csv.DictReader(table.open())}
    assert float(rows["vu_a", "2"]["J"]) == 1.0 and float(rows["vu_a", "2"]["F"]) == 1.0
    # a zip without the top-level Annotations/ (the submission layout) scores the same
    zip_path = zip_submission(tmp_path / "run" / ANNOTATIONS_FOLDER, tmp_path / "flat.zip", folder=None)
    assert evaluate_mevis_predictions(zip_path, fixture.root) == pytest.approx(scores)


def test_a_prediction_where_no_object_ever_appears_scores_zero(fixture: MeViSFixture, tmp_path: Path) -> None:
    truths, predictions = write_predictions(fixture, tmp_path / "run", seed=4, empty=set())
    assert predictions["vu_a", "2"].any(axis=(1, 2)).all()
    table = tmp_path / "per_expression.csv"
    scores = evaluate_mevis_predictions(tmp_path / "run", fixture.root, "valid_u", table)
    assert {key: scores[key] for key in ("J", "F", "J&F")} == pytest.approx(naive_scores(truths, predictions))
    rows = {(row["video"], row["exp_id"]): row for row in csv.DictReader(table.open())}
    assert float(rows["vu_a", "2"]["J"]) == 0.0 and float(rows["vu_a", "2"]["F"]) == 0.0


def test_missing_masks_count_as_empty(fixture: MeViSFixture, tmp_path: Path) -> None:
    truths, predictions = write_predictions(fixture, tmp_path / "run", seed=5, empty=set())
    video = fixture.splits["valid_u"]["vu_b"]
    (tmp_path / "run" / ANNOTATIONS_FOLDER / "vu_b" / "0" / f"{video.frame_names[1]}.png").unlink()
    predictions["vu_b", "0"][1] = False
    scores = evaluate_mevis_predictions(tmp_path / "run", fixture.root)
    assert scores["missing_masks"] == 1
    assert {key: scores[key] for key in ("J", "F", "J&F")} == pytest.approx(naive_scores(truths, predictions))


def test_valid_clips_cover_every_frame_and_submission_is_checked(fixture: MeViSFixture, tmp_path: Path) -> None:
    dataset = MeViS(fixture.root, "valid", 3, transform=native(18))
    video = fixture.splits["valid"]["vv_a"]
    covered = {(s.exp_id, name) for s in dataset.samples for name in s.frame_names}
    assert covered == {(exp_id, name) for exp_id in video.expressions for name in video.frame_names}
    assert dataset[0].targets == [] or all(target is None for target in dataset[0].targets)
    for sample in dataset.samples:
        write_ytvos_masks(
            tmp_path,
            "vv_a",
            sample.exp_id,
            sample.frame_names,
            torch.zeros(len(sample.frame_names), 18, 26, dtype=torch.bool),
        )
    zip_path = zip_submission(tmp_path / ANNOTATIONS_FOLDER, tmp_path / "submission.zip", folder=None)
    with zipfile.ZipFile(zip_path) as archive:
        pngs = sorted(name for name in archive.namelist() if name.endswith(".png"))
    assert pngs == sorted(f"vv_a/{exp_id}/{name}.png" for exp_id in video.expressions for name in video.frame_names)
    assert evaluate_mevis_predictions(zip_path, fixture.root, "valid") == {"expressions": 2.0, "frames": 8.0}
    (tmp_path / ANNOTATIONS_FOLDER / "vv_a" / "1" / f"{video.frame_names[0]}.png").unlink()
    with pytest.raises(ValueError, match="lacks 1 of 8 masks"):
        evaluate_mevis_predictions(tmp_path, fixture.root, "valid")


def test_png_converter_later_anno_id_wins(fixture: MeViSFixture, tmp_path: Path) -> None:
    conversion = write_mevis_png(fixture.root, "valid_u", tmp_path / "png")
    assert json.loads((tmp_path / "png" / "objects.json").read_text()) == {
        "vu_a": {"30": 1, "31": 2, "32": 3},
        "vu_b": {"40": 1},
    }
    assert conversion.frames == 8
    for video_id, video in fixture.splits["valid_u"].items():
        for t, name in enumerate(video.frame_names):
            image = Image.open(tmp_path / "png" / "Annotations" / video_id / f"{name}.png")
            assert image.mode == "P"
            expected = np.zeros(video.size, dtype=np.uint8)
            for value, anno_id in enumerate(sorted(video.objects), start=1):
                expected[video.objects[anno_id][t]] = value
            np.testing.assert_array_equal(np.asarray(image), expected)
    overlap = fixture.splits["valid_u"]["vu_a"].objects
    assert (overlap[30] & overlap[31]).any(), "the fixture must make objects overlap"
    assert not list(fixture.root.rglob("*.png")), "the dataset folder is only read"
    with pytest.raises(ValueError, match="inside the dataset folder"):
        write_mevis_png(fixture.root, "valid_u", fixture.root / "png")


def test_dataset_check_counts_and_names_each_problem(tmp_path: Path) -> None:
    fixture = write_mevis_fixture(tmp_path / "mevis")
    report = check_mevis_dataset(tmp_path, ["train", "valid_u", "valid"])
    assert not report.problems
    counts = {summary.split: summary for summary in report.splits}
    for split, videos in fixture.splits.items():
        assert counts[split].videos == len(videos)
        assert counts[split].frames == sum(len(video.frame_names) for video in videos.values())
        rles = sum(int(masks.any(axis=(1, 2)).sum()) for video in videos.values() for masks in video.objects.values())
        assert counts[split].masks == (rles if split != "valid" else 0)
    path = fixture.root / "valid_u" / "mask_dict.json"
    masks = json.loads(path.read_text())
    masks["30"][2]["size"] = [5, 5]
    del masks["40"]
    path.write_text(json.dumps(masks))
    (fixture.root / "valid_u" / "JPEGImages" / "vu_a" / "00005.jpg").unlink()
    report = check_mevis_dataset(tmp_path, ["valid_u"])
    messages = [str(problem) for problem in report.problems]
    assert len(messages) == 3, messages
    assert any("video 'vu_a' frame '00005' missing: listed frame" in message for message in messages)
    assert any("video 'vu_a' anno_id 30 frame '00010' RLE size [5, 5]" in message for message in messages)
    assert any("video 'vu_b' anno_id 40 no masks for anno_id 40" in message for message in messages)
