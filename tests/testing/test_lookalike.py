"""Look-alike clips (wavecl/testing/lookalike.py): twins that cross and swap, sentences that only motion
or position make true, the Ref-YouTube-VOS layout, `wavecl prepare synthetic --lookalike`, and identity
switches counted on them."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from support import run_cli

from wavecl.data.synthetic import COLOURS, KINDS
from wavecl.data.ytvos import YTVOSGroundTruth
from wavecl.evaluation.ytvos import score_ytvos_predictions, write_ytvos_masks
from wavecl.testing.lookalike import LOOKALIKE_FRAMES, sample_lookalike_video, write_lookalike_ytvos

SIZE = (64, 96)


def read_labels(root: Path, split: str, video: str) -> np.ndarray:
    """``[T, H, W]`` ids straight from the index PNGs, in frame-name order."""
    files = sorted((root / split / "Annotations" / video).glob("*.png"))
    return np.stack([np.asarray(Image.open(path)) for path in files])


def centre_track(labels: np.ndarray, obj_id: int) -> np.ndarray:
    """``[k, 2]`` ``(x, y)`` mask centroids in the frames where the object shows at least 80 % of its largest
    area (rasterised, its area varies by a pixel row or column)."""
    areas = (labels == obj_id).sum(axis=(1, 2))
    centres = []
    for t in np.flatnonzero(areas >= 0.8 * areas.max()):
        ys, xs = np.nonzero(labels[t] == obj_id)
        centres.append((xs.mean(), ys.mean()))
    return np.asarray(centres)


def twins_of(labels: np.ndarray, frames: np.ndarray) -> tuple[int, int]:
    """The two ids whose pixels have the same colour in the rendered frames (found from pixels alone)."""
    colours: dict[tuple[int, ...], list[int]] = {}
    for obj in np.unique(labels)[1:]:
        t = int(np.argmax((labels == obj).sum(axis=(1, 2))))
        colours.setdefault(tuple(frames[t][labels[t] == obj][0]), []).append(int(obj))
    pairs = [ids for ids in colours.values() if len(ids) == 2]
    assert len(pairs) == 1
    return pairs[0][0], pairs[0][1]


MOTION = r"moving (?:to the )?(left|right|up|down)"
POSITION = r"(?:at|on) the (top|bottom|left|right)"


def is_true_of(text: str, labels: np.ndarray, obj: int) -> bool:
    """Whether the motion and half of the frame a sentence names fit object ``obj``'s mask centroids."""
    track = centre_track(labels, obj)
    moved, mean = track[-1] - track[0], track.mean(axis=0)
    motion, position = re.search(MOTION, text), re.search(POSITION, text)
    true = True
    if motion:
        true &= {"left": -moved[0], "right": moved[0], "up": -moved[1], "down": moved[1]}[motion.group(1)] > 0
    if position:
        height, width = labels.shape[1:]
        halves = {"top": mean[1] < height / 2, "bottom": mean[1] > height / 2}
        true &= (halves | {"left": mean[0] < width / 2, "right": mean[0] > width / 2})[position.group(1)]
    return bool(true)


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    root = tmp_path_factory.mktemp("lookalike")
    return root, write_lookalike_ytvos(root, num_videos=6, num_frames=24, size=SIZE, seed=2, split="valid")


def test_same_seed_same_clips_and_splits_differ():
    first = [sample_lookalike_video(4, "valid", index, 20, SIZE) for index in range(3)]
    assert first == [sample_lookalike_video(4, "valid", index, 20, SIZE) for index in range(3)]
    assert first != [sample_lookalike_video(5, "valid", index, 20, SIZE) for index in range(3)]
    assert first[0] != sample_lookalike_video(4, "train", 0, 20, SIZE)


