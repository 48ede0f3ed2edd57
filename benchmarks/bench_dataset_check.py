"""How long does the dataset check take before training? ``wavecl.data.check`` against building the
training windows (which decodes every mask), on a synthetic Ref-YouTube-VOS-layout dataset.

The dataset is written once into a temporary folder (``--videos`` train and ``--videos // 4`` valid clips
of ``--frames`` frames, ``--size`` pixels), so the files are in the page cache: the numbers are the
check's own cost, not the disk's. Reported per row: the files, how many masks were decoded, the
seconds and the microseconds per listed frame.

Usage::

    python benchmarks/bench_dataset_check.py [--videos 200] [--frames 24] [--size 360 640]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

import wavecl.data.check as check_module
from wavecl.data.check import check_ytvos_dataset
from wavecl.data.synthetic import write_synthetic_ytvos
from wavecl.data.ytvos import build_ytvos_train_samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=200, help="training videos (valid: a quarter as many)")
    parser.add_argument("--frames", type=int, default=24, help="frames per video")
    parser.add_argument("--size", type=int, nargs=2, default=(360, 640), metavar=("H", "W"), help="frame size")
    parser.add_argument("--workers", type=int, default=2, help="processes of the second check row (default 2)")
    args = parser.parse_args()
    size = (args.size[0], args.size[1])
    valid_videos = max(args.videos // 4, 1)
    table = Table(
        title=f"dataset check, {args.videos} + {valid_videos} videos of {args.frames} frames at {size[0]}x{size[1]} "
        "(page cache warm)"
    )
    for column in ("task", "frames", "masks", "masks decoded", "seconds", "µs per frame"):
        table.add_column(column, justify="left" if column == "task" else "right")

    with tempfile.TemporaryDirectory(prefix="bench_dataset_check_") as folder:
        root = Path(folder)
        write_synthetic_ytvos(root, args.videos, args.frames, size, seed=0, split="train")
        write_synthetic_ytvos(root, valid_videos, args.frames, size, seed=1, split="valid")
        check_ytvos_dataset(root)  # the page cache is warm for every row

        decoded: list[Path] = []
        read = check_module.read_image
        check_module.read_image = lambda path, *a, **k: decoded.append(path) or read(path, *a, **k)
        for workers in (0, args.workers):
            started = time.perf_counter()
            report = check_ytvos_dataset(root, workers=workers)
            seconds = time.perf_counter() - started
            frames = sum(split.frames for split in report.splits)
            masks = sum(split.masks for split in report.splits)
            shown = str(len(decoded)) if workers == 0 else "(in workers)"
            row = (f"check, train + valid, {workers} workers", str(frames), str(masks), shown)
            table.add_row(*row, f"{seconds:.2f}", f"{1e6 * seconds / frames:.0f}")
        check_module.read_image = read

        started = time.perf_counter()
        build_ytvos_train_samples(root, 8, root / "windows.json")
        seconds = time.perf_counter() - started
        train = report.splits[0]
        row = ("training windows, train", str(train.frames), str(train.masks), str(train.masks))
        table.add_row(*row, f"{seconds:.2f}", f"{1e6 * seconds / train.frames:.0f}")
    Console().print(table)


if __name__ == "__main__":
    main()
