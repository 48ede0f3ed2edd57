"""What a run keeps of its training, written by rank 0 into the run directory
(:class:`~wavecl.run_directory.RunDirectory`) while :class:`~wavecl.training.trainer.Trainer` steps.

:class:`RunRecorder` holds the run's lock, writes ``config.yaml`` and the ``run_info.json`` history at the
start and at each resume, the TensorBoard scalars of every step and evaluation, one ``log.jsonl`` line per
epoch, the ``best`` pointer and its ``best.json`` record, and prunes the checkpoints. Every method may be
called on every rank: the writes happen on rank 0 (:func:`~wavecl.distributed.on_main_process`).
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from wavecl.atomic import write_json, write_text
from wavecl.checkpoint import CheckpointError, CheckpointPaths, has_checkpoint, latest_checkpoint, prune_checkpoints
from wavecl.config import Config
from wavecl.distributed import DistInfo, broadcast_from_main, on_main_process
from wavecl.optional import package_available
from wavecl.run_directory import RunDirectory, RunDirectoryError, RunLock
from wavecl.training.run_rules import open_run_directory

if TYPE_CHECKING:
    from torch.utils.tensorboard import SummaryWriter

log = logging.getLogger("wavecl.train")


@dataclass
class EpochResult:
    """An epoch's training totals so far: per-term loss sums over ``count`` logged steps, skipped batches,
    failed sample loads and seconds (:attr:`losses` gives the ``log.jsonl`` means). Saved in every
    checkpoint (``epoch_totals``), so a mid-epoch resume finishes the same totals."""

    sums: dict[str, float]
    count: int
    skipped_batches: int
    bad_samples: int
    seconds: float

    @property
    def losses(self) -> dict[str, float]:
        """Per-term mean over the logged steps."""
        return {k: v / max(self.count, 1) for k, v in self.sums.items()}

    def as_state(self) -> dict[str, Any]:
        """The totals as plain types for a checkpoint's training state (``EpochResult(**state)`` reads them)."""
        return {
            "sums": dict(self.sums),
            "count": self.count,
            "skipped_batches": self.skipped_batches,
            "bad_samples": self.bad_samples,
            "seconds": self.seconds,
        }


def git_revision() -> str | None:
    """The git revision of the wavecl source tree, or None outside a checkout."""
    try:
        return subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def read_best_metric(path: Path) -> float | None:
    """The value of the best checkpoint's metric recorded in ``path`` (``best.json``); ``None`` without one.

    Raises:
        CheckpointError: ``path`` is not JSON holding a numeric ``"value"`` (named with the file).
    """
    if not path.is_file():
        return None
    try:
        value = json.loads(path.read_text(encoding="utf-8"))["value"]
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as error:
        raise CheckpointError(
            f"{path} is not a readable record of the best checkpoint ({type(error).__name__}: {error}); "
            "fix or delete it (the next evaluation writes it again)"
        ) from None
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise CheckpointError(f"{path}: 'value' must be a number, got {value!r}")
    return float(value)


