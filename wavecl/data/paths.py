"""Locating a dataset folder and reading its files (text, CSV, images) with errors that name the file
(JSON: :mod:`wavecl.jsonio`).

Which files of a folder count (:func:`listed_files`, :func:`is_hidden`) is decided here for every reader:
hidden names, among them the ``._name`` copies macOS writes beside each file on foreign disks and in
archives (AppleDouble), are never frames, masks or annotations.

Files are not trusted: images are decoded only from the formats of :data:`IMAGE_FORMATS` and up to
:data:`MAX_IMAGE_PIXELS` pixels, read from the header before any pixel is decoded.
"""

from __future__ import annotations

import csv
import os
import re
import warnings
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

IMAGE_FORMATS = ("JPEG", "PNG")
"""The Pillow formats images are decoded from (frames, masks, uploads); a file in any other format is
refused whatever its name, so no other decoder (PostScript, TIFF, ...) ever sees it."""
MAX_IMAGE_PIXELS = 50_000_000
"""Most pixels (width x height) of an image or video frame that is decoded: 50 megapixels, about
8660x5773; a 4K frame has 8.3. Larger files are refused before their pixels are decoded."""
FRAME_SUFFIXES = (".jpg", ".jpeg", ".png")
"""Extensions (any case) of the files of a frame folder that are frames (``predict``, the web page)."""
_SNIFF_BYTES = 16
"""Bytes of a file's start that Pillow's format checks look at (as ``Image.open`` does)."""


class UnsupportedImageError(ValueError):
    """An image (or video frame) is in a format that is not read, or has more than :data:`MAX_IMAGE_PIXELS`."""


