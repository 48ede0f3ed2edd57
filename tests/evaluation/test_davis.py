"""Ref-DAVIS J&F: toolkit definitions on hand-built masks, a brute-force boundary reference, folders, writer."""

import csv

import numpy as np
import pytest
import torch
from PIL import Image

from wavecl.data.index_png import save_index_png
from wavecl.evaluation.davis import (
    ObjectMerge,
    davis_labels,
    evaluate_davis_folder,
    evaluate_ref_davis,
    evaluate_sequence,
    ref_davis_metrics,
    write_davis_labels,
)
from wavecl.evaluation.jf import boundary_tolerance, db_eval_boundary, db_eval_iou, db_statistics, disk, seg2bmap


def rect(height: int, width: int, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    mask = np.zeros((height, width), dtype=bool)
    mask[y0:y1, x0:x1] = True
    return mask


def test_seg2bmap_hand_computed():
    expected = np.array(
        [
            [1, 1, 1, 0],
            [1, 0, 1, 0],
            [1, 1, 1, 0],
            [0, 0, 0, 0],
        ],
        dtype=bool,
    )
    np.testing.assert_array_equal(seg2bmap(rect(4, 4, 1, 3, 1, 3)), expected)


def test_tolerance_and_disk():
    assert boundary_tolerance(0.008, 480, 854) == 8
    assert boundary_tolerance(0.008, 480, 640) == 7
    assert boundary_tolerance(0.008, 480, 910) == 9
    assert boundary_tolerance(3, 480, 854) == 3
    assert disk(8).sum() == 197 and disk(8).shape == (17, 17)
    np.testing.assert_array_equal(disk(1), np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]], dtype=bool))


def test_region_similarity_cases():
    empty = np.zeros((6, 8), dtype=bool)
    left = rect(6, 8, 0, 4, 0, 4)  # 16 pixels
    assert db_eval_iou(empty, empty) == 1.0
    assert db_eval_iou(left, left) == 1.0
    assert db_eval_iou(left, rect(6, 8, 0, 4, 4, 8)) == 0.0
    assert db_eval_iou(left, empty) == 0.0
    shifted = rect(6, 8, 0, 4, 2, 6)  # 8 shared pixels, union 24
    assert db_eval_iou(left, shifted) == pytest.approx(1 / 3)
    void = rect(6, 8, 0, 6, 4, 8)  # hides the 8 predicted pixels outside the ground truth
    assert db_eval_iou(left, shifted, void) == pytest.approx(8 / 16)
    # Per frame over a [T, H, W] stack.
    np.testing.assert_allclose(db_eval_iou(np.stack([left, empty]), np.stack([shifted, empty])), [1 / 3, 1.0])


def test_boundary_measure_empty_cases():
    empty = np.zeros((20, 20), dtype=bool)
    square = rect(20, 20, 5, 15, 5, 15)
    assert db_eval_boundary(empty, empty) == 1.0
    assert db_eval_boundary(square, empty) == 0.0
    assert db_eval_boundary(empty, square) == 0.0
    assert db_eval_boundary(square, square) == 1.0


def brute_force_f(gt: np.ndarray, pred: np.ndarray, radius: int) -> float:
    """Boundary F from pairwise pixel distances, independent of any dilation."""
    gt_points = np.argwhere(seg2bmap(gt))
    pred_points = np.argwhere(seg2bmap(pred))
    if len(gt_points) == 0 or len(pred_points) == 0:
        raise ValueError("use non-empty boundaries")
    squared = ((pred_points[:, None, :] - gt_points[None, :, :]) ** 2).sum(-1)
    precision = (squared.min(axis=1) <= radius**2).mean()
    recall = (squared.min(axis=0) <= radius**2).mean()
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


def test_boundary_measure_within_and_beyond_tolerance():
    # 100x100: tolerance ceil(0.008 * 141.4) = 2 pixels.
    assert boundary_tolerance(0.008, 100, 100) == 2
    gt = rect(100, 100, 20, 60, 30, 70)
    for dy, dx in [(0, 2), (2, 0), (1, 1), (-2, 0)]:
        assert db_eval_boundary(gt, np.roll(gt, (dy, dx), axis=(0, 1))) == 1.0
    for dy, dx in [(0, 3), (2, 2), (0, 6)]:
        shifted = np.roll(gt, (dy, dx), axis=(0, 1))
        value = float(db_eval_boundary(gt, shifted))
        assert value < 1.0
        assert value == pytest.approx(brute_force_f(gt, shifted, 2))


