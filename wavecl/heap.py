"""The process's C heap on glibc: memory freed by large tensors stays in the heap for the next ones.

glibc hands every allocation above its mmap threshold (32 MiB at most) its own ``mmap`` and gives it
back with ``munmap`` when freed. A network of this size allocates and frees such tensors all the time
(the deformable encoder's feed-forward alone is ``[8·2380, 2048]`` float32, 156 MB, at 8x256x448), so
every page of every one is zero-filled and faulted in anew by the kernel: 11.5 million minor page faults
and 35 s of system time for three training steps and three eval forwards at 8x256x448 on one thread.
With :func:`keep_freed_memory` the same training step took 21.3 s instead of 29.5 s and the eval forward
5.8 s instead of 6.5 s (``benchmarks/bench_model.py --malloc system`` compares the two). This is what the
``LD_PRELOAD`` of tcmalloc or jemalloc recommended for PyTorch on CPUs achieves, with nothing to install.

The price: the heap does not shrink, so the resident memory of the process stays near its peak once
reached (9.6 GB → 10.6 GB peak in that run). ``WAVECL_MALLOC=system`` keeps glibc's own policy.
"""

from __future__ import annotations

import ctypes
import os
import platform

M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
KEEP_UP_TO_BYTES = 2**31 - 1
"""Free memory at the top of the heap is returned to the kernel only above this (``mallopt`` takes an int)."""

GLIBC_MALLOC_VARIABLES = ("MALLOC_MMAP_MAX_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "GLIBC_TUNABLES")
"""Environment variables by which a user tunes glibc's heap; when any is set, theirs is the policy."""


def keep_freed_memory() -> bool:
    """Serve every allocation from the heap (``mallopt(M_MMAP_MAX, 0)``) and keep what is freed in it
    (``mallopt(M_TRIM_THRESHOLD, 2 GiB)``), so large tensors reuse pages already mapped.

    Applied once when ``wavecl`` is imported. Nothing changes (and ``False`` is returned) outside glibc
    (macOS, Windows, musl), with ``WAVECL_MALLOC=system``, or when one of
    :data:`GLIBC_MALLOC_VARIABLES` is set.

    Returns:
        Whether the policy is now in force.

    Raises:
        ValueError: ``WAVECL_MALLOC`` is set to something other than ``keep`` or ``system``.
    """
    choice = os.environ.get("WAVECL_MALLOC", "keep")
    if choice not in ("keep", "system"):
        raise ValueError(f"WAVECL_MALLOC must be 'keep' (the default) or 'system', got {choice!r}")
    if choice == "system" or any(name in os.environ for name in GLIBC_MALLOC_VARIABLES):
        return False
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL(None)  # the process's own symbols, glibc's among them
    return bool(libc.mallopt(M_MMAP_MAX, 0)) and bool(libc.mallopt(M_TRIM_THRESHOLD, KEEP_UP_TO_BYTES))
