"""One row per evaluation protocol, keyed by ``data.dataset_name``: its evaluator, its scorer of saved
predictions, the metric that selects the best checkpoint, and its lines of ``wavecl evaluate --help``.

:data:`PROTOCOLS` is the only place on the evaluation side that dispatches on ``data.dataset_name``; each
row points at ``wavecl/evaluation/<protocol>.py``, which holds the evaluator and the saved-prediction
scorer. Which datasets exist and how they are read is :data:`wavecl.data.datasets.DATASETS`.
docs/datasets.md#how-to-add-a-dataset walks through adding one.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from wavecl.amp import PrecisionPolicy, decide_precision
from wavecl.atomic import replace_directory, temporary_directory, write_json
from wavecl.config import Config
from wavecl.data.datasets import build_dataset, named_row
from wavecl.data.types import ClipSample
from wavecl.distributed import DistInfo, on_main_process
from wavecl.evaluation.a2d import build_a2d_evaluator, score_saved_a2d
from wavecl.evaluation.counts import metric_counts
from wavecl.evaluation.davis import build_davis_evaluator, score_saved_davis
from wavecl.evaluation.loop import Evaluator, run_evaluation
from wavecl.evaluation.mevis import build_mevis_evaluator, score_saved_mevis
from wavecl.evaluation.refcoco import PRIMARY_METRIC as REFCOCO_PRIMARY_METRIC
from wavecl.evaluation.refcoco import build_refcoco_evaluator, score_saved_refcoco
from wavecl.evaluation.ytvos import build_ytvos_evaluator, score_saved_ytvos
from wavecl.model.wavecl import WaveCL

EvaluatorBuilder = Callable[[Config, Dataset[ClipSample], Path], Evaluator]
SavedScorer = Callable[[Config, Path, Path | None], dict[str, float]]

# Written last into an evaluation's folder: the metrics and what they were computed from. A folder
# without it is not a finished evaluation.
METRICS_FILENAME = "metrics.json"


@dataclass(frozen=True)
class ProtocolRow:
    """How one dataset is evaluated.

    Attributes:
        evaluator: builds the evaluator of its protocol from the run's config, the evaluation dataset
            and the folder for predictions and tables.
        score_saved: recomputes the metrics from what an earlier evaluation wrote (``--predictions``),
            given the run's config, the predictions and, optionally, a folder for per-item tables.
        primary_metric: the metric that selects the ``best`` checkpoint (higher is better), used when
            the evaluation reports it; ``None`` where no local metric exists.
        protocol: one line for ``wavecl evaluate --protocols``: what is reported.
        saved_predictions: one line for ``--help``: what ``--predictions`` takes.
    """

    evaluator: EvaluatorBuilder
    score_saved: SavedScorer
    primary_metric: str | None
    protocol: str
    saved_predictions: str


_A2D_ROW = ProtocolRow(
    evaluator=build_a2d_evaluator,
    score_saved=score_saved_a2d,
    primary_metric="mAP 0.5:0.95",
    protocol="COCO mask mAP 0.5:0.95 (AP 0.5, 0.75, S/M/L), P@0.5..0.9, overall and mean IoU",
    saved_predictions="the evaluator's predictions.json (COCO segmentation results), or the folder holding it",
)
_YTVOS_ROW = ProtocolRow(
    evaluator=build_ytvos_evaluator,
    score_saved=score_saved_ytvos,
    primary_metric="J&F",
    protocol="with valid/Annotations (one's own data in this layout): J, F and J&F per expression "
    "(per_expression.csv) and overall; without (the real valid split): Annotations/ PNGs and "
    "submission.zip for the evaluation server",
    saved_predictions="the folder holding Annotations/ or its zip (scored against valid/Annotations when the "
    "split has them; else a completeness check)",
)

PROTOCOLS: dict[str, ProtocolRow] = {
    "a2d_sentences": _A2D_ROW,
    "jhmdb_sentences": _A2D_ROW,  # A2D's protocol
    "ref_youtube_vos": _YTVOS_ROW,
    "mevis": ProtocolRow(
        evaluator=build_mevis_evaluator,
        score_saved=score_saved_mevis,
        primary_metric="J&F",
        protocol="data.mevis_eval_split valid_u: J, F and J&F of the union masks of each expression's objects "
        "(per_expression.csv) and overall, as the official scorer; valid: Annotations/ PNGs and submission.zip "
        "(<video>/<exp_id>/<frame>.png) for the evaluation server",
        saved_predictions="the folder holding Annotations/ or a zip of it (valid_u: scored; valid: completeness check)",
    ),
    "coco": ProtocolRow(
        evaluator=build_refcoco_evaluator,
        score_saved=score_saved_refcoco,
        primary_metric=REFCOCO_PRIMARY_METRIC,
        protocol="per-set box and mask mAP and P@K on RefCOCO/+/g val, and the mean mask mAP",
        saved_predictions="the folder of <set>_predictions.json files",
    ),
    "davis": ProtocolRow(
        evaluator=build_davis_evaluator,
        score_saved=score_saved_davis,
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


def protocol_row(name: str) -> ProtocolRow:
    """The protocol of dataset ``name``.

    Raises:
        ValueError: no such dataset; the message lists the known ones.
    """
    return named_row(PROTOCOLS, name)


@dataclass
class Evaluation:
    """The evaluation split of a run's dataset and the evaluator of its protocol."""

    dataset: Dataset[ClipSample]
    evaluator: Evaluator
    primary_metric: str | None


def build_evaluation(config: Config, out_dir: str | Path) -> Evaluation:
    """The evaluation split of ``config.data`` and the evaluator of its protocol (see :data:`PROTOCOLS`).

    Args:
        config: the run's configuration.
        out_dir: where predictions, submissions and tables are written.
    """
    row = protocol_row(config.data.dataset_name)
    dataset = build_dataset(config.data, "eval", config.model.num_classes)
    return Evaluation(dataset, row.evaluator(config, dataset, Path(out_dir)), row.primary_metric)


def metrics_record(record: dict[str, Any], metrics: dict[str, float]) -> dict[str, Any]:
    """What ``metrics.json`` holds: ``record`` (dataset, checkpoint...), ``metrics``, and ``counts``, the
    counts among the metrics as integers (:func:`~wavecl.evaluation.counts.metric_counts`)."""
    return {**record, "metrics": metrics, "counts": metric_counts(metrics)}


def evaluate_model(
    model: WaveCL,
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
    return protocol_row(config.data.dataset_name).score_saved(config, path, None if out_dir is None else Path(out_dir))


def protocols_help() -> str:
    """The per-dataset lines of ``wavecl evaluate --protocols``."""
    lines = ["Evaluate with the protocol of the config's dataset (data.dataset_name):"]
    for name, row in PROTOCOLS.items():
        lines.append(f"  {name}: {row.protocol}.")
    lines.append("With --predictions, the metrics are recomputed from an earlier evaluation's files:")
    for name, row in PROTOCOLS.items():
        lines.append(f"  {name}: {row.saved_predictions}.")
    return "\n".join(lines)
