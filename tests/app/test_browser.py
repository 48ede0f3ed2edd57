"""``wavecl serve`` driven in a real headless Chromium (Debian's ``chromium`` through Playwright).

One server (a tiny random model saved with ``save_pretrained``) and one browser serve every check:
a two-sentence request whose overlay video, contact sheet and masks zip are fetched and decoded, the
error messages of an empty sentence and an unreadable file (one message, earlier results cleared, one
line and no traceback in the server's log), one progress bar, a portrait video that keeps the page
short, and the temporary files. Set
``WAVECL_SCREENSHOT=docs/images/serve.png`` to refresh the README's screenshot.

Deselect with ``pytest -m "not slow and not browser"``.
"""

from __future__ import annotations

import io
import os
import re
import time
import zipfile
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image
from playwright.sync_api import sync_playwright

from wavecl.data.synthetic import sample_synthetic_video
from wavecl.data.video_files import write_video
from wavecl.inference.prediction_folder import sentence_slug
from wavecl.inference_settings import InferenceSettings
from wavecl.model.pretrained import save_pretrained
from wavecl.model.wavecl import WaveCL
from wavecl.testing.serve import (
    CHROMIUM,
    choose_file,
    http_get,
    serve_process,
    start_segmenting,
    wait_for_result,
)

pytestmark = pytest.mark.browser

HEIGHT, WIDTH, NUM_FRAMES = 95, 127, 12  # odd sizes: the enlarged overlay is padded to even sizes
ENLARGED = 480 // WIDTH  # the overlay video enlarges small videos by a whole factor, its legend under them
SENTENCES = ["the red circle moving down", "the orange triangle"]
RESULT_TIMEOUT_MS = 120_000
SCREENSHOT_MAX_BYTES = 300_000  # the README's screenshot: the page with its full-size pictures
RESULT_HEIGHT = 420  # the most pixels the overlay video and the contact sheet may take on the page


@pytest.fixture(scope="module")
def server(tiny_model: WaveCL, tmp_path_factory: pytest.TempPathFactory):
    """``wavecl serve`` of the tiny random model in a subprocess whose temporary folder and working
    folder are empty folders."""
    base = tmp_path_factory.mktemp("serve")
    checkpoint = save_pretrained(tiny_model, base / "tiny", InferenceSettings(short_size=64, max_size=96))
    temp, cwd = base / "tmp", base / "cwd"
    temp.mkdir()
    cwd.mkdir()
    env = {**os.environ, "TMPDIR": str(temp), "OMP_NUM_THREADS": "2"}
    env.pop("GRADIO_TEMP_DIR", None)
    arguments = ["--max-frames", "40", "--max-upload-mb", "1", "--window", "4", "--device", "cpu"]
    with serve_process(checkpoint, arguments, log=base / "server.log", env=env, cwd=cwd) as served:
        yield {"url": served.url, "process": served.process, "temp": temp, "cwd": cwd, "log": served.log}
    assert list(temp.iterdir()) == [], "the server removes its temporary folder when it stops"


@pytest.fixture(scope="module")
def page(server: dict):
    assert Path(CHROMIUM).is_file(), f"{CHROMIUM} is missing: apt-get install chromium (.ci/run does it)"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1200, "height": 800})
        page.set_default_timeout(30_000)
        page.goto(server["url"])
        page.wait_for_selector("#segment")
        yield page
        browser.close()


