"""Checkpoints: safetensors weights plus a weights-only training state (docs/training.md#checkpoints).

A run's ``checkpoints/`` folder (:class:`wavecl.run_directory.RunDirectory`) holds one folder per
checkpoint, named by :func:`checkpoint_folder_name`::

    epoch_0003/                 written at the end of epoch 3 (epochs are numbered from 0)
        model.safetensors       the weights that train (tensors only; each under its state-dict name)
        state.pt                training state: optimizer, scheduler, scaler, epoch, RNG, epoch totals
    epoch_0004_step_000119/     written mid-epoch after step 119 of epoch 4 (``train.checkpoint_every_steps``)
    frozen-<digest>.safetensors the frozen parameters (e.g. a frozen text encoder), stored once per run

Parameters that never change during a run (``requires_grad=False``) are written once into a file named
by a digest of their contents, shared by every checkpoint folder of the run; each folder's
``model.safetensors`` names that file in its metadata (``frozen_weights``), and
:func:`read_state_dict` merges it back, so every reader sees the full state dict. A folder copied
without it fails with a message naming the missing file (``wavecl export`` writes a self-contained
folder).

A checkpoint folder is written whole under a temporary name beside its final one and then renamed
into place (:func:`wavecl.atomic.replace_directory`), and ``last`` is updated only after that, so a
folder named ``epoch_*`` is always complete and a crash never leaves a pointer to a partial checkpoint.
A failed write (an exception, ``KeyboardInterrupt``, a full disk) removes its temporary folder and
leaves the previous checkpoints and ``last`` as they were; what a killed process leaves is named as a
temporary (:func:`wavecl.atomic.is_temporary`) and removed by the next trainer of the run.

Nothing is ever unpickled with the full pickle machinery: every ``torch.load`` of the package goes
through :func:`safe_torch_load`, which refuses any object that would run code; ``.pth``/``.pth.tar``
checkpoints (the original repository's, :mod:`wavecl.original`) are read the same way.
"""

from __future__ import annotations

import hashlib
import math
import os
import pickle
import random
import re
import shutil
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor

from wavecl import original
from wavecl.atomic import NO_SPACE_ERRNOS, atomic_path, disk_full_error, replace_directory, temporary_directory
from wavecl.run_directory import RunDirectory

MODEL_FILENAME = "model.safetensors"
STATE_FILENAME = "state.pt"
FROZEN_PREFIX = "frozen-"
FROZEN_METADATA_KEY = "frozen_weights"
_FOLDER_NAME = re.compile(r"epoch_(\d+)(?:_step_(\d+))?")


class CheckpointError(ValueError):
    """A checkpoint file is unreadable, truncated, malformed or holds objects that are refused."""


@dataclass(frozen=True)
class CheckpointPaths:
    """The files of one checkpoint.

    Attributes:
        directory: the checkpoint folder, e.g. ``checkpoints/epoch_0003``.
        model: ``directory / "model.safetensors"``.
        state: ``directory / "state.pt"``.
    """

    directory: Path
    model: Path
    state: Path

    @classmethod
    def of(cls, directory: str | Path) -> CheckpointPaths:
        directory = Path(directory)
        return cls(directory, directory / MODEL_FILENAME, directory / STATE_FILENAME)


def checkpoint_folder_name(epoch: int, step: int | None = None) -> str:
    """``epoch_<epoch:04d>`` for the end of an epoch, ``epoch_<epoch:04d>_step_<step:06d>`` after 0-based
    ``step`` of a partly trained epoch (both numbered from 0)."""
    return f"epoch_{epoch:04d}" if step is None else f"epoch_{epoch:04d}_step_{step:06d}"


def parse_checkpoint_folder_name(name: str) -> tuple[int, int | None] | None:
    """``(epoch, step)`` of a name made by :func:`checkpoint_folder_name` (``step`` None at an epoch's
    end), or None for any other name."""
    match = _FOLDER_NAME.fullmatch(name)
    if match is None:
        return None
    return int(match[1]), None if match[2] is None else int(match[2])


def _write_atomically(path: Path, write: Callable[[Path], object]) -> None:
    """Call ``write(tmp)`` on a temporary file next to ``path``, flush it to disk, then move it onto ``path``."""
    with atomic_path(path) as temporary:
        write(temporary)
        with open(temporary, "rb+") as handle:
            os.fsync(handle.fileno())


