"""One's own data in the Ref-YouTube-VOS layout: J, F and J&F wherever the held-out split has
``Annotations/`` (saved predictions and evaluation of a model), scored over the ground truth's full
list; the real layout without ``Annotations/`` keeps its submission path."""

from __future__ import annotations

import csv
import json
import logging
import re
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from support import evaluate_constant, run_cli, set_writable, tree_state

from wavecl.config import apply_overrides, load_config
from wavecl.data.synthetic import write_synthetic_ytvos
from wavecl.data.ytvos import YTVOSGroundTruth
from wavecl.evaluation.jf import db_eval_boundary
from wavecl.evaluation.ytvos import write_ytvos_masks
from wavecl.testing.ytvos import write_ytvos_fixture

REPO = Path(__file__).resolve().parents[2]
TINY = "tiny"
SIZE = (32, 48)


def naive_j(truth: np.ndarray, predicted: np.ndarray) -> float:
    """Mean over frames of |A and B| / |A or B|, 1 for a frame where both are empty."""
    scores = []
    for a, b in zip(truth, predicted):
        union = np.logical_or(a, b).sum()
        scores.append(1.0 if union == 0 else np.logical_and(a, b).sum() / union)
    return float(np.mean(scores))


def read_truth(root: Path, video: str, frames: list[str], obj_id: int) -> np.ndarray:
    """``[T, H, W]`` bool masks of one object, read straight from the index PNGs."""
    return np.stack(
        [np.asarray(Image.open(root / "valid" / "Annotations" / video / f"{f}.png")) == obj_id for f in frames]
    )


@pytest.fixture()
def own_data(tmp_path: Path) -> Path:
    """Held-out data of one's own in the Ref-YouTube-VOS layout, with ``valid/Annotations``."""
    root = tmp_path / "my_videos"
    write_synthetic_ytvos(root, 3, num_frames=5, size=SIZE, seed=11, split="valid")
    return root


