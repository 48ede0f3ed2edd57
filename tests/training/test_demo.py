"""The quick start: `wavecl demo` end to end, and the learning check on held-out synthetic clips."""

import json

import av
import numpy as np
import pytest
from PIL import Image
from support import constant_prediction

from wavecl.config import load_config
from wavecl.data.collate import collate_clips
from wavecl.data.synthetic import write_synthetic_ytvos
from wavecl.data.transforms import ClipTransform
from wavecl.data.ytvos import RefYouTubeVOS, YTVOSGroundTruth
from wavecl.evaluation.jf import db_eval_iou
from wavecl.evaluation.ytvos import YTVOSEvaluator
from wavecl.inference import VideoPredictor
from wavecl.model.wavecl import WaveCL
from wavecl.training.demo import DEMO_CONFIG, demo_config, run_demo


@pytest.mark.parametrize("logit", [10.0, -10.0], ids=["all-foreground", "empty"])
def test_trivial_predictions_score_low(tmp_path, logit):
    """The J >= 0.5 learning threshold is meaningful: trivial predictions score under 0.15."""
    write_synthetic_ytvos(tmp_path, 6, num_frames=8, size=(64, 96), seed=3, split="valid")
    dataset = RefYouTubeVOS(tmp_path, "valid", 4, transform=ClipTransform(False, 64, 96), num_classes=1)
    evaluator = YTVOSEvaluator(tmp_path / "predictions", YTVOSGroundTruth(tmp_path))
    for index in range(len(dataset)):
        batch = collate_clips([dataset[index]])
        evaluator.update(constant_prediction(batch, logit), batch)
    metrics = evaluator.summarize()
    assert metrics["expressions"] > 0
    assert metrics["J"] < 0.15


def test_the_demo_recipe_is_the_packaged_demo_config(tmp_path):
    recipe = load_config(DEMO_CONFIG)
    config = demo_config(tmp_path, seed=3, minutes=5)
    assert config.model == recipe.model and config.loss == recipe.loss
    assert config.data.dataset_name == "synthetic" and config.data.root == str(tmp_path / "data")
    assert config.train.max_steps_per_epoch == recipe.train.max_steps_per_epoch // 2  # 5 of the recipe's 10 minutes
    assert config.train.seed == 3 and config.train.output_dir == str(tmp_path / "runs")
    assert config.train.lr == recipe.train.lr and config.train.epochs == recipe.train.epochs
    own = demo_config(tmp_path, overrides={"data.root": "data/mine", "train.lr": 1e-3})
    assert own.data.dataset_name == recipe.data.dataset_name == "ref_youtube_vos"
    assert own.data.root == "data/mine" and own.train.lr == 1e-3


def test_demo_runs_end_to_end_and_writes_pictures(tmp_path):
    """A very short demo (a few steps): every artefact is written where it says; the run of an earlier
    demo in the same folder is replaced."""
    earlier = tmp_path / "demo" / "runs" / "synthetic" / "run"
    (earlier / "checkpoints" / "epoch_0000").mkdir(parents=True)
    (earlier / "log.jsonl").write_text('{"epoch": 0, "earlier": true}\n')
    result = run_demo(tmp_path / "demo", minutes=0.02)
    run_dir = result.run_dir
    assert run_dir == earlier
    assert all("earlier" not in json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines())
    assert (run_dir / "config.yaml").is_file()
    assert (run_dir / "checkpoints" / "last").is_file()
    assert result.loss_curve.is_file() and result.loss_curve.stat().st_size > 0
    assert {"J", "F", "J&F"} <= set(result.metrics)
    saved = json.loads((run_dir / "demo_result.json").read_text())
    assert saved["metrics"]["J"] == pytest.approx(result.metrics["J"])
    videos = [p for p in result.overlays if p.suffix == ".mp4"]
    sheets = [p for p in result.overlays if p.suffix == ".png"]
    assert len(videos) == len(sheets) == 3
    with av.open(str(videos[0])) as container:
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
    enlarged = 480 // 96  # the 64x96 clips are enlarged by a whole factor, the legend under the picture
    assert len(frames) == 8 and frames[0].shape[1:] == (enlarged * 96, 3) and frames[0].shape[0] > enlarged * 64
    with Image.open(sheets[0]) as sheet:
        tile = 320 // 96
        assert sheet.width > 4 * tile * 96 and sheet.height > 2 * tile * 64, "tiles readable without zooming"


@pytest.mark.slow
def test_demo_learns_and_its_checkpoint_predicts(tmp_path):
    """The full demo (about 10 minutes on 2 cores) reaches mean J >= 0.5 on held-out clips, and the
    checkpoint it leaves, loaded through the public API, segments a held-out clip as well."""
    result = run_demo(tmp_path / "demo")
    assert result.metrics["J"] >= 0.5, result.metrics

    data_root = tmp_path / "demo" / "data"
    meta = json.loads((data_root / "meta_expressions" / "valid" / "meta_expressions.json").read_text())
    video_id, video = next(iter(meta["videos"].items()))
    exp_ids = list(video["expressions"])
    sentences = [video["expressions"][e]["exp"] for e in exp_ids]
    predictor = VideoPredictor(
        WaveCL.from_pretrained(result.run_dir), short_size=64, max_size=96, window=4, progress=False
    )
    masks = predictor(data_root / "valid" / "JPEGImages" / video_id, sentences)
    scores = [
        db_eval_iou(YTVOSGroundTruth(data_root).masks(video_id, exp_id), masks[i].numpy()).mean()
        for i, exp_id in enumerate(exp_ids)
    ]
    assert np.mean(scores) >= 0.5, scores


def test_interrupted_demo_ends_with_one_line(tmp_path, monkeypatch, capsys):
    import wavecl.training.demo as demo_module
    from wavecl.cli import main as cli_main

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(demo_module, "run_demo", interrupted)
    with pytest.raises(SystemExit) as exit_:
        cli_main(["demo", "--out-dir", str(tmp_path / "demo")])
    assert exit_.value.code == 130
    assert "stopped by SIGINT" in capsys.readouterr().err
