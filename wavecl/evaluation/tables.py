"""CSV tables of per-item scores (per object, per expression), written atomically."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

from wavecl.atomic import atomic_path


def write_csv(path: Path, header: Sequence[str], rows: Sequence[Sequence[object]], decimals: int = 5) -> None:
    """Write a CSV file atomically; floats with ``decimals`` decimals (5, as the DAVIS toolkit prints them)."""
    with atomic_path(path) as temporary, open(temporary, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        for row in rows:
            writer.writerow([f"{v:.{decimals}f}" if isinstance(v, float) else v for v in row])
