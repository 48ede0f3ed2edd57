"""The evaluation protocol of each dataset: its evaluation split and its evaluator."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from torch import nn
from torch.utils.data import Dataset

from wavecl.config import Config
from wavecl.data.build import build_dataset
from wavecl.data.davis import DATASET_FOLDER_NAMES as DAVIS_FOLDER_NAMES
from wavecl.data.paths import resolve_dataset_root
from wavecl.data.types import ClipSample
from wavecl.distributed import DistInfo
from wavecl.evaluation.a2d import A2DEvaluator
from wavecl.evaluation.loop import Evaluator, run_evaluation
from wavecl.evaluation.refcoco import RefCOCOEvaluator
from wavecl.evaluation.video import RefDAVISEvaluator, SyntheticJFEvaluator, YTVOSSubmissionEvaluator


@dataclass
class Evaluation:
    dataset: Dataset[ClipSample]
    evaluator: Evaluator


def build_evaluation(config: Config, out_dir: str | Path) -> Evaluation:
    """The evaluation split of ``config.data`` and the evaluator of its protocol.

    Args:
        config: the run's configuration.
        out_dir: where predictions, submissions and tables are written.

    Protocols: A2D-Sentences and JHMDB-Sentences: mAP, P@K, overall and mean IoU against the
    COCO-format ground truth ``data.coco_gt_path`` (``wavecl prepare a2d-gt`` / ``jhmdb-gt`` builds it);
    Ref-YouTube-VOS: the submission zip; RefCOCO/+/g: COCO mAP and P@K per set and their mean;
    Ref-DAVIS17: J&F over the four annotators; synthetic: J, F and J&F against the held-out masks.
    """
    data = config.data
    out_dir = Path(out_dir)
    dataset = build_dataset(data, "eval", config.model.num_classes)
    name = data.dataset_name
    if name in ("a2d_sentences", "jhmdb_sentences"):
        if not data.coco_gt_path:
            raise ValueError(f"data.coco_gt_path is required to evaluate {name} (build it with `wavecl prepare`)")
        evaluator: Evaluator = A2DEvaluator(data.coco_gt_path, results_path=out_dir / "predictions.json")
    elif name == "ref_youtube_vos":
        evaluator = YTVOSSubmissionEvaluator(out_dir)
    elif name == "coco":
        evaluator = RefCOCOEvaluator(dataset, results_dir=out_dir)
    elif name == "davis":
        davis_root = resolve_dataset_root(data.root, DAVIS_FOLDER_NAMES, "DAVIS") / "DAVIS"
        evaluator = RefDAVISEvaluator(out_dir, davis_root)
    elif name == "synthetic":
        evaluator = SyntheticJFEvaluator(data.root, "valid", out_dir)
    else:
        raise ValueError(f"no evaluation protocol for data.dataset_name {name!r}")
    return Evaluation(dataset, evaluator)


def evaluate_model(
    model: nn.Module, config: Config, out_dir: str | Path, dist: DistInfo
) -> tuple[dict[str, float], str | None]:
    """Evaluate ``model`` with the protocol of ``config.data``, writing predictions under ``out_dir``.

    Returns the metrics (complete on every rank) and the name of the metric that selects the best
    checkpoint (``None`` where the protocol has no local metric).
    """
    evaluation = build_evaluation(config, out_dir)
    metrics = run_evaluation(
        model,
        evaluation.dataset,
        evaluation.evaluator,
        dist,
        batch_size=config.data.eval_batch_size,
        num_workers=config.data.num_workers,
        amp=config.train.amp,
    )
    return metrics, evaluation.evaluator.primary_metric
