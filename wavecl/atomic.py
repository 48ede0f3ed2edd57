"""Atomic file writes: write to a temporary file in the destination folder, then ``os.replace``.

A reader (another process, a resumed run) therefore sees either the old file or the complete new one,
never a half-written file.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from PIL import Image


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path``, on error it is removed.

    Parent folders are created. The temporary name keeps no extension, so writers that infer a
    format from the suffix (PIL, numpy) must be told the format explicitly.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(handle)
    temporary = Path(temporary_name)
    os.chmod(temporary, 0o666 & ~_UMASK)  # mkstemp creates 0600; give the file the usual permissions
    try:
        yield temporary
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
