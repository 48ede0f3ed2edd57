"""The ``wavecl`` command line: help of every command, ``info``, ``prepare`` (results and errors),
``evaluate --predictions`` against independent computations, ``evaluate`` refusing mismatched
weights, and ``predict`` on a small run."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from support import run_cli

from wavecl.checkpoint import read_state_dict
from wavecl.config import apply_overrides, load_config
from wavecl.data.ytvos import YTVOSGroundTruth, train_samples_cache_path
from wavecl.evaluation.ytvos import write_ytvos_masks, zip_submission
from wavecl.testing.a2d import write_a2d_fixture
from wavecl.testing.checkpoints import original_state_dict
from wavecl.testing.davis import write_davis_fixture
from wavecl.testing.jhmdb import write_jhmdb_fixture
from wavecl.testing.ytvos import write_ytvos_fixture

REPO = Path(__file__).resolve().parents[2]
TINY = "tiny"
A2D_CONFIG = "a2d_sentences"


def prepare_synthetic(root: Path, videos: int, valid_videos: int, frames: int, size: tuple[int, int], capsys):
    """``wavecl prepare synthetic`` with small clips; returns :func:`run_cli`'s result."""
    counts = ["--videos", str(videos), "--valid-videos", str(valid_videos), "--frames", str(frames)]
    return run_cli(["prepare", "synthetic", "--root", str(root), *counts, "--size", *map(str, size)], capsys)


def read_metrics(folder: Path) -> dict[str, float]:
    return json.loads((folder / "metrics.json").read_text())["metrics"]


# ------------------------------------------------------------------------------------------- help


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        ([], ["info", "train", "evaluate", "predict", "prepare", "demo", "examples:"]),
        (["info"], ["--config", "--set", "examples:"]),
        (
            ["train"],
            [
                "--config",
                "--resume",
                "--pretrained",
                "--device",
                "docs/training.md#run-directory",
                "torchrun",
                "--compile",
            ],
        ),
        (["evaluate"], ["--checkpoint", "--predictions", "--out-dir", "--device", "--protocols", "metrics.json"]),
        (["predict"], ["--checkpoint", "--video", "--text", "--out-dir", "--window", "--device", "--compile"]),
        (["prepare"], ["a2d-gt", "jhmdb-gt", "ytvos-samples", "davis", "synthetic"]),
        (["prepare", "a2d-gt"], ["--root", "--out", "a2d_sentences_test_annotations_in_coco_format.json"]),
        (["prepare", "jhmdb-gt"], ["--root", "--samples-metadata", "--seed"]),
        (["prepare", "ytvos-samples"], ["--root", "--window-size", "--workers"]),
        (["prepare", "davis"], ["--root", "--copy"]),
        (["prepare", "synthetic"], ["--root", "--videos", "--valid-videos", "--seed"]),
        (["demo"], ["--out-dir", "runs/demo", "--minutes", "--seed", "--device"]),
    ],
)
def test_help(argv, expected, capsys):
    code, out, _ = run_cli([*argv, "--help"], capsys)
    assert code == 0
    assert out.startswith(f"usage: wavecl {' '.join(argv)}".rstrip())
    for text in expected:
        assert text in out, text
    if argv:
        assert "examples:" in out


HELP_PROBE = """
import argparse, contextlib, io, json, sys
from wavecl.cli import build_parser, main

def commands(parser, prefix):
    yield prefix
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from commands(sub, [*prefix, name])

loaded = {}
for argv in commands(build_parser(), []):
    with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):
        main([*argv, "--help"])
    loaded[" ".join(argv)] = sorted(name for name in ("torch", "transformers", "gradio") if name in sys.modules)
print(json.dumps(loaded))
"""


def test_every_help_is_answered_without_loading_torch():
    """``--help`` of every command and action, in one process in turn: none loads torch, transformers or
    gradio (seconds each), so the first that would is named."""
    result = subprocess.run([sys.executable, "-c", HELP_PROBE], capture_output=True, text=True, check=True)
    loaded = json.loads(result.stdout)
    assert {"", "evaluate", "train", "predict", "serve", "config list", "prepare a2d-gt", "demo"} <= set(loaded)
    assert {argv: names for argv, names in loaded.items() if names} == {}


