"""The dataset factory: Ref-YouTube-VOS-format evaluation in windows or whole videos; the data and protocol tables."""

import dataclasses
import typing

import pytest

from wavecl.config import DataConfig
from wavecl.data.datasets import DATASETS, build_dataset, dataset_row
from wavecl.data.robust import SkipBadSamples
from wavecl.data.synthetic import write_synthetic_ytvos
from wavecl.evaluation.protocols import PROTOCOLS, protocol_row


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


def test_every_configurable_dataset_has_a_data_row_and_a_protocol_row():
    field = next(f for f in dataclasses.fields(DataConfig) if f.name == "dataset_name")
    names = set(typing.get_args(typing.get_type_hints(DataConfig)[field.name]))
    assert set(DATASETS) == set(PROTOCOLS) == names


def test_unknown_and_evaluation_only_datasets_are_refused_by_name():
    for lookup in (dataset_row, protocol_row):
        with pytest.raises(ValueError, match="unknown data.dataset_name 'nope'.*'a2d_sentences'"):
            lookup("nope")
    with pytest.raises(ValueError, match="'davis' is evaluation-only; trainable datasets: .*'a2d_sentences'"):
        build_dataset(DataConfig(dataset_name="davis"), "train")
