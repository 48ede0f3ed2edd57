"""The C heap policy set by ``import wavecl`` (wavecl/heap.py), observed through glibc's own accounting."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="the policy exists only on glibc"
)

# Allocates a 64 MiB tensor and reads glibc's mallinfo2 while it lives and after it is freed:
# hblkhd = bytes in mmap'd blocks, arena = bytes of the heap, fordblks = free bytes kept in the heap.
PROBE = """
import ctypes, json, sys
import wavecl, torch

class MallInfo2(ctypes.Structure):
    names = "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost"
    _fields_ = [(name, ctypes.c_size_t) for name in names.split()]

libc = ctypes.CDLL(None)
libc.mallinfo2.restype = MallInfo2
size = 64 * 2**20
tensor = torch.ones(size // 4)
alive = libc.mallinfo2()
del tensor
freed = libc.mallinfo2()
json.dump({"alive_mmapped": alive.hblkhd, "alive_heap": alive.arena, "freed_kept": freed.fordblks}, sys.stdout)
"""


def probe(**env: str) -> dict[str, int]:
    """Run :data:`PROBE` in a fresh interpreter with ``env`` added (the policy is set at import, once)."""
    clean = {k: v for k, v in os.environ.items() if k not in ("WAVECL_MALLOC", "MALLOC_MMAP_MAX_", "GLIBC_TUNABLES")}
    done = subprocess.run(
        [sys.executable, "-c", PROBE], env={**clean, **env}, capture_output=True, text=True, check=True
    )
    return json.loads(done.stdout)


def test_import_keeps_large_tensors_in_the_heap() -> None:
    figures = probe()
    size = 64 * 2**20
    assert figures["alive_mmapped"] < size  # not its own mmap ...
    assert figures["alive_heap"] >= size  # ... but heap memory
    assert figures["freed_kept"] >= size  # and still there, free, once the tensor is gone


@pytest.mark.parametrize("env", [{"WAVECL_MALLOC": "system"}, {"MALLOC_MMAP_MAX_": "65536"}])
def test_system_policy_on_request(env: dict[str, str]) -> None:
    figures = probe(**env)
    assert figures["alive_mmapped"] >= 64 * 2**20  # glibc's default: a block this large is mmap'd
    assert figures["freed_kept"] < 64 * 2**20


def test_unknown_choice_is_refused() -> None:
    done = subprocess.run(
        [sys.executable, "-c", "import wavecl"],
        env={**os.environ, "WAVECL_MALLOC": "fast"},
        capture_output=True,
        text=True,
    )
    assert done.returncode != 0
    assert "WAVECL_MALLOC must be 'keep' (the default) or 'system', got 'fast'" in done.stderr
