"""The web app's temporary files: one folder per app, one sub-folder per request.

Everything the app writes lies in one temporary folder, created per app under the system's temporary
folder (or :attr:`~wavecl.app.config.AppConfig.temp_parent`) and removed when the app is closed, garbage
collected or the interpreter exits: Gradio's upload and result cache (``gradio/``, whose files are
deleted after :attr:`~wavecl.app.config.AppConfig.cache_minutes`), the example clips (``examples/``) and
one folder per request (``requests/``), deleted when the next request starts (its results are in
Gradio's cache by then) or at once when the request fails.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import weakref
from pathlib import Path


class Workspace:
    """The app's temporary folder :attr:`root` and its ``requests/`` folder.

    Args:
        parent: folder in which :attr:`root` is made (the system's temporary folder when ``None``).
    """

    def __init__(self, parent: str | os.PathLike[str] | None = None) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="wavecl-serve-", dir=parent))
        self.requests = self.root / "requests"
        self.requests.mkdir()
        self._finalizer = weakref.finalize(self, shutil.rmtree, self.root, ignore_errors=True)

    def new_request(self) -> Path:
        """A new, empty folder for one request, after deleting the folders of earlier requests: one
        request runs at a time, so theirs are finished and Gradio has copied their results."""
        for folder in self.requests.iterdir():
            shutil.rmtree(folder, ignore_errors=True)
        return Path(tempfile.mkdtemp(dir=self.requests))

    def close(self) -> None:
        """Remove :attr:`root` and everything in it."""
        self._finalizer()
