"""Freed training memory handed back to the system (glibc's malloc on Linux).

glibc serves an allocation above its mmap threshold with its own mapping, unmapped again when
freed; below it, from the heap, whose freed pages stay with the process. The threshold starts
at 128 KiB but rises to the size of every mapped block that is freed (up to 32 MiB), so after
the first training step a step's activations (a few MB each, their sizes changing with every
length-grouped batch) come from the heap, and the holes they leave are reused only in part:
the resident memory of `lampbox train ipa` grew step after step to 3-5 GB for a SmolLM2 LoRA
(docs/training.md, "Memory"). Setting the threshold fixes it (glibc stops moving it), so
blocks of 64 KiB and more are mapped and unmapped again, and a step's activations leave
nothing behind. `lampbox train` sets it before it prepares the examples (whose tokenizer and
rankings otherwise leave some 700 MB of free heap resident), and the core again when it
starts, after giving back what is free on the heap then (malloc_trim).
"""

from __future__ import annotations

import sys

M_MMAP_THRESHOLD = -3  # mallopt's parameter number (malloc.h)
MMAP_THRESHOLD_BYTES = 64 * 1024
_applied = False


def hand_back_freed_memory(threshold: int = MMAP_THRESHOLD_BYTES) -> bool:
    """Give the heap's free pages back to the system and fix glibc's mmap threshold at
    `threshold` bytes for this process (once); False where the C library is not glibc
    (nothing changes there)."""
    global _applied
    if not sys.platform.startswith("linux"):
        return False
    import ctypes

    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
        libc.gnu_get_libc_version  # noqa: B018 (glibc only: musl has no mallopt parameter -3)
    except (OSError, AttributeError):
        return False
    libc.malloc_trim.argtypes = [ctypes.c_size_t]
    libc.malloc_trim(0)  # the free pages already on the heap
    if not _applied:
        mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        mallopt.restype = ctypes.c_int
        _applied = mallopt(M_MMAP_THRESHOLD, threshold) == 1
    return _applied
