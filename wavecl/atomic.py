"""Atomic file writes: write to a temporary file in the destination folder, then ``os.replace``.

A reader (another process, a resumed run) therefore sees either the old file or the complete new one,
never a half-written file. Files and folders made here get the ordinary permissions of a new file or
folder (``0o666`` / ``0o777`` less the process's umask), whatever the writer does to the temporary file
(``tempfile.mkstemp`` and safetensors both create ``0o600`` files).
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from PIL import Image

_ATTEMPTS = 100


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
