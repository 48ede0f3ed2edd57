"""End-to-end runs of every ``scripts/*.sh`` on the fixture datasets, on the CPU, with ``WAVECL_TINY=1``.

The fixture writers lay out ``data/`` as the README describes; each script runs as a user would run it
(``bash scripts/NAME.sh`` with the default ``data/`` and ``runs/`` under the working directory) and
must leave its checkpoints, metrics files or submission zip where the README says. Training scripts
run one epoch of one step of the reduced model of ``configs/tiny.yaml``.

``test_train_a2d_then_eval_a2d`` and ``test_train_mevis_then_eval_mevis_on_valid_u_and_valid`` run in the
default suite; the other scripts (several minutes in all) are marked slow: ``pytest -m slow tests/test_scripts.py``.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml
from support import tree_state

from wavecl.config import load_config
from wavecl.data.ytvos import train_samples_cache_path
from wavecl.evaluation.a2d import evaluate_a2d_predictions
from wavecl.evaluation.davis import evaluate_davis_predictions
from wavecl.evaluation.mevis import evaluate_mevis_predictions
from wavecl.evaluation.ytvos import evaluate_ytvos_predictions
from wavecl.testing.a2d import write_a2d_fixture
from wavecl.testing.davis import write_davis_fixture
from wavecl.testing.jhmdb import write_jhmdb_fixture
from wavecl.testing.mevis import write_mevis_fixture
from wavecl.testing.refcoco import write_refcoco_fixture
from wavecl.testing.ytvos import write_ytvos_fixture

REPO = Path(__file__).resolve().parents[1]
A2D_GT = "a2d_sentences_test_annotations_in_coco_format.json"
A2D_METRICS = {"mAP 0.5:0.95", "AP 0.5", "AP 0.75", "P@0.5", "P@0.9", "overall_iou", "mean_iou"}
DAVIS_METRICS = {"J&F-Mean", "J-Mean", "J-Recall", "J-Decay", "F-Mean", "F-Recall", "F-Decay"}


def run_script(name: str, cwd: Path, **env: str) -> str:
    """Run ``scripts/<name>.sh`` from ``cwd`` as a smoke run; returns its stdout + stderr."""
    inherited = {k: v for k, v in os.environ.items() if k not in ("DATA_ROOT", "OUTPUT_DIR", "CHECKPOINT", "NUM_GPUS")}
    environment = inherited | {"WAVECL_TINY": "1", "TINY_STEPS": "1", "PYTHON": sys.executable, **env}
    command = ["bash", str(REPO / "scripts" / f"{name}.sh")]
    result = subprocess.run(command, cwd=cwd, env=environment, capture_output=True, text=True, timeout=900)
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"{name}.sh failed ({result.returncode}):\n{output[-4000:]}"
    return output


def write_datasets(data: Path) -> None:
    """Every fixture dataset under ``data/`` in the README's layout."""
    write_a2d_fixture(data / "a2d_sentences")
    write_jhmdb_fixture(data / "jhmdb_sentences")
    write_ytvos_fixture(data / "refer_youtube_vos")
    for dataset in ("refcoco", "refcoco+", "refcocog"):
        for split in ("train", "val"):
            write_refcoco_fixture(data / "coco", dataset, split)
    write_davis_fixture(data / "refer-davis")


def log_records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]


def pointer_target(pointer: Path) -> Path:
    return pointer.parent / pointer.read_text().strip()


