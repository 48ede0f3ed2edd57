"""Time from upload to result of `wavecl serve`, measured in headless Chromium as a user sees it.

A ``wavecl serve`` subprocess (CPU) serves the page; Playwright drives Debian's ``chromium``: choose
a synthetic clip (moving coloured shapes), type two sentences, press Segment, wait until the overlay
video, the contact sheet and the masks zip are on the page. The clock starts when the file is chosen
(before its upload) and stops when the last result is shown. The page's own summary gives the
server's share (decode, segment, write); the rest is upload, queue, result transfer and display.

The model is a checkpoint given with ``--checkpoint``, else the packaged config ``tiny``
randomly initialised (apart from its packaged text encoder) and saved with ``save_pretrained`` at the
demo's resolution (short side 64, long side at most 96): speed does not depend on the weights' values.

Usage::

    python benchmarks/bench_serve.py [--checkpoint RUN|FOLDER] [--repeat 3] [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from playwright.sync_api import sync_playwright

from wavecl.config import load_config
from wavecl.data.synthetic import sample_synthetic_video
from wavecl.data.video_files import write_video
from wavecl.inference_settings import InferenceSettings
from wavecl.model.pretrained import save_pretrained
from wavecl.model.wavecl import WaveCL
from wavecl.testing.serve import CHROMIUM, choose_file, serve_process, wait_for_result

CASES = ((16, 128, 192), (48, 128, 192), (48, 240, 320))  # frames, height, width
SENTENCES = "the red circle moving down\nthe orange triangle"
RESULT_TIMEOUT_MS = 600_000
CLIP_SIZE = (128, 192)


def clip_frames(frames: int, height: int, width: int) -> list[np.ndarray]:
    """A synthetic clip (moving coloured shapes) drawn at the generator's size, resized to ``height x width``."""
    rendered, _ = sample_synthetic_video(7, "bench", 0, frames, CLIP_SIZE).render()
    return [np.asarray(Image.fromarray(frame).resize((width, height), Image.Resampling.BILINEAR)) for frame in rendered]


def time_request(page, url: str, video: Path) -> tuple[float, float]:
    """``(upload to result, server seconds)`` of one request on a freshly loaded page."""
    page.goto(url)
    page.wait_for_selector("#segment")
    page.locator("#sentences textarea").fill(SENTENCES)
    start = time.perf_counter()
    choose_file(page, video)
    page.locator("#segment").click()
    wait_for_result(page, RESULT_TIMEOUT_MS)
    elapsed = time.perf_counter() - start
    server = float(re.search(r"segmented in ([\d.]+) s", page.locator("#summary").inner_text()).group(1))
    return elapsed, server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", default=None, help="pretrained folder or run (default: tiny random model)")
    parser.add_argument("--repeat", type=int, default=3, help="requests per case (default 3)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads of the server (default 2)")
    args = parser.parse_args()

    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-serve-") as scratch:
        scratch = Path(scratch)
        checkpoint = args.checkpoint
        if checkpoint is None:
            torch.manual_seed(0)
            checkpoint = save_pretrained(
                WaveCL(load_config("tiny").model),
                scratch / "tiny",
                InferenceSettings(short_size=64, max_size=96),
            )
        env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "TMPDIR": str(scratch)}
        with serve_process(checkpoint, ["--device", "cpu"], log=scratch / "server.log", env=env) as served:
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
                page = browser.new_page(viewport={"width": 1200, "height": 800})
                for frames, height, width in CASES:
                    video = scratch / f"clip_{frames}_{height}x{width}.mp4"
                    write_video(video, clip_frames(frames, height, width), fps=8)
                    times = [time_request(page, served.url, video) for _ in range(args.repeat)]
                    rows.append((frames, height, width, video.stat().st_size, times))
                browser.close()

    model = "tiny random model" if args.checkpoint is None else args.checkpoint
    print(f"wavecl serve, {model}, CPU, {args.threads} threads, 2 sentences; median of {args.repeat} (min)")
    print(f"{'frames':>6} {'size':>9} {'upload':>8} {'upload->result s':>18} {'server s':>13}")
    for frames, height, width, size, times in rows:
        totals, servers = [t for t, _ in times], [s for _, s in times]
        print(
            f"{frames:>6} {f'{height}x{width}':>9} {size / 1024:>6.0f}kB "
            f"{statistics.median(totals):>11.2f} ({min(totals):.2f}) "
            f"{statistics.median(servers):>6.2f} ({min(servers):.2f})"
        )


if __name__ == "__main__":
    main()
