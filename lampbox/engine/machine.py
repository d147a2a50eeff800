"""What this machine computes fast: the facts the automatic choices (training precision, the
bench's backend and dtype) are made from, read once."""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from lampbox.errors import LampboxError


@dataclass(frozen=True)
class Machine:
    cuda: bool
    amx_bf16: bool  # Intel AMX: bf16 matmuls several times fp32's speed
    avx512_bf16: bool  # bf16 dot products on AVX-512 (faster training; inference no faster than fp32)
    avx512_vnni: bool

    @property
    def cpu_bf16(self) -> bool:
        return self.amx_bf16 or self.avx512_bf16

    def describe(self) -> str:
        if self.cuda:
            return "CUDA GPU"
        flags = [name for name, present in (("AMX-BF16", self.amx_bf16), ("AVX512-BF16", self.avx512_bf16),
                                            ("AVX512-VNNI", self.avx512_vnni)) if present]  # fmt: skip
        return f"CPU ({', '.join(flags) or 'no AMX/AVX512-BF16'})"


def cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


@lru_cache(maxsize=1)
def this_machine() -> Machine:
    try:
        import torch

        cuda = bool(torch.cuda.is_available())
    except ImportError:
        cuda = False
    flags = cpu_flags()
    return Machine(cuda, "amx_bf16" in flags, "avx512_bf16" in flags, "avx512_vnni" in flags)


THREADS_ENV = "LAMPBOX_THREADS"


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity: a container's or taskset's share,
    not the machine's count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not on Linux
        return max(1, os.cpu_count() or 1)


def default_threads(reserve: int = 0, *, spare_on_small: bool = True) -> int:
    """CPU threads for llama.cpp and torch: $LAMPBOX_THREADS if set, else the usable cores less
    `reserve` (the TUI keeps one for its own render loop) less one more on a machine of up to
    two usable cores, at least one. Why one fewer on small machines: llama.cpp's threads wait for
    each other at every layer, so one descheduled thread stalls them all: on 2 cores beside one
    busy process 1 thread was 39x faster than 2, and 1.7x slower on idle cores (docs/backends.md,
    benchmarks/bench_threads.py). `spare_on_small=False` (training: the long job a machine runs
    alone, where one thread of two halves the throughput) keeps every usable core."""
    value = os.environ.get(THREADS_ENV, "").strip()
    if value:
        try:
            threads = int(value)
        except ValueError:
            threads = 0
        if threads < 1:
            raise LampboxError(f"{THREADS_ENV}={value!r}: expected a whole number of threads, 1 or more")
        return threads
    usable = usable_cores()
    spare = 1 if spare_on_small and usable <= SMALL_MACHINE_CORES else 0
    return max(1, usable - reserve - spare)


SMALL_MACHINE_CORES = 2  # up to this many usable cores, one is left free by default
