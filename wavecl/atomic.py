"""Atomic file writes: write to a temporary file in the destination folder, then ``os.replace``.

A reader (another process, a resumed run) therefore sees either the old file or the complete new one,
never a half-written file; a folder is written whole beside its target and then swapped in
(:func:`replace_directory`). Files and folders made here get the ordinary permissions of a new file or
folder (``0o666`` / ``0o777`` less the process's umask), whatever the writer does to the temporary file
(``tempfile.mkstemp`` and safetensors both create ``0o600`` files).

Temporary names are ``.<target name>.<12 hex digits>.tmp`` (:func:`is_temporary`). A writer removes its
own on success, on error and on ``KeyboardInterrupt``; a process killed outright (SIGKILL, power loss)
leaves them, and whoever owns the folder next removes them (:func:`remove_temporaries`).
"""

from __future__ import annotations

import errno
import json
import os
import re
import secrets
import shutil
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

from PIL import Image

_ATTEMPTS = 100
_TEMPORARY_NAME = re.compile(r"\.(?P<target>.+)\.[0-9a-f]{12}\.tmp")
# errno values of a full disk or an exhausted quota
NO_SPACE_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


class DiskFullError(OSError):
    """A write ran out of disk space or quota; the message names the folder, the space needed and free."""


def disk_full_error(folder: Path, what: str, needed_bytes: int) -> DiskFullError:
    """The error for ``what`` (e.g. ``"checkpoint epoch_0003"``) failing for lack of space in ``folder``.

    Args:
        folder: where it was being written (an existing folder: its file system's free space is reported).
        what: what was being written, for the message.
        needed_bytes: an estimate of its size in bytes.
    """
    free = shutil.disk_usage(folder).free
    return DiskFullError(
        f"no space left on the device of {folder} while writing {what}: it needs about "
        f"{needed_bytes / 2**20:.1f} MiB, and {free / 2**20:.1f} MiB are free there. Nothing of it was kept; "
        f"free space (or move the folder) and run again"
    )


def is_temporary(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is named like a temporary file or folder of this module."""
    return _TEMPORARY_NAME.fullmatch(Path(path).name) is not None


def remove_temporaries(folder: str | os.PathLike[str], targets: Collection[str] | None = None) -> list[Path]:
    """Delete the temporary files and folders directly inside ``folder`` (not below) that this module's
    writers left unfinished; returns them.

    Args:
        folder: a folder that no other process is writing into (a live writer's temporary would be
            removed too); a missing folder holds none.
        targets: remove only the temporaries of these names (``"config.yaml"`` for
            ``.config.yaml.<hex>.tmp``); all of them when None.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = sorted(
        path
        for path in folder.iterdir()
        if (match := _TEMPORARY_NAME.fullmatch(path.name)) and (targets is None or match["target"] in targets)
    )
    for path in removed:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
    return removed


def _unique_sibling(target: Path, suffix: str, create: Any) -> Path:
    """Call ``create(path)`` on ``.<name>.<random><suffix>`` beside ``target`` until a name is free."""
    for _ in range(_ATTEMPTS):
        candidate = target.parent / f".{target.name}.{secrets.token_hex(6)}{suffix}"
        try:
            create(candidate)
        except FileExistsError:
            continue
        return candidate
    raise FileExistsError(f"no free temporary name beside {target} after {_ATTEMPTS} attempts")


def _create_file(path: Path) -> None:
    """Create an empty file as ``open()`` would: mode ``0o666`` less the umask (applied by the kernel)."""
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))


def temporary_directory(target: str | os.PathLike[str]) -> Path:
    """Create an empty folder beside ``target`` (``.<name>.<random>.tmp``) with the mode of a new folder.

    Unlike ``tempfile.mkdtemp`` (always ``0o700``), the folder gets ``0o777`` less the umask, so it can be
    renamed onto ``target`` as a finished output. The parent is created if needed.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    return _unique_sibling(target, ".tmp", lambda path: os.mkdir(path, 0o777))


def replace_directory(staging: str | os.PathLike[str], directory: str | os.PathLike[str]) -> None:
    """Move the finished folder ``staging`` to ``directory``, replacing the folder there, if any.

    ``staging`` must be on the same file system (made by :func:`temporary_directory`). The previous
    folder is moved aside under a temporary name and deleted afterwards, so ``directory`` holds the old
    content or the new, never a mix.
    """
    staging, directory = Path(staging), Path(directory)
    if not directory.exists():
        os.replace(staging, directory)
        return
    previous = temporary_directory(directory)
    os.rmdir(previous)
    os.replace(directory, previous)
    os.replace(staging, directory)
    shutil.rmtree(previous)


def place_folder(source: Path, destination: Path, mode: Literal["symlink", "copy"]) -> None:
    """Make ``destination`` show ``source``'s files, replacing what was there: an absolute symbolic link to
    the folder (``"symlink"``) or a copy of it (``"copy"``), each put in place with one rename.

    Raises:
        OSError: the link or copy cannot be made (e.g. symbolic links not permitted on this system).
    """
    destination.parent.mkdir(parents=True, exist_ok=True)
    if destination.is_symlink() or destination.is_file():
        destination.unlink()
    elif destination.is_dir():
        shutil.rmtree(destination)
    if mode == "symlink":
        temporary = destination.parent / f".{destination.name}.{os.getpid()}.link"
        temporary.unlink(missing_ok=True)
        temporary.symlink_to(source.resolve(), target_is_directory=True)
        os.replace(temporary, destination)
    else:
        temporary = temporary_directory(destination)
        shutil.copytree(source, temporary, dirs_exist_ok=True)
        os.replace(temporary, destination)


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path``, on error it is removed.

    Parent folders are created. The temporary file is created with the mode of a new file; the
    writer may truncate or replace it, and the mode is restored before the move. The temporary name
    keeps no extension, so writers that infer a format from the suffix (PIL, numpy) must be told the
    format explicitly.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = _unique_sibling(target, ".tmp", _create_file)
    mode = temporary.stat().st_mode & 0o777
    try:
        yield temporary
        os.chmod(temporary, mode)
        os.replace(temporary, target)
    finally:
        temporary.unlink(missing_ok=True)


def write_text(path: str | os.PathLike[str], text: str, encoding: str = "utf-8") -> None:
    """Write ``text`` to ``path`` atomically, encoded with ``encoding`` (UTF-8 by default)."""
    with atomic_path(path) as temporary:
        temporary.write_text(text, encoding=encoding)


def write_json(path: str | os.PathLike[str], obj: Any, indent: int | None = None) -> None:
    """Write ``obj`` as UTF-8 JSON to ``path`` atomically."""
    write_text(path, json.dumps(obj, indent=indent, ensure_ascii=False))


def save_image(image: Image.Image, path: str | os.PathLike[str], format: str, **options: Any) -> None:
    """Save a PIL image to ``path`` atomically; ``format`` is PIL's format name (``"JPEG"``, ``"PNG"``)."""
    with atomic_path(path) as temporary:
        image.save(temporary, format=format, **options)