def test_saved_predictions_with_missing_and_extra_masks_are_scored_on_the_full_list(own_data, tmp_path, capsys, caplog):
    """The issue's case: predictions for only some videos. Every expression of the ground truth is
    scored, a missing mask counting as an empty one, and the counts are reported."""
    videos = json.loads((own_data / "meta_expressions" / "valid" / "meta_expressions.json").read_text())["videos"]
    predictions = tmp_path / "predictions"
    rng = np.random.default_rng(0)
    expected_j, expected_f, missing = [], [], 0
    for index, (video, entry) in enumerate(sorted(videos.items())):
        frames = sorted(entry["frames"])
        for exp_id, expression in entry["expressions"].items():
            truth = read_truth(own_data, video, frames, int(expression["obj_id"]))
            guess = truth ^ (rng.random(truth.shape) < 0.05)  # the truth with 5 % of the pixels flipped
            if index == 1:
                kept = np.zeros(len(frames), dtype=bool)  # the second video has no predictions at all
            else:
                kept = np.ones(len(frames), dtype=bool)
                kept[2] = exp_id != "0"  # and the first expression of the others lacks its third frame
            names = [name for name, keep in zip(frames, kept) if keep]
            if names:
                write_ytvos_masks(predictions, video, exp_id, names, torch.from_numpy(guess[kept]))
            scored = np.where(kept[:, None, None], guess, False)
            expected_j.append(naive_j(truth, scored))
            expected_f.append(float(np.mean(db_eval_boundary(truth, scored))))
            missing += int((~kept).sum())
    write_ytvos_masks(predictions, "not_a_video", "0", ["00000"], torch.ones(1, *SIZE, dtype=torch.bool))

    argv = ["evaluate", "-c", TINY, "--dataset", "ref_youtube_vos", "--data-root", str(own_data)]
    with caplog.at_level(logging.WARNING, logger="wavecl.evaluation.ytvos"):
        code, out, _ = run_cli([*argv, "--predictions", str(predictions), "--out-dir", str(tmp_path / "m")], capsys)
    assert code == 0
    record = json.loads((tmp_path / "m" / "metrics.json").read_text())
    metrics = record["metrics"]
    assert metrics["expressions"] == len(expected_j)
    # the counts behind the numbers, against the expression file and the masks on disk
    listed_frames = sum(len(entry["frames"]) * len(entry["expressions"]) for entry in videos.values())
    assert record["counts"] == {
        "expressions": len(expected_j),
        "videos": len(videos),
        "frames": listed_frames,
        "missing_masks": missing,
        "extra_masks": len(list((predictions / "Annotations").rglob("*.png"))) - (listed_frames - missing),
    }
    assert re.search(rf"frames\s+│\s+{listed_frames}\s+│", out)  # the table prints counts as integers
    assert metrics["J"] == pytest.approx(np.mean(expected_j))
    assert metrics["F"] == pytest.approx(np.mean(expected_f))
    assert metrics["J&F"] == pytest.approx((np.mean(expected_j) + np.mean(expected_f)) / 2)
    assert metrics["missing_masks"] == missing > 0 and metrics["extra_masks"] == 1
    warnings = " ".join(record.getMessage() for record in caplog.records)
    assert f"lacks {missing} of {int(metrics['frames'])} masks, scored as empty" in warnings
    assert "Annotations/not_a_video/0/00000.png" in warnings
    assert "per_expression.csv" in out
    with open(tmp_path / "m" / "per_expression.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == len(expected_j)
    assert [float(row["J"]) for row in rows] == pytest.approx(expected_j, abs=1e-6)
    assert sum(int(row["missing"]) for row in rows) == missing
    assert len((tmp_path / "m" / "missing_masks.txt").read_text().splitlines()) == missing
    assert (tmp_path / "m" / "extra_masks.txt").read_text() == "Annotations/not_a_video/0/00000.png\n"


def test_evaluation_of_a_model_on_own_data_reports_j_and_f(own_data, tmp_path):
    """Evaluation during training and `wavecl evaluate --checkpoint` (both go through build_evaluation):
    J and F of all-foreground masks, against the naive computation."""
    config = load_config(TINY)
    config = apply_overrides(
        config,
        {"data.dataset_name": "ref_youtube_vos", "data.root": str(own_data), "data.eval_short_size": SIZE[0]},
    )
    evaluation, metrics = evaluate_constant(config, tmp_path / "eval", 10.0)
    ground_truth = YTVOSGroundTruth(own_data)
    everywhere = np.ones((5, *SIZE), bool)
    truths = [ground_truth.masks(e.video_id, e.exp_id) for e in ground_truth.expressions]
    expected = [naive_j(truth, everywhere) for truth in truths]
    expected_f = [float(np.mean(db_eval_boundary(truth, everywhere))) for truth in truths]
    assert evaluation.primary_metric == "J&F"
    assert metrics["J"] == pytest.approx(np.mean(expected))
    assert metrics["F"] == pytest.approx(np.mean(expected_f))
    assert metrics["J&F"] == pytest.approx((np.mean(expected) + np.mean(expected_f)) / 2)
    assert metrics["expressions"] == len(expected) and metrics["missing_masks"] == 0
    assert (tmp_path / "eval" / "per_expression.csv").is_file()
    assert not (tmp_path / "eval" / "submission.zip").exists()


def test_the_real_layout_without_annotations_still_writes_a_submission(tmp_path):
    fixture = write_ytvos_fixture(tmp_path / "refer_youtube_vos")
    config = load_config("refer_youtube_vos_finetune")
    config = apply_overrides(config, {"data.root": str(tmp_path), "model.num_classes": 1})
    evaluation, metrics = evaluate_constant(config, tmp_path / "eval", -10.0)
    with zipfile.ZipFile(tmp_path / "eval" / "submission.zip") as archive:
        assert "Annotations/val_a/1/00030.png" in archive.namelist()
        written = [name for name in archive.namelist() if name.endswith(".png")]
    # the counts of what was written, against the fixture's own lists (the test video has no frames)
    assert metrics == {
        "windows": len(evaluation.dataset),
        "videos": len(fixture.valid),
        "expressions": sum(len(video.expressions) for video in fixture.valid.values()),
        "frames": sum(len(video.expressions) * len(video.frame_names) for video in fixture.valid.values()),
    }
    assert metrics["frames"] == len(written)


def test_an_object_absent_from_every_mask_is_not_scored(own_data, tmp_path, capsys):
    """An obj_id that is in none of its video's masks would score J = F = 1 with empty predictions (both
    empty in every frame): scoring refuses it, naming the file, video, expression and obj_id."""
    meta_path = own_data / "meta_expressions" / "valid" / "meta_expressions.json"
    meta = json.loads(meta_path.read_text())
    video = sorted(meta["videos"])[1]
    meta["videos"][video]["expressions"]["0"]["obj_id"] = 99
    meta_path.write_text(json.dumps(meta))
    predictions = tmp_path / "predictions"
    for video_id, entry in meta["videos"].items():
        for exp_id in entry["expressions"]:
            empty = torch.zeros(len(entry["frames"]), *SIZE, dtype=torch.bool)
            write_ytvos_masks(predictions, video_id, exp_id, entry["frames"], empty)
    argv = ["evaluate", "-c", TINY, "--dataset", "ref_youtube_vos", "--data-root", str(own_data)]
    code, _, err = run_cli([*argv, "--predictions", str(predictions), "--out-dir", str(tmp_path / "m")], capsys)
    message = " ".join(err.split())
    assert code == 2 and "Traceback" not in err
    assert f"{meta_path}: video '{video}' expression '0' obj_id 99 appears in none of the 5 masks" in message
    assert not (tmp_path / "m" / "metrics.json").exists()


def test_annotated_split_needs_an_object_id_per_expression(own_data):
    meta_path = own_data / "meta_expressions" / "valid" / "meta_expressions.json"
    meta = json.loads(meta_path.read_text())
    video = sorted(meta["videos"])[0]
    del meta["videos"][video]["expressions"]["0"]["obj_id"]
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=rf"{meta_path}: video '{video}' expression '0' needs an integer 'obj_id'"):
        YTVOSGroundTruth(own_data)


