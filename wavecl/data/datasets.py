"""The datasets wavecl can build: one row per ``data.dataset_name``.

:data:`DATASETS` is the only place on the data side that dispatches on ``data.dataset_name``. A row
names the dataset's builder (``build_<name>(config, split, transform, num_classes)`` in
``wavecl/data/<name>.py``), whether it has a training split, and its whole-dataset check. How a dataset
is evaluated is the evaluation side's row (:data:`wavecl.evaluation.protocols.PROTOCOLS`).
docs/datasets.md#how-to-add-a-dataset walks through adding one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

from torch.utils.data import Dataset

from wavecl.config import DataConfig
from wavecl.data.a2d import build_a2d
from wavecl.data.check import DatasetReport, check_mevis_dataset, check_ytvos_dataset
from wavecl.data.davis import build_davis
from wavecl.data.jhmdb import build_jhmdb
from wavecl.data.mevis import build_mevis
from wavecl.data.refcoco import build_refcoco
from wavecl.data.robust import SkipBadSamples
from wavecl.data.transforms import ClipTransform, build_transform
from wavecl.data.types import ClipSample, Split
from wavecl.data.ytvos import build_ytvos

DatasetBuilder = Callable[[DataConfig, Split, ClipTransform, int], Dataset[ClipSample]]
DatasetCheck = Callable[[DataConfig, Sequence[Split]], DatasetReport]

YTVOS_SPLITS: dict[Split, str] = {"train": "train", "eval": "valid"}
"""The Ref-YouTube-VOS-layout folder each split of a run reads."""

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DatasetRow:
    """What the rest of wavecl knows of how to read one dataset.

    Attributes:
        build: its loader for a split (``"train"``, or the split its protocol evaluates).
        trains: whether it has a training split (JHMDB and Ref-DAVIS17 are evaluation-only).
        check: checks the given splits (``"train"``, ``"eval"``) of the dataset of a data config whole,
            before a model is built (:mod:`wavecl.data.check`, in ``data.num_workers`` processes);
            ``None`` where no such check exists yet.
    """

    build: DatasetBuilder
    trains: bool
    check: DatasetCheck | None = None


def _check_ytvos(config: DataConfig, splits: Sequence[Split]) -> DatasetReport:
    return check_ytvos_dataset(config.root, [YTVOS_SPLITS[split] for split in splits], workers=config.num_workers)


def _check_mevis(config: DataConfig, splits: Sequence[Split]) -> DatasetReport:
    return check_mevis_dataset(
        config.root, ["train" if split == "train" else config.mevis_eval_split for split in splits]
    )


DATASETS: dict[str, DatasetRow] = {
    "a2d_sentences": DatasetRow(build=build_a2d, trains=True),
    "jhmdb_sentences": DatasetRow(build=build_jhmdb, trains=False),
    "ref_youtube_vos": DatasetRow(build=build_ytvos, trains=True, check=_check_ytvos),
    "mevis": DatasetRow(build=build_mevis, trains=True, check=_check_mevis),
    "coco": DatasetRow(build=build_refcoco, trains=True),
    "davis": DatasetRow(build=build_davis, trains=False),
    "synthetic": DatasetRow(build=build_ytvos, trains=True, check=_check_ytvos),  # Ref-YouTube-VOS layout
}


def dataset_row(name: str) -> DatasetRow:
    """The row of ``name``.

    Raises:
        ValueError: no such dataset; the message lists the known ones.
    """
    return named_row(DATASETS, name)


_Row = TypeVar("_Row")


def named_row(table: Mapping[str, _Row], name: str) -> _Row:
    """The row of dataset ``name`` in ``table`` (:data:`DATASETS`, the evaluation protocols, ...).

    Raises:
        ValueError: no such dataset; the message lists the known ones.
    """
    if name not in table:
        raise ValueError(f"unknown data.dataset_name {name!r}; known datasets: {sorted(table)}")
    return table[name]


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