class RunRecorder:
    """The writer of one run directory for one trainer; takes the directory on creation.

    Args:
        run: the run directory.
        dist: this process's place in the job.
        fresh: a new run (refused where a run already is), not a resume.

    Raises:
        RunDirectoryError: on every rank, when rank 0 cannot take the directory
            (:func:`~wavecl.training.run_rules.open_run_directory`: held by another process, already a
            run, not writable).
    """

    def __init__(self, run: RunDirectory, dist: DistInfo, fresh: bool) -> None:
        self.run = run
        self.dist = dist
        self.writer: SummaryWriter | None = None
        self.best_metric: float | None = None
        self._lock = self._take(fresh)

    def _take(self, fresh: bool) -> RunLock | None:
        lock, error = None, None
        if self.dist.is_main:
            try:
                lock = open_run_directory(self.run.root, fresh)
            except RunDirectoryError as failure:
                error = str(failure)
        error = broadcast_from_main(error)  # collective: rank 0's verdict for all
        if error is not None:
            raise RunDirectoryError(error)
        return lock

    def open(self, config: Config, info: dict[str, Any], resumed: dict[str, Any] | None, global_step: int) -> None:
        """Write ``config.yaml``, start ``run_info.json`` (a new run) or add a resume entry, and open
        TensorBoard (collective).

        Args:
            config: the configuration that runs.
            info: what ``run_info.json`` records of this start or resume (command, world size, ...).
            resumed: for a resume, the entry's ``checkpoint``, ``continues_at`` and ``changed``; None for a
                new run.
            global_step: the steps the run has trained; TensorBoard drops what was logged from there on
                (an interrupted stretch that is trained again).
        """

        def write() -> None:
            self.run.root.mkdir(parents=True, exist_ok=True)
            write_text(self.run.config, config.to_yaml())
            if resumed is None:
                self.run.start_history(info)
            else:
                self.run.append_resume({**info, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **resumed})
            if not package_available("tensorboard"):
                log.warning(
                    "TensorBoard is not installed (pip install tensorboard): no tensorboard/ curves for this run; "
                    "log.jsonl has every epoch's losses and metrics"
                )
                return
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(self.run.tensorboard), purge_step=global_step)

        on_main_process(write, "creating the run directory")

    def read_best(self) -> None:
        """Take the best metric so far from ``best.json`` (a resume).

        Raises:
            CheckpointError: ``best.json`` is unreadable (:func:`read_best_metric`).
        """
        self.best_metric = read_best_metric(self.run.best_record)

    def record_step(self, step: int, losses: dict[str, float], optimizer: torch.optim.Optimizer) -> None:
        """TensorBoard scalars of trained step ``step`` (counted over the run): every loss term and the
        learning rate of every parameter group."""
        if self.writer is None:
            return
        for key, value in losses.items():
            self.writer.add_scalar(f"train/{key}", value, step)
        for index, group in enumerate(optimizer.param_groups):
            self.writer.add_scalar(f"lr/{group.get('name', index)}", group["lr"], step)

    def record_epoch(
        self,
        epoch: int,
        result: EpochResult,
        metrics: dict[str, float],
        primary: str | None,
        checkpoint: CheckpointPaths,
        keep_checkpoints: int | None,
    ) -> None:
        """Point ``best`` at ``checkpoint`` when its ``primary`` metric beats the best so far, append the
        epoch's ``log.jsonl`` line, write its evaluation scalars and prune the checkpoints (collective)."""

        def write() -> None:
            if primary is not None and primary in metrics:
                if self.best_metric is None or metrics[primary] > self.best_metric:
                    self.best_metric = metrics[primary]
                    record = {"metric": primary, "value": self.best_metric, "epoch": epoch}
                    write_json(self.run.best_record, record)
                    write_text(self.run.best_pointer, checkpoint.directory.name + "\n")
            training = {
                **{f"train_{k}": v for k, v in result.losses.items()},
                "train_skipped_batches": result.skipped_batches,
                "train_bad_samples": result.bad_samples,
                "train_seconds": result.seconds,
            }
            line = {"epoch": epoch, **training, **{f"eval_{k}": v for k, v in metrics.items()}}
            self.run.append_log(line)
            if self.writer is not None:
                for key, value in metrics.items():
                    self.writer.add_scalar(f"eval/{key}", value, epoch)
                self.writer.flush()
            log.info("epoch %d: %s", epoch, {k: round(v, 4) for k, v in line.items() if isinstance(v, float)})
            prune_checkpoints(self.run.checkpoints, keep_checkpoints)

        on_main_process(write, f"recording epoch {epoch}")

    def prune(self, keep_checkpoints: int | None) -> None:
        """Delete the checkpoints the run no longer needs (:func:`~wavecl.checkpoint.prune_checkpoints`; collective)."""
        on_main_process(lambda: prune_checkpoints(self.run.checkpoints, keep_checkpoints), "pruning checkpoints")

    def how_to_continue(self) -> str:
        """One line on what a stopped run left and the command that continues it."""
        run = self.run.root
        if not has_checkpoint(self.run.checkpoints):
            return (
                f"training stopped before its first checkpoint was complete; `wavecl train --resume {run}` starts "
                f"it again from the beginning in the same folder (or delete {run})"
            )
        try:
            checkpoint = latest_checkpoint(run).name
        except (OSError, ValueError) as error:
            return f"training stopped; the checkpoints of {run} cannot be resumed as they are: {error}"
        return (
            f"training stopped; `wavecl train --resume {run}` continues from its last complete checkpoint {checkpoint}"
        )

    def close(self) -> None:
        """Close TensorBoard and release the run directory (idempotent)."""
        if self.writer is not None:
            self.writer.close()
            self.writer = None
        if self._lock is not None:
            self._lock.release()
            self._lock = None


def run_info(explicit_overrides: dict[str, Any], dist: DistInfo, precision: dict[str, Any]) -> dict[str, Any]:
    """What ``run_info.json`` records of a start or resume: the fields given explicitly, world size, git
    revision, command line, torch version and the precision that runs."""
    return {
        "explicit_overrides": explicit_overrides,
        "world_size": dist.world_size,
        "git_revision": git_revision(),
        "command": sys.argv,
        "torch": torch.__version__,
        "precision": precision,
    }