def test_demo_trains_on_a_read_only_folder_of_own_data(tmp_path, capsys):
    """`wavecl demo --data-root`: the demo's recipe on one's own data, J&F on its held-out split, and
    nothing written under the dataset folder (made read-only; as root the permissions do not stop a
    write, so the folder's files, sizes, times and modes are compared before and after)."""
    root = tmp_path / "my_videos"
    write_synthetic_ytvos(root, 3, num_frames=4, size=SIZE, seed=21, split="train")
    write_synthetic_ytvos(root, 2, num_frames=4, size=SIZE, seed=22, split="valid")
    set_writable(root, False)
    before = tree_state(root)
    sizes = [
        f"data.{kind}_{side}={value}"
        for kind in ("train", "eval")
        for side, value in zip(("short_size", "max_size"), SIZE)
    ]
    argv = ["demo", "--data-root", str(root), "--out-dir", str(tmp_path / "demo"), "--minutes", "0.01", "--epochs", "1"]
    try:
        code, out, err = run_cli([*argv, *(item for size in sizes for item in ("--set", size))], capsys)
    finally:
        after = tree_state(root)
        set_writable(root, True)
    assert code == 0, err
    assert after == before
    run_dir = tmp_path / "demo" / "runs" / "ref_youtube_vos" / "run"
    metrics = json.loads((run_dir / "demo_result.json").read_text())["metrics"]
    assert {"J", "F", "J&F"} <= set(metrics) and metrics["missing_masks"] == 0
    assert (run_dir / "evaluation" / "epoch_0000" / "per_expression.csv").is_file()
    assert not (tmp_path / "demo" / "data").exists(), "no synthetic data is written when --data-root is given"
    assert "held-out J" in out
