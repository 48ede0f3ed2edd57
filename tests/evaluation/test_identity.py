"""Identity switches and temporal stability (wavecl/evaluation/identity.py): against naive loops on
hand-built mask sequences, and in the own-data report (metrics and per-expression table)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from support import evaluate_constant, run_cli

from wavecl.config import apply_overrides, load_config
from wavecl.data.synthetic import write_synthetic_ytvos
from wavecl.data.ytvos import YTVOSGroundTruth
from wavecl.evaluation.identity import (
    consecutive_iou,
    count_switches,
    identity_score,
    identity_summary,
    segment_objects,
    window_starts,
)
from wavecl.evaluation.ytvos import write_ytvos_masks

REPO = Path(__file__).resolve().parents[2]
TINY = "tiny"


def naive_starts(num_frames: int, window: int, overlap: int) -> list[int]:
    """A new window starts while the previous one ends before the last frame."""
    starts = [0]
    while starts[-1] + window < num_frames:
        starts.append(starts[-1] + window - overlap)
    return starts


def naive_objects(predicted: np.ndarray, labels: np.ndarray, starts: list[int]) -> list[int]:
    """Per segment, pixel counts object by object and frame by frame; the first best IoU wins, 0 for no overlap."""
    ends = starts[1:] + [len(labels)]
    objects = []
    for start, end in zip(starts, ends):
        best, best_iou = 0, 0.0
        for obj in range(1, int(labels.max()) + 1):
            intersection = union = 0
            for t in range(start, end):
                intersection += int(np.logical_and(predicted[t], labels[t] == obj).sum())
                union += int(np.logical_or(predicted[t], labels[t] == obj).sum())
            if intersection > 0 and intersection / union > best_iou:
                best, best_iou = obj, intersection / union
        objects.append(best)
    return objects


def naive_switches(objects: list[int]) -> int:
    found = [obj for obj in objects if obj != 0]
    return sum(a != b for a, b in zip(found, found[1:]))


def naive_consecutive_iou(masks: np.ndarray) -> float:
    values = []
    for a, b in zip(masks[:-1], masks[1:]):
        union = np.logical_or(a, b).sum()
        values.append(1.0 if union == 0 else np.logical_and(a, b).sum() / union)
    return float(np.mean(values)) if values else 1.0


def crossing_squares(num_frames: int = 8) -> np.ndarray:
    """``[T, 12, 20]`` ids: square 1 moves right along the top, square 2 left along the bottom; they pass."""
    labels = np.zeros((num_frames, 12, 20), dtype=np.uint8)
    for t in range(num_frames):
        labels[t, 1:5, 2 * t : 2 * t + 4] = 1
        labels[t, 7:11, 16 - 2 * t : 20 - 2 * t] = 2
    return labels


@pytest.mark.parametrize("num_frames", [1, 3, 4, 5, 8, 10, 17])
@pytest.mark.parametrize(("window", "overlap"), [(1, 0), (4, 0), (4, 1), (4, 3), (8, 2)])
def test_window_starts_follow_the_windows(num_frames, window, overlap):
    starts = window_starts(num_frames, window, overlap)
    assert starts == naive_starts(num_frames, window, overlap)
    covered = sorted({t for start in starts for t in range(start, min(start + window, num_frames))})
    assert covered == list(range(num_frames))  # every frame in a window, and no window starts past the end


def test_window_starts_edge_cases():
    assert window_starts(10, 4) == [0, 4, 8]  # the covering windows of evaluation
    assert window_starts(10, 4, 1) == [0, 3, 6]
    assert window_starts(10, None) == [0] and window_starts(0, 4) == []
    for window, overlap in ((0, 0), (4, 4), (4, -1)):
        with pytest.raises(ValueError, match="window|overlap"):
            window_starts(10, window, overlap)


def test_hand_built_cases_count_switches_at_window_starts():
    labels = crossing_squares()
    one, two = labels == 1, labels == 2
    none = np.zeros_like(one)
    follows_one = one
    jumps = np.concatenate([one[:4], two[4:]])
    lost_and_found = np.concatenate([one[:4], none[4:6], one[6:]])
    lost_and_other = np.concatenate([one[:4], none[4:6], two[6:]])
    jumps_mid_window = np.concatenate([one[:2], two[2:4], one[4:]])
    cases = {  # prediction -> (segment objects with windows of 2, switches)
        "follows one": (follows_one, [1, 1, 1, 1], 0),
        "jumps to two at frame 4": (jumps, [1, 1, 2, 2], 1),
        "loses one and finds it again": (lost_and_found, [1, 1, 0, 1], 0),
        "loses one and finds two": (lost_and_other, [1, 1, 0, 2], 1),
        "there and back": (jumps_mid_window, [1, 2, 1, 1], 2),
    }
    for name, (predicted, objects, switches) in cases.items():
        assert segment_objects(predicted, labels, [0, 2, 4, 6]) == objects, name
        assert count_switches(objects) == switches == naive_switches(objects), name
    # windows of 4 see the there-and-back excursion inside one window (frames 2-3 against 0-1): no switch
    assert segment_objects(jumps_mid_window, labels, [0, 4]) == [1, 1]
    # background only is no object; the larger share of one object wins over a sliver of the other
    background = np.zeros_like(one)
    background[:, 5:7, :] = True
    assert segment_objects(background, labels, [0, 4]) == [0, 0]
    mostly_two = two | (np.arange(20) == 2)[None, None, :] & one
    assert segment_objects(mostly_two, labels, [0]) == [2]


def test_a_tie_goes_to_the_lowest_id():
    labels = np.zeros((1, 4, 4), dtype=np.uint8)
    labels[0, 0, :2], labels[0, 3, :2] = 2, 1
    predicted = np.zeros((1, 4, 4), dtype=bool)
    predicted[0, 0, 0] = predicted[0, 3, 0] = True
    assert segment_objects(predicted, labels, [0]) == [1] == naive_objects(predicted, labels, [0])


@pytest.mark.parametrize("seed", range(6))
def test_random_sequences_agree_with_the_naive_loops(seed):
    rng = np.random.default_rng(seed)
    num_frames = int(rng.integers(1, 14))
    labels = rng.integers(0, 4, size=(num_frames, 6, 7)).astype(np.uint8)
    predicted = rng.random((num_frames, 6, 7)) < rng.uniform(0.0, 0.3)
    truth = labels == 1
    for window, overlap in ((1, 0), (3, 0), (3, 2), (5, 1), (None, 0)):
        starts = window_starts(num_frames, window, overlap)
        objects = segment_objects(predicted, labels, starts)
        assert objects == naive_objects(predicted, labels, starts)
        score = identity_score(predicted, truth, labels, window, overlap)
        assert score.switches == naive_switches(objects)
        expected = naive_consecutive_iou(predicted) - naive_consecutive_iou(truth)
        assert score.stability == pytest.approx(expected)


def test_temporal_stability_hand_built():
    labels = crossing_squares()
    truth = labels == 1
    assert identity_score(truth, truth, labels, 4).stability == 0.0
    flicker = truth.copy()
    flicker[1::2] = labels[1::2] == 2  # every other frame on the other square: no consecutive pair overlaps
    assert consecutive_iou(flicker) == 0.0
    assert identity_score(flicker, truth, labels, 4).stability == pytest.approx(-naive_consecutive_iou(truth))
    empty = np.zeros_like(truth)
    assert consecutive_iou(empty) == 1.0  # frozen: as steady as can be, so above the moving truth
    assert identity_score(empty, truth, labels, 4).stability == pytest.approx(1 - naive_consecutive_iou(truth))
    assert identity_score(truth[:1], truth[:1], labels[:1], 4).stability == 0.0


def test_summary_totals_switches_and_averages_stability():
    labels = crossing_squares()
    scores = [
        identity_score(p, labels == 1, labels, 2)
        for p in (labels == 1, np.concatenate([labels[:4] == 1, labels[4:] == 2]))
    ]
    assert identity_summary(scores) == {
        "identity_switches": 1.0,
        "temporal_stability": pytest.approx(np.mean([s.stability for s in scores])),
    }
    assert identity_summary([]) == {}
    with pytest.raises(ValueError, match="differ in shape"):
        segment_objects(labels[:3] == 1, labels, [0])


def test_own_data_report_lists_switches_and_stability(tmp_path, capsys):
    """`wavecl evaluate --predictions` on own data: each expression's prediction is its object's truth, with
    the masks of the video's other object from frame 4 on where it has one; switches are counted at the
    starts of windows of `data.window_size` frames."""
    root = tmp_path / "my_videos"
    write_synthetic_ytvos(root, 4, num_frames=7, size=(32, 48), seed=3, split="valid")
    ground_truth = YTVOSGroundTruth(root)
    predictions = tmp_path / "predictions"
    expected: dict[tuple[str, str], tuple[int, float]] = {}
    for expression in ground_truth.expressions:
        labels = ground_truth.video_labels(expression.video_id, expression.frames)
        truth = labels == expression.obj_id
        others = [obj for obj in np.unique(labels) if obj not in (0, expression.obj_id)]
        predicted = truth.copy()
        if others:
            predicted[4:] = labels[4:] == others[0]
        write_ytvos_masks(
            predictions, expression.video_id, expression.exp_id, expression.frames, torch.from_numpy(predicted)
        )
        objects = naive_objects(predicted, labels, naive_starts(len(labels), 2, 0))
        stability = naive_consecutive_iou(predicted) - naive_consecutive_iou(truth)
        expected[expression.video_id, expression.exp_id] = (naive_switches(objects), stability)
    assert any(switches for switches, _ in expected.values())

    argv = ["evaluate", "-c", TINY, "--dataset", "ref_youtube_vos", "--data-root", str(root), "--window-size", "2"]
    code, _, _ = run_cli([*argv, "--predictions", str(predictions), "--out-dir", str(tmp_path / "m")], capsys)
    assert code == 0
    metrics = json.loads((tmp_path / "m" / "metrics.json").read_text())["metrics"]
    assert metrics["identity_switches"] == sum(switches for switches, _ in expected.values())
    assert metrics["temporal_stability"] == pytest.approx(np.mean([s for _, s in expected.values()]))
    with open(tmp_path / "m" / "per_expression.csv", newline="") as handle:
        rows = {(row["video"], row["exp_id"]): row for row in csv.DictReader(handle)}
    assert {key: int(row["switches"]) for key, row in rows.items()} == {key: s for key, (s, _) in expected.items()}
    assert [float(rows[key]["stability"]) for key in expected] == pytest.approx(
        [s for _, s in expected.values()], abs=1e-6
    )


def test_evaluation_of_a_model_reports_them_at_its_windows(tmp_path):
    """Evaluation during training and `wavecl evaluate --checkpoint` (build_evaluation): all-foreground masks,
    windows of `data.window_size` frames; stability is 1 minus the truth's consecutive IoU."""
    root = tmp_path / "my_videos"
    write_synthetic_ytvos(root, 3, num_frames=7, size=(32, 48), seed=0, split="valid")
    settings = {"data.dataset_name": "ref_youtube_vos", "data.root": str(root), "data.eval_short_size": 32}
    config = apply_overrides(load_config(TINY), settings | {"data.window_size": 3})
    _, metrics = evaluate_constant(config, tmp_path / "eval", 10.0)
    ground_truth = YTVOSGroundTruth(root)
    switches, stabilities = 0, []
    for expression in ground_truth.expressions:
        labels = ground_truth.video_labels(expression.video_id, expression.frames)
        everything = np.ones(labels.shape, dtype=bool)
        switches += naive_switches(naive_objects(everything, labels, naive_starts(len(labels), 3, 0)))
        stabilities.append(1.0 - naive_consecutive_iou(labels == expression.obj_id))
    assert metrics["identity_switches"] == switches > 0  # the largest object changes between windows
    assert metrics["temporal_stability"] == pytest.approx(np.mean(stabilities))
