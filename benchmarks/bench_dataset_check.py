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
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench_dataset_check_") as folder:
        root = Path(folder)
        size = (args.size[0], args.size[1])
        write_synthetic_ytvos(root, args.videos, args.frames, size, seed=0, split="train")
        write_synthetic_ytvos(root, max(args.videos // 4, 1), args.frames, size, seed=1, split="valid")

        decoded = []
        read = check_module.read_image
        check_module.read_image = lambda path, *a, **k: decoded.append(path) or read(path, *a, **k)
        started = time.perf_counter()
        report = check_ytvos_dataset(root)
        check_seconds = time.perf_counter() - started
        check_module.read_image = read
        frames = sum(split.frames for split in report.splits)
        masks = sum(split.masks for split in report.splits)

        started = time.perf_counter()
        build_ytvos_train_samples(root, 8, root / "windows.json")
        windows_seconds = time.perf_counter() - started
        train = report.splits[0]

    table = Table(
        title=f"dataset check, {args.videos} + {max(args.videos // 4, 1)} videos of {args.frames} frames "
        f"at {size[0]}x{size[1]} (page cache warm)"
    )
    for column in ("task", "frames", "masks", "masks decoded", "seconds", "µs per frame"):
        table.add_column(column, justify="left" if column == "task" else "right")
    table.add_row(
        "check (train + valid)",
        str(frames),
        str(masks),
        str(len(decoded)),
        f"{check_seconds:.2f}",
        f"{1e6 * check_seconds / frames:.0f}",
    )
    table.add_row(
        "training windows (train)",
        str(train.frames),
        str(train.masks),
        str(train.masks),
        f"{windows_seconds:.2f}",
        f"{1e6 * windows_seconds / train.frames:.0f}",
    )
    Console().print(table)


if __name__ == "__main__":
    main()
