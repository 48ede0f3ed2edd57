"""A run directory is owned by its run: one writer at a time, its own config, a history that only grows.

- **One writer.** ``train.lock`` in the run directory holds the owner's PID, host, process start time
  and command. A second trainer is refused with a message naming the owner; a lock left by a process
  that no longer runs (same host, PID gone or reused) is taken over with a warning. Under ``torchrun``
  only rank 0 takes the lock.
- **Its own config.** A resume reads ``<run>/config.yaml``; a config file that disagrees with it is an
  error naming the fields, unless those fields are changed explicitly (``--set`` or a shortcut flag),
  and fields that say where the run lives (output folder, dataset name, version) cannot change. An
  evaluation of a run's checkpoint builds the network from the run's ``model`` section the same way
  (the data to evaluate on may come from another config file).
- **A growing history.** ``run_info.json`` keeps the command that started the run and gains one entry
  per resume (command, checkpoint, changed fields); ``log.jsonl`` is appended to, never rewritten. A fresh
  run refuses a directory that already holds a run.
- **Always resumable.** A run stopped before its first checkpoint was complete holds nothing worth
  keeping: ``--resume`` starts it again from the beginning with its own config, and a fresh start may
  reuse its directory. Whoever opens the run (:func:`open_run_directory`) first removes the temporary
  files a killed process left (:func:`wavecl.atomic.remove_temporaries`), saying so in the log, and
  refuses an output folder it cannot write into before anything trains.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import socket
import sys
import time
import weakref
from pathlib import Path
from typing import Any

from wavecl.atomic import remove_temporaries, temporary_directory, write_json
from wavecl.checkpoint import has_checkpoint, latest_checkpoint
from wavecl.config import TRAINING_ONLY_MODEL_FIELDS, Config, apply_overrides, load_config

log = logging.getLogger("wavecl.train")

CONFIG_FILENAME = "config.yaml"
RUN_INFO_FILENAME = "run_info.json"
LOG_FILENAME = "log.jsonl"
LOCK_FILENAME = "train.lock"
CHECKPOINTS_DIRNAME = "checkpoints"
EVALUATIONS_DIRNAME = "eval"
# Fields that name the run directory (<output_dir>/<dataset_name>/<version>); a resume cannot change them.
LOCATION_FIELDS = ("train.output_dir", "data.dataset_name", "train.version")


class RunDirectoryError(ValueError):
    """A run directory cannot be used as asked (held by another process, not a run, already a run)."""


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
    """The lock file of a run directory, held by this process until :meth:`release` (or exit).

    Args:
        run_dir: the run directory (created if needed).

    Raises:
        RunDirectoryError: a process that still runs holds the lock (the message names it and the file).
    """

    def __init__(self, run_dir: str | os.PathLike[str]) -> None:
        self.path = Path(run_dir) / LOCK_FILENAME
        self.path.parent.mkdir(parents=True, exist_ok=True)
        pid = os.getpid()
        self.record = {
            "pid": pid,
            "host": socket.gethostname(),
            "process_start": _process_start_time(pid),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "command": list(sys.argv),
            "token": os.urandom(8).hex(),
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
            stale = self.path.with_name(f".{LOCK_FILENAME}.{self.record['token']}.stale")
            try:
                os.rename(self.path, stale)  # atomic: of two processes taking over, one wins, the other retries
            except FileNotFoundError:
                continue
            stale.unlink(missing_ok=True)
        self._finalizer = weakref.finalize(self, _release, self.path, self.record["token"])

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


# ---------------------------------------------------------------------------------- locating a run


def find_run_directory(checkpoint: str | os.PathLike[str]) -> Path | None:
    """The training run a checkpoint argument belongs to (run directory, ``checkpoints`` folder,
    checkpoint folder, pointer, or a ``model.safetensors`` inside one), or None for anything else (a
    pretrained folder, a reference ``.pth``, a loose checkpoint, nothing at all)."""
    path = Path(checkpoint)
    try:
        return run_directory_of(path.parent if path.is_file() and path.suffix == ".safetensors" else path)
    except (OSError, ValueError):  # RunDirectoryError is a ValueError
        return None


def stopped_before_first_checkpoint(run_dir: str | os.PathLike[str]) -> bool:
    """Whether ``run_dir`` holds a run's ``config.yaml`` but no complete checkpoint and no ``log.jsonl``:
    a run stopped (interrupted, failed, out of disk space) before its first checkpoint was written whole.
    """
    run_dir = Path(run_dir)
    return (
        (run_dir / CONFIG_FILENAME).is_file()
        and not (run_dir / LOG_FILENAME).exists()
        and not has_checkpoint(run_dir / CHECKPOINTS_DIRNAME)
    )


def resume_checkpoint(resume: str | os.PathLike[str]) -> Path | None:
    """The checkpoint folder a ``--resume`` argument continues from; None for a run directory stopped
    before its first checkpoint (:func:`stopped_before_first_checkpoint`), which starts again from the
    beginning.

    Raises:
        FileNotFoundError: nothing to resume at ``resume``.
    """
    return None if stopped_before_first_checkpoint(resume) else latest_checkpoint(resume)


def run_directory_of(resume: str | os.PathLike[str]) -> Path:
    """The run directory a ``--resume`` argument belongs to.

    Args:
        resume: a run directory, its ``checkpoints`` folder, a checkpoint folder or a pointer file.

    Raises:
        FileNotFoundError: nothing to resume at ``resume``.
        RunDirectoryError: the checkpoint is not inside a run directory holding ``config.yaml``.
    """
    return run_directory_holding(resume, resume_checkpoint(resume))


def run_directory_holding(resume: str | os.PathLike[str], checkpoint: Path | None) -> Path:
    """:func:`run_directory_of` for a caller that already has ``checkpoint = resume_checkpoint(resume)``.

    Raises:
        RunDirectoryError: ``checkpoint`` is not inside a run directory holding ``config.yaml``.
    """
    if checkpoint is None:
        return Path(resume)
    run_dir = checkpoint.parent.parent  # <run>/checkpoints/<folder>
    if checkpoint.parent.name != CHECKPOINTS_DIRNAME or not (run_dir / CONFIG_FILENAME).is_file():
        raise RunDirectoryError(
            f"cannot resume from {resume}: its checkpoint {checkpoint} is not in <run>/{CHECKPOINTS_DIRNAME}/ of a "
            f"run directory holding {CONFIG_FILENAME}; to start a new run from these weights use --pretrained"
        )
    return run_dir


def require_fresh_run_directory(run_dir: Path) -> None:
    """Refuse to start a new run in a directory that already holds one.

    A directory whose run stopped before its first checkpoint (:func:`stopped_before_first_checkpoint`)
    is taken over with a warning: its ``config.yaml`` and ``run_info.json`` are replaced.

    Raises:
        RunDirectoryError: ``run_dir`` has a ``log.jsonl`` or a complete checkpoint (the message says how
            to resume).
    """
    held = [name for name in (LOG_FILENAME,) if (run_dir / name).exists()]
    if has_checkpoint(run_dir / CHECKPOINTS_DIRNAME):
        held.append(f"{CHECKPOINTS_DIRNAME}/")
    if held:
        raise RunDirectoryError(
            f"run directory {run_dir} already holds a run ({', '.join(held)}): continue it with --resume {run_dir}, "
            f"or start a new one under another train.version (--version) or train.output_dir"
        )
    if (run_dir / CONFIG_FILENAME).is_file():  # no log and no checkpoint: stopped before its first checkpoint
        log.warning("%s holds a run stopped before its first checkpoint: starting a new run in its place", run_dir)


def _require_writable(run_dir: Path) -> None:
    """Create and remove a temporary folder in the run directory and each of its folders that a run
    writes into (a folder may be read-only while the directory is not).

    Raises:
        RunDirectoryError: one of them cannot be written into (named, with the system's reason).
    """
    for folder in (run_dir, *(path for path in run_dir.iterdir() if path.is_dir() and not path.is_symlink())):
        try:
            os.rmdir(temporary_directory(folder / "write-test"))
        except OSError as error:
            raise RunDirectoryError(
                f"cannot write into {folder} ({error.strerror or error}): a run needs a writable output folder; "
                f"make it writable or choose another train.output_dir (--output-dir)"
            ) from None


def open_run_directory(run_dir: Path, fresh: bool) -> RunLock:
    """Take the run directory for a trainer: lock it, check a new run may start there, check it can be
    written into, and remove the temporary files and folders an interrupted process left in it, its
    ``checkpoints`` and its ``eval`` folder (one warning line each).

    Args:
        run_dir: the run directory (created if needed).
        fresh: a new run (:func:`require_fresh_run_directory` applies), not a resume.

    Returns:
        The lock, held until released.

    Raises:
        RunDirectoryError: another process holds the run; a new run's directory already holds one; the
            output folder cannot be written into (no traceback, nothing trained or written).
    """
    try:
        lock = RunLock(run_dir)
    except OSError as error:
        raise RunDirectoryError(
            f"cannot write the run directory {run_dir}: {error.strerror or error} ({error.filename}); make the "
            f"output folder writable or choose another train.output_dir (--output-dir)"
        ) from None
    try:
        if fresh:
            require_fresh_run_directory(run_dir)
        _require_writable(run_dir)
        # In the run directory itself only the trainer's own files: `wavecl evaluate` may be writing beside them.
        leftovers = remove_temporaries(run_dir, (CONFIG_FILENAME, RUN_INFO_FILENAME))
        for folder in (run_dir / CHECKPOINTS_DIRNAME, run_dir / EVALUATIONS_DIRNAME):
            leftovers += remove_temporaries(folder)
        for leftover in leftovers:
            log.warning("removed %s, left unfinished by an interrupted process", leftover)
    except BaseException:
        lock.release()
        raise
    return lock


# ------------------------------------------------------------------------------------ configuration


def _flatten(config: Config) -> dict[str, Any]:
    values = config.to_dict()
    return {f"{section}.{name}": value for section, fields in values.items() for name, value in fields.items()}


def config_differences(old: Config, new: Config) -> dict[str, tuple[Any, Any]]:
    """``{"section.field": (old value, new value)}`` for every field that differs, in declaration order."""
    before, after = _flatten(old), _flatten(new)
    return {key: (before[key], after[key]) for key in before if before[key] != after[key]}


def differences_listing(differences: dict[str, tuple[Any, Any]]) -> str:
    """``"section.field: old -> new; ..."`` of :func:`config_differences`."""
    return "; ".join(f"{key}: {old!r} -> {new!r}" for key, (old, new) in differences.items())


def _require_agreement(
    run_dir: Path,
    run_config: Config,
    config_file: Config,
    overrides: dict[str, Any],
    source: str,
    sections: tuple,
    ignored: frozenset[str] = frozenset(),
) -> None:
    """Raise when ``config_file`` differs from the run's config in ``sections`` on a field not overridden
    (``ignored`` holds dotted field names that may differ)."""
    disagree = {
        key: values
        for key, values in config_differences(run_config, config_file).items()
        if key.partition(".")[0] in sections and key not in overrides and key not in ignored
    }
    if disagree:
        raise RunDirectoryError(
            f"{source} disagrees with the run's own {run_dir / CONFIG_FILENAME}, which governs its checkpoints: "
            f"{differences_listing(disagree)} (run's value -> file's value). Leave out -c to use the run's config, "
            f"or change a field explicitly with --set SECTION.FIELD=VALUE (it is then applied and recorded)"
        )


def check_location_unchanged(run_config: Config, config: Config, run_dir: Path) -> None:
    """Refuse a resume config whose output folder, dataset name or version differ from the run's.

    Raises:
        RunDirectoryError: naming the fields and their values.
    """
    moved = {k: v for k, v in config_differences(run_config, config).items() if k in LOCATION_FIELDS}
    if moved:
        raise RunDirectoryError(
            f"a resume writes into its own run directory {run_dir}; these fields name another one: "
            f"{differences_listing(moved)}"
        )


def resume_config(run_dir: Path, config_file: Config | None, overrides: dict[str, Any], source: str = "-c") -> Config:
    """The config of a resumed run: ``<run>/config.yaml`` with the explicit ``overrides`` applied.

    Args:
        run_dir: the run directory being resumed.
        config_file: the config given with ``-c``, or None. It must agree with the run's config on every
            field that ``overrides`` does not set.
        overrides: dotted field -> value, given explicitly (``--set`` and shortcut flags).
        source: how ``config_file`` was named on the command line (for the message).

    Raises:
        RunDirectoryError: ``config_file`` disagrees with the run's config (the fields are named), or an
            override would move the run (:func:`check_location_unchanged`).
        ValueError: an override names an unknown field or has the wrong type.
    """
    run_config = load_config(run_dir / CONFIG_FILENAME)
    if config_file is not None:
        _require_agreement(run_dir, run_config, config_file, overrides, source, ("model", "data", "loss", "train"))
    config = apply_overrides(run_config, overrides)
    check_location_unchanged(run_config, config, run_dir)
    return config


def evaluation_config(
    run_dir: Path, config_file: Config | None, overrides: dict[str, Any], source: str = "-c"
) -> Config:
    """The config to evaluate a checkpoint of the run in ``run_dir`` with.

    Without ``config_file``: the run's ``config.yaml``. With it: the file (its dataset, sizes, output
    folder), but the network of the run: the file's ``model`` section must agree with the run's on every
    field not set explicitly, except the training-only ones (:data:`~wavecl.config.TRAINING_ONLY_MODEL_FIELDS`,
    e.g. a Ref-DAVIS17 config evaluating a finetune that trained its text encoder). ``overrides`` are
    applied last.

    Raises:
        RunDirectoryError: the file's ``model`` section disagrees with the run's (fields named).
    """
    run_config = load_config(run_dir / CONFIG_FILENAME)
    if config_file is None:
        return apply_overrides(run_config, overrides)
    training_only = frozenset(f"model.{name}" for name in TRAINING_ONLY_MODEL_FIELDS)
    _require_agreement(run_dir, run_config, config_file, overrides, source, ("model",), training_only)
    return apply_overrides(dataclasses.replace(config_file, model=run_config.model), overrides)


# -------------------------------------------------------------------------------------------- history


def start_history(run_dir: Path, info: dict[str, Any]) -> None:
    """Write ``run_info.json`` for a new run: ``info`` plus an empty list of resumes."""
    write_json(run_dir / RUN_INFO_FILENAME, {**info, "resumes": []}, indent=2)


def append_resume(run_dir: Path, entry: dict[str, Any]) -> None:
    """Add ``entry`` to the ``resumes`` list of ``run_info.json``, keeping everything else as it was (a
    missing ``run_info.json`` is started with this entry).

    Raises:
        RunDirectoryError: ``run_info.json`` is not valid JSON (named).
    """
    path = run_dir / RUN_INFO_FILENAME
    info: dict[str, Any] = {}
    if path.is_file():
        try:
            info = json.loads(path.read_text())
        except ValueError as error:
            raise RunDirectoryError(f"{path} is not valid JSON ({error}); fix or remove it to resume") from None
    info.setdefault("resumes", []).append(entry)
    write_json(path, json.loads(json.dumps(info, default=str)), indent=2)


def logged_epochs(run_dir: Path) -> dict[int, dict[str, Any]]:
    """The records of ``log.jsonl`` by epoch (a later line for the same epoch wins); ``{}`` without a log.

    Raises:
        RunDirectoryError: a line is not a JSON object with an integer ``epoch`` (file and line named).
    """
    path = run_dir / LOG_FILENAME
    records: dict[int, dict[str, Any]] = {}
    if not path.is_file():
        return records
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            records[int(record["epoch"])] = record
        except (ValueError, KeyError, TypeError) as error:
            raise RunDirectoryError(f"{path} line {number} is not an epoch record: {error}") from None
    return records


def remove_empty_folders(folder: Path, up_to: Path) -> None:
    """Remove ``folder`` and then its parents below ``up_to`` while they are empty: what a new run that
    failed before writing anything (a refused ``--pretrained``, a bad config) leaves behind."""
    folder, up_to = folder.absolute(), up_to.absolute()
    while folder != up_to and up_to in folder.parents:
        try:
            folder.rmdir()
        except OSError:  # not empty, or already gone
            return
        folder = folder.parent
