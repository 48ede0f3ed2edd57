"""Progress display that suits where it goes: a live bar on a terminal, plain lines in a log file.

tqdm redraws its bar with carriage returns; written to a file (a job's log, ``2>&1 | tee``), every
redraw stays, and a short run leaves hundreds of kilobytes of ``\\r``. :func:`progress_bar` returns an
ordinary tqdm bar when stderr is a terminal, and otherwise one that writes a whole line at most every
:data:`LOG_INTERVAL_SECONDS` seconds (and a last line when it closes).
"""

from __future__ import annotations

import sys
from typing import Any, TextIO

from tqdm import tqdm

LOG_INTERVAL_SECONDS = 10.0


class _LineWriter:
    """A file-like wrapper that turns tqdm's ``\\r``-prefixed redraws into newline-terminated lines."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def write(self, text: str) -> None:
        line = text.replace("\r", "").strip()
        if line:
            self.stream.write(line + "\n")

    def flush(self) -> None:
        self.stream.flush()


def progress_bar(*args: Any, stream: TextIO | None = None, **kwargs: Any) -> tqdm:
    """A tqdm bar (same arguments) drawn live on a terminal, logged as lines every few seconds elsewhere.

    Args:
        args, kwargs: tqdm's (``iterable``, ``total``, ``desc``, ``unit``, ``disable``, ...).
        stream: where to write; ``sys.stderr`` (read at call time) by default.
    """
    stream = sys.stderr if stream is None else stream
    if stream.isatty():
        return tqdm(*args, file=stream, dynamic_ncols=True, **kwargs)
    logged = {"mininterval": LOG_INTERVAL_SECONDS, "ascii": True, "ncols": 100} | kwargs
    return tqdm(*args, file=_LineWriter(stream), **logged)
