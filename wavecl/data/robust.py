"""Keeping a training run alive when one sample is unreadable."""

from __future__ import annotations

import logging
import multiprocessing

from torch.utils.data import Dataset

from wavecl.data.types import ClipSample

logger = logging.getLogger(__name__)


class SkipBadSamples(Dataset[ClipSample]):
    """Wrap a dataset so that a failing item is logged, counted and replaced by the next good one.

    When ``dataset[index]`` raises, a warning naming the sample (``dataset.sample_name(index)`` when the
    dataset provides it) and the error is logged, the failure is counted and ``index + 1``,
    ``index + 2``, ... (wrapping around) are tried. After ``max_consecutive_failures`` failures in a row
    a ``RuntimeError`` (chained to the last error) is raised: a dataset that is broken everywhere stops
    the run instead of spinning.

    The counter lives in shared memory, so failures in DataLoader worker processes are visible to the
    trainer through :attr:`num_skipped`.

    Args:
        dataset: any map-style dataset of :class:`ClipSample`.
        max_consecutive_failures: failures tolerated in a row for one request.
    """

    def __init__(self, dataset: Dataset[ClipSample], max_consecutive_failures: int = 32) -> None:
        self.dataset = dataset
        self.max_consecutive_failures = max_consecutive_failures
        # A lock made by the "spawn" context can be shared with workers of any start method; one made by
        # the default "fork" context cannot be pickled for "spawn"/"forkserver" workers.
        self._skipped = multiprocessing.get_context("spawn").Value("q", 0)

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    @property
    def num_skipped(self) -> int:
        """Number of failed items so far, across all worker processes."""
        return int(self._skipped.value)

    def _name(self, index: int) -> str:
        describe = getattr(self.dataset, "sample_name", None)
        return describe(index) if describe is not None else f"sample {index}"

    def __getitem__(self, index: int) -> ClipSample:
        failure: Exception | None = None
        for attempt in range(self.max_consecutive_failures):
            current = (index + attempt) % len(self)
            try:
                return self.dataset[current]
            except Exception as error:
                failure = error
                with self._skipped.get_lock():
                    self._skipped.value += 1
                logger.warning("skipping %s: %s: %s", self._name(current), type(error).__name__, error)
        raise RuntimeError(
            f"{self.max_consecutive_failures} consecutive samples failed, starting at {self._name(index)}"
        ) from failure