def test_evaluate_protocols_lists_every_protocol_of_the_table(capsys):
    from wavecl.evaluation.protocols import PROTOCOLS

    code, out, _ = run_cli(["evaluate", "--protocols"], capsys)
    assert code == 0
    for name, row in PROTOCOLS.items():
        assert f"{name}: {row.protocol}." in out and f"{name}: {row.saved_predictions}." in out


# ------------------------------------------------------------------------------------------- info


def test_info_prints_parameter_counts(tiny_model, capsys):
    code, out, _ = run_cli(["info", "-c", TINY], capsys)
    assert code == 0
    model = tiny_model
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert trainable < total  # the tiny config freezes the text encoder
    total_row = next(line for line in out.splitlines() if "total" in line)
    assert f"{total:,}" in total_row and f"{trainable:,}" in total_row
    backbone_row = next(line for line in out.splitlines() if "backbone" in line)
    assert f"{sum(p.numel() for p in model.backbone.parameters()):,}" in backbone_row
    transformer_row = next(line for line in out.splitlines() if "transformer" in line)
    assert f"{sum(p.numel() for p in model.transformer.parameters()):,}" in transformer_row
    rows = [line.split("│") for line in out.splitlines() if line.startswith("│") and "total" not in line]
    assert sum(int(cells[2].strip().replace(",", "")) for cells in rows) == total


def test_a_missing_config_is_named(tmp_path, capsys):
    code, _, err = run_cli(["info", "-c", str(tmp_path / "nope.yaml")], capsys)
    assert code == 2 and f"config file not found: {tmp_path / 'nope.yaml'}" in err


# ---------------------------------------------------------------------------------------- prepare


def test_prepare_a2d_gt_writes_the_test_ground_truth(tmp_path, capsys):
    fixture = write_a2d_fixture(tmp_path / "data" / "a2d_sentences")
    code, out, _ = run_cli(["prepare", "a2d-gt", "--root", str(tmp_path / "data")], capsys)
    assert code == 0
    path = tmp_path / "data" / "a2d_sentences" / "a2d_sentences_test_annotations_in_coco_format.json"
    assert str(path) in out
    coco = COCO(str(path))
    expected = {f"v_{s.video_id}_f_{s.frame}_i_{s.instance_id}": s for s in fixture.samples["test"]}
    assert set(coco.getImgIds()) == set(expected)
    for image_id, sample in expected.items():
        written = fixture.masks[sample.video_id, sample.frame][sample.instance_id]
        np.testing.assert_array_equal(coco.annToMask(coco.imgToAnns[image_id][0]).astype(bool), written)


def test_prepare_synthetic_writes_both_splits(tmp_path, capsys):
    root = tmp_path / "synthetic"
    code, out, _ = prepare_synthetic(root, videos=2, valid_videos=1, frames=3, size=(24, 32), capsys=capsys)
    assert code == 0 and "synthetic train: 2 videos" in out and "synthetic valid: 1 videos" in out
    for split, count in (("train", 2), ("valid", 1)):
        videos = json.loads((root / "meta_expressions" / split / "meta_expressions.json").read_text())["videos"]
        assert len(videos) == count
        frames = sorted((root / split / "JPEGImages" / next(iter(videos))).iterdir())
        assert len(frames) == 3 and Image.open(frames[0]).size == (32, 24)


def test_prepare_ytvos_samples_writes_the_training_cache(tmp_path, capsys):
    write_ytvos_fixture(tmp_path / "refer_youtube_vos")
    argv = ["prepare", "ytvos-samples", "--root", str(tmp_path), "--window-size", "4", "--cache-dir", f"{tmp_path}/c"]
    code, out, _ = run_cli(argv, capsys)
    assert code == 0
    cache = train_samples_cache_path(tmp_path / "c", tmp_path, 4)
    assert cache.is_relative_to(tmp_path / "c")
    samples = json.loads(cache.read_text())["samples"]
    assert f": {len(samples)} -> {cache}" in out
    assert all(len(frames) == 4 for _, frames, _ in samples)


