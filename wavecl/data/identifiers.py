"""Identifiers read from data files (video ids, expression ids, frame names, image file names) that
become one component of a path.

A dataset's files are not trusted: an id such as ``../x`` or ``/tmp/x`` joined into a path would make a
reader open, or an evaluator write, files outside the folders it was given. Every reader passes each
such id through :func:`check_identifier` before any path is built from it.
"""

from __future__ import annotations

import os
from pathlib import PureWindowsPath


class UnsafeIdentifierError(ValueError):
    """An identifier from a data file cannot be used as a file or folder name."""


def _problem(value: str) -> str | None:
    """Why ``value`` cannot be one path component, or ``None`` when it can."""
    if not value:
        return "is empty"
    if "\0" in value:
        return "holds a NUL character"
    if "/" in value or "\\" in value:
        return "holds a path separator"
    if value in (".", ".."):
        return "names a folder itself"
    if PureWindowsPath(value).drive:
        return "starts with a drive"
    return None


def check_identifier(value: object, source: str | os.PathLike[str], key: str) -> str:
    """``value`` if it is a string usable as a single file or folder name, else an error.

    Refused: anything but a string, the empty string, a NUL character, ``/`` or ``\\`` (so no absolute
    path and no ``a/../b``), ``.`` and ``..``, a Windows drive (``C:``). Other characters are kept,
    so ``frame..1`` or ``clip 3`` are valid names.

    Args:
        value: the identifier as read.
        source: the file it was read from (named in the error).
        key: what the identifier is, with its context, e.g. ``"video 'abc' expression id"``.

    Returns:
        ``value`` unchanged.

    Raises:
        UnsafeIdentifierError: naming ``source``, ``key``, the value and the reason.
    """
    if not isinstance(value, str):
        raise UnsafeIdentifierError(f"{source}: {key} must be a string, got {type(value).__name__} {value!r}")
    problem = _problem(value)
    if problem is not None:
        raise UnsafeIdentifierError(f"{source}: {key} {value!r} {problem}; it cannot be used as a file name")
    return value