def unshared_cpu_tensors(model_state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Copy a state dict to contiguous CPU tensors that share no storage (safetensors refuses tensors
    that share memory, e.g. tied weights or views); every name is kept."""
    seen_storages: set[tuple[torch.device, int]] = set()
    tensors = {}
    for name, tensor in model_state.items():
        if not isinstance(tensor, Tensor):
            raise TypeError(f"model_state[{name!r}] is a {type(tensor).__name__}, expected a tensor")
        tensor = tensor.detach()
        storage = (tensor.device, tensor.untyped_storage().data_ptr())
        partial_view = tensor.untyped_storage().nbytes() != tensor.nbytes
        if storage in seen_storages or partial_view or not tensor.is_contiguous() or tensor.device.type != "cpu":
            tensor = tensor.to("cpu", memory_format=torch.contiguous_format, copy=True)
        seen_storages.add(storage)
        tensors[name] = tensor
    return tensors


def _unpickler_reason(error: pickle.UnpicklingError) -> str:
    """The line of torch's weights-only error that says what was refused (e.g. the unsupported global)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    reasons = [line for line in lines if "WeightsUnpickler error" in line or "unsupported global" in line.lower()]
    return (reasons or lines or ["no details"])[0]


def _tensor_digest(tensors: dict[str, Tensor]) -> str:
    """First 16 hex digits of the SHA-256 of names, dtypes, shapes and bytes (CPU contiguous tensors)."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name]
        digest.update(f"{name}|{tensor.dtype}|{list(tensor.shape)}|".encode())
        data = tensor.reshape(-1).view(torch.uint8).numpy() if tensor.numel() else b""  # no copy
        # An ndarray is a buffer; numpy's stubs declare ndarray.__buffer__ only for Python >= 3.12.
        digest.update(data)  # type: ignore[arg-type]
    return digest.hexdigest()[:16]


def _frozen_name(tensors: dict[str, Tensor]) -> str:
    """The file name of the frozen tensors: ``frozen-<digest>.safetensors``."""
    return f"{FROZEN_PREFIX}{_tensor_digest(tensors)}.safetensors"


def save_checkpoint(
    checkpoints_dir: str | Path,
    epoch: int,
    model_state: dict[str, Tensor],
    training_state: dict[str, Any],
    step: int | None = None,
    frozen: Collection[str] = (),
) -> CheckpointPaths:
    """Write ``<folder>/{model.safetensors, state.pt}`` as a whole, then point ``last`` at it.

    Args:
        checkpoints_dir: the run's ``checkpoints`` folder; created if needed.
        epoch: the epoch (numbered from 0) the checkpoint belongs to.
        model_state: the unwrapped model's ``state_dict()`` (tensors on any device).
        training_state: anything ``torch.load(weights_only=True)`` can read back: tensors, numbers,
            strings, ``None`` and lists/tuples/dicts of them, e.g. ``{"epoch", "total_epochs",
            "optimizer", "scheduler", "scaler", "best_metric", "rng": rng_state()}``.
        step: None at the end of the epoch (folder ``epoch_<epoch>``); else the 0-based step of the epoch
            just finished (folder ``epoch_<epoch>_step_<step>``).
        frozen: names of ``model_state`` that do not change during the run; they go to one
            ``frozen-<digest>.safetensors`` beside the folders, written only when no checkpoint of the
            run has written those exact values yet.

    Returns:
        The paths written.

    Raises:
        KeyError: a ``frozen`` name is not in ``model_state``.
        TypeError: ``training_state`` holds an object the weights-only loader would refuse (checked
            before the folder is moved into place, so nothing unloadable is ever written).
        DiskFullError: the disk or quota is full (the message names the folder, the space needed and
            free); no part of this checkpoint is left and ``last`` still names the previous one.
    """
    checkpoints_dir = Path(checkpoints_dir)
    paths = CheckpointPaths.of(checkpoints_dir / checkpoint_folder_name(epoch, step))
    tensors = unshared_cpu_tensors(model_state)
    unknown = sorted(set(frozen) - set(tensors))
    if unknown:
        raise KeyError(f"frozen names not in the model state: {unknown[:5]}")
    checkpoints_dir.mkdir(parents=True, exist_ok=True)
    frozen_tensors = {name: tensors.pop(name) for name in sorted(frozen)}
    frozen_file = checkpoints_dir / _frozen_name(frozen_tensors) if frozen_tensors else None
    new_frozen = {} if frozen_file is None or frozen_file.is_file() else frozen_tensors
    metadata = {"format": "pt"}
    if frozen_file is not None:
        metadata[FROZEN_METADATA_KEY] = f"../{frozen_file.name}"
    try:
        if frozen_file is not None and new_frozen:
            _write_atomically(frozen_file, lambda tmp: save_file(new_frozen, str(tmp), metadata={"format": "pt"}))
        _write_folder(paths, tensors, metadata, training_state)
        _write_atomically(checkpoints_dir / RunDirectory.LAST, lambda tmp: tmp.write_text(paths.directory.name + "\n"))
    except OSError as error:
        if error.errno not in NO_SPACE_ERRNOS:
            raise
        needed = _tensor_bytes(tensors) + _tensor_bytes(training_state) + _tensor_bytes(new_frozen)
        raise disk_full_error(checkpoints_dir, f"checkpoint {paths.directory.name}", needed) from None
    return paths


def _tensor_bytes(value: Any) -> int:
    """Bytes of the tensors in ``value`` (a tensor, or dicts/lists/tuples holding them): the bulk of a
    checkpoint's size."""
    if isinstance(value, Tensor):
        return value.nbytes
    if isinstance(value, dict):
        return sum(_tensor_bytes(item) for item in value.values())
    if isinstance(value, (list, tuple)):
        return sum(_tensor_bytes(item) for item in value)
    return 0


def _write_folder(
    paths: CheckpointPaths, tensors: dict[str, Tensor], metadata: dict[str, str], training_state: dict[str, Any]
) -> None:
    """Write the folder ``paths.directory`` under a temporary name beside it, then rename it into place;
    the temporary folder is removed whatever happens."""
    staging = temporary_directory(paths.directory)
    written = CheckpointPaths.of(staging)

    def write_state(tmp: Path) -> None:
        torch.save(training_state, tmp)
        try:
            safe_torch_load(tmp, mmap=True)  # the check needs the pickle, not the tensors in memory
        except CheckpointError as error:
            raise TypeError(
                f"training state for {paths.state} holds objects that torch.load(weights_only=True) "
                f"refuses; convert them to tensors or plain types: {error}"
            ) from None

    try:
        _write_atomically(written.model, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))
        _write_atomically(written.state, write_state)
        replace_directory(staging, paths.directory)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def has_checkpoint(checkpoints_dir: str | Path) -> bool:
    """Whether ``checkpoints_dir`` holds a complete checkpoint folder (named by
    :func:`checkpoint_folder_name`, with both files); temporaries and frozen files do not count."""
    checkpoints_dir = Path(checkpoints_dir)
    return checkpoints_dir.is_dir() and any(
        parse_checkpoint_folder_name(folder.name) is not None
        and (folder / MODEL_FILENAME).is_file()
        and (folder / STATE_FILENAME).is_file()
        for folder in checkpoints_dir.iterdir()
    )


