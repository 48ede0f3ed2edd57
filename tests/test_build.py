"""The dataset factory: Ref-YouTube-VOS-format evaluation in windows or whole videos."""

from wavecl.config import DataConfig
from wavecl.data.datasets import build_dataset
from wavecl.data.robust import SkipBadSamples
from wavecl.data.synthetic import write_synthetic_ytvos


def test_evaluation_windows_or_whole_videos(tmp_path):
    info = write_synthetic_ytvos(tmp_path, 2, num_frames=6, size=(32, 48), seed=5, split="valid")
    write_synthetic_ytvos(tmp_path, 2, num_frames=6, size=(32, 48), seed=5, split="train")
    config = DataConfig(
        dataset_name="synthetic", root=str(tmp_path), window_size=4, eval_short_size=32, eval_max_size=48
    )
    windowed = build_dataset(config, "eval")
    lengths = sorted(len(windowed[i].frames) for i in range(len(windowed)))
    assert lengths == sorted([4, 2] * info.num_expressions)  # 6 frames: a window of 4, then 2

    config.eval_whole_video = True
    whole = build_dataset(config, "eval")
    assert len(whole) == info.num_expressions
    assert all(len(whole[i].frames) == 6 for i in range(len(whole)))

    assert isinstance(build_dataset(config, "train"), SkipBadSamples)
