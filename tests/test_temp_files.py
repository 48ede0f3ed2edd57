"""A run of the test suite leaves nothing behind in the temporary directory: the sample-list cache of the
session (``$WAVECL_CACHE_DIR``) is removed at its end, and the folders of passing tests with it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TORCH_CACHE = "torchinductor_"
"""torch's compilation cache (``<tmp>/torchinductor_<user>``), made by importing torch and shared by every
torch program of the user: not the test suite's to remove."""


def test_a_test_run_leaves_no_file_in_the_temp_directory(tmp_path: Path) -> None:
    temp = tmp_path / "tmp"
    temp.mkdir()
    environment = os.environ | {"TMPDIR": str(temp)}
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_atomic.py"]
    result = subprocess.run(command, cwd=REPO, env=environment, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:]
    assert " passed" in result.stdout
    left = [path for path in temp.rglob("*") if not path.relative_to(temp).parts[0].startswith(TORCH_CACHE)]
    assert [path for path in left if path.is_file()] == []
    assert not list(temp.glob("wavecl-test-cache-*"))