def natural_sort_key(name: str) -> tuple[list[int | str], str]:
    """Sort key of a file or frame name in natural order: runs of digits compare as numbers, so
    ``frame_2`` comes before ``frame_10`` (text order puts ``frame_10`` first). Zero-padded names of equal
    width (``00005``, ``00010``) keep their text order; the name itself breaks ties (``f01`` / ``f1``)."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)], name


def natural_sorted(names: Iterable[str]) -> list[str]:
    """``names`` in :func:`natural_sort_key` order: how every list of frames built from names is ordered
    (dataset readers, evaluation, ``predict``)."""
    return sorted(names, key=natural_sort_key)


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


def is_hidden(name: str) -> bool:
    """Whether a file or folder name is hidden (starts with ``.``, so also macOS's ``._name`` copies) or is
    ``__MACOSX``, the folder where macOS archivers put those copies. Such entries are skipped by every listing."""
    return name.startswith(".") or name == "__MACOSX"


def is_listed_name(name: str, suffixes: Sequence[str]) -> bool:
    """Whether a file name counts in a listing of ``suffixes`` files: its extension is one of them (any case)
    and it is not hidden (:func:`is_hidden`)."""
    return not is_hidden(name) and Path(name).suffix.lower() in suffixes


def listed_files(folder: Path, suffixes: Sequence[str]) -> list[Path]:
    """The files of ``folder`` with one of ``suffixes`` (lowercase, with the dot), hidden names skipped
    (:func:`is_listed_name`), in natural name order (:func:`natural_sort_key`); sub-folders are not entered.

    Raises:
        FileNotFoundError: ``folder`` is not a folder (the message names it).
    """
    if not folder.is_dir():
        raise FileNotFoundError(f"folder not found: {folder}")
    entries = (entry for entry in folder.iterdir() if is_listed_name(entry.name, suffixes) and not entry.is_dir())
    return sorted(entries, key=lambda entry: natural_sort_key(entry.name))


def require_file(path: Path) -> Path:
    """Return ``path`` if it is a file, else raise ``FileNotFoundError`` naming it."""
    if not path.is_file():
        raise FileNotFoundError(f"required file not found: {path}")
    return path


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


def _eight_bit(image: Image.Image) -> Image.Image:
    """``image`` with 16-bit grey pixels scaled to 8 bits (``round(v * 255 / 65535)``), as a viewer shows
    them; 8-bit modes are returned unchanged.

    Pillow opens 16-bit grey PNG files in an ``I;16`` mode (older versions: ``I``), whose plain
    conversion to ``RGB``/``L`` clips every value above 255. 16-bit colour PNGs already open as 8-bit
    ``RGB``/``RGBA``.
    """
    if image.mode in (*_SIXTEEN_BIT_MODES, "I"):
        pixels = np.asarray(image, dtype=np.uint32)
        return Image.fromarray(((pixels + 128) // 257).astype(np.uint8), mode="L")
    return image


def _format_of(prefix: bytes) -> str:
    """The Pillow format whose signature ``prefix`` (a file's first bytes) carries, as words for a message.

    Only each format's signature check runs, on these bytes; no decoder sees the file.
    """
    if not prefix:
        return "an empty file"
    Image.init()
    padded = prefix.ljust(_SNIFF_BYTES, b"\0")  # some checks unpack a fixed number of bytes
    for name, (_, accept) in Image.OPEN.items():
        if accept is not None and accept(padded):
            return f"{name} data"
    return "data of no known image format"


def _file_start(file: Path | IO[bytes]) -> bytes:
    """The first :data:`_SNIFF_BYTES` bytes of ``file``; a file object is left at its start."""
    if isinstance(file, Path):
        with open(file, "rb") as handle:
            return handle.read(_SNIFF_BYTES)
    file.seek(0)
    prefix = file.read(_SNIFF_BYTES)
    file.seek(0)
    return prefix


def _header_size(file: Path | IO[bytes]) -> tuple[int, int]:
    """``(width, height)`` of a JPEG or PNG file from its header alone, read by the format's own Pillow
    parser: for a file that ``Image.open`` refuses as a decompression bomb before giving its size."""
    Image.init()
    prefix = _file_start(file)
    factory = next(
        Image.OPEN[name][0] for name in IMAGE_FORMATS if (accept := Image.OPEN[name][1]) is not None and accept(prefix)
    )
    # Image.OPEN is typed (IO, filename); the JPEG and PNG factories build an ImageFile, which also takes a path.
    with factory(file, None) as image:  # type: ignore[arg-type]
        return image.size


def _too_large(width: int, height: int, what: str) -> UnsupportedImageError:
    return UnsupportedImageError(
        f"{what} is {width}x{height} pixels ({width * height / 1e6:.1f} megapixels); wavecl reads at most "
        f"{MAX_IMAGE_PIXELS / 1e6:g} megapixels (wavecl.data.paths.MAX_IMAGE_PIXELS)"
    )


def check_pixel_count(width: int, height: int, what: str) -> None:
    """Refuse a picture of more than :data:`MAX_IMAGE_PIXELS` pixels.

    Args:
        width, height: its size in pixels.
        what: the picture in words, e.g. ``"image frames/0001.png"`` or ``"a frame of video clip.mp4"``.

    Raises:
        UnsupportedImageError: naming ``what``, its size in pixels and megapixels, and the limit.
    """
    if width * height > MAX_IMAGE_PIXELS:
        raise _too_large(width, height, what)


@contextmanager
def open_image(file: Path | IO[bytes], name: str | os.PathLike[str] | None = None) -> Iterator[Image.Image]:
    """Open an image whose header has been read and checked, its pixels not yet decoded.

    Args:
        file: the path, or a seekable binary file object holding the image from its start (a zip member).
        name: what the messages call the image (default: ``file`` itself, for a path).

    Yields:
        The Pillow image, closed when the block ends.

    Raises:
        FileNotFoundError: ``file`` is a path that does not exist.
        UnsupportedImageError: the file is not one of :data:`IMAGE_FORMATS` (the message names the file,
            the format its first bytes carry and the formats read), or it has more than
            :data:`MAX_IMAGE_PIXELS` pixels (the message names the file, its size and the limit).
        ValueError: the file is damaged (named).
    """
    name = str(file) if name is None else name
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # refused below, with our limit
            image = Image.open(file, formats=IMAGE_FORMATS)
    except UnidentifiedImageError as error:
        found = _format_of(_file_start(file))
        raise UnsupportedImageError(
            f"image {name} holds {found}; wavecl reads {' or '.join(IMAGE_FORMATS)} only"
        ) from error
    except Image.DecompressionBombError as error:
        raise _too_large(*_header_size(file), f"image {name}") from error
    except FileNotFoundError:
        raise
    except OSError as error:
        raise ValueError(f"cannot read image {name}: {error}") from error
    with image:
        check_pixel_count(image.width, image.height, f"image {name}")
        yield image


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
        FileNotFoundError / ValueError naming the file when it is missing or undecodable;
        :class:`UnsupportedImageError` for a file :func:`open_image` refuses.
    """
    require_file(path)
    with open_image(path) as image:
        try:
            image.load()
        except OSError as error:
            raise ValueError(f"cannot read image {path}: {error}") from error
        if exif_orientation:
            image = ImageOps.exif_transpose(image)
        return _eight_bit(image).convert(mode) if mode is not None else image.copy()