def check_training_run(run_dir: Path, config: str, version: str | None = None) -> tuple[dict, dict]:
    """A finished one-epoch smoke run of the packaged recipe ``config`` (named ``version``, by default the config's):
    its checkpoint, log and recorded config.

    Returns the saved config (as a dict) and the epoch's log record.
    """
    assert pointer_target(run_dir / "checkpoints" / "last") == run_dir / "checkpoints" / "epoch_0000"
    assert (run_dir / "checkpoints" / "epoch_0000" / "model.safetensors").is_file()
    (record,) = log_records(run_dir)
    assert record["epoch"] == 0 and record["train_loss"] > 0
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    stage = load_config(config)
    # The stage's optimisation hyper-parameters are kept; the model is the reduced one of the recipe tiny.
    for field in ("lr", "lr_backbone", "text_encoder_lr", "lr_drop", "lr_gamma"):
        assert saved["train"][field] == getattr(stage.train, field), field
    assert saved["train"]["version"] == (version or stage.train.version)
    assert saved["model"]["num_classes"] == stage.model.num_classes
    assert saved["model"]["freeze_text_encoder"] == stage.model.freeze_text_encoder
    assert saved["model"]["d_model"] == 128 and saved["model"]["text_encoder"] == "minilm"
    assert saved["train"]["epochs"] == 1 and saved["train"]["max_steps_per_epoch"] == 1
    return saved, record


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    """A working directory holding the fixture datasets under ``data/`` (runs go to ``runs/``)."""
    root = tmp_path_factory.mktemp("scripts")
    write_datasets(root / "data")
    return root


def test_scripts_refuse_an_interpreter_without_wavecl_by_name(tmp_path):
    """Before, the scripts ran whatever ``python`` came first on PATH, without a word. The scripts run from a
    copy, so that a ``.venv`` in the checkout (which they would take before ``python3``) plays no part."""
    other = tmp_path / "bin" / "python3"
    other.parent.mkdir()
    other.write_text("#!/bin/sh\necho 'ModuleNotFoundError: No module named torch' >&2\nexit 1\n")
    other.chmod(0o755)
    scripts = shutil.copytree(REPO / "scripts", tmp_path / "checkout" / "scripts")
    environment = {k: v for k, v in os.environ.items() if k not in ("PYTHON", "VIRTUAL_ENV")}
    environment["PATH"] = f"{other.parent}:{environment['PATH']}"
    result = subprocess.run(
        ["bash", str(scripts / "eval_a2d.sh")], cwd=tmp_path, env=environment, capture_output=True, text=True
    )
    assert result.returncode == 1
    assert f"the interpreter 'python3' ({other}) has no wavecl installation" in result.stderr
    assert "set PYTHON=" in result.stderr


def test_train_a2d_then_eval_a2d(tmp_path):
    """train_a2d.sh builds the A2D ground truth, trains, evaluates and points ``best`` at the epoch;
    eval_a2d.sh re-evaluates that checkpoint: same metrics, predictions that rescore to them."""
    data, runs, cwd = tmp_path / "datasets", tmp_path / "outputs", tmp_path / "elsewhere"
    write_a2d_fixture(data / "a2d_sentences")
    cwd.mkdir()
    output = run_script("train_a2d", cwd, DATA_ROOT=str(data), OUTPUT_DIR=str(runs))
    run_dir = runs / "a2d_sentences" / "a2d"
    assert str(run_dir) in output
    gt = runs / "cache" / A2D_GT  # derived files go to $CACHE_DIR (default $OUTPUT_DIR/cache)
    assert gt.is_file() and not (data / "a2d_sentences" / A2D_GT).exists()
    saved, record = check_training_run(run_dir, "a2d_sentences")
    assert saved["data"]["coco_gt_path"] == str(gt)
    assert pointer_target(run_dir / "checkpoints" / "best") == run_dir / "checkpoints" / "epoch_0000"
    assert (run_dir / "evaluation" / "epoch_0000" / "predictions.json").is_file()
    assert A2D_METRICS <= {key.removeprefix("eval_") for key in record}

    run_script("eval_a2d", cwd, DATA_ROOT=str(data), OUTPUT_DIR=str(runs))
    evaluation = run_dir / "evaluation" / "best"
    result = json.loads((evaluation / "metrics.json").read_text())
    assert result["dataset"] == "a2d_sentences"
    assert Path(result["checkpoint"]).resolve() == (run_dir / "checkpoints" / "epoch_0000").resolve()
    # The same weights on the same split give the numbers of the evaluation during training.
    for key in A2D_METRICS:
        assert result["metrics"][key] == pytest.approx(record[f"eval_{key}"], abs=1e-9), key
    assert evaluate_a2d_predictions(evaluation / "predictions.json", gt) == pytest.approx(result["metrics"])


