"""Throughput of the video dataset loaders (clips per second), with 0 and 2 DataLoader workers.

Datasets are generated in a temporary folder: the tiny test fixtures (A2D 32x48, JHMDB 24x32,
Ref-YouTube-VOS 24x40) and larger ones at real resolutions (A2D 320x432 clips of 60 frames, JHMDB
240x320 frames, synthetic Ref-YouTube-VOS 360x640), each read through the published transforms
(320 / 576 or 360 / 640) with window size 8.

Usage: ``python3 benchmarks/bench_loaders.py [--max-clips N] [--workers 0 2]``
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from torch.utils.data import DataLoader, Dataset

from wavecl.data.a2d import A2DSentences
from wavecl.data.collate import collate_clips
from wavecl.data.jhmdb import JHMDBSentences
from wavecl.data.synthetic import write_synthetic_ytvos
from wavecl.data.transforms import ClipTransform
from wavecl.data.types import ClipSample
from wavecl.data.ytvos import RefYouTubeVOS
from wavecl.testing.a2d import write_a2d_fixture
from wavecl.testing.jhmdb import write_jhmdb_fixture
from wavecl.testing.ytvos import write_ytvos_fixture

A2D_TRAIN = ClipTransform(train=True, short_size=320, max_size=576)
A2D_EVAL = ClipTransform(train=False, short_size=320, max_size=576)
YTVOS_TRAIN = ClipTransform(train=True, short_size=360, max_size=640)


def build_datasets(folder: Path) -> dict[str, Callable[[], Dataset[ClipSample]]]:
    """Write every benchmark dataset under ``folder``; return named constructors."""
    write_a2d_fixture(folder / "tiny" / "a2d_sentences")
    write_jhmdb_fixture(folder / "tiny" / "jhmdb_sentences")
    write_ytvos_fixture(folder / "tiny" / "ref-youtube-vos")
    write_a2d_fixture(folder / "large" / "a2d_sentences", height=320, width=432, num_frames=60)
    write_jhmdb_fixture(folder / "large" / "jhmdb_sentences", height=240, width=320)
    write_synthetic_ytvos(folder / "large" / "ref-youtube-vos", num_videos=6, num_frames=16, size=(360, 640))
    tiny, large = folder / "tiny", folder / "large"
    return {
        "A2D train, fixture 32x48": lambda: A2DSentences(tiny, "train", transform=A2D_TRAIN),
        "A2D train, 320x432 x 60 frames": lambda: A2DSentences(large, "train", transform=A2D_TRAIN),
        "JHMDB eval, fixture 24x32": lambda: JHMDBSentences(tiny, transform=A2D_EVAL),
        "JHMDB eval, 240x320": lambda: JHMDBSentences(large, transform=A2D_EVAL),
        "Ref-YTVOS train, fixture": lambda: RefYouTubeVOS(tiny, "train", 8, transform=YTVOS_TRAIN),
        "Ref-YTVOS train, synthetic 360x640": lambda: RefYouTubeVOS(
            large, "train", 8, transform=YTVOS_TRAIN, num_classes=1
        ),
    }


def clips_per_second(dataset: Dataset[ClipSample], workers: int, max_clips: int) -> tuple[int, float]:
    """Clips loaded and clips per second over one pass of at most ``max_clips`` (batch size 1)."""
    count = min(len(dataset), max_clips)  # type: ignore[arg-type]
    loader = DataLoader(dataset, batch_size=1, num_workers=workers, collate_fn=collate_clips, sampler=range(count))
    start = time.perf_counter()
    loaded = sum(batch.batch_size for batch in loader)
    return loaded, loaded / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-clips", type=int, default=32, help="clips read per measurement")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2], help="DataLoader worker counts")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="wavecl_bench_") as folder:
        datasets = build_datasets(Path(folder))
        header = f"{'dataset':<36} {'clips':>5} " + " ".join(f"{f'{w} workers':>12}" for w in args.workers)
        print(header)
        print("-" * len(header))
        for name, construct in datasets.items():
            dataset = construct()
            rates = [clips_per_second(dataset, workers, args.max_clips) for workers in args.workers]
            print(f"{name:<36} {rates[0][0]:>5} " + " ".join(f"{rate:>10.1f}/s" for _, rate in rates))


if __name__ == "__main__":
    main()