def test_boundary_measure_matches_brute_force_on_random_shapes():
    rng = np.random.default_rng(0)
    height, width = 120, 160
    radius = boundary_tolerance(0.008, height, width)
    assert radius == 2
    yy, xx = np.mgrid[:height, :width]
    for _ in range(4):
        blobs = []
        for _ in range(2):
            cy, cx, r = rng.uniform(30, 90), rng.uniform(30, 130), rng.uniform(8, 25)
            blobs.append((yy - cy) ** 2 + (xx - cx) ** 2 < r**2)
        gt, pred = blobs[0], blobs[1] | (rng.random((height, width)) < 0.005)
        assert float(db_eval_boundary(gt, pred)) == pytest.approx(brute_force_f(gt, pred, radius))
    # Shapes touching the image border: pixels outside the image never match.
    gt, pred = rect(height, width, 0, 30, 0, 40), rect(height, width, 0, 27, 0, 44)
    assert float(db_eval_boundary(gt, pred)) == pytest.approx(brute_force_f(gt, pred, radius))
    # Void pixels are removed from both masks before extracting boundaries.
    gt = (yy - 60) ** 2 + (xx - 80) ** 2 < 30**2
    pred = (yy - 64) ** 2 + (xx - 76) ** 2 < 27**2
    void = np.zeros((height, width), dtype=bool)
    void[50:70] = True
    expected = brute_force_f(gt & ~void, pred & ~void, radius)
    assert expected != pytest.approx(brute_force_f(gt, pred, radius))
    assert float(db_eval_boundary(gt, pred, void)) == pytest.approx(expected)


def test_statistics_recall_counts_nan_as_miss_and_decay_bins_overlap():
    values = np.array([0.6, np.nan, 0.4, 0.9])
    mean, recall, decay = db_statistics(values)
    assert mean == pytest.approx((0.6 + 0.4 + 0.9) / 3)
    assert recall == pytest.approx(2 / 4)
    # n = 4: ids = round(linspace(1, 4, 5) + 1e-10) - 1 = 0, 1, 2, 2, 3 -> bin 0 = v[0:2], bin 3 = v[2:4].
    assert decay == pytest.approx(0.6 - 0.65)


def test_statistics_decay_n50():
    # ids 0, 12, 25, 37, 49: bin 0 is v[0:13], which includes frame 12 shared with bin 1.
    values = np.zeros(50)
    values[:12] = 1.0
    mean, recall, decay = db_statistics(values)
    assert mean == pytest.approx(12 / 50)
    assert recall == pytest.approx(12 / 50)
    assert decay == pytest.approx(12 / 13)


def labels_from(height: int, width: int, objects: dict[int, np.ndarray], void: np.ndarray | None = None) -> np.ndarray:
    labels = np.zeros((height, width), dtype=np.uint8)
    for object_id, mask in objects.items():
        labels[mask] = object_id
    if void is not None:
        labels[void] = 255
    return labels


def test_evaluate_sequence_matches_permuted_ids_and_ignores_late_objects():
    h, w = 20, 30
    one, two, three = rect(h, w, 2, 8, 2, 10), rect(h, w, 10, 18, 15, 28), rect(h, w, 12, 18, 2, 8)
    void = rect(h, w, 0, 2, 0, 30)
    gt = np.stack(
        [
            labels_from(h, w, {1: one, 2: two}, void),
            labels_from(h, w, {1: one, 2: two, 3: three}, void),  # object 3 is not in frame 0: ignored
            labels_from(h, w, {2: two}, void),
        ]
    )
    spurious = rect(h, w, 0, 2, 25, 30)
    prediction = np.stack(
        [
            labels_from(h, w, {2: one, 1: two, 3: spurious}),
            labels_from(h, w, {2: one, 1: two}),
            labels_from(h, w, {1: two}),
        ]
    )
    j, f = evaluate_sequence(gt, prediction)
    assert j.shape == f.shape == (2, 3)
    np.testing.assert_array_equal(j, np.ones((2, 3)))
    np.testing.assert_array_equal(f, np.ones((2, 3)))

    # Only one proposal, for object 2: object 1 is matched to an empty padding proposal.
    j, f = evaluate_sequence(gt, np.stack([labels_from(h, w, {1: two})] * 3))
    np.testing.assert_array_equal(j, [[0.0, 0.0, 1.0], [1.0, 1.0, 1.0]])
    np.testing.assert_array_equal(f, [[0.0, 0.0, 1.0], [1.0, 1.0, 1.0]])

    with pytest.raises(ValueError, match="proposals"):
        evaluate_sequence(gt, np.full_like(gt, 21))