def test_segment_a_video_in_the_browser(server: dict, page, tmp_path: Path) -> None:
    frames, _ = sample_synthetic_video(
        seed=7, split="test", index=1, num_frames=NUM_FRAMES, size=(HEIGHT, WIDTH)
    ).render()
    video = tmp_path / "shapes.mp4"
    write_video(video, list(frames), fps=8)

    start = time.perf_counter()
    start_segmenting(page, video, "\n".join(SENTENCES))
    wait_for_result(page, RESULT_TIMEOUT_MS)
    print(f"\nupload to result: {time.perf_counter() - start:.1f} s ({NUM_FRAMES} frames, 2 sentences)")

    page.wait_for_function(
        "() => { const v = document.querySelector('#overlay video'); return v && v.readyState >= 2; }",
        timeout=30_000,
    )
    size = page.evaluate(
        "() => { const v = document.querySelector('#overlay video'); return [v.videoWidth, v.videoHeight]; }"
    )
    assert size[0] == ENLARGED * WIDTH + 1 and size[1] > ENLARGED * HEIGHT, "Chromium decodes the overlay video"

    overlay = tmp_path / "overlay.mp4"
    overlay.write_bytes(http_get(page.locator("#overlay video").get_attribute("src")))
    with av.open(str(overlay)) as container:
        stream = container.streams.video[0]
        assert (stream.codec_context.name, stream.codec_context.pix_fmt) == ("h264", "yuv420p")
        decoded = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
    assert len(decoded) == NUM_FRAMES and decoded[0].shape == (size[1], size[0], 3)

    sheet = Image.open(io.BytesIO(http_get(page.locator("#sheet img").get_attribute("src"))))
    assert sheet.format == "PNG" and sheet.width >= 4 * WIDTH

    archive = zipfile.ZipFile(io.BytesIO(http_get(page.locator("#masks a[download]").get_attribute("href"))))
    expected = [  # the masks of a video file's frames are named by index and presentation time (8 fps)
        f"{i}_{sentence_slug(text)}/{frame:05d}_{frame / 8:.3f}s.png"
        for i, text in enumerate(SENTENCES)
        for frame in range(NUM_FRAMES)
    ]
    assert sorted(archive.namelist()) == sorted(expected)
    for name in expected:
        mask = np.asarray(Image.open(io.BytesIO(archive.read(name))))
        assert mask.shape == (HEIGHT, WIDTH) and set(np.unique(mask)) <= {0, 255}

    legend = page.locator("#legend").inner_text()
    assert f"0: {SENTENCES[0]}" in legend and f"1: {SENTENCES[1]}" in legend
    assert page.locator("#summary").inner_text().startswith(f"{NUM_FRAMES} frames × 2 sentences")

    screenshot = page.screenshot(full_page=True)
    image = Image.open(io.BytesIO(screenshot))
    small = image.convert("RGB").quantize(colors=128, method=Image.Quantize.MEDIANCUT)
    buffer = io.BytesIO()
    small.save(buffer, format="PNG", optimize=True)
    assert image.width == 1200 and len(buffer.getvalue()) < SCREENSHOT_MAX_BYTES
    if os.environ.get("WAVECL_SCREENSHOT"):
        Path(os.environ["WAVECL_SCREENSHOT"]).write_bytes(buffer.getvalue())

    assert [p.name.startswith("wavecl-serve-") for p in server["temp"].iterdir()] == [True]
    assert list(server["cwd"].iterdir()) == [], "nothing is written in the working folder"


def shows_text(page, selector: str, text: str) -> None:
    """Wait until the rendered text of ``selector`` contains ``text``."""
    page.wait_for_function(
        "([selector, text]) => document.querySelector(selector).innerText.includes(text)",
        arg=[selector, text],
        timeout=RESULT_TIMEOUT_MS,
    )


def error_shown(page, message: str) -> None:
    """Wait for the one message ``message``, check the results are empty and unmarked, close the message."""
    page.locator(".toast-body").filter(has_text=message).wait_for(timeout=RESULT_TIMEOUT_MS)
    messages = page.locator(".toast-body").all_inner_texts()
    assert len(messages) == 1 and "Errno" not in messages[0], f"one readable message: {messages}"
    for result in ("#legend", "#summary", "#sheet", "#masks"):
        assert page.locator(result).get_by_text("Error", exact=True).count() == 0, f"no error badge on {result}"
    assert page.locator("#legend").inner_text().strip() == "" and page.locator("#summary").inner_text().strip() == ""
    for close in page.locator(".toast-body button").all():
        close.click()


