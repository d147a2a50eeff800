"""What this machine computes fast: the facts the automatic choices (training precision, the
bench's backend and dtype) are made from, read once; and how busy its cores are right now, for
the threads of one generation (the TUI's, `idle_threads`)."""

from __future__ import annotations

import math
import os
import time
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


def check_threads(threads: int | None, flag: str = "--threads") -> int | None:
    """A thread count asked for (None: the default), or one line saying it must be 1 or more."""
    if threads is not None and threads < 1:
        raise LampboxError(f"{flag} must be at least 1 (got {threads})")
    return threads


# -- threads for one generation, from how busy the cores are now (the TUI) ---------------------

PROC_STAT = Path("/proc/stat")
# Other processes' work below this many cores is noise (a shell, the TUI's own terminal): the
# cores still count as idle.
IDLE_TOLERANCE_CORES = 0.25
SAMPLE_INTERVAL_S = 0.08  # the shortest span between the two samples of `idle_threads`


@dataclass(frozen=True)
class CpuSample:
    """The usable cores' time counters at one moment, in clock ticks (USER_HZ): what every
    process spent working on them, their time in all, and this process's own CPU time."""

    busy: float  # user, nice, system, irq, softirq, steal on the usable cores
    total: float  # busy + idle + iowait on the usable cores
    own: float  # this process's user + system time (all its threads)
    cores: int
    at: float = 0.0  # time.monotonic() when read


@dataclass(frozen=True)
class ThreadChoice:
    """The threads one generation runs on, and why (shown to the user)."""

    threads: int
    reason: str

    def describe(self) -> str:
        return f"{self.threads} thread{'' if self.threads == 1 else 's'} ({self.reason})"


def parse_cpu_sample(stat_text: str, cores: set[int], own_ticks: float, at: float = 0.0) -> CpuSample | None:
    """A CpuSample from /proc/stat's text: the per-core `cpuN` lines of the cores in `cores`
    (None if none of them is listed)."""
    busy = total = 0.0
    found = 0
    for line in stat_text.splitlines():
        name, _, rest = line.partition(" ")
        if not name.startswith("cpu") or not name[3:].isdigit() or int(name[3:]) not in cores:
            continue
        # user nice system idle iowait irq softirq steal (guest time is already in user/nice)
        fields = [float(value) for value in rest.split()[:8]]
        fields += [0.0] * (8 - len(fields))
        working = fields[0] + fields[1] + fields[2] + fields[5] + fields[6] + fields[7]
        busy += working
        total += working + fields[3] + fields[4]
        found += 1
    return CpuSample(busy, total, own_ticks, found, at) if found else None


def read_cpu_sample(stat_path: Path = PROC_STAT) -> CpuSample | None:
    """The usable cores' counters now, or None where /proc/stat cannot be read (not Linux)."""
    import resource

    try:
        text = stat_path.read_text()
        ticks = os.sysconf("SC_CLK_TCK")
        cores = set(os.sched_getaffinity(0))
    except (OSError, ValueError, AttributeError):
        return None
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return parse_cpu_sample(text, cores, (usage.ru_utime + usage.ru_stime) * ticks, time.monotonic())


def other_busy_cores(before: CpuSample, after: CpuSample) -> float:
    """How many of the usable cores OTHER processes kept busy between the two samples: all
    work on them less this process's own, in cores (0.0 when no time passed)."""
    elapsed = after.total - before.total
    if elapsed <= 0 or after.cores < 1:
        return 0.0
    others = (after.busy - before.busy) - (after.own - before.own)
    return max(0.0, others / (elapsed / after.cores))


def threads_from_samples(before: CpuSample, after: CpuSample, sharers: int = 1) -> ThreadChoice:
    """One thread per usable core that other processes left idle between the samples (a core
    counts as busy once others use more than IDLE_TOLERANCE_CORES of it), shared among
    `sharers` generations running at once; at least 1. Why not more: llama.cpp's threads spin
    at a barrier after every layer, so one thread on a busy core stalls all the others
    (docs/backends.md, "Threads")."""
    usable = after.cores
    busy = min(usable, max(0, math.ceil(other_busy_cores(before, after) - IDLE_TOLERANCE_CORES)))
    threads = max(1, (usable - busy) // max(1, sharers))
    if busy == 0:
        reason = "cores idle"
    elif busy == 1:
        reason = "another process is busy"
    else:
        reason = f"{busy} of {usable} cores busy elsewhere"
    if sharers > 1:
        reason += f", {sharers} models share them"
    return ThreadChoice(threads, reason)


class CpuSampler:
    """Samples taken in the background (the TUI ticks it every SAMPLER_TICK_S), so that a
    generation measures the load from one already SAMPLE_INTERVAL_S old and starts without
    waiting for a second sample (`idle_threads` sleeps only when `before` is too recent)."""

    MAX_AGE_S = 3.0  # an older sample would average over a past the user no longer sees

    def __init__(self) -> None:
        self._samples: list[CpuSample] = []

    def tick(self) -> None:
        sample = read_cpu_sample()
        if sample is not None:
            self._samples = [*self._samples[-3:], sample]

    def start(self) -> CpuSample | None:
        """The newest sample at least SAMPLE_INTERVAL_S and at most MAX_AGE_S old, else a new one."""
        now = time.monotonic()
        for sample in reversed(self._samples):
            if SAMPLE_INTERVAL_S <= now - sample.at <= self.MAX_AGE_S:
                return sample
        return read_cpu_sample()


SAMPLER_TICK_S = 0.25


def idle_threads(before: CpuSample | None, sharers: int = 1) -> ThreadChoice:
    """Threads for a generation about to start: $LAMPBOX_THREADS if set; else one per idle
    usable core, measured from `before` (read when the user asked, e.g. at `g`) to now, at
    least SAMPLE_INTERVAL_S apart; where /proc/stat is missing, the conservative default (a
    core kept spare on small machines, one for the TUI's render loop)."""
    if os.environ.get(THREADS_ENV, "").strip():
        return ThreadChoice(default_threads(), f"${THREADS_ENV}")
    after = read_cpu_sample()
    if before is None or after is None:
        return ThreadChoice(default_threads(reserve=1), "CPU load unknown: the default")
    wait = SAMPLE_INTERVAL_S - (after.at - before.at)
    if wait > 0:
        time.sleep(wait)
        after = read_cpu_sample() or after
    return threads_from_samples(before, after, sharers)