@pytest.fixture(scope="module")
def pretrain_run(workspace) -> tuple[Path, str]:
    output = run_script("pretrain", workspace)
    return workspace / "runs" / "coco" / "coco_pretrain_tiny", output


@pytest.fixture(scope="module")
def ytvos_finetune_run(workspace, pretrain_run) -> tuple[Path, str]:
    output = run_script("finetune_ytb", workspace)
    return workspace / "runs" / "ref_youtube_vos" / "finetuneytb_tiny", output


@pytest.fixture(scope="module")
def a2d_finetune_run(workspace, pretrain_run) -> tuple[Path, str]:
    output = run_script("finetune_a2d", workspace)
    return workspace / "runs" / "a2d_sentences" / "finetune_a2d", output


@pytest.mark.slow
def test_pretrain(pretrain_run):
    run_dir, _ = pretrain_run
    saved, record = check_training_run(run_dir, "coco")
    assert saved["data"]["window_size"] == 1
    assert pointer_target(run_dir / "checkpoints" / "best") == run_dir / "checkpoints" / "epoch_0000"
    for dataset in ("refcoco", "refcoco+", "refcocog"):
        assert (run_dir / "evaluation" / "epoch_0000" / f"{dataset}_predictions.json").is_file()
        assert f"eval_{dataset} segm mAP 0.5:0.95" in record
    assert "eval_segm mAP 0.5:0.95" in record


@pytest.mark.slow
def test_finetune_ytb_starts_fresh_from_the_pretraining(pretrain_run, ytvos_finetune_run):
    run_dir, output = ytvos_finetune_run
    saved, _ = check_training_run(run_dir, "refer_youtube_vos_finetune")
    assert saved["train"]["pretrained_weights"] == "runs/coco/coco_pretrain_tiny"
    assert "finetuning from runs/coco/coco_pretrain_tiny" in output
    info = json.loads((run_dir / "run_info.json").read_text())
    assert info["explicit_overrides"]["train.pretrained_weights"] == "runs/coco/coco_pretrain_tiny"
    with zipfile.ZipFile(run_dir / "evaluation" / "epoch_0000" / "submission.zip") as archive:
        assert "Annotations/val_a/0/00000.png" in archive.namelist()


@pytest.mark.slow
def test_infer_refytb_writes_a_complete_submission(workspace, ytvos_finetune_run):
    run_dir, _ = ytvos_finetune_run
    output = run_script("infer_refytb", workspace)
    zip_path = run_dir / "evaluation" / "last" / "submission.zip"
    assert str(Path("runs/ref_youtube_vos/finetuneytb_tiny/evaluation/last/submission.zip")) in output
    # val_a: 7 frames x 2 expressions, val_b: 3 frames x 1; the test-only video is left out.
    root = workspace / "data" / "refer_youtube_vos"
    assert evaluate_ytvos_predictions(zip_path, root) == {"expressions": 3.0, "frames": 17.0}
    with zipfile.ZipFile(zip_path) as archive:
        assert not any("test_c" in name for name in archive.namelist())
    result = json.loads((run_dir / "evaluation" / "last" / "metrics.json").read_text())
    assert Path(result["checkpoint"]).resolve() == (run_dir / "checkpoints" / "epoch_0000").resolve()


@pytest.mark.slow
def test_infer_davis_converts_and_scores(workspace, ytvos_finetune_run):
    run_script("infer_davis", workspace)
    davis = workspace / "data" / "refer-davis"
    assert (davis / "meta_expressions" / "valid" / "meta_expressions.json").is_file()
    evaluation = workspace / "runs" / "davis" / "davis" / "evaluation" / "last"
    result = json.loads((evaluation / "metrics.json").read_text())
    assert set(result["metrics"]) == DAVIS_METRICS | {"videos", "annotators"}
    assert result["counts"] == {"videos": 2, "annotators": 4}
    assert (evaluation / "global_results-val.csv").is_file()
    for annotator in range(4):
        videos = sorted(p.name for p in (evaluation / f"anno_{annotator}").iterdir() if p.is_dir())
        assert videos == ["blackswan", "classic-car"]
    assert evaluate_davis_predictions(evaluation, davis) == pytest.approx(result["metrics"])


