"""Where a `lampbox train` command's memory goes: resident memory (RSS) per phase.

Runs one `lampbox train ...` command in this process, samples the RSS every 50 ms in a thread,
and prints the peak of each phase (preparing the examples, loading the model, training steps,
each dev evaluation, saving) and the process's maximum RSS (what GNU time's "Maximum resident
set size" reports), e.g.

    PYTHONPATH=. LAMPBOX_HOME=/tmp/h LAMPBOX_DB=/tmp/h/lampbox.duckdb .venv/bin/python benchmarks/bench_train_memory.py \\
        ipa --task commit_area --retriever bm25 --k 4 --epochs 2 --name x --overwrite

(from the repository root; PYTHONPATH=. makes it measure this tree's lampbox, not an installed one).
"""

from __future__ import annotations

import contextlib
import functools
import resource
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import psutil

MB = 1024 * 1024


class Sampler:
    """Peak RSS per phase (the phase a sample falls in is the innermost one open)."""

    def __init__(self, interval: float = 0.05) -> None:
        self.process = psutil.Process()
        self.interval = interval
        self.stack: list[str] = ["start"]
        self.peaks: dict[str, int] = {}
        self.order: list[str] = []
        self.started = time.perf_counter()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _record(self) -> None:
        rss = self.process.memory_info().rss
        phase = self.stack[-1]
        if phase not in self.peaks:
            self.order.append(phase)
        self.peaks[phase] = max(self.peaks.get(phase, 0), rss)

    def _run(self) -> None:
        while not self.stop.wait(self.interval):
            self._record()

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        self._record()
        self.stack.append(name)
        self._record()
        before = self.process.memory_info().rss
        try:
            yield
        finally:
            self._record()
            after = self.process.memory_info().rss
            self.stack.pop()
            print(
                f"[memory] {time.perf_counter() - self.started:7.1f}s {name}: {before / MB:.0f} -> {after / MB:.0f} MB "
                f"(peak {self.peaks.get(name, 0) / MB:.0f} MB)",
                file=sys.stderr, flush=True,
            )  # fmt: skip


def wrap(sampler: Sampler, owner: Any, attribute: str, label: Callable[..., str] | str) -> None:
    original = getattr(owner, attribute)

    @functools.wraps(original)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        name = label(*args, **kwargs) if callable(label) else label
        with sampler.phase(name):
            return original(*args, **kwargs)

    setattr(owner, attribute, wrapped)


def main(argv: list[str]) -> int:
    sampler = Sampler()
    sampler.thread.start()
    from lampbox.cli import cli
    from lampbox.engine.training import sft, trainer
    from lampbox.lab import training

    evaluations = iter(range(1, 1000))
    wrap(sampler, training, "prepare_data", "prepare examples")
    wrap(sampler, trainer, "train", "train (steps)")
    wrap(sampler, sft.SFTObjective, "load_model", "load model")
    wrap(
        sampler, sft.SFTObjective, "evaluate", lambda *a, **k: f"dev evaluation {next(evaluations)}"
    )
    wrap(sampler, training, "_save", "save")
    code = 0
    try:
        cli(["train", *argv], prog_name="lampbox", standalone_mode=False)
    except SystemExit as exit_:
        code = int(exit_.code or 0)
    sampler.stop.set()
    sampler.thread.join()
    print("[memory] peak RSS by phase:", file=sys.stderr)
    for name in sampler.order:
        print(f"[memory]   {name:<22} {sampler.peaks[name] / MB:7.0f} MB", file=sys.stderr)
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"[memory] maximum RSS of the process: {maxrss:.0f} MB", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