def test_prepare_davis_converts(tmp_path, capsys):
    write_davis_fixture(tmp_path / "refer-davis")
    code, out, _ = run_cli(["prepare", "davis", "--root", str(tmp_path / "refer-davis")], capsys)
    assert code == 0 and "Ref-DAVIS17 valid: 2 videos, 20 expressions" in out  # 5 objects x 4 annotators
    meta = tmp_path / "refer-davis" / "meta_expressions" / "valid" / "meta_expressions.json"
    videos = json.loads(meta.read_text())["videos"]
    assert sorted(videos) == ["blackswan", "classic-car"]


def _corrupt(path: Path) -> Path:
    path.write_bytes(b"this is not the expected format")
    return path


def _broken_a2d(tmp_path: Path) -> Path:
    fixture = write_a2d_fixture(tmp_path / "a2d_sentences")
    sample = fixture.samples["test"][0]
    masks = tmp_path / "a2d_sentences" / "text_annotations" / "a2d_annotation_with_instances"
    return _corrupt(masks / sample.video_id / f"{sample.frame:05d}.h5")


def _broken_jhmdb(tmp_path: Path) -> Path:
    write_jhmdb_fixture(tmp_path / "jhmdb_sentences")
    return _corrupt(tmp_path / "jhmdb_sentences" / "puppet_mask" / "run" / "run_man_2" / "puppet_mask.mat")


def _broken_ytvos(tmp_path: Path) -> Path:
    write_ytvos_fixture(tmp_path / "refer_youtube_vos")
    return _corrupt(tmp_path / "refer_youtube_vos" / "meta_expressions" / "train" / "meta_expressions.json")


def _broken_davis(tmp_path: Path) -> Path:
    write_davis_fixture(tmp_path / "refer-davis")
    path = tmp_path / "refer-davis" / "DAVIS" / "davis_semantics.json"
    path.unlink()
    return path


@pytest.mark.parametrize(
    ("task", "folder", "breaks"),
    [
        ("a2d-gt", "a2d_sentences", _broken_a2d),
        ("jhmdb-gt", "jhmdb_sentences", _broken_jhmdb),
        ("ytvos-samples", "refer_youtube_vos", _broken_ytvos),
        ("davis", "refer-davis", _broken_davis),
    ],
)
def test_prepare_names_the_bad_file(task, folder, breaks, tmp_path, capsys):
    bad_file = breaks(tmp_path)
    code, out, err = run_cli(["prepare", task, "--root", str(tmp_path / folder)], capsys)
    assert code == 2
    assert err.startswith("error:") and str(bad_file) in err
    assert "Traceback" not in out + err


@pytest.mark.parametrize("task", ["a2d-gt", "jhmdb-gt", "ytvos-samples", "davis"])
def test_prepare_names_a_missing_dataset(task, tmp_path, capsys):
    code, _, err = run_cli(["prepare", task, "--root", str(tmp_path / "missing")], capsys)
    assert code == 2 and "dataset not found under" in err and str(tmp_path / "missing") in err


# --------------------------------------------------------------------------- evaluate --predictions


def _a2d_predictions(coco: COCO, rng: np.random.Generator) -> list[dict]:
    """Three scored masks per ground-truth image: the truth, a shifted truth and a random box."""
    results = []
    for image_id in coco.getImgIds():
        truth = coco.annToMask(coco.imgToAnns[image_id][0]).astype(bool)
        height, width = truth.shape
        shifted = np.roll(truth, shift=(int(rng.integers(1, 4)), int(rng.integers(1, 4))), axis=(0, 1))
        box = np.zeros_like(truth)
        y, x = int(rng.integers(0, height - 8)), int(rng.integers(0, width - 8))
        box[y : y + 8, x : x + 8] = True
        for query, mask in enumerate((truth, shifted, box)):
            rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
            rle["counts"] = rle["counts"].decode("ascii")
            score = float(rng.random())
            results.append({"image_id": image_id, "query": query, "category_id": 1, "segmentation": rle})
            results[-1]["score"] = score
    return results


