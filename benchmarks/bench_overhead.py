"""The bench's own work against its backend's, measured inside one `lampbox bench` process.

`benchmarks/bench_generation.py` compares a bench configuration with a raw backend run timed
separately, so on a shared 2-core machine the difference mixes the bench's work with noise
between the two runs. This script times, in the same process and the same run, the seconds
spent inside the generator's `generate` (the backend's own work: tokenizing, prefill, decoding)
and the configuration's total seconds; the rest is the bench's own work (ranking, prompts,
cache, scoring, storing, progress). It repeats the bench in fresh stores (`--repeats`) and
reports each repeat and the median, with the store's connects and the time spent in them.

Run: .venv/bin/python benchmarks/bench_overhead.py [--questions 96] [--threads 2] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "git-commits" / "commit_subject"


class Timer:
    """Seconds and calls accumulated by wrapped functions, by name."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.calls: dict[str, int] = {}

    def wrap(self, owner: object, attribute: str, name: str) -> None:
        original = getattr(owner, attribute)

        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start
                self.calls[name] = self.calls.get(name, 0) + 1

        setattr(owner, attribute, timed)

    def reset(self) -> None:
        self.seconds.clear()
        self.calls.clear()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--questions", type=int, default=96)
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--backend", default="hf")
    parser.add_argument("--extra", default="--dtype bfloat16", help="More `lampbox bench` options.")
    args = parser.parse_args()

    from lampbox.bench import runner
    from lampbox.cli import cli
    from lampbox.engine.generation.registry import backend_class
    from lampbox.store import core

    timer = Timer()
    generator_class = backend_class(args.backend)
    timer.wrap(generator_class, "__init__", "model load")
    timer.wrap(generator_class, "generate", "generate")
    timer.wrap(core.Store, "_connect", "connect")
    timer.wrap(core.Store, "_disconnect", "disconnect")
    segments: list[tuple[str, float, dict[str, float], dict[str, int]]] = []
    run_one = runner.run

    def timed_run(spec, *rest, **options):  # one configuration: its own seconds and timers
        timer.reset()
        start = time.perf_counter()
        record = run_one(spec, *rest, **options)
        segments.append((spec.retriever, time.perf_counter() - start, dict(timer.seconds), dict(timer.calls)))
        return record

    runner.run = timed_run

    work = Path(tempfile.mkdtemp(prefix="lampbox-overhead-"))
    seed = work / "seed.duckdb"
    cli(["data", "import", str(args.data), "--db", str(seed)], prog_name="lampbox", standalone_mode=False)
    common = [
        "bench", "--task", "commit_subject", "--split", "dev", "--retrievers", "bm25", "--k", str(args.k),
        "--limit", str(args.questions), "--backend", args.backend, "--threads", str(args.threads),
        "--no-baselines", "--json", *args.extra.split(),
    ]  # fmt: skip
    for repeat in range(args.repeats):
        db = work / f"bench-{repeat}.duckdb"
        shutil.copyfile(seed, db)
        saved = sys.stdout
        with open(work / f"out-{repeat}.json", "w") as handle:
            sys.stdout = handle
            try:
                cli([*common, "--db", str(db), "--out", str(work / "pred")], prog_name="lampbox", standalone_mode=False)
            finally:
                sys.stdout = saved
    print(f"CPU flags: {cpu_flags()}; load average at the end {os.getloadavg()[0]:.2f}")
    print(f"{args.questions} commit_subject dev questions, {args.backend} {args.extra}, {args.threads} threads")
    print(
        f"{'config':>6} {'seconds':>8} {'load s':>7} {'generate s':>11} {'own s':>7} {'own %':>7} "
        f"{'connects':>9} {'connect+close s':>16}"
    )
    owns: dict[str, list[float]] = {}
    for retriever, seconds, spent, calls in segments:
        generate = spent.get("generate", 0.0)
        own = seconds - generate - spent.get("model load", 0.0)
        owns.setdefault(retriever, []).append(own / generate)
        connect = spent.get("connect", 0.0) + spent.get("disconnect", 0.0)
        print(
            f"{retriever:>6} {seconds:8.2f} {spent.get('model load', 0.0):7.2f} {generate:11.2f} {own:7.2f} "
            f"{own / generate * 100:6.1f}% {calls.get('connect', 0):9d} {connect:16.2f}"
        )
    for retriever, values in owns.items():
        print(f"{retriever}: median own work {statistics.median(values) * 100:.1f}% of the backend's generate time")
    shutil.rmtree(work, ignore_errors=True)


def cpu_flags() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "unknown"
    import re

    return " ".join(sorted(set(re.findall(r"\b(avx512[a-z_0-9]*|amx[a-z_0-9]*)\b", text)))) or "no avx512/amx"


if __name__ == "__main__":
    main()
