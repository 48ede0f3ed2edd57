"""Drive ``wavecl serve`` from tests and benchmarks: run it in a subprocess and use its page in Chromium.

The page is driven through Playwright's Python API pointed at Debian's ``chromium`` (:data:`CHROMIUM`);
Playwright's own browser downloads are never used. Element ids are those :func:`wavecl.app.build_app`
gives: ``#upload``, ``#sentences``, ``#segment``, ``#overlay``, ``#sheet``, ``#masks``, ``#summary``.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CHROMIUM = "/usr/bin/chromium"
RESULT_SELECTORS = ("#overlay video", "#sheet img", "#masks a[download]", "#summary p")


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nothing listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def http_get(url: str, timeout_s: float = 30.0) -> bytes:
    """The body of a ``GET``; raises ``OSError`` (``urllib.error.URLError``) when nothing answers."""
    with urllib.request.urlopen(url, timeout=timeout_s) as response:
        return response.read()


@dataclass
class ServeProcess:
    """A running ``wavecl serve``: its page's ``url``, the ``process`` and its ``log`` file."""

    url: str
    process: subprocess.Popen
    log: Path


@contextmanager
def serve_process(
    checkpoint: str | os.PathLike[str],
    arguments: Sequence[str] = (),
    log: str | os.PathLike[str] = "serve.log",
    env: dict[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    start_timeout_s: float = 120.0,
    stop_timeout_s: float = 120.0,
) -> Iterator[ServeProcess]:
    """Run ``python -m wavecl serve --checkpoint CHECKPOINT --port FREE ARGUMENTS`` until the block ends.

    The block starts once the page answers. At its end the server gets SIGTERM (which it handles as Ctrl-C,
    removing its temporary folder; SIGINT would be ignored where the tests run as a background job) and is
    killed if it has not stopped after ``stop_timeout_s``.

    Args:
        checkpoint: pretrained folder or run.
        arguments: further ``wavecl serve`` flags.
        log: file receiving the server's stdout and stderr.
        env: the server's environment (this process's when ``None``).
        cwd: the server's working folder.

    Raises:
        RuntimeError: the server exited, did not answer within ``start_timeout_s`` or did not stop in time
            (the message ends with its log).
    """
    log = Path(log)
    url = f"http://127.0.0.1:{(port := free_port())}/"
    command = [sys.executable, "-m", "wavecl", "serve", "--checkpoint", str(checkpoint), "--port", str(port)]
    with open(log, "wb") as output:
        process = subprocess.Popen([*command, *arguments], env=env, cwd=cwd, stdout=output, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + start_timeout_s
            while True:
                if process.poll() is not None:
                    raise RuntimeError(f"wavecl serve exited with code {process.returncode}:\n{log.read_text()}")
                try:
                    http_get(url, timeout_s=10)
                    break
                except OSError as error:
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"no answer at {url} in {start_timeout_s} s:\n{log.read_text()}") from error
                    time.sleep(0.5)
            yield ServeProcess(url, process, log)
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=stop_timeout_s)
            except subprocess.TimeoutExpired as error:
                process.kill()
                process.wait(timeout=stop_timeout_s)
                message = f"wavecl serve did not stop within {stop_timeout_s} s:\n{log.read_text()}"
                raise RuntimeError(message) from error


def choose_file(page: Any, path: Path, timeout_ms: int = 60_000) -> None:
    """Put ``path`` in the page's video upload, replacing what is there, and wait until it is uploaded.

    The uploaded file is recognised by the ``aria-label`` of its row, which holds the whole name (the
    text shown may be shortened with an ellipsis when the column is narrow).

    Raises:
        playwright.sync_api.TimeoutError: the file was not shown as uploaded within ``timeout_ms``.
    """
    if page.locator("#upload .file-preview").count():
        page.locator("#upload button[aria-label='Clear']").click()
    page.locator("#upload input[type=file]").set_input_files(str(path))
    page.locator(f'#upload td.filename[aria-label="{path.name}"]').wait_for(timeout=timeout_ms)


def start_segmenting(page: Any, path: Path, sentences: str | None = None) -> None:
    """Upload ``path`` (:func:`choose_file`), type ``sentences`` (one per line) when given, and press
    Segment; returns at once, without waiting for the result or an error."""
    choose_file(page, path)
    if sentences is not None:
        page.locator("#sentences textarea").fill(sentences)
    page.locator("#segment").click()


def wait_for_result(page: Any, timeout_ms: int = 120_000) -> None:
    """Wait until the overlay video, the contact sheet, the masks link and the summary are on a page
    that showed no earlier result."""
    for selector in RESULT_SELECTORS:
        page.locator(selector).wait_for(timeout=timeout_ms)