def test_twins_look_alike_cross_and_swap(written):
    root, info = written
    for video in info.videos:
        frames, _ = video.render()
        labels = read_labels(root, "valid", video.video_id)
        assert len(labels) == 24 and 2 <= len(np.unique(labels)) - 1 <= 3
        first, second = twins_of(labels, frames)
        areas = [(labels == obj).sum(axis=(1, 2)).max() for obj in (first, second)]
        assert abs(areas[0] - areas[1]) <= 0.15 * max(areas)  # one size
        tracks = [centre_track(labels, obj) for obj in (first, second)]
        moves = [track[-1] - track[0] for track in tracks]
        axis = int(np.argmax(np.abs(moves[0])))  # 0: they move along x, 1: along y
        assert moves[0][axis] * moves[1][axis] < 0  # opposite directions
        start_order = np.sign(tracks[0][0][axis] - tracks[1][0][axis])
        end_order = np.sign(tracks[0][-1][axis] - tracks[1][-1][axis])
        assert start_order == -end_order != 0  # they swapped places along the axis
        middle = labels.shape[1 + axis] / 2  # across the motion: each keeps to its own half
        sides = [np.sign(track[:, 1 - axis] - middle) for track in tracks]
        assert len(set(sides[0])) == len(set(sides[1])) == 1 and sides[0][0] == -sides[1][0]


def test_only_the_twins_have_sentences_and_each_is_true_of_one_twin(written):
    root, info = written
    expressions = json.loads((root / "meta_expressions" / "valid" / "meta_expressions.json").read_text())["videos"]
    for video in info.videos:
        frames, _ = video.render()
        labels = read_labels(root, "valid", video.video_id)
        twins = twins_of(labels, frames)
        listed = expressions[video.video_id]["expressions"]
        assert list(listed) == [str(n) for n in range(len(listed))] and len(listed) >= 2
        assert {int(e["obj_id"]) for e in listed.values()} == set(twins)  # both twins, nothing else
        for expression in listed.values():
            text = expression["exp"]
            assert sum(word in COLOURS for word in text.split()) == sum(word in KINDS for word in text.split()) == 1
            assert re.search(MOTION, text) or re.search(POSITION, text), text
            assert [obj for obj in twins if is_true_of(text, labels, obj)] == [int(expression["obj_id"])], text


def test_switching_twins_after_the_crossing_is_one_switch_per_expression(written, tmp_path):
    """Predictions that follow the referred twin score J = 1, no switch and stability 0; predictions that
    take the other twin from the middle frame on score one switch each at windows of 4 frames."""
    root, info = written
    ground_truth = YTVOSGroundTruth(root)
    for swap in (False, True):
        predictions = tmp_path / f"swap_{swap}"
        for video in info.videos:
            labels = read_labels(root, "valid", video.video_id)
            twins = {e.obj_id for e in video.expressions}
            for expression in video.expressions:
                (other,) = twins - {expression.obj_id}
                predicted = labels == expression.obj_id
                if swap:
                    predicted[12:] = labels[12:] == other
                write_ytvos_masks(
                    predictions, video.video_id, expression.exp_id, video.frame_names, torch.from_numpy(predicted)
                )
        metrics = score_ytvos_predictions(predictions, ground_truth, window=4)
        if swap:
            assert metrics["identity_switches"] == info.num_expressions and metrics["J"] < 1
        else:
            assert metrics["identity_switches"] == 0 and metrics["temporal_stability"] == 0 and metrics["J"] == 1


def test_prepare_synthetic_lookalike_writes_long_annotated_clips(tmp_path, capsys):
    root = tmp_path / "lookalike"
    argv = ["prepare", "synthetic", "--lookalike", "--root", str(root), "--videos", "1", "--valid-videos", "2"]
    code, out, _ = run_cli(argv, capsys)
    assert code == 0 and "look-alike valid: 2 videos of 48 frames" in out
    assert LOOKALIKE_FRAMES == 48
    for split, count in (("train", 1), ("valid", 2)):
        videos = json.loads((root / "meta_expressions" / split / "meta_expressions.json").read_text())["videos"]
        assert len(videos) == count
        for video, entry in videos.items():
            assert len(entry["frames"]) == LOOKALIKE_FRAMES
            assert len(list((root / split / "Annotations" / video).glob("*.png"))) == LOOKALIKE_FRAMES
    code, out, _ = run_cli(["prepare", "check", "--root", str(root)], capsys)
    assert code == 0, out
    with pytest.raises(ValueError, match="at least 2 frames"):
        sample_lookalike_video(0, "valid", 0, num_frames=1)
