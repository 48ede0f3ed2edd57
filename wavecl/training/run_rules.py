"""The rules a run directory (:mod:`wavecl.run_directory`) keeps: one writer at a time, its own config, a
history that only grows, always resumable.

- **One writer.** A trainer holds the run's :class:`~wavecl.run_directory.RunLock`; a second one is
  refused with a message naming the owner. Under ``torchrun`` only rank 0 takes the lock.
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
import logging
import os
from pathlib import Path
from typing import Any

from wavecl.atomic import remove_temporaries, temporary_directory
from wavecl.checkpoint import has_checkpoint, latest_checkpoint
from wavecl.config import TRAINING_ONLY_MODEL_FIELDS, Config, apply_overrides, load_config
from wavecl.run_directory import RunDirectory, RunDirectoryError, RunLock

log = logging.getLogger("wavecl.train")

# Fields that name the run directory (<output_dir>/<dataset_name>/<version>); a resume cannot change them.
LOCATION_FIELDS = ("train.output_dir", "data.dataset_name", "train.version")


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
    run = RunDirectory(run_dir)
    return run.config.is_file() and not run.log.exists() and not has_checkpoint(run.checkpoints)


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
    run = RunDirectory.of_checkpoint(checkpoint)
    if run is None:
        raise RunDirectoryError(
            f"cannot resume from {resume}: its checkpoint {checkpoint} is not in <run>/{RunDirectory.CHECKPOINTS}/ "
            f"of a run directory holding {RunDirectory.CONFIG}; to start a new run from these weights use --pretrained"
        )
    return run.root


def require_fresh_run_directory(run_dir: Path) -> None:
    """Refuse to start a new run in a directory that already holds one.

    A directory whose run stopped before its first checkpoint (:func:`stopped_before_first_checkpoint`)
    is taken over with a warning: its ``config.yaml`` and ``run_info.json`` are replaced.

    Raises:
        RunDirectoryError: ``run_dir`` has a ``log.jsonl`` or a complete checkpoint (the message says how
            to resume).
    """
    run = RunDirectory(run_dir)
    held = [RunDirectory.LOG] if run.log.exists() else []
    if has_checkpoint(run.checkpoints):
        held.append(f"{RunDirectory.CHECKPOINTS}/")
    if held:
        raise RunDirectoryError(
            f"run directory {run_dir} already holds a run ({', '.join(held)}): continue it with --resume {run_dir}, "
            f"or start a new one under another train.version (--version) or train.output_dir"
        )
    if run.config.is_file():  # no log and no checkpoint: stopped before its first checkpoint
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
    ``checkpoints`` and its ``evaluation`` folder (one warning line each).

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
        run = RunDirectory(run_dir)
        leftovers = remove_temporaries(run_dir, (RunDirectory.CONFIG, RunDirectory.RUN_INFO))
        for folder in (run.checkpoints, run.evaluations):
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
            f"{source} disagrees with the run's own {RunDirectory(run_dir).config}, which governs its checkpoints: "
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
    run_config = load_config(RunDirectory(run_dir).config)
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
    run_config = load_config(RunDirectory(run_dir).config)
    if config_file is None:
        return apply_overrides(run_config, overrides)
    training_only = frozenset(f"model.{name}" for name in TRAINING_ONLY_MODEL_FIELDS)
    _require_agreement(run_dir, run_config, config_file, overrides, source, ("model",), training_only)
    return apply_overrides(dataclasses.replace(config_file, model=run_config.model), overrides)


# ------------------------------------------------------------------------------------------ cleanup


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
