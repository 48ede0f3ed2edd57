"""MeViS evaluation: the Ref-YouTube-VOS-format evaluator, scored against the union masks of each expression's
objects on ``valid_u`` (as the official scorer), or zipped for the evaluation server on ``valid``
(docs/datasets.md#mevis)."""

from __future__ import annotations

from pathlib import Path

from torch.utils.data import Dataset

from wavecl.config import Config
from wavecl.data.mevis import MeViSGroundTruth, MeViSPaths, read_mevis_videos
from wavecl.data.types import ClipSample
from wavecl.evaluation.ytvos import (
    PER_EXPRESSION_FILENAME,
    YTVOSEvaluator,
    check_ytvos_submission,
    expected_frames,
    score_ytvos_predictions,
)


def evaluate_mevis_predictions(
    path: str | Path, root: str | Path, split: str = "valid_u", per_expression_path: str | Path | None = None
) -> dict[str, float]:
    """Score MeViS predictions on ``valid_u``, or check a ``valid`` submission for completeness.

    Args:
        path: a folder holding ``Annotations/<video>/<exp_id>/<frame>.png``, or a zip of it (the submission
            zip's ``<video>/<exp_id>/<frame>.png`` at the top is read too).
        root: the MeViS folder or its parent.
        split: ``valid_u`` (J, F, J&F against the union masks of every expression,
            :class:`~wavecl.data.mevis.MeViSGroundTruth`) or ``valid`` (completeness check).
        per_expression_path: for ``valid_u``, where to write the per-expression CSV.

    Returns:
        As :func:`~wavecl.evaluation.ytvos.score_ytvos_predictions` (``valid_u``) or
        :func:`~wavecl.evaluation.ytvos.check_ytvos_submission` (``valid``).
    """
    if split == "valid_u":
        return score_ytvos_predictions(path, MeViSGroundTruth(root, split), per_expression_path)
    videos = read_mevis_videos(MeViSPaths.find(root, split), split)
    return check_ytvos_submission(path, expected_frames(videos))


def build_mevis_evaluator(config: Config, dataset: Dataset[ClipSample], out_dir: Path) -> YTVOSEvaluator:
    """The evaluator of a MeViS run: scored against the union masks on ``valid_u``; on ``valid``, zipped with
    ``<video>/<exp_id>/<frame>.png`` at the top of ``submission.zip``."""
    split = config.data.mevis_eval_split
    ground_truth = MeViSGroundTruth(config.data.root, split) if split == "valid_u" else None
    return YTVOSEvaluator(out_dir, ground_truth, zip_folder=None)


def score_saved_mevis(config: Config, path: Path, out_dir: Path | None) -> dict[str, float]:
    """:func:`evaluate_mevis_predictions` on ``data.mevis_eval_split``; the per-expression CSV goes to ``out_dir``."""
    per_expression = None if out_dir is None else out_dir / PER_EXPRESSION_FILENAME
    return evaluate_mevis_predictions(path, config.data.root, config.data.mevis_eval_split, per_expression)