def _frozen_file(weights_file: Path) -> Path | None:
    """The shared frozen-weights file a ``model.safetensors`` names in its metadata, if any."""
    try:
        with safe_open(str(weights_file), framework="pt") as handle:
            metadata = handle.metadata() or {}
    except (SafetensorError, OSError, RuntimeError, ValueError) as error:
        raise CheckpointError(f"cannot read weights {weights_file} (unreadable or truncated): {error}") from None
    name = metadata.get(FROZEN_METADATA_KEY)
    return None if name is None else weights_file.parent / name


def prune_checkpoints(checkpoints_dir: str | Path, keep_last: int | None) -> list[Path]:
    """Delete the checkpoints a run no longer needs; returns what was deleted.

    Kept: the folders the ``last`` and ``best`` pointers name; the newest ``keep_last`` end-of-epoch
    folders (all when ``keep_last`` is None); a mid-epoch (step) folder only while it is the newest
    checkpoint of all (a later checkpoint makes it useless for resuming). A ``frozen-*.safetensors`` file
    is deleted once no kept folder names it. Only folders named by :func:`checkpoint_folder_name` are
    considered; anything else in ``checkpoints_dir`` is left alone.

    Raises:
        ValueError: ``keep_last`` is below 1.
    """
    if keep_last is not None and keep_last < 1:
        raise ValueError(f"train.keep_checkpoints must be at least 1 (or null to keep all), got {keep_last}")
    checkpoints_dir = Path(checkpoints_dir)
    folders = sorted(
        (f for f in checkpoints_dir.iterdir() if f.is_dir() and parse_checkpoint_folder_name(f.name) is not None),
        key=_checkpoint_order,
    )
    protected = {
        (checkpoints_dir / pointer.read_text().strip()).name
        for pointer in (checkpoints_dir / RunDirectory.LAST, checkpoints_dir / RunDirectory.BEST)
        if pointer.is_file()
    }
    epoch_folders = [
        f for f in folders if (parsed := parse_checkpoint_folder_name(f.name)) is not None and parsed[1] is None
    ]
    keep = set(protected) | {f.name for f in (epoch_folders if keep_last is None else epoch_folders[-keep_last:])}
    if folders:
        keep.add(folders[-1].name)
    deleted = [f for f in folders if f.name not in keep]
    for folder in deleted:
        shutil.rmtree(folder)
    referenced = {
        frozen.name
        for f in folders
        if f.name in keep and (f / MODEL_FILENAME).is_file() and (frozen := _frozen_file(f / MODEL_FILENAME))
    }
    for frozen in checkpoints_dir.glob(f"{FROZEN_PREFIX}*.safetensors"):
        if frozen.name not in referenced:
            frozen.unlink()
            deleted.append(frozen)
    return deleted


