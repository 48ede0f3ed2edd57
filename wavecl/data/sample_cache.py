"""JSON caches of sample lists, keyed by what they were built from.

A sample list (A2D single-frame samples, Ref-YouTube-VOS training windows) is slow to build because it
reads every annotation file. It is cached as ``{"key": ..., "samples": [...]}``; the key holds the
format name, the build parameters and the size and modification time of the source text files, so a
cache built from other inputs or other parameters is rebuilt instead of being silently reused. Caches
in the reference's own file format are never read (the shipped Ref-YouTube-VOS lists are corrupt).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from wavecl.atomic import write_json

logger = logging.getLogger(__name__)


def file_fingerprint(paths: Sequence[Path]) -> dict[str, list[int]]:
    """``{file name: [size, mtime_ns]}`` of the given files."""
    return {path.name: [path.stat().st_size, path.stat().st_mtime_ns] for path in paths}


def load_or_build(path: Path, key: dict[str, Any], build: Callable[[], list[Any]]) -> list[Any]:
    """Return the samples cached at ``path`` if their key equals ``key``, else build and cache them.

    Args:
        path: cache file; written atomically.
        key: JSON-serialisable description of the inputs (compared after a JSON round trip).
        build: computes the sample list (JSON-serialisable).

    Returns:
        the samples as plain JSON values (tuples become lists), identical whether built or read.
    """
    key = json.loads(json.dumps(key))
    if path.is_file():
        try:
            cached = json.loads(path.read_text(encoding="utf-8"))
            if cached["key"] == key:
                return cached["samples"]
            logger.info("rebuilding %s: it was built from other inputs or parameters", path)
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as error:
            logger.warning("rebuilding unreadable sample cache %s: %s", path, error)
    samples = json.loads(json.dumps(build()))
    write_json(path, {"key": key, "samples": samples})
    return samples
