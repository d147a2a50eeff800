"""Freed training memory goes back to the system (engine/training/memory.py): glibc's dynamic
mmap threshold kept freed activations on the heap, and `lampbox train ipa` grew to 3-5 GB."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc",
    reason="glibc's malloc",
)

# 64 blocks of 1 MiB, each followed by a small block that stays (as a training step's
# activations sit between longer-lived allocations), after a freed 4 MiB block has raised
# glibc's threshold; prints how many MiB the process gives back when the 64 blocks are freed.
FREE_BLOCKS = """
import ctypes, os, sys
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
if sys.argv[1] == "fixed":
    from lampbox.engine.training.memory import hand_back_freed_memory
    assert hand_back_freed_memory()
def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
libc.free(libc.malloc(4 << 20))
big, small = [], []
for _ in range(64):
    block = libc.malloc(1 << 20)
    ctypes.memset(block, 1, 1 << 20)
    big.append(block)
    small.append(libc.malloc(64))
before = rss()
for block in big:
    libc.free(block)
print((before - rss()) / (1 << 20))
"""


def _script_output(script: str, mode: str) -> str:
    """What `script` prints in a fresh interpreter (glibc's allocator as a process starts)."""
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script), mode], capture_output=True, text=True, check=True,
        env={**os.environ, "PYTHONPATH": str(REPO)}, cwd=REPO,
    )  # fmt: skip
    return result.stdout


def _freed_mib(mode: str) -> float:
    return float(_script_output(FREE_BLOCKS, mode))


def test_freed_blocks_go_back_to_the_system_once_the_threshold_is_fixed() -> None:
    assert _freed_mib("default") < 16  # glibc as it starts: the freed MiB stay with the process
    assert _freed_mib("fixed") > 60  # what training does first: all 64 MiB given back


# The page faults of 50 steps that each allocate, fill and free 512 KiB (as a step's bf16
# activations are), after `lampbox train`'s 64 KiB threshold and, with "adapter", the adapters' 1 MiB.
FAULTS = """
import ctypes, resource, sys
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
from lampbox.engine.training.memory import ADAPTER_MMAP_THRESHOLD_BYTES, hand_back_freed_memory, threshold_in_force
assert hand_back_freed_memory()
if sys.argv[1] == "adapter":
    assert hand_back_freed_memory(ADAPTER_MMAP_THRESHOLD_BYTES)
    assert threshold_in_force() == ADAPTER_MMAP_THRESHOLD_BYTES
first = libc.malloc(512 << 10)
pin = libc.malloc(200 << 10)  # a longer-lived block after it (the heap's top is not trimmed away)
libc.free(first)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(50):
    block = libc.malloc(512 << 10)
    ctypes.memset(block, 1, 512 << 10)
    libc.free(block)
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def test_adapter_threshold_set_after_the_default_stops_the_page_faults() -> None:
    """OPPU's users' adapters train with a 1 MiB threshold after `lampbox train` fixed 64 KiB
    (set again, not ignored): a step's 512 KiB blocks come from the heap, not from fresh
    mappings faulted in page by page at every step (40% of the CPU time on commit_area)."""

    def faults(mode: str) -> int:
        return int(_script_output(FAULTS, mode))

    assert faults("default") > 50 * 100  # 128 pages of 4 KiB at every step
    assert faults("adapter") < 50 * 20