def test_evaluate_saved_a2d_predictions_matches_direct_computation(tmp_path, capsys):
    write_a2d_fixture(tmp_path / "a2d_sentences")
    assert run_cli(["prepare", "a2d-gt", "--root", str(tmp_path / "a2d_sentences")], capsys)[0] == 0
    gt_path = tmp_path / "a2d_sentences" / "a2d_sentences_test_annotations_in_coco_format.json"
    coco = COCO(str(gt_path))
    results = _a2d_predictions(coco, np.random.default_rng(3))
    predictions = tmp_path / "predictions.json"
    predictions.write_text(json.dumps(results))

    config = ["-c", A2D_CONFIG, "--set", f"data.coco_gt_path={gt_path}"]
    code, out, _ = run_cli(
        ["evaluate", *config, "--predictions", f"{predictions}", "--out-dir", f"{tmp_path}/out"], capsys
    )
    assert code == 0 and "mAP 0.5:0.95" in out
    metrics = read_metrics(tmp_path / "out")

    # Independent: pycocotools with categories ignored, and IoU of the top-scoring mask by numpy.
    evaluator = COCOeval(coco, coco.loadRes([dict(r) for r in results]), iouType="segm")
    evaluator.params.useCats = 0
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
    assert metrics["mAP 0.5:0.95"] == pytest.approx(evaluator.stats[0])
    assert metrics["AP 0.5"] == pytest.approx(evaluator.stats[1])
    ious, inter_total, union_total = [], 0, 0
    for image_id in coco.getImgIds():
        top = max((r for r in results if r["image_id"] == image_id), key=lambda r: r["score"])
        predicted = mask_utils.decode(top["segmentation"]).astype(bool)
        truth = coco.annToMask(coco.imgToAnns[image_id][0]).astype(bool)
        inter, union = (predicted & truth).sum(), (predicted | truth).sum()
        ious.append((inter + 1e-6) / (union + 1e-6))
        inter_total, union_total = inter_total + inter, union_total + union
    assert metrics["mean_iou"] == pytest.approx(np.mean(ious))
    assert metrics["overall_iou"] == pytest.approx(inter_total / union_total)
    for k in (0.5, 0.6, 0.7, 0.8, 0.9):
        assert metrics[f"P@{k}"] == pytest.approx(np.mean(np.asarray(ious) > k))
    # A folder holding predictions.json is accepted too.
    code, _, _ = run_cli(
        ["evaluate", *config, "--predictions", f"{tmp_path}", "--out-dir", f"{tmp_path}/again"], capsys
    )
    assert code == 0 and read_metrics(tmp_path / "again") == metrics


def test_evaluate_saved_predictions_refuses_a_malformed_file(tmp_path, capsys):
    predictions = tmp_path / "predictions.json"
    predictions.write_text(json.dumps([{"image_id": "x", "score": 1.0}]))
    code, _, err = run_cli(["evaluate", "-c", A2D_CONFIG, "--predictions", str(predictions)], capsys)
    assert code == 2 and str(predictions) in err and "entry 0" in err


def test_evaluate_saved_synthetic_predictions(tmp_path, capsys):
    root = tmp_path / "synthetic"
    prepare_synthetic(root, videos=1, valid_videos=2, frames=4, size=(32, 48), capsys=capsys)
    videos = json.loads((root / "meta_expressions" / "valid" / "meta_expressions.json").read_text())["videos"]
    submission = tmp_path / "submission"
    expected_j, expected_f = [], []
    for index, (video, entry) in enumerate(sorted(videos.items())):
        for exp_id in entry["expressions"]:
            truth = YTVOSGroundTruth(root).masks(video, exp_id)
            if index == 0 and exp_id == "0":
                predicted = np.zeros_like(truth)  # an empty prediction scores 0 wherever the object is visible
                visible = truth.any(axis=(1, 2))
                expected_j.append(np.mean(np.where(visible, 0.0, 1.0)))
                expected_f.append(np.mean(np.where(visible, 0.0, 1.0)))
            else:
                predicted = truth
                expected_j.append(1.0)
                expected_f.append(1.0)
            write_ytvos_masks(submission, video, exp_id, entry["frames"], torch.from_numpy(predicted))
    config = ["-c", TINY, "--set", f"data.root={root}"]
    code, _, _ = run_cli(["evaluate", *config, "--predictions", f"{submission}", "--out-dir", f"{tmp_path}/m"], capsys)
    assert code == 0
    metrics = read_metrics(tmp_path / "m")
    assert metrics["J"] == pytest.approx(np.mean(expected_j))
    assert metrics["F"] == pytest.approx(np.mean(expected_f))
    assert metrics["J&F"] == pytest.approx((np.mean(expected_j) + np.mean(expected_f)) / 2)
    assert metrics["expressions"] == len(expected_j)
    zip_submission(submission / "Annotations", tmp_path / "submission.zip")
    zipped = ["--predictions", str(tmp_path / "submission.zip"), "--out-dir", str(tmp_path / "z")]
    code, _, _ = run_cli(["evaluate", *config, *zipped], capsys)
    assert code == 0 and read_metrics(tmp_path / "z") == pytest.approx(metrics)


