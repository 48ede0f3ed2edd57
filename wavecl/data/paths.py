"""Locating a dataset folder and reading its files (text, JSON, CSV, images) with errors that name the file."""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError


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


_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")


def _eight_bit(image: Image.Image, path: Path) -> Image.Image:
    """``image`` with 16-bit grey pixels scaled to 8 bits (``round(v * 255 / 65535)``), as a viewer shows
    them; 8-bit modes are returned unchanged.

    Pillow opens 16-bit grey PNG and TIFF files in an ``I;16`` mode (older versions: ``I``), whose plain
    conversion to ``RGB``/``L`` clips every value above 255. 16-bit colour PNGs already open as 8-bit
    ``RGB``/``RGBA``.

    Raises:
        ValueError: 32-bit integer or float pixels (modes ``I`` and ``F`` outside a PNG), whose range is
            unknown; the message names the file.
    """
    if image.mode in _SIXTEEN_BIT_MODES or (image.mode == "I" and image.format == "PNG"):
        pixels = np.asarray(image, dtype=np.uint32)
        return Image.fromarray(((pixels + 128) // 257).astype(np.uint8), mode="L")
    if image.mode in ("I", "F"):
        kind = "32-bit integer" if image.mode == "I" else "floating-point"
        raise ValueError(f"cannot read image {path}: {kind} pixels (mode {image.mode}); save it with 8 or 16 bits")
    return image


def read_image(path: Path, mode: str | None = "RGB", exif_orientation: bool = False) -> Image.Image:
    """Load an image fully, converted to ``mode`` (``None`` keeps the stored mode, e.g. palette "P").

    Converting to a mode scales 16-bit grey pixels to 8 bits first (:func:`_eight_bit`); ``None``
    keeps them, so object-id masks never lose ids to scaling.

    Args:
        path: the image file.
        mode: a Pillow mode, or ``None``.
        exif_orientation: turn the picture as its EXIF ``Orientation`` tag says, as photo viewers do
            (for user frames; dataset annotations are drawn on the stored pixels, so datasets read
            with ``False``).

    Raises:
        FileNotFoundError / ValueError naming the file when it is missing or undecodable.
    """
    require_file(path)
    try:
        with Image.open(path) as image:
            image.load()
            if exif_orientation:
                image = ImageOps.exif_transpose(image)
            return _eight_bit(image, path).convert(mode) if mode is not None else image.copy()
    except (UnidentifiedImageError, OSError) as error:
        raise ValueError(f"cannot read image {path}: {error}") from error