def latest_checkpoint(path: str | os.PathLike[str]) -> Path:
    """Find the checkpoint folder meant by ``path``.

    Args:
        path: a checkpoint folder (holding ``model.safetensors``, e.g. ``epoch_0003``), a pointer file
            (``last``, ``best``), a ``checkpoints`` folder or a run directory (both resolve ``last``, or
            the highest-numbered epoch folder when ``last`` is missing).

    Raises:
        FileNotFoundError: nothing usable exists at ``path``.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if path.is_file():
        folder = path.parent / path.read_text().strip()
        if not (folder / MODEL_FILENAME).is_file():
            raise FileNotFoundError(f"checkpoint pointer {path} names {folder}, which holds no {MODEL_FILENAME}")
        return folder
    if (path / MODEL_FILENAME).is_file():
        return path
    folders = (path, RunDirectory(path).checkpoints)
    for pointer in (folder / RunDirectory.LAST for folder in folders):
        if pointer.is_file():
            return latest_checkpoint(pointer)
    # No pointer (e.g. a run copied without it): the highest-numbered epoch folder, then the newest file.
    candidates = [weights.parent for folder in folders for weights in folder.glob(f"*/{MODEL_FILENAME}")]
    if candidates:
        return max(candidates, key=_checkpoint_order)
    raise FileNotFoundError(f"{path} holds no {MODEL_FILENAME} and no '{RunDirectory.LAST}' checkpoint pointer")


def _checkpoint_order(folder: Path) -> tuple[int, float, float]:
    """Sort key of checkpoint folders: epoch, then step (an epoch's end after its steps), then age.

    Folders not named by :func:`checkpoint_folder_name` sort by the last number in their name."""
    parsed = parse_checkpoint_folder_name(folder.name)
    if parsed is None:
        numbers = re.findall(r"\d+", folder.name)
        parsed = (int(numbers[-1]) if numbers else -1, None)
    epoch, step = parsed
    model = folder / MODEL_FILENAME
    return (epoch, math.inf if step is None else step, model.stat().st_mtime if model.is_file() else 0.0)


def safe_torch_load(
    path: str | os.PathLike[str],
    map_location: str | torch.device = "cpu",
    extra_safe_globals: list[Any] | None = None,
    mmap: bool = False,
) -> Any:
    """``torch.load(path, weights_only=True)``, the package's only ``torch.load``, with errors that name the file.

    Args:
        path: a file written by ``torch.save``.
        map_location: device of the loaded tensors.
        extra_safe_globals: further classes or functions the unpickler may rebuild (e.g.
            :data:`wavecl.original.NUMPY_SCALAR_GLOBALS`); none of them may run code.
        mmap: map the tensors' storage from the file instead of reading it (zip-format files only).

    Raises:
        FileNotFoundError: nothing at ``path``.
        CheckpointError: the file is unreadable, truncated or holds objects that would run code.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint file not found: {path}")
    try:
        with torch.serialization.safe_globals(extra_safe_globals or []):
            return torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as error:
        raise CheckpointError(
            f"refused to load {path}: it is corrupt or holds pickled objects other than tensors and plain "
            f"containers, which torch.load(weights_only=True) will not execute ({_unpickler_reason(error)})"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as error:
        raise CheckpointError(f"cannot read checkpoint {path} (unreadable or truncated): {error}") from None


def read_state_dict(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Tensor]:
    """Read model weights from a wavecl checkpoint or a reference checkpoint.

    Args:
        path: a ``.safetensors`` file (with the run's frozen weights merged in when its metadata names
            them); a checkpoint folder, pointer or run directory (see :func:`latest_checkpoint`); or a
            ``torch.save`` file (``.pth``, ``.pth.tar``, ...), read with :func:`safe_torch_load`, whose
            ``model_state_dict`` entry is taken when present.
        map_location: device of the returned tensors.

    Returns:
        Parameter name -> tensor.

    Raises:
        FileNotFoundError: nothing at ``path``, or the frozen-weights file it names is missing.
        CheckpointError: the file is unreadable, truncated, refused by the weights-only loader, or not
            a mapping of names to tensors.
    """
    path = Path(path)
    if path.name.endswith(original.CHECKPOINT_SUFFIXES):
        loaded = safe_torch_load(path, map_location, original.NUMPY_SCALAR_GLOBALS)
        if isinstance(loaded, dict) and original.STATE_DICT_KEY in loaded:
            loaded = loaded[original.STATE_DICT_KEY]
        if not isinstance(loaded, dict) or not all(isinstance(v, Tensor) for v in loaded.values()):
            raise CheckpointError(
                f"{path} holds no model state dict (expected name -> tensor or '{original.STATE_DICT_KEY}')"
            )
        return dict(loaded)
    weights_file = path if path.suffix == ".safetensors" else latest_checkpoint(path) / MODEL_FILENAME
    if not weights_file.is_file():
        raise FileNotFoundError(f"checkpoint file not found: {weights_file}")
    device = str(torch.device(map_location))
    frozen_file = _frozen_file(weights_file)
    try:
        weights = load_file(weights_file, device=device)
    except (SafetensorError, OSError, RuntimeError, ValueError) as error:
        raise CheckpointError(f"cannot read weights {weights_file} (unreadable or truncated): {error}") from None
    if frozen_file is None:
        return weights
    if not frozen_file.is_file():
        raise FileNotFoundError(
            f"{weights_file} keeps its frozen parameters in {frozen_file}, which is missing: copy that file "
            f"beside the checkpoint folder, or share a self-contained folder made by `wavecl export`"
        )
    try:
        frozen = load_file(frozen_file, device=device)
    except (SafetensorError, OSError, RuntimeError, ValueError) as error:
        raise CheckpointError(f"cannot read frozen weights {frozen_file} (unreadable or truncated): {error}") from None
    return {**weights, **frozen}


def load_training_state(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read the training state written by :func:`save_checkpoint` with ``torch.load(weights_only=True)``.

    Args:
        path: a ``state.pt`` file, or a checkpoint folder / pointer / run directory.
        map_location: device of the returned tensors (e.g. this rank's GPU for the optimizer state).

    Raises:
        FileNotFoundError: nothing at ``path``.
        CheckpointError: the file is unreadable, truncated, refused, or not a dict.
    """
    path = Path(path)
    state_file = path if path.is_file() and path.suffix == ".pt" else latest_checkpoint(path) / STATE_FILENAME
    state = safe_torch_load(state_file, map_location)
    if not isinstance(state, dict):
        raise CheckpointError(f"{state_file} holds a {type(state).__name__}, expected a training-state dict")
    return state


def rng_state() -> dict[str, Any]:
    """The random states of this process in types the weights-only loader accepts.

    Returns:
        ``{"python": random.getstate(), "numpy": {...numpy MT19937 state with the key as an int64
        tensor...}, "torch": ByteTensor, "cuda": ByteTensor of the current device or None}``.
    """
    numpy_state = np.random.get_state(legacy=False)
    return {
        "python": random.getstate(),
        "numpy": {
            "bit_generator": numpy_state["bit_generator"],
            "key": torch.from_numpy(numpy_state["state"]["key"].astype(np.int64)),
            "pos": int(numpy_state["state"]["pos"]),
            "has_gauss": int(numpy_state["has_gauss"]),
            "gauss": float(numpy_state["gauss"]),
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state() if torch.cuda.is_available() else None,
    }


def restore_rng_state(state: dict[str, Any]) -> None:
    """Restore the random states captured by :func:`rng_state` (CUDA only when available)."""
    version, internal_state, gauss_next = state["python"]
    random.setstate((version, tuple(internal_state), gauss_next))
    numpy_state = state["numpy"]
    np.random.set_state(
        {
            "bit_generator": numpy_state["bit_generator"],
            "state": {"key": numpy_state["key"].numpy().astype(np.uint32), "pos": numpy_state["pos"]},
            "has_gauss": numpy_state["has_gauss"],
            "gauss": numpy_state["gauss"],
        }
    )
    torch.set_rng_state(state["torch"].cpu())
    if state["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"].cpu())