def write_sequence(folder, labels: np.ndarray) -> list[str]:
    names = [f"{t:05d}" for t in range(len(labels))]
    for name, frame in zip(names, labels):
        save_index_png(frame, folder / f"{name}.png")
    return names


def make_ground_truth(gt_dir, h: int = 24, w: int = 32) -> dict[str, np.ndarray]:
    obj_a, obj_b = rect(h, w, 4, 16, 4, 20), rect(h, w, 6, 20, 10, 28)
    void = rect(h, w, 20, 24, 0, 8)
    sequences = {
        "seq-a": np.stack([labels_from(h, w, {1: obj_a})] * 4),
        "seq-b": np.stack([labels_from(h, w, {1: obj_b}, void)] * 4),
    }
    for name, labels in sequences.items():
        write_sequence(gt_dir / name, labels)
    return sequences


def probabilities_for(labels: np.ndarray, keep_frames: int) -> torch.Tensor:
    """[1, T, H, W] probabilities: 0.9 on object 1 (and on void pixels) for the first frames, 0.2 elsewhere."""
    probs = np.where((labels == 1) | (labels == 255), 0.9, 0.2).astype(np.float32)
    probs[keep_frames:] = 0.2
    return torch.from_numpy(probs)[None]


def read_csv(path) -> list[list[str]]:
    with open(path, newline="") as handle:
        return list(csv.reader(handle))


def test_evaluate_davis_folder_end_to_end(tmp_path):
    gt_dir, run = tmp_path / "gt", tmp_path / "run"
    sequences = make_ground_truth(gt_dir)
    # seq-a: found in frames 0-1, missed in 2-3 -> J = F = (1, 1, 0, 0): mean 0.5, recall 0.5, decay 1.
    # seq-b: found everywhere (the prediction also covers void pixels, which are ignored).
    for name, keep in (("seq-a", 2), ("seq-b", 4)):
        frames = [f"{t:05d}" for t in range(4)]
        write_davis_labels(run, 0, name, frames, davis_labels(probabilities_for(sequences[name], keep)))
    result = evaluate_davis_folder(run / "anno_0", gt_dir)

    assert result.per_object["seq-a_1"] == pytest.approx(
        {"J-Mean": 0.5, "J-Recall": 0.5, "J-Decay": 1.0, "F-Mean": 0.5, "F-Recall": 0.5, "F-Decay": 1.0}
    )
    assert result.per_object["seq-b_1"] == pytest.approx(
        {"J-Mean": 1.0, "J-Recall": 1.0, "J-Decay": 0.0, "F-Mean": 1.0, "F-Recall": 1.0, "F-Decay": 0.0}
    )
    expected = {
        "J&F-Mean": 0.75,
        "J-Mean": 0.75,
        "J-Recall": 0.75,
        "J-Decay": 0.5,
        "F-Mean": 0.75,
        "F-Recall": 0.75,
        "F-Decay": 0.5,
    }
    assert result.global_metrics == pytest.approx(expected)
    assert read_csv(run / "anno_0" / "global_results-val.csv") == [
        list(expected),
        ["0.75000", "0.75000", "0.75000", "0.50000", "0.75000", "0.75000", "0.50000"],
    ]
    assert read_csv(run / "anno_0" / "per-sequence_results-val.csv") == [
        ["Sequence", "J-Mean", "F-Mean"],
        ["seq-a_1", "0.50000", "0.50000"],
        ["seq-b_1", "1.00000", "1.00000"],
    ]


def test_evaluate_davis_folder_missing_prediction_names_the_file(tmp_path):
    make_ground_truth(tmp_path / "gt")
    (tmp_path / "run" / "seq-a").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="00000.png"):
        evaluate_davis_folder(tmp_path / "run", tmp_path / "gt", ["seq-a"])


