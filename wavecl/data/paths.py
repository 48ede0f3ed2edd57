"""Locating a dataset folder and reading its files (text, JSON, CSV, images) with errors that name the file."""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError


def resolve_dataset_root(root: str | os.PathLike, names: Sequence[str], marker: str) -> Path:
    """Find a dataset folder given either the folder itself or its parent (e.g. ``data/``).

    The first of ``root``, ``root/<name>`` for ``name`` in ``names`` that contains ``marker`` wins, so
    both spellings used by the reference (``ref-youtube-vos`` / ``refer_youtube_vos``) are accepted.

    Raises:
        FileNotFoundError: none of the candidates contains ``marker``; every tried path is listed.
    """
    root = Path(root)
    candidates = [root, *(root / name for name in names)]
    for candidate in candidates:
        if (candidate / marker).exists():
            return candidate
    tried = ", ".join(str(candidate / marker) for candidate in candidates)
    raise FileNotFoundError(f"dataset not found under {root}: none of these exists: {tried}")


def first_existing(folder: Path, names: Sequence[str]) -> Path:
    """``folder/<name>`` for the first existing ``name`` (alternative spellings of one sub-folder)."""
    for name in names:
        if (folder / name).exists():
            return folder / name
    raise FileNotFoundError(f"none of {', '.join(str(folder / name) for name in names)} exists")


def require_file(path: Path) -> Path:
    """Return ``path`` if it is a file, else raise ``FileNotFoundError`` naming it."""
    if not path.is_file():
        raise FileNotFoundError(f"required file not found: {path}")
    return path


def read_json(path: Path) -> Any:
    """Parse a JSON file; a missing or malformed file raises an error naming it."""
    require_file(path)
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"malformed JSON in {path}: {error}") from error


def read_csv_rows(path: Path, header: Sequence[str] | None) -> list[tuple[int, list[str]]]:
    """Rows of a CSV file as ``(line number, fields)``, skipping blank lines.

    Args:
        path: the file.
        header: expected column names of the first row (which is then not returned), or ``None`` for
            a file without header.

    Raises:
        FileNotFoundError / ValueError naming the file (and the line for a wrong header).
    """
    require_file(path)
    with open(path, encoding="utf-8", newline="") as handle:
        rows = [(number, row) for number, row in enumerate(csv.reader(handle), start=1) if row]
    if header is not None:
        if not rows or [name.strip() for name in rows[0][1]] != list(header):
            found = rows[0][1] if rows else "an empty file"
            raise ValueError(f"{path}: expected header {','.join(header)}, found {found}")
        rows = rows[1:]
    return rows


def read_image(path: Path, mode: str | None = "RGB") -> Image.Image:
    """Load an image fully, converted to ``mode`` (``None`` keeps the stored mode, e.g. palette "P").

    Raises:
        FileNotFoundError / ValueError naming the file when it is missing or undecodable.
    """
    require_file(path)
    try:
        with Image.open(path) as image:
            image.load()
            return image.convert(mode) if mode is not None else image.copy()
    except (UnidentifiedImageError, OSError) as error:
        raise ValueError(f"cannot read image {path}: {error}") from error
