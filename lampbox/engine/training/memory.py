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

The price is a page fault for every page of every such block at every step. For the short
trainings of OPPU's users' adapters (engine/training/adapters.py) that was 40% of the CPU time
(1.1 million minor faults per step on commit_area); those use ADAPTER_MMAP_THRESHOLD_BYTES
(1 MiB) instead: most activations of their small batches come from the heap again, which is
trimmed when each adapter's training starts, so the resident memory between users is the same
(docs/oppu.md, "Training figures"). 4 MiB removed nearly all the faults but raised the peak
above issue 24's 4 GB (4618 MB on 4 commit_area users); 1 MiB keeps most of the gain (a
quarter of 64 KiB's system time) with a peak about 550 MB lower.
"""

from __future__ import annotations

import sys

M_MMAP_THRESHOLD = -3  # mallopt's parameter number (malloc.h)
MMAP_THRESHOLD_BYTES = 64 * 1024
ADAPTER_MMAP_THRESHOLD_BYTES = 1024 * 1024
_in_force: int | None = None  # the threshold this process set last


def hand_back_freed_memory(threshold: int = MMAP_THRESHOLD_BYTES) -> bool:
    """Give the heap's free pages back to the system and fix glibc's mmap threshold at
    `threshold` bytes for this process (set again only when it differs from the one in force);
    False where the C library is not glibc (nothing changes there)."""
    global _in_force
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
    if _in_force != threshold:
        mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        mallopt.restype = ctypes.c_int
        if mallopt(M_MMAP_THRESHOLD, threshold) == 1:
            _in_force = threshold
    return _in_force == threshold


def threshold_in_force() -> int | None:
    """The mmap threshold this process set last (None: never set, glibc's own)."""
    return _in_force