def test_evaluate_ref_davis_averages_the_four_annotators(tmp_path):
    davis_root, run = tmp_path / "DAVIS", tmp_path / "run"
    sequences = make_ground_truth(davis_root / "Annotations_unsupervised" / "480p")
    (davis_root / "ImageSets" / "2017").mkdir(parents=True)
    (davis_root / "ImageSets" / "2017" / "val.txt").write_text("seq-a\nseq-b\n")
    frames = [f"{t:05d}" for t in range(4)]
    for annotator in range(4):
        keep = 4 if annotator % 2 == 0 else 0  # slots 0 and 2 perfect, 1 and 3 empty
        for name, labels in sequences.items():
            write_davis_labels(run, annotator, name, frames, davis_labels(probabilities_for(labels, keep)))
    summary = evaluate_ref_davis(run, davis_root)
    assert summary["anno_0"]["J&F-Mean"] == 1.0 and summary["anno_1"]["J&F-Mean"] == 0.0
    assert summary["mean"]["J&F-Mean"] == pytest.approx(0.5)
    assert summary["mean"]["J-Recall"] == pytest.approx(0.5)
    rows = read_csv(run / "global_results-val.csv")
    assert [row[0] for row in rows] == ["annotator", "anno_0", "anno_1", "anno_2", "anno_3", "mean"]
    assert rows[-1][1] == "0.50000"
    reported = ref_davis_metrics(run, davis_root)
    assert reported == summary["mean"] | {"videos": len(sequences), "annotators": 4}


def test_davis_labels_threshold_background_and_ties():
    # Pixels: (0.4, 0.3) -> background; (0.6, 0.7) -> 2; (0.7, 0.7) tie -> 1; (0.5, 0.2) -> 1 (0.5 is kept).
    probabilities = torch.tensor([[[[0.4, 0.6, 0.7, 0.5]]], [[[0.3, 0.7, 0.7, 0.2]]]])  # [N=2, T=1, 1, 4]
    labels = davis_labels(probabilities)
    assert labels.dtype == torch.uint8
    assert labels.tolist() == [[[0, 2, 1, 1]]]


def test_write_davis_labels_layout(tmp_path):
    probabilities = torch.zeros(2, 3, 5, 6)
    probabilities[0, :, :2] = 0.8
    probabilities[1, :, 3:] = 0.9
    paths = write_davis_labels(tmp_path, 2, "bike-packing", ["00000", "00001", "00002"], davis_labels(probabilities))
    assert [p.relative_to(tmp_path).as_posix() for p in paths] == [f"anno_2/bike-packing/{t:05d}.png" for t in range(3)]
    with Image.open(paths[1]) as image:
        assert image.mode == "P" and image.size == (6, 5)
        labels = np.asarray(image)
    expected = np.zeros((5, 6), dtype=np.uint8)
    expected[:2] = 1
    expected[3:] = 2
    np.testing.assert_array_equal(labels, expected)
    with pytest.raises(ValueError, match="frame names"):
        write_davis_labels(tmp_path, 0, "x", ["00000"], davis_labels(probabilities))


def naive_labels(probabilities: np.ndarray) -> np.ndarray:
    """Pixel by pixel: the highest score among background 0.1 and objects at >= 0.5, lowest id on ties."""
    num_objects, frames, height, width = probabilities.shape
    labels = np.zeros((frames, height, width), dtype=np.uint8)
    for t in range(frames):
        for y in range(height):
            for x in range(width):
                best, best_id = 0.1, 0
                for k in range(num_objects):
                    value = float(probabilities[k, t, y, x])
                    if value >= 0.5 and value > best:
                        best, best_id = value, k + 1
                labels[t, y, x] = best_id
    return labels


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_object_merge_in_any_order_equals_the_pixelwise_argmax(seed):
    """Probabilities on a coarse grid (many exact ties and values at the 0.5 threshold), objects added
    in a random order: the running merge gives the argmax of all objects at once."""
    rng = np.random.default_rng(seed)
    probabilities = rng.integers(0, 9, size=(5, 2, 6, 7)) / 8  # 0, 0.125, ..., 1
    merge = ObjectMerge(probabilities.shape[1:])
    for k in rng.permutation(len(probabilities)):
        merge.add(int(k), torch.from_numpy(probabilities[k]).to(torch.bfloat16 if seed == 2 else torch.float32))
    expected = naive_labels(probabilities)
    np.testing.assert_array_equal(merge.labels.numpy(), expected)
    np.testing.assert_array_equal(davis_labels(torch.from_numpy(probabilities)).numpy(), expected)
    assert merge.labels.dtype == torch.uint8 and merge.best.dtype == torch.float32
    with pytest.raises(ValueError, match="differ from the chunk"):
        merge.add(0, torch.zeros(2, 6, 8))
