"""Reading JSON files strictly: a key given twice in one object is an error, not a silent overwrite.

Python's ``json`` keeps the last of repeated keys, so an annotation file with a repeated video id would
lose the first entry without a word. Writing JSON is :func:`wavecl.atomic.write_json`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any


class DuplicateKeyError(ValueError):
    """A JSON object or YAML mapping of a data or config file gives one key twice."""


def _unique_keys(source: str | os.PathLike[str]) -> Callable[[list[tuple[str, Any]]], dict[str, Any]]:
    """A ``json`` ``object_pairs_hook`` that builds each object as a dict and refuses a repeated key."""

    def build(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for key, value in pairs:
            if key in values:
                raise DuplicateKeyError(f"{source}: key {key!r} appears twice in one JSON object")
            values[key] = value
        return values

    return build


def read_json(path: str | os.PathLike[str]) -> Any:
    """Parse a JSON file.

    Raises:
        FileNotFoundError: the file is missing.
        ValueError: malformed JSON or text (the file is named); :class:`DuplicateKeyError` naming the
            file and the key when an object repeats a key.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"required file not found: {path}")
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle, object_pairs_hook=_unique_keys(path))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"malformed JSON in {path}: {error}") from error
