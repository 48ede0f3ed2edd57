"""One row per dataset: how it loads, whether it trains, how it is evaluated and scored.

:data:`DATASETS` is the only place that dispatches on ``data.dataset_name``. Adding a dataset means
writing its module (a ``Dataset`` and a ``build_<name>(config, split, transform, num_classes)``
function in ``wavecl/data/``, an evaluator in ``wavecl/evaluation/``) and adding its row here;
training, ``wavecl evaluate`` and its ``--help`` read the row. ``docs/datasets.md`` walks through it.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from torch import nn
from torch.utils.data import Dataset

from wavecl.amp import PrecisionPolicy, decide_precision
from wavecl.atomic import replace_directory, temporary_directory, write_json
from wavecl.config import Config, DataConfig
from wavecl.data.a2d import build_a2d
from wavecl.data.check import DatasetReport, check_mevis_dataset, check_ytvos_dataset
from wavecl.data.davis import build_davis, find_davis_folder
from wavecl.data.jhmdb import build_jhmdb
from wavecl.data.mevis import MeViSGroundTruth, build_mevis
from wavecl.data.refcoco import build_refcoco
from wavecl.data.robust import SkipBadSamples
from wavecl.data.transforms import ClipTransform, build_transform
from wavecl.data.types import ClipSample, Split
from wavecl.data.ytvos import YTVOSGroundTruth, build_ytvos
from wavecl.distributed import DistInfo, on_main_process
from wavecl.evaluation.a2d import A2DEvaluator
from wavecl.evaluation.counts import metric_counts
from wavecl.evaluation.loop import Evaluator, run_evaluation
from wavecl.evaluation.refcoco import PRIMARY_METRIC as REFCOCO_PRIMARY_METRIC
from wavecl.evaluation.refcoco import RefCOCOEvaluator
from wavecl.evaluation.saved import (
    evaluate_a2d_predictions,
    evaluate_davis_predictions,
    evaluate_mevis_predictions,
    evaluate_refcoco_predictions,
    evaluate_ytvos_predictions,
)
from wavecl.evaluation.video import RefDAVISEvaluator, YTVOSEvaluator
from wavecl.evaluation.ytvos import PER_EXPRESSION_FILENAME

DatasetBuilder = Callable[[DataConfig, Split, ClipTransform, int], Dataset[ClipSample]]
EvaluatorBuilder = Callable[[Config, Dataset[ClipSample], Path], Evaluator]
SavedScorer = Callable[[Config, Path, Path | None], dict[str, float]]

# Written last into an evaluation's folder: the metrics and what they were computed from. A folder
# without it is not a finished evaluation.
METRICS_FILENAME = "metrics.json"
YTVOS_SPLITS: dict[Split, str] = {"train": "train", "eval": "valid"}
"""The Ref-YouTube-VOS-layout folder each split of a run reads."""

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DatasetRow:
    """What the rest of wavecl knows of one dataset.

    Attributes:
        build: its loader for a split (``"train"``, or the split its protocol evaluates).
        trains: whether it has a training split (JHMDB and Ref-DAVIS17 are evaluation-only).
        evaluator: builds the evaluator of its protocol from the run's config, the evaluation dataset
            and the folder for predictions and tables.
        score_saved: recomputes the metrics from what an earlier evaluation wrote (``--predictions``),
            given the run's config, the predictions and, optionally, a folder for per-item tables.
        primary_metric: the metric that selects the ``best`` checkpoint (higher is better), used when
            the evaluation reports it; ``None`` where no local metric exists.
        protocol: one line for ``wavecl evaluate --protocols``: what is reported.
        saved_predictions: one line for ``--help``: what ``--predictions`` takes.
        check: checks the given splits (``"train"``, ``"eval"``) of the dataset of a data config whole,
            before a model is built (:mod:`wavecl.data.check`, in ``data.num_workers`` processes);
            ``None`` where no such check exists yet.
    """

    build: DatasetBuilder
    trains: bool
    evaluator: EvaluatorBuilder
    score_saved: SavedScorer
    primary_metric: str | None
    protocol: str
    saved_predictions: str
    check: Callable[[DataConfig, Sequence[Split]], DatasetReport] | None = None


def _coco_ground_truth(config: Config) -> str:
    if not config.data.coco_gt_path:
        raise ValueError(
            f"data.coco_gt_path is required to evaluate {config.data.dataset_name} (build it with `wavecl prepare`)"
        )
    return config.data.coco_gt_path


def _a2d_evaluator(config: Config, dataset: Dataset[ClipSample], out_dir: Path) -> Evaluator:
    return A2DEvaluator(_coco_ground_truth(config), results_path=out_dir / "predictions.json")


def _a2d_saved(config: Config, path: Path, out_dir: Path | None) -> dict[str, float]:
    return evaluate_a2d_predictions(path / "predictions.json" if path.is_dir() else path, _coco_ground_truth(config))


def _eval_dataset(config: Config) -> Dataset[ClipSample]:
    return build_dataset(config.data, "eval", config.model.num_classes)


def _ytvos_evaluator(config: Config, dataset: Dataset[ClipSample], out_dir: Path) -> Evaluator:
    return YTVOSEvaluator(out_dir, YTVOSGroundTruth.find(config.data.root))


def _ytvos_saved(config: Config, path: Path, out_dir: Path | None) -> dict[str, float]:
    per_expression = None if out_dir is None else out_dir / PER_EXPRESSION_FILENAME
    return evaluate_ytvos_predictions(path, config.data.root, per_expression)


def _mevis_evaluator(config: Config, dataset: Dataset[ClipSample], out_dir: Path) -> Evaluator:
    split = config.data.mevis_eval_split
    ground_truth = MeViSGroundTruth(config.data.root, split) if split == "valid_u" else None
    return YTVOSEvaluator(out_dir, ground_truth, zip_folder=None)


def _mevis_saved(config: Config, path: Path, out_dir: Path | None) -> dict[str, float]:
    per_expression = None if out_dir is None else out_dir / PER_EXPRESSION_FILENAME
    return evaluate_mevis_predictions(path, config.data.root, config.data.mevis_eval_split, per_expression)


_A2D_ROW = DatasetRow(
    build=build_a2d,
    trains=True,
    evaluator=_a2d_evaluator,
    score_saved=_a2d_saved,
    primary_metric="mAP 0.5:0.95",
    protocol="COCO mask mAP 0.5:0.95 (AP 0.5, 0.75, S/M/L), P@0.5..0.9, overall and mean IoU",
    saved_predictions="the evaluator's predictions.json (COCO segmentation results), or the folder holding it",
)
_YTVOS_ROW = DatasetRow(
    build=build_ytvos,
    trains=True,
    evaluator=_ytvos_evaluator,
    score_saved=_ytvos_saved,
    primary_metric="J&F",
    protocol="with valid/Annotations (one's own data in this layout): J, F and J&F per expression "
    "(per_expression.csv) and overall; without (the real valid split): Annotations/ PNGs and "
    "submission.zip for the evaluation server",
    saved_predictions="the folder holding Annotations/ or its zip (scored against valid/Annotations when the "
    "split has them; else a completeness check)",
    check=lambda config, splits: check_ytvos_dataset(
        config.root, [YTVOS_SPLITS[split] for split in splits], workers=config.num_workers
    ),
)

DATASETS: dict[str, DatasetRow] = {
    "a2d_sentences": _A2D_ROW,
    "jhmdb_sentences": replace(_A2D_ROW, build=build_jhmdb, trains=False),  # A2D's protocol, evaluation only
    "ref_youtube_vos": _YTVOS_ROW,
    "mevis": DatasetRow(
        build=build_mevis,
        trains=True,
        evaluator=_mevis_evaluator,
        score_saved=_mevis_saved,
        primary_metric="J&F",
        protocol="data.mevis_eval_split valid_u: J, F and J&F of the union masks of each expression's objects "
        "(per_expression.csv) and overall, as the official scorer; valid: Annotations/ PNGs and submission.zip "
        "(<video>/<exp_id>/<frame>.png) for the evaluation server",
        saved_predictions="the folder holding Annotations/ or a zip of it (valid_u: scored; valid: completeness check)",
        check=lambda config, splits: check_mevis_dataset(
            config.root, ["train" if split == "train" else config.mevis_eval_split for split in splits]
        ),
    ),
    "coco": DatasetRow(
        build=build_refcoco,
        trains=True,
        evaluator=lambda config, dataset, out_dir: RefCOCOEvaluator(dataset, results_dir=out_dir),
        score_saved=lambda config, path, out_dir: evaluate_refcoco_predictions(path, _eval_dataset(config)),
        primary_metric=REFCOCO_PRIMARY_METRIC,
        protocol="per-set box and mask mAP and P@K on RefCOCO/+/g val, and the mean mask mAP",
        saved_predictions="the folder of <set>_predictions.json files",
    ),
    "davis": DatasetRow(
        build=build_davis,
        trains=False,
        evaluator=lambda config, dataset, out_dir: RefDAVISEvaluator(out_dir, find_davis_folder(config.data.root)),
        score_saved=lambda config, path, out_dir: evaluate_davis_predictions(path, config.data.root),
        primary_metric="J&F-Mean",
        protocol="DAVIS-2017 J&F (mean, recall, decay) averaged over the four annotators",
        saved_predictions="the folder holding anno_0 .. anno_3",
    ),
    "synthetic": replace(
        _YTVOS_ROW,
        protocol="as ref_youtube_vos: the synthetic set is Ref-YouTube-VOS-layout data whose valid split "
        "has Annotations/, so J, F and J&F per expression and overall",
    ),
}


def dataset_row(name: str) -> DatasetRow:
    """The row of ``name``.

    Raises:
        ValueError: no such dataset; the message lists the known ones.
    """
    if name not in DATASETS:
        raise ValueError(f"unknown data.dataset_name {name!r}; known datasets: {sorted(DATASETS)}")
    return DATASETS[name]


def check_dataset(config: DataConfig, splits: Sequence[Split] = ("train", "eval")) -> DatasetReport | None:
    """Check ``splits`` of the dataset of ``config`` whole (its row's ``check``) and log the summary.

    Returns:
        The report, or ``None`` for a dataset without a check.

    Raises:
        DatasetCheckError: problems were found; the message has the counts and lists the first problems
            (file, video and key of each) with their total.
        FileNotFoundError: the dataset folder is not found.
    """
    row = dataset_row(config.dataset_name)
    if row.check is None:
        return None
    report = row.check(config, splits)
    report.raise_for_problems()
    log.info("dataset checked:\n%s", report.summary())
    return report


def build_dataset(config: DataConfig, split: Split, num_classes: int = 1) -> Dataset[ClipSample]:
    """The dataset of ``config.dataset_name`` for training or evaluation.

    Training datasets are wrapped in :class:`~wavecl.data.robust.SkipBadSamples`: a sample that fails to
    load is reported, counted and replaced, so one bad file never stops a run.

    Raises:
        ValueError: an unknown dataset, or ``split == "train"`` for an evaluation-only one.
    """
    row = dataset_row(config.dataset_name)
    if split == "train" and not row.trains:
        trainable = sorted(name for name, other in DATASETS.items() if other.trains)
        raise ValueError(
            f"data.dataset_name {config.dataset_name!r} is evaluation-only; trainable datasets: {trainable}"
        )
    dataset = row.build(config, split, build_transform(config, split), num_classes)
    return SkipBadSamples(dataset) if split == "train" else dataset


@dataclass
class Evaluation:
    """The evaluation split of a run's dataset and the evaluator of its protocol."""

    dataset: Dataset[ClipSample]
    evaluator: Evaluator
    primary_metric: str | None


def build_evaluation(config: Config, out_dir: str | Path) -> Evaluation:
    """The evaluation split of ``config.data`` and the evaluator of its protocol (see :data:`DATASETS`).

    Args:
        config: the run's configuration.
        out_dir: where predictions, submissions and tables are written.
    """
    row = dataset_row(config.data.dataset_name)
    dataset = build_dataset(config.data, "eval", config.model.num_classes)
    return Evaluation(dataset, row.evaluator(config, dataset, Path(out_dir)), row.primary_metric)


def metrics_record(record: dict[str, Any], metrics: dict[str, float]) -> dict[str, Any]:
    """What ``metrics.json`` holds: ``record`` (dataset, checkpoint...), ``metrics``, and ``counts``, the
    counts among the metrics as integers (:func:`~wavecl.evaluation.counts.metric_counts`)."""
    return {**record, "metrics": metrics, "counts": metric_counts(metrics)}


def evaluate_model(
    model: nn.Module,
    config: Config,
    out_dir: str | Path,
    dist: DistInfo,
    precision: PrecisionPolicy | None = None,
    record: dict[str, Any] | None = None,
) -> tuple[dict[str, float], str | None]:
    """Evaluate ``model`` with the protocol of ``config.data``, writing predictions under ``out_dir``.

    Everything is written into a temporary folder beside ``out_dir`` (``.<name>.<hex>.tmp``, shared by
    every rank), ``metrics.json`` last, and that folder then replaces ``out_dir`` whole: a reader finds
    the previous complete evaluation or the new one, never a mix of the two. An evaluation that fails or
    is interrupted removes its temporary folder and leaves ``out_dir`` as it was; one killed outright
    leaves the hidden temporary folder, which no reader takes for a result.

    Args:
        precision: the run's precision policy; decided from ``config.train.amp`` when ``None``.
        record: what ``metrics.json`` states besides the metrics (dataset, checkpoint, epoch...).

    Returns the metrics (complete on every rank) and the name of the metric that selects the best
    checkpoint (``None`` where the protocol has no local metric).
    """
    out_dir = Path(out_dir)
    staging = on_main_process(lambda: temporary_directory(out_dir), f"creating a folder beside {out_dir}")
    try:
        evaluation = build_evaluation(config, staging)
        metrics = run_evaluation(
            model,
            evaluation.dataset,
            evaluation.evaluator,
            dist,
            batch_size=config.data.eval_batch_size,
            num_workers=config.data.num_workers,
            precision=precision if precision is not None else decide_precision(config.train.amp, dist.device),
            sentences_per_pass=config.data.eval_sentences_per_pass,
        )

        def publish() -> None:
            write_json(staging / METRICS_FILENAME, metrics_record(record or {}, metrics), indent=2)
            replace_directory(staging, out_dir)

        on_main_process(publish, f"writing {out_dir}")
    finally:
        if dist.is_main:
            shutil.rmtree(staging, ignore_errors=True)
    return metrics, evaluation.primary_metric


def evaluate_saved_predictions(config: Config, path: str | Path, out_dir: str | Path | None = None) -> dict[str, float]:
    """Recompute the metrics of ``config``'s evaluation protocol from saved predictions at ``path``.

    Args:
        config: the run's configuration (its dataset names the protocol).
        path: what an earlier evaluation wrote (see :func:`protocols_help`).
        out_dir: where per-item tables go (the per-expression J and F of Ref-YouTube-VOS-layout
            data); none are written when ``None``.

    Raises:
        FileNotFoundError / ValueError: ``path`` is missing or malformed (named in the message).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"predictions not found: {path}")
    return dataset_row(config.data.dataset_name).score_saved(config, path, None if out_dir is None else Path(out_dir))


def protocols_help() -> str:
    """The per-dataset lines of ``wavecl evaluate --protocols``."""
    lines = ["Evaluate with the protocol of the config's dataset (data.dataset_name):"]
    for name, row in DATASETS.items():
        lines.append(f"  {name}: {row.protocol}.")
    lines.append("With --predictions, the metrics are recomputed from an earlier evaluation's files:")
    for name, row in DATASETS.items():
        lines.append(f"  {name}: {row.saved_predictions}.")
    return "\n".join(lines)
