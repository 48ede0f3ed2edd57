"""The counts behind an evaluation's numbers: what was scored, and what was left out and why.

Every protocol returns its counts among its metrics (floats, like every metric, so they travel the
same way to TensorBoard and ``log.jsonl``), under the names of :data:`COUNT_NAMES`, alone or after a set
name (``refcoco samples``). ``metrics.json`` repeats them as integers under ``"counts"``, and the printed
tables show them as integers.
"""

from __future__ import annotations

from collections.abc import Mapping

COUNT_NAMES = (
    "videos",
    "expressions",
    "frames",
    "windows",
    "samples",
    "annotators",
    "missing_masks",
    "extra_masks",
    "unpredicted_samples",
)
"""Metric names that are counts: ``videos``, ``expressions``, ``frames`` and ``samples`` scored, ``windows``
predicted (without ground truth), ``annotators`` averaged (Ref-DAVIS17); ``missing_masks`` (scored as empty
masks), ``extra_masks`` (ignored) and ``unpredicted_samples`` (scored as misses) say what was not as asked."""


def is_count(name: str) -> bool:
    """Whether metric ``name`` is a count (:data:`COUNT_NAMES`, possibly after a set name and a space)."""
    return name.rsplit(" ", 1)[-1] in COUNT_NAMES


def metric_counts(metrics: Mapping[str, float]) -> dict[str, int]:
    """The counts among ``metrics`` as integers, in their order (``{}`` when there are none)."""
    return {name: int(value) for name, value in metrics.items() if is_count(name)}