def test_evaluate_checks_a_ytvos_submission(tmp_path, capsys):
    fixture = write_ytvos_fixture(tmp_path / "refer_youtube_vos")
    config = ["-c", "refer_youtube_vos_finetune", "--set", f"data.root={tmp_path}"]
    submission = tmp_path / "submission"
    for video, spec in fixture.valid.items():
        height, width = spec.frames.shape[1:3]
        for exp_id in spec.expressions:
            masks = torch.zeros(len(spec.frame_names), height, width, dtype=bool)
            write_ytvos_masks(submission, video, exp_id, spec.frame_names, masks)
    zip_submission(submission / "Annotations", tmp_path / "submission.zip")
    for path in (submission, tmp_path / "submission.zip"):
        code, out, _ = run_cli(["evaluate", *config, "--predictions", str(path)], capsys)
        assert code == 0 and re.search(r"frames\s+│\s+17\s+│", out)  # 2 x 7 + 1 x 3 frames, printed as a count
    (submission / "Annotations" / "val_b" / "0" / "00010.png").unlink()
    code, _, err = run_cli(["evaluate", *config, "--predictions", str(submission)], capsys)
    assert code == 2 and "lacks 1 of 17 masks" in err and "Annotations/val_b/0/00010.png" in err


def test_evaluate_saved_davis_predictions(tmp_path, capsys):
    fixture = write_davis_fixture(tmp_path / "refer-davis")
    config = ["-c", "davis", "--set", f"data.root={tmp_path}"]
    results = tmp_path / "results"
    for annotator in range(4):
        for video in fixture.splits["val"]:
            for name, labels in zip(fixture.frame_names[video], fixture.labels[video]):
                path = results / f"anno_{annotator}" / video / f"{name}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(np.where(labels == 255, 0, labels).astype(np.uint8), mode="L").save(path)
    code, _, _ = run_cli(["evaluate", *config, "--predictions", str(results), "--out-dir", str(tmp_path / "m")], capsys)
    assert code == 0
    metrics = json.loads((tmp_path / "m" / "metrics.json").read_text())["metrics"]
    assert metrics["J&F-Mean"] == pytest.approx(1.0) and metrics["J-Recall"] == pytest.approx(1.0)
    assert (results / "global_results-val.csv").is_file()


# ----------------------------------------------------------------------------- evaluate --checkpoint


def test_evaluate_needs_exactly_one_source(tmp_path, capsys):
    code, _, err = run_cli(["evaluate", "-c", TINY], capsys)
    assert code == 2 and "exactly one of --checkpoint" in err
    code, _, err = run_cli(["evaluate", "-c", TINY, "--checkpoint", "a", "--predictions", "b"], capsys)
    assert code == 2 and "exactly one of --checkpoint" in err