@pytest.mark.slow
def test_finetune_a2d_starts_fresh_from_the_pretraining(a2d_finetune_run):
    run_dir, output = a2d_finetune_run
    saved, record = check_training_run(run_dir, "a2d_sentences_finetune")
    assert saved["train"]["pretrained_weights"] == "runs/coco/coco_pretrain_tiny"
    assert "finetuning from runs/coco/coco_pretrain_tiny" in output
    assert "eval_mAP 0.5:0.95" in record
    assert pointer_target(run_dir / "checkpoints" / "best") == run_dir / "checkpoints" / "epoch_0000"


@pytest.mark.slow
def test_eval_jhd_evaluates_the_a2d_finetune_on_jhmdb(workspace, a2d_finetune_run):
    run_dir, _ = a2d_finetune_run
    run_script("eval_jhd", workspace)
    gt = workspace / "runs" / "cache" / "jhmdb_sentences_gt_annotations_in_coco_format.json"
    assert not (workspace / "data" / "jhmdb_sentences" / gt.name).exists(), "the dataset folder is only read"
    evaluation = workspace / "runs" / "jhmdb_sentences" / "jhmdb_eval" / "evaluation" / "best"
    result = json.loads((evaluation / "metrics.json").read_text())
    assert result["dataset"] == "jhmdb_sentences"
    assert Path(result["checkpoint"]).resolve() == (run_dir / "checkpoints" / "epoch_0000").resolve()
    assert len(json.loads(gt.read_text())["images"]) == 9  # 3 frames of each of the 3 videos
    assert evaluate_a2d_predictions(evaluation / "predictions.json", gt) == pytest.approx(result["metrics"])


@pytest.mark.slow
def test_train_ytvos_scratch(workspace):
    run_script("train_ytvos_scratch", workspace)
    run_dir = workspace / "runs" / "ref_youtube_vos" / "ytb_from_scratch"
    saved, _ = check_training_run(run_dir, "refer_youtube_vos")
    assert saved["model"]["num_classes"] == 65
    root = workspace / "data" / "refer_youtube_vos"
    assert train_samples_cache_path(workspace / "runs" / "cache", root, 8).is_file()
    assert not (root / "wavecl_ytvos_train_samples_ws8.json").exists(), "the dataset folder is only read"
    assert (run_dir / "evaluation" / "epoch_0000" / "submission.zip").is_file()


@pytest.mark.slow
def test_holdout_ytvos_trains_on_the_rest_and_scores_the_held_out_video(workspace):
    """One of the fixture's two training videos held out in $CACHE_DIR: the run trains on the other, scores
    the held-out one after the epoch (J&F, best) and leaves the dataset folder as it was."""
    root = workspace / "data" / "refer_youtube_vos"
    before = tree_state(root)
    output = run_script("holdout_ytvos", workspace, HOLDOUT_VIDEOS="1", HOLDOUT_SEED="3")
    view = workspace / "runs" / "cache" / "ytvos_holdout_n1_seed3"
    record = json.loads((view / "holdout.json").read_text())
    assert tree_state(root) == before
    assert record["seed"] == 3 and len(record["held_out_videos"]) == 1 and len(record["train_videos"]) == 1
    run_dir = workspace / "runs" / "ref_youtube_vos" / "ytb_holdout"
    assert "runs/ref_youtube_vos/ytb_holdout" in output
    saved, log = check_training_run(run_dir, "refer_youtube_vos", "ytb_holdout")
    assert workspace / saved["data"]["root"] == view
    windows = json.loads(train_samples_cache_path(workspace / "runs" / "cache", view, 8).read_text())["samples"]
    assert {video for video, _, _ in windows} == set(record["train_videos"])
    assert log["eval_J&F"] == pytest.approx((log["eval_J"] + log["eval_F"]) / 2)
    assert pointer_target(run_dir / "checkpoints" / "best") == run_dir / "checkpoints" / "epoch_0000"
    with open(run_dir / "evaluation" / "epoch_0000" / "per_expression.csv", newline="") as handle:
        scored = {(row["video"], row["exp_id"]) for row in csv.DictReader(handle)}
    (held_out,) = record["held_out_videos"]
    valid = json.loads((view / "meta_expressions" / "valid" / "meta_expressions.json").read_text())["videos"]
    assert scored == {(held_out, exp_id) for exp_id in valid[held_out]["expressions"]}


