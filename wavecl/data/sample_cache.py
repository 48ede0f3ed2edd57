"""Caches of derived files (sample lists), kept out of the dataset folder and checked when read back.

A sample list (A2D single-frame samples, Ref-YouTube-VOS training windows) is slow to build because it
reads every annotation file. It is cached as ``{"key": ..., "samples": [...]}`` in the dataset's cache
folder (:func:`dataset_cache_dir`), never in the dataset folder, which may be read-only shared storage.
The key holds the format name, the build parameters and the size and modification time of the source
text files, so a cache built from other inputs or other parameters is rebuilt instead of being
silently reused; a cache whose samples do not parse is rebuilt too. Caches in the reference's own file
format are never read (the shipped Ref-YouTube-VOS lists are corrupt).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from wavecl.atomic import write_json

logger = logging.getLogger(__name__)

CACHE_ENVIRONMENT_VARIABLE = "WAVECL_CACHE_DIR"
T = TypeVar("T")


def default_cache_root() -> Path:
    """``$WAVECL_CACHE_DIR``, else ``$XDG_CACHE_HOME/wavecl``, else ``~/.cache/wavecl``."""
    if os.environ.get(CACHE_ENVIRONMENT_VARIABLE):
        return Path(os.environ[CACHE_ENVIRONMENT_VARIABLE])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "wavecl"


def dataset_cache_dir(cache_dir: str | os.PathLike[str] | None, dataset_root: str | os.PathLike[str]) -> Path:
    """The cache folder of one dataset: ``<cache root>/<folder name>-<12 hex digits of its absolute path>``.

    Args:
        cache_dir: the cache root (``data.cache_dir``); ``None`` or empty: :func:`default_cache_root`.
        dataset_root: the dataset folder; two copies in different places get different folders.
    """
    root = Path(dataset_root).resolve()
    digest = hashlib.sha256(str(root).encode("utf-8")).hexdigest()[:12]
    return Path(cache_dir or default_cache_root()) / f"{root.name}-{digest}"


def file_fingerprint(paths: Sequence[Path]) -> dict[str, list[int]]:
    """``{file name: [size, mtime_ns]}`` of the given files."""
    return {path.name: [path.stat().st_size, path.stat().st_mtime_ns] for path in paths}


def _read_cache(path: Path, key: Any, parse: Callable[[list[Any]], T]) -> T | None:
    """The parsed samples of the cache at ``path`` if it exists, has ``key`` and parses; else ``None``."""
    if not path.is_file():
        return None
    try:
        cached = json.loads(path.read_text(encoding="utf-8"))
        if cached["key"] != key:
            logger.info("rebuilding %s: it was built from other inputs or parameters", path)
            return None
        if not isinstance(cached["samples"], list):
            raise TypeError("'samples' is not a list")
        return parse(cached["samples"])
    except (OSError, json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError, IndexError) as error:
        logger.warning("rebuilding unreadable sample cache %s: %s", path, error)
        return None


def load_or_build(
    path: Path, key: dict[str, Any], build: Callable[[], list[Any]], parse: Callable[[list[Any]], T]
) -> T:
    """The samples cached at ``path`` if their key equals ``key`` and they parse, else built and cached.

    Args:
        path: cache file; written atomically. A cache that cannot be written (read-only cache folder)
            is reported as a warning and the samples are used all the same.
        key: JSON-serialisable description of the inputs (compared after a JSON round trip).
        build: computes the sample list (JSON-serialisable).
        parse: turns the sample list (plain JSON values: tuples become lists) into what the caller
            uses; a ``KeyError``/``TypeError``/``ValueError``/``IndexError`` it raises on a cached list
            marks the cache as unreadable, so it is rebuilt.

    Returns:
        ``parse(samples)``, identical whether built or read.
    """
    key = json.loads(json.dumps(key))
    cached = _read_cache(path, key, parse)
    if cached is not None:
        return cached
    samples = json.loads(json.dumps(build()))
    try:
        write_json(path, {"key": key, "samples": samples})
    except OSError as error:
        logger.warning("cannot write the sample cache %s (%s); the samples are rebuilt next time", path, error)
    return parse(samples)