def test_evaluate_a_run_and_the_same_weights_as_a_reference_checkpoint(tiny_run, tmp_path, capsys):
    root = tmp_path / "synthetic"
    prepare_synthetic(root, videos=1, valid_videos=1, frames=2, size=(32, 48), capsys=capsys)
    meta_path = root / "meta_expressions" / "valid" / "meta_expressions.json"
    meta = json.loads(meta_path.read_text())
    for video in meta["videos"].values():  # one expression: one forward pass per evaluation
        video["expressions"] = dict(list(video["expressions"].items())[:1])
    meta_path.write_text(json.dumps(meta))
    config = ["-c", TINY, "--set", f"data.root={root}", "--set", "data.window_size=2"]
    config += ["--set", "data.eval_short_size=32", "--set", "data.eval_max_size=48", "--device", "cpu"]
    code, out, _ = run_cli(["evaluate", *config, "--checkpoint", str(tiny_run), "--out-dir", f"{tmp_path}/run"], capsys)
    assert code == 0, out
    from_run = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert Path(from_run["checkpoint"]) == tiny_run / "checkpoints" / "epoch_0000"
    counts = {"expressions", "videos", "frames", "missing_masks", "extra_masks"}
    identity = {"identity_switches", "temporal_stability"}
    assert set(from_run["metrics"]) == {"J", "F", "J&F", *identity, *counts} and set(from_run["counts"]) == counts
    assert from_run["metrics"]["missing_masks"] == 0 and from_run["world_size"] == 1
    # The saved masks rescore to the same numbers.
    saved = ["--predictions", str(tmp_path / "run"), "--out-dir", str(tmp_path / "again")]
    code, _, _ = run_cli(["evaluate", *config, *saved], capsys)
    assert code == 0 and read_metrics(tmp_path / "again") == pytest.approx(from_run["metrics"])

    state = read_state_dict(tiny_run)
    reference = original_state_dict(state)
    assert "backbone.0.body.layers.0.blocks.0.mlp.fc1.weight" in reference
    checkpoint = tmp_path / "reference.pth.tar"
    torch.save({"model_state_dict": reference, "epoch": 3}, checkpoint)
    code, out, _ = run_cli(
        ["evaluate", *config, "--checkpoint", f"{checkpoint}", "--out-dir", f"{tmp_path}/ref"], capsys
    )
    assert code == 0, out
    from_reference = json.loads((tmp_path / "ref" / "metrics.json").read_text())
    assert from_reference["checkpoint"] == str(checkpoint)
    assert from_reference["metrics"] == from_run["metrics"]

    reference.pop("class_embed.0.weight")
    reference["bogus.weight"] = torch.zeros(1)
    torch.save({"model_state_dict": reference}, checkpoint)
    code, _, err = run_cli(["evaluate", *config, "--checkpoint", str(checkpoint)], capsys)
    assert code == 2 and str(checkpoint) in err
    assert "missing: 1 key(s)" in err and "class_embed.0.weight" in err
    assert "unexpected: 1 key(s)" in err and "bogus.weight" in err
    # A state dict saved under DDP: every key carries "module.", which the one loader strips.
    torch.save({f"module.{key}": value for key, value in state.items()}, checkpoint)
    ddp = ["--checkpoint", str(checkpoint), "--out-dir", f"{tmp_path}/ddp"]
    code, out, _ = run_cli(["evaluate", *config, *ddp], capsys)
    assert code == 0, out
    assert json.loads((tmp_path / "ddp" / "metrics.json").read_text())["metrics"] == from_run["metrics"]


def test_evaluate_names_a_missing_checkpoint(tmp_path, capsys):
    code, _, err = run_cli(["evaluate", "-c", TINY, "--checkpoint", str(tmp_path / "run"), "--device", "cpu"], capsys)
    assert code == 2 and f"checkpoint not found: {tmp_path / 'run'}" in err


# ---------------------------------------------------------------------------------------- predict


@pytest.fixture(scope="module")
def tiny_run(tiny_model, tmp_path_factory) -> Path:
    """A training run directory of the tiny model (untrained weights, eval resize 32 / 48)."""
    from wavecl.atomic import write_text
    from wavecl.checkpoint import save_checkpoint

    config = apply_overrides(load_config(TINY), {"data.eval_short_size": 32, "data.eval_max_size": 48})
    run = tmp_path_factory.mktemp("tiny_run")
    save_checkpoint(run / "checkpoints", 0, tiny_model.state_dict(), {"epoch": 0})
    write_text(run / "config.yaml", config.to_yaml())
    return run