@pytest.mark.slow
def test_eval_a2d_under_torchrun_matches_one_process(workspace, tmp_path):
    """NUM_GPUS=2 on the CPU: two gloo ranks share the test set; the metrics equal one process's."""
    run_script("train_a2d", workspace)
    run_script("eval_a2d", workspace, EVAL_DIR=str(tmp_path / "one"))
    run_script("eval_a2d", workspace, NUM_GPUS="2", EVAL_DIR=str(tmp_path / "two"))
    single = json.loads((tmp_path / "one" / "metrics.json").read_text())
    double = json.loads((tmp_path / "two" / "metrics.json").read_text())
    assert (single["world_size"], double["world_size"]) == (1, 2)
    assert double["metrics"] == pytest.approx(single["metrics"])
    # Every (sample, query) predicted exactly once, with the same mask; scores agree to float precision
    # (torchrun gives each rank one thread, which changes the order of float sums).
    one, two = (
        {(r["image_id"], r["query"]): r for r in json.loads((tmp_path / name / "predictions.json").read_text())}
        for name in ("one", "two")
    )
    assert one.keys() == two.keys()
    for key, result in one.items():
        assert two[key]["segmentation"] == result["segmentation"]
        assert two[key]["score"] == pytest.approx(result["score"], rel=1e-5)


def test_train_mevis_then_eval_mevis_on_valid_u_and_valid(tmp_path):
    """train_mevis.sh trains on MeViS train and scores valid_u each epoch; eval_mevis.sh re-scores the best
    checkpoint on valid_u (same numbers, rescored from its PNGs) and writes the valid submission zip."""
    fixture = write_mevis_fixture(tmp_path / "data" / "mevis")
    output = run_script("train_mevis", tmp_path)
    run_dir = tmp_path / "runs" / "mevis" / "mevis"
    assert str(Path("runs/mevis/mevis")) in output
    saved, record = check_training_run(run_dir, "mevis")
    assert saved["data"]["dataset_name"] == "mevis"
    assert pointer_target(run_dir / "checkpoints" / "best") == run_dir / "checkpoints" / "epoch_0000"
    assert (run_dir / "evaluation" / "epoch_0000" / "per_expression.csv").is_file()

    run_script("eval_mevis", tmp_path)
    evaluation = run_dir / "evaluation" / "best_valid_u"
    result = json.loads((evaluation / "metrics.json").read_text())
    valid_u = fixture.splits["valid_u"]
    frames = sum(len(video.frame_names) * len(video.expressions) for video in valid_u.values())
    expressions = sum(len(video.expressions) for video in valid_u.values())
    assert result["counts"] == {
        "expressions": expressions,
        "videos": len(valid_u),
        "frames": frames,
        "missing_masks": 0,
        "extra_masks": 0,
    }
    for key in ("J", "F", "J&F"):
        assert result["metrics"][key] == pytest.approx(record[f"eval_{key}"], abs=1e-9), key
    assert evaluate_mevis_predictions(evaluation, tmp_path / "data") == pytest.approx(result["metrics"])

    output = run_script("eval_mevis", tmp_path, MEVIS_SPLIT="valid")
    zip_path = run_dir / "evaluation" / "best_valid" / "submission.zip"
    assert str(Path("runs/mevis/mevis/evaluation/best_valid/submission.zip")) in output
    with zipfile.ZipFile(zip_path) as archive:
        pngs = {name for name in archive.namelist() if name.endswith(".png")}
    expected = {
        f"{video_id}/{exp_id}/{frame}.png"
        for video_id, video in fixture.splits["valid"].items()
        for exp_id in video.expressions
        for frame in video.frame_names
    }
    assert pngs == expected
    assert evaluate_mevis_predictions(zip_path, tmp_path / "data", "valid") == {
        "expressions": 2.0,
        "frames": float(len(expected)),
    }
