"""The run directory: the one place that names what a run writes, and the lock and history kept there.

A run lives in ``<train.output_dir>/<data.dataset_name>/<train.version>/`` (``Config.run_directory()``);
only rank 0 writes into it::

    config.yaml            the configuration that runs (rewritten when a resume changes a field)
    run_info.json          the start (explicit flags, world size, git revision, command, torch, precision)
                           and one entry per resume (command, checkpoint, position, changed fields)
    log.jsonl              one JSON line per epoch: train_<loss>, train_skipped_batches,
                           train_bad_samples, train_seconds, eval_<metric>; appended to, never rewritten
    tensorboard/           train/<loss> and lr/<group> per trained step, eval/<metric> per evaluation
    checkpoints/           epoch_XXXX/ and epoch_XXXX_step_YYYYYY/ folders (:mod:`wavecl.checkpoint`),
                           the frozen weights once per run, and:
        last               text: the folder name of the newest complete checkpoint
        best               text: the folder name of the checkpoint with the best primary metric
        best.json          {"metric", "value", "epoch"} of that choice
    evaluation/<name>/     one folder per evaluated checkpoint (epoch_XXXX during training; ``wavecl
                           evaluate`` names it after the checkpoint): predictions, submission or tables,
                           metrics.json last
    train.lock             while a trainer writes: owner's PID, host, process start time and command

``wavecl demo`` adds its pictures beside them (``overlays/``, ``loss_curve.png``, ``demo_result.json``).
Epochs and steps are numbered from 0 in every name. Whoever needs one of these paths asks
:class:`RunDirectory`; the rules a run keeps (one writer, its own config, a history that only grows,
always resumable) are enforced by :mod:`wavecl.training.run_rules`.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import time
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from wavecl.atomic import write_json

log = logging.getLogger("wavecl.train")


class RunDirectoryError(ValueError):
    """A run directory cannot be used as asked (held by another process, not a run, already a run)."""


@dataclass(frozen=True)
class RunDirectory:
    """The paths of one run directory (layout in the module docstring); nothing is created by asking.

    Attributes:
        root: the run directory.
    """

    root: Path

    CONFIG: ClassVar[str] = "config.yaml"
    RUN_INFO: ClassVar[str] = "run_info.json"
    LOG: ClassVar[str] = "log.jsonl"
    TENSORBOARD: ClassVar[str] = "tensorboard"
    CHECKPOINTS: ClassVar[str] = "checkpoints"
    LAST: ClassVar[str] = "last"
    BEST: ClassVar[str] = "best"
    BEST_RECORD: ClassVar[str] = "best.json"
    EVALUATIONS: ClassVar[str] = "evaluation"
    LOCK: ClassVar[str] = "train.lock"

    def __init__(self, root: str | os.PathLike[str]) -> None:
        object.__setattr__(self, "root", Path(root))

    @classmethod
    def of_checkpoint(cls, checkpoint: Path) -> RunDirectory | None:
        """The run a checkpoint folder belongs to (``<run>/checkpoints/<folder>`` with ``<run>/config.yaml``),
        or None for a checkpoint folder outside a run."""
        run = cls(checkpoint.parent.parent)
        return run if checkpoint.parent.name == cls.CHECKPOINTS and run.config.is_file() else None

    @property
    def config(self) -> Path:
        return self.root / self.CONFIG

    @property
    def run_info(self) -> Path:
        return self.root / self.RUN_INFO

    @property
    def log(self) -> Path:
        return self.root / self.LOG

    @property
    def tensorboard(self) -> Path:
        return self.root / self.TENSORBOARD

    @property
    def checkpoints(self) -> Path:
        return self.root / self.CHECKPOINTS

    @property
    def last_pointer(self) -> Path:
        return self.checkpoints / self.LAST

    @property
    def best_pointer(self) -> Path:
        return self.checkpoints / self.BEST

    @property
    def best_record(self) -> Path:
        return self.checkpoints / self.BEST_RECORD

    @property
    def evaluations(self) -> Path:
        return self.root / self.EVALUATIONS

    @property
    def lock(self) -> Path:
        return self.root / self.LOCK

    def evaluation(self, name: str) -> Path:
        """``evaluation/<name>``: the folder of one evaluation (``name``: a checkpoint folder name such as
        ``epoch_0003``)."""
        return self.evaluations / name

    # -------------------------------------------------------------------------------------- history

    def start_history(self, info: dict[str, Any]) -> None:
        """Write ``run_info.json`` for a new run: ``info`` plus an empty list of resumes."""
        write_json(self.run_info, {**info, "resumes": []}, indent=2)

    def append_resume(self, entry: dict[str, Any]) -> None:
        """Add ``entry`` to the ``resumes`` list of ``run_info.json``, keeping everything else as it was (a
        missing ``run_info.json`` is started with this entry).

        Raises:
            RunDirectoryError: ``run_info.json`` is not valid JSON (named).
        """
        info: dict[str, Any] = {}
        if self.run_info.is_file():
            try:
                info = json.loads(self.run_info.read_text())
            except ValueError as error:
                raise RunDirectoryError(
                    f"{self.run_info} is not valid JSON ({error}); fix or remove it to resume"
                ) from None
        info.setdefault("resumes", []).append(entry)
        write_json(self.run_info, json.loads(json.dumps(info, default=str)), indent=2)

    def append_log(self, record: dict[str, Any]) -> None:
        """Append one epoch's record to ``log.jsonl`` as a JSON line."""
        with open(self.log, "a") as handle:
            handle.write(json.dumps(record) + "\n")

    def logged_epochs(self) -> dict[int, dict[str, Any]]:
        """The records of ``log.jsonl`` by epoch (a later line for the same epoch wins); ``{}`` without a log.

        Raises:
            RunDirectoryError: a line is not a JSON object with an integer ``epoch`` (file and line named).
        """
        records: dict[int, dict[str, Any]] = {}
        if not self.log.is_file():
            return records
        for number, line in enumerate(self.log.read_text().splitlines(), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                records[int(record["epoch"])] = record
            except (ValueError, KeyError, TypeError) as error:
                raise RunDirectoryError(f"{self.log} line {number} is not an epoch record: {error}") from None
        return records


# ------------------------------------------------------------------------------------------ the lock


def _process_start_time(pid: int) -> int | None:
    """The start time of process ``pid`` in clock ticks since boot (Linux ``/proc``), or None."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        return int(fields[19])  # field 22 of /proc/<pid>/stat; fields[0] is field 3
    except (OSError, IndexError, ValueError):
        return None


def _owner_is_running(owner: dict[str, Any]) -> bool:
    """Whether the process recorded in a lock may still run (always True for another host)."""
    if owner.get("host") != socket.gethostname():
        return True
    pid = owner.get("pid")
    if not isinstance(pid, int):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # it exists, under another user
    recorded, current = owner.get("process_start"), _process_start_time(pid)
    return recorded is None or current is None or recorded == current  # a different start: the PID was reused


def _read_owner(path: Path) -> dict[str, Any] | None:
    """The lock's record, or None when it is unreadable (retried briefly: its writer may be mid-write)."""
    for _ in range(20):
        try:
            owner = json.loads(path.read_text())
            if isinstance(owner, dict):
                return owner
        except FileNotFoundError:
            raise
        except (OSError, ValueError):
            pass
        time.sleep(0.05)
    return None


def _describe(owner: dict[str, Any]) -> str:
    command = " ".join(owner.get("command") or [])
    return f"process {owner.get('pid')} on {owner.get('host')} (since {owner.get('started')}; command: {command})"


class RunLock:
    """The lock file of a run directory (``train.lock``), held by this process until :meth:`release` (or exit).

    A lock left by a process that no longer runs (same host, PID gone or reused) is taken over with a
    warning.

    Args:
        run_dir: the run directory (created if needed).

    Raises:
        RunDirectoryError: a process that still runs holds the lock (the message names it and the file).
    """

    def __init__(self, run_dir: str | os.PathLike[str]) -> None:
        self.path = RunDirectory(run_dir).lock
        self.path.parent.mkdir(parents=True, exist_ok=True)
        pid, token = os.getpid(), os.urandom(8).hex()
        self.record = {
            "pid": pid,
            "host": socket.gethostname(),
            "process_start": _process_start_time(pid),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "command": list(sys.argv),
            "token": token,
        }
        while not self._try_create():
            try:
                owner = _read_owner(self.path)
            except FileNotFoundError:
                continue  # released meanwhile
            if owner is not None and _owner_is_running(owner):
                raise RunDirectoryError(
                    f"run directory {self.path.parent} is in use by {_describe(owner)}; two trainers must not "
                    f"write one run. Wait for it to finish or stop it; if it is gone (e.g. on another host), "
                    f"delete {self.path}"
                )
            what = "an unreadable lock" if owner is None else f"the lock of {_describe(owner)}, which no longer runs"
            log.warning("taking over %s: %s", what, self.path)
            stale = self.path.with_name(f".{self.path.name}.{token}.stale")
            try:
                os.rename(self.path, stale)  # atomic: of two processes taking over, one wins, the other retries
            except FileNotFoundError:
                continue
            stale.unlink(missing_ok=True)
        self._finalizer = weakref.finalize(self, _release, self.path, token)

    def _try_create(self) -> bool:
        try:
            handle = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            return False
        with os.fdopen(handle, "w") as stream:
            stream.write(json.dumps(self.record))
        return True

    def release(self) -> None:
        """Remove the lock file if it is still this process's (idempotent)."""
        self._finalizer()


def _release(path: Path, token: str) -> None:
    try:
        if json.loads(path.read_text()).get("token") == token:
            path.unlink()
    except (OSError, ValueError):
        pass
