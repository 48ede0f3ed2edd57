"""`wavecl prepare ytvos-holdout`: a view of Ref-YouTube-VOS whose valid split is held-out training videos
with their masks, written outside the dataset, deterministic per seed, trained on and scored locally."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support import run_cli, set_writable, tree_state

from wavecl.data.check import check_ytvos_dataset
from wavecl.data.holdout import default_holdout_dir, write_ytvos_holdout
from wavecl.data.identifiers import UnsafeIdentifierError
from wavecl.data.synthetic import write_synthetic_ytvos
from wavecl.data.ytvos import YTVOSPaths, evaluated_videos, train_samples_cache_path
from wavecl.testing.ytvos import write_ytvos_fixture

REPO = Path(__file__).resolve().parents[2]
TINY = "tiny"
SIZE = (32, 48)
NUM_VIDEOS = 10


def read_meta(root: Path, split: str) -> dict:
    return json.loads((root / "meta_expressions" / split / "meta_expressions.json").read_text())["videos"]


@pytest.fixture()
def dataset(tmp_path: Path) -> Path:
    """A Ref-YouTube-VOS-layout dataset of 10 annotated training videos."""
    root = tmp_path / "refer_youtube_vos"
    write_synthetic_ytvos(root, NUM_VIDEOS, num_frames=4, size=SIZE, seed=5, split="train")
    return root


def test_the_view_holds_out_n_videos_with_their_masks_and_trains_on_the_rest(dataset, tmp_path, capsys):
    """Counts and disjointness against the source's expression file, links to the source's own folders,
    the check passing on the view, and the dataset folder (read-only) unchanged."""
    source = read_meta(dataset, "train")
    source_categories = json.loads((dataset / "train" / "meta.json").read_text())["videos"]
    set_writable(dataset, False)
    before = tree_state(dataset)
    argv = ["prepare", "ytvos-holdout", "--root", str(dataset), "--videos", "3", "--seed", "4"]
    try:
        code, out, err = run_cli([*argv, "--cache-dir", str(tmp_path / "cache")], capsys)
    finally:
        after = tree_state(dataset)
        set_writable(dataset, True)
    assert code == 0, err
    assert after == before
    view = default_holdout_dir(tmp_path / "cache", dataset, 3, 4)
    assert view.parent.parent == tmp_path / "cache" and str(view) in " ".join(out.split())

    train, valid = read_meta(view, "train"), read_meta(view, "valid")
    assert len(valid) == 3 and len(train) == NUM_VIDEOS - 3
    assert set(train) | set(valid) == set(source) and not set(train) & set(valid)
    assert {video: source[video] for video in train} == train
    assert {video: source[video] for video in valid} == valid  # every synthetic object is in its masks
    for split, videos in (("train", train), ("valid", valid)):
        for video in videos:
            for kind in ("JPEGImages", "Annotations"):
                link = view / split / kind / video
                assert link.is_symlink() and link.resolve() == (dataset / "train" / kind / video).resolve()
        categories = json.loads((view / split / "meta.json").read_text())["videos"]
        assert categories == {video: source_categories[video] for video in videos}
    record = json.loads((view / "holdout.json").read_text())
    assert record["held_out_videos"] == sorted(valid) and record["train_videos"] == sorted(train)
    assert record["seed"] == 4 and record["source"] == str(dataset.resolve())

    report = check_ytvos_dataset(view)
    assert report.problems == []
    assert [(split.videos, split.masks) for split in report.splits] == [(7, 7 * 4), (3, 3 * 4)]
    assert sorted(evaluated_videos(YTVOSPaths.find(view))) == sorted(valid)


def test_a_seed_gives_one_split_and_another_seed_another(dataset, tmp_path):
    first = write_ytvos_holdout(dataset, tmp_path / "a", 4, seed=0)
    again = write_ytvos_holdout(dataset, tmp_path / "b", 4, seed=0)
    other = write_ytvos_holdout(dataset, tmp_path / "c", 4, seed=1)
    assert first.held_out_videos == again.held_out_videos and len(first.held_out_videos) == 4
    for split in ("train", "valid"):
        assert read_meta(tmp_path / "a", split) == read_meta(tmp_path / "b", split)
    assert set(other.held_out_videos) != set(first.held_out_videos)
    # a view is replaced whole by the next one written to its folder
    replaced = write_ytvos_holdout(dataset, tmp_path / "a", 2, seed=1)
    assert sorted(read_meta(tmp_path / "a", "valid")) == list(replaced.held_out_videos)
    assert sorted(path.name for path in (tmp_path / "a" / "valid" / "JPEGImages").iterdir()) == sorted(
        replaced.held_out_videos
    )


def test_expressions_whose_object_is_never_seen_are_not_scored(dataset, tmp_path):
    """Expression '0' of every video refers to an absent object (99) or to the background (0), and one video
    has nothing else: the held-out videos lose expression '0', that video is never held out, and the valid
    split checks clean."""
    meta_path = dataset / "meta_expressions" / "train" / "meta_expressions.json"
    meta = json.loads(meta_path.read_text())
    unscored = sorted(meta["videos"])[0]
    for index, (video_id, video) in enumerate(sorted(meta["videos"].items())):
        video["expressions"]["0"]["obj_id"] = 99 if index % 2 else 0
        if video_id == unscored:
            video["expressions"] = {"0": video["expressions"]["0"]}
    meta_path.write_text(json.dumps(meta))
    holdout = write_ytvos_holdout(dataset, tmp_path / "view", NUM_VIDEOS - 1, seed=0)
    valid = read_meta(tmp_path / "view", "valid")
    assert unscored not in valid and list(read_meta(tmp_path / "view", "train")) == [unscored]
    assert sorted(valid) == sorted(set(meta["videos"]) - {unscored})
    for video_id, video in valid.items():
        assert set(video["expressions"]) == set(meta["videos"][video_id]["expressions"]) - {"0"}
    assert sorted(holdout.left_out_expressions) == [(video_id, "0") for video_id in sorted(valid)]
    assert check_ytvos_dataset(tmp_path / "view", ["valid"]).problems == []


def test_bad_requests_are_refused_and_nothing_is_lost(dataset, tmp_path, capsys):
    other = tmp_path / "notes"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    before = tree_state(dataset)
    for argv, words in [
        (["--videos", "3", "--out", str(dataset / "view")], "must be written outside the dataset folder"),
        (["--videos", "3", "--out", str(other)], f"{other} exists and is not a hold-out view"),
        (["--videos", str(NUM_VIDEOS), "--out", str(tmp_path / "v")], f"cannot hold out {NUM_VIDEOS} of {NUM_VIDEOS}"),
        (["--videos", "0", "--out", str(tmp_path / "v")], "cannot hold out 0 of"),
    ]:
        code, _, err = run_cli(["prepare", "ytvos-holdout", "--root", str(dataset), *argv], capsys)
        assert code == 2 and "Traceback" not in err and words in " ".join(err.split())
    assert tree_state(dataset) == before and (other / "keep.txt").read_text() == "mine"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["notes", "refer_youtube_vos"]  # no view, no staging


def edit_train_meta(root: Path, edit) -> dict:
    meta_path = root / "meta_expressions" / "train" / "meta_expressions.json"
    meta = json.loads(meta_path.read_text())
    edit(meta["videos"])
    meta_path.write_text(json.dumps(meta))
    return meta


def test_an_unsafe_video_id_is_refused(dataset, tmp_path):
    edit_train_meta(dataset, lambda videos: videos.__setitem__("..", videos.pop(sorted(videos)[0])))
    with pytest.raises(UnsafeIdentifierError, match="video id '..' names a folder itself"):
        write_ytvos_holdout(dataset, tmp_path / "view", 3, seed=0)
    assert not (tmp_path / "view").exists()


def test_a_held_out_expression_without_an_object_id_is_named(dataset, tmp_path):
    def drop_object_ids(videos: dict) -> None:
        for video in videos.values():
            del video["expressions"]["0"]["obj_id"]

    meta = edit_train_meta(dataset, drop_object_ids)
    with pytest.raises(
        ValueError, match=r"meta_expressions.json: video '\w+' expression '0' needs an integer 'obj_id'"
    ):
        write_ytvos_holdout(dataset, tmp_path / "view", 3, seed=0)
    assert not (tmp_path / "view").exists() and len(meta["videos"]) == NUM_VIDEOS


def test_training_on_the_view_and_scoring_its_held_out_videos(tmp_path, capsys):
    """End to end on the real layout (whose valid split has no masks and a test file): hold out one of the
    two training videos, train two steps on the view, and `wavecl evaluate` J&F on the held-out video."""
    fixture = write_ytvos_fixture(tmp_path / "refer_youtube_vos")
    cache = tmp_path / "cache"
    code, _, err = run_cli(
        ["prepare", "ytvos-holdout", "--root", str(tmp_path), "--videos", "1", "--out", str(tmp_path / "view")],
        capsys,
    )
    assert code == 0, err
    (held_out,) = read_meta(tmp_path / "view", "valid")
    (trained,) = set(fixture.train) - {held_out}
    settings = {
        "data.dataset_name": "ref_youtube_vos",
        "data.cache_dir": str(cache),
        "train.max_steps_per_epoch": 2,
        **{f"data.{kind}_short_size": SIZE[0] for kind in ("train", "eval")},
        **{f"data.{kind}_max_size": SIZE[1] for kind in ("train", "eval")},
    }
    overrides = [item for key, value in settings.items() for item in ("--set", f"{key}={value}")]
    runs = tmp_path / "runs"
    train = ["train", "-c", TINY, "--device", "cpu", "--epochs", "1", "--data-root", str(tmp_path / "view")]
    code, _, err = run_cli([*train, "--output-dir", str(runs), "--version", "holdout", *overrides], capsys)
    assert code == 0, err
    windows = json.loads(train_samples_cache_path(cache, tmp_path / "view", 4).read_text())["samples"]
    assert {video for video, _, _ in windows} == {trained}

    run_dir = runs / "ref_youtube_vos" / "holdout"
    evaluate = ["evaluate", "--checkpoint", str(run_dir), "--device", "cpu", "--data-root", str(tmp_path / "view")]
    code, out, err = run_cli([*evaluate, "--out-dir", str(tmp_path / "eval"), *overrides], capsys)
    assert code == 0, err
    record = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    spec = fixture.train[held_out]
    assert record["counts"] == {
        "expressions": len(spec.expressions),
        "videos": 1,
        "frames": len(spec.expressions) * len(spec.frame_names),
        "missing_masks": 0,
        "extra_masks": 0,
    }
    metrics = record["metrics"]
    assert 0 <= metrics["J"] <= 1 and 0 <= metrics["F"] <= 1
    assert metrics["J&F"] == pytest.approx((metrics["J"] + metrics["F"]) / 2)
    assert "J&F" in out and not (tmp_path / "eval" / "submission.zip").exists()


def test_copies_instead_of_links(dataset, tmp_path):
    holdout = write_ytvos_holdout(dataset, tmp_path / "view", 2, seed=0, mode="copy")
    for split, videos in (("train", holdout.train_videos), ("valid", holdout.held_out_videos)):
        for video in videos:
            for kind in ("JPEGImages", "Annotations"):
                copied, source = tmp_path / "view" / split / kind / video, dataset / "train" / kind / video
                assert not copied.is_symlink() and copied.is_dir()
                assert {path.name: path.read_bytes() for path in copied.iterdir()} == {
                    path.name: path.read_bytes() for path in source.iterdir()
                }


def test_refused_symbolic_links_are_reported_with_the_remedy(dataset, tmp_path, monkeypatch):
    def refuse(self, target, target_is_directory=False):
        raise OSError(1, "Operation not permitted")

    monkeypatch.setattr(Path, "symlink_to", refuse)
    with pytest.raises(OSError, match=r"symbolic links refused here\? use copies: --copy"):
        write_ytvos_holdout(dataset, tmp_path / "view", 2, seed=0)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["refer_youtube_vos"]  # no view, no staging