@pytest.mark.slow  # predict_video itself is covered in test_inference.py; this checks the command around it
def test_predict_writes_masks_overlay_and_sheet(tiny_run, tmp_path, capsys):
    frames = tmp_path / "frames"
    frames.mkdir()
    for index in range(3):
        Image.fromarray(np.full((30, 44, 3), 40 * index, dtype=np.uint8)).save(frames / f"frame{index}.png")
    out = tmp_path / "out"
    argv = ["predict", "--checkpoint", str(tiny_run), "--video", str(frames), "--text", "a red circle"]
    argv += ["--text", "the square", "--out-dir", str(out), "--device", "cpu", "--window", "2"]
    code, printed, _ = run_cli([*argv, "--link-weight", "0.5"], capsys)
    assert code == 0 and "3 frames segmented for 2 sentence(s), 2 per window sharing 1 (link weight 0.5)" in printed
    code, _, err = run_cli([*argv, "--overlap", "2"], capsys)
    assert code == 2 and "overlap must be in [0, window=2), got 2" in err
    for folder in ("0_a_red_circle", "1_the_square"):
        masks = sorted((out / "masks" / folder).glob("*.png"))
        assert [m.name for m in masks] == [f"frame{i}.png" for i in range(3)]  # named after the frames
        assert Image.open(masks[0]).size == (44, 30)
    assert (out / "overlay.mp4").stat().st_size > 0 and (out / "contact_sheet.png").is_file()


@pytest.mark.parametrize("command", ["train", "evaluate"])
def test_compile_flag_sets_train_compile(command):
    from wavecl.cli import build_parser
    from wavecl.cli.common import resolve_config

    parser = build_parser()
    config, overrides = resolve_config(parser.parse_args([command, "-c", TINY, "--compile"]))
    assert config.train.compile is True and overrides == {"train.compile": True}
    config, overrides = resolve_config(parser.parse_args([command, "-c", TINY]))
    assert config.train.compile is False and overrides == {}


@pytest.mark.slow
def test_predict_compile_falls_back_to_eager_with_one_warning(tiny_run, tmp_path, capsys, caplog, monkeypatch):
    import wavecl.model.compile

    monkeypatch.setattr(wavecl.model.compile, "compile_unavailable", lambda backend="inductor": "no compiler here")
    frames = tmp_path / "frames"
    frames.mkdir()
    for index in range(2):
        Image.fromarray(np.full((30, 44, 3), 60 * index, dtype=np.uint8)).save(frames / f"frame{index}.png")
    argv = ["predict", "--checkpoint", str(tiny_run), "--video", str(frames), "--text", "a red circle", "--compile"]
    code, printed, _ = run_cli([*argv, "--out-dir", str(tmp_path / "out"), "--device", "cpu"], capsys)
    assert code == 0 and "2 frames segmented for 1 sentence(s)" in printed
    warnings = [r.getMessage() for r in caplog.records if r.name == "wavecl.model.compile"]
    assert warnings == ["torch.compile unavailable (no compiler here); running eagerly"]


def test_predict_names_a_missing_video(tiny_run, tmp_path, capsys):
    video = tmp_path / "clip.mp4"
    arguments = ["--checkpoint", str(tiny_run), "--text", "x", "--device", "cpu"]
    code, _, err = run_cli(["predict", str(video), *arguments, "--output", str(tmp_path)], capsys)
    assert code == 2 and str(video) in err
    code, _, err = run_cli(["predict", str(video), "--video", str(video), *arguments], capsys)
    assert code == 2 and "give the video once" in err


@pytest.mark.parametrize("log_level", ["info", "debug"])
def test_the_onnx_exporters_per_initializer_info_lines_stay_quiet(log_level, capsys, monkeypatch):
    """At ``--log-level info`` (the default) the ONNX export's graph passes would log thousands of INFO lines
    (one per deduplicated initializer); the command line keeps those libraries at WARNING."""
    import logging

    monkeypatch.setattr(logging.getLogger(), "level", logging.DEBUG)  # as basicConfig leaves it outside pytest
    for name in ("onnx_ir", "onnxscript"):
        monkeypatch.setattr(logging.getLogger(name), "level", logging.NOTSET)
    code, out, _ = run_cli(["--log-level", log_level, "config", "list"], capsys)
    assert code == 0 and "a2d_sentences" in out
    for name in ("onnx_ir", "onnx_ir.passes.common.initializer_deduplication", "onnxscript"):
        assert logging.getLogger(name).getEffectiveLevel() == logging.WARNING
