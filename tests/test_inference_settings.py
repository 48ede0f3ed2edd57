"""InferenceSettings: one place for the defaults, checked ranges, and where runs and evaluation take theirs."""

from __future__ import annotations

import dataclasses

import pytest

from wavecl.config import DataConfig
from wavecl.inference_settings import InferenceSettings


def test_prediction_links_windows_and_evaluation_keeps_the_published_protocols() -> None:
    default = InferenceSettings()
    assert default.overlap >= 1 and default.link_weight > 0
    data = dataclasses.replace(DataConfig(), window_size=5, eval_short_size=64, eval_max_size=96)
    run = InferenceSettings.of_run(data)
    assert (run.short_size, run.max_size, run.window) == (64, 96, 5)
    assert (run.overlap, run.link_weight) == (default.overlap, default.link_weight)
    evaluation = InferenceSettings.of_evaluation(data)
    assert (evaluation.window, evaluation.overlap, evaluation.link_weight) == (5, 0, 0.0)
    linked = InferenceSettings.of_evaluation(dataclasses.replace(data, eval_overlap=2, eval_link_weight=0.5))
    assert (linked.overlap, linked.link_weight) == (2, 0.5)
    with pytest.raises(
        ValueError, match=r"data.window_size 5, data.eval_overlap 5.*overlap must be in \[0, window=5\)"
    ):
        InferenceSettings.of_evaluation(dataclasses.replace(data, eval_overlap=5))


def test_with_given_changes_what_is_given_and_checks_the_result() -> None:
    settings = InferenceSettings(short_size=64, max_size=96, window=4)
    changed = settings.with_given(window=6, overlap=None, device="cuda")
    assert (changed.window, changed.overlap, changed.device, changed.max_size) == (6, settings.overlap, "cuda", 96)
    with pytest.raises(TypeError, match="unknown inference settings: size"):
        settings.with_given(size=3)
    with pytest.raises(ValueError, match="link_weight must be >= 0"):
        settings.with_given(link_weight=-1.0)
    with pytest.raises(ValueError, match=r"windows of one frame share none"):
        settings.with_given(window=1)
    assert settings.with_given(window=1, overlap=0).window == 1


def test_recorded_settings_round_trip_and_refuse_bad_values() -> None:
    settings = InferenceSettings(short_size=64, max_size=None, window=3, overlap=2)
    assert settings.recorded() == {"short_size": 64, "max_size": None, "window": 3}
    restored = InferenceSettings().with_recorded(settings.recorded(), "p.json")
    assert (restored.short_size, restored.max_size, restored.window) == (64, None, 3)
    assert restored.overlap == InferenceSettings().overlap, "only the recorded settings travel"
    with pytest.raises(ValueError, match=r"p.json: 'window' must be an integer, got '3'"):
        InferenceSettings().with_recorded({"window": "3"}, "p.json")
    with pytest.raises(ValueError, match=r"p.json: inference setting short_size must be a positive integer"):
        InferenceSettings().with_recorded({"short_size": 0}, "p.json")
