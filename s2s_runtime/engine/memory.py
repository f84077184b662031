"""Giving freed memory back to the operating system after a large batch.

Python and numpy free a large batch's arrays at once, but glibc keeps freed heap memory for reuse: its threshold for
serving large allocations with mmap rises after each large free (up to 32 MiB), so the next large arrays come from
the heap, and the process's resident memory stays at its high-water mark. `malloc_trim(0)` returns the free heap
pages. It costs about a millisecond for a heap of some hundred MB, so the engine calls it only after a batch whose
buffers were too large to keep (SessionSettings.idle_buffer_bytes). Elsewhere than glibc it does nothing.

onnxruntime's own CPU memory arena never shrinks either: sessions are made without it
(SessionSettings.session_options), which measured no slower for these models (docs/limits.md).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
from typing import Any


@functools.lru_cache(maxsize=1)
def _libc() -> Any:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    return libc if libc is not None and hasattr(libc, "malloc_trim") else None


def release_free_memory() -> bool:
    """Return the free heap pages to the OS (glibc); False where the C library cannot."""
    libc = _libc()
    if libc is None:
        return False
    libc.malloc_trim(0)
    return True