def test_bad_input_shows_a_message_and_the_server_keeps_answering(server: dict, page, tmp_path: Path) -> None:
    frames, _ = sample_synthetic_video(seed=8, split="test", index=0, num_frames=3, size=(32, 48)).render()
    video = tmp_path / "short.mp4"
    write_video(video, list(frames), fps=8)
    start_segmenting(page, video, "  \n ")
    error_shown(page, "Enter at least one sentence")

    broken = tmp_path / "broken.mp4"
    broken.write_bytes(np.random.default_rng(0).integers(0, 256, 8192, dtype=np.uint8).tobytes())
    start_segmenting(page, broken, "a dog")
    error_shown(page, "Cannot read broken.mp4 as a video: Invalid data found when processing input")
    log = server["log"].read_text()
    assert "Traceback" not in log, "bad input is no server error"
    assert len([line for line in log.splitlines() if "broken.mp4" in line]) == 1, "one line in the server's log"

    huge = tmp_path / "huge.mp4"
    huge.write_bytes(b"\0" * (3 << 19))  # 1.5 MB, over the server's 1 MB
    page.locator("#upload button[aria-label='Clear']").click()
    page.locator("#upload input[type=file]").set_input_files(str(huge))  # refused by the page, before the handler
    error_shown(page, 'exceed the maximum allowed size of 1.0 Mb: "huge.mp4"')
    assert "1 MB per upload" in page.locator("body").inner_text(), "the page states the limit"

    assert server["process"].poll() is None
    assert b"<html" in http_get(server["url"]).lower()
    start_segmenting(page, video)
    page.locator("#summary").get_by_text("3 frames × 1 sentence").wait_for(timeout=RESULT_TIMEOUT_MS)


def test_progress_bar_and_queue_position_are_shown(server: dict, page, tmp_path: Path) -> None:
    rendered, _ = sample_synthetic_video(seed=7, split="bench", index=0, num_frames=48, size=(128, 192)).render()
    video = tmp_path / "long.mp4"
    write_video(video, list(rendered[:40]), fps=8)  # the server's limit
    second = page.context.browser.new_page(viewport={"width": 1200, "height": 800})
    second.goto(server["url"])
    second.wait_for_selector("#segment")
    for tab in (page, second):
        choose_file(tab, video)
        tab.locator("#sentences textarea").fill("the red circle\nthe triangle")
    page.locator("#segment").click()
    second.locator("#segment").click()
    shows_text(second, "#overlay", "queue: 1/1")  # the waiting request's place and the queue's length
    shows_text(page, "#overlay", "/40 frames")  # the running request's progress bar
    assert "Segmenting" in page.locator("#overlay").inner_text()
    assert page.get_by_text(re.compile("Segmenting")).count() == 1, "one progress bar on the page"
    assert page.get_by_text(re.compile("/40 frames")).count() == 1
    second.locator("#summary").get_by_text("40 frames × 2 sentences").wait_for(timeout=RESULT_TIMEOUT_MS)
    second.close()

    too_long = tmp_path / "too_long.mp4"
    write_video(too_long, list(rendered), fps=8)
    start_segmenting(page, too_long)
    error_shown(page, "too_long.mp4 has 48 frames (6.0 s at 8 fps); this server accepts at most 40 frames")


def test_portrait_video_keeps_the_page_short(server: dict, page, tmp_path: Path) -> None:
    frames, _ = sample_synthetic_video(seed=9, split="test", index=0, num_frames=4, size=(640, 360)).render()
    video = tmp_path / "portrait.mp4"
    write_video(video, list(frames), fps=8)
    start_segmenting(page, video, "the red circle")
    page.locator("#summary").get_by_text("4 frames × 1 sentence").wait_for(timeout=RESULT_TIMEOUT_MS)
    page.wait_for_function(
        "() => { const v = document.querySelector('#overlay video'); return v && v.readyState >= 2; }",
        timeout=30_000,
    )
    for shown in ("#overlay video", "#sheet img"):
        box = page.locator(shown).bounding_box()
        assert box is not None and box["height"] <= RESULT_HEIGHT, f"{shown} is at most {RESULT_HEIGHT} px tall"
    height = page.evaluate("document.documentElement.scrollHeight")
    assert height < 800 + 2 * RESULT_HEIGHT, f"the page is {height} px tall"
