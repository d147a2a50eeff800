"""How much an open TUI slows a `lampbox bench` on the same store (issue 12).

Each round copies a fresh demo store (`lampbox data demo`), then times the same small bench
(`lampbox bench`, a new process, nothing cached) three ways, in turn:

- alone: no other process has the store open;
- users: a TUI is open on the store (headless, through Textual's Pilot) on its users screen,
  idle, as a user reading would leave it;
- runs: the TUI shows the runs screen, which reads the bench's progress every second while
  it runs.

It prints each condition's median seconds over the rounds and its ratio to alone. Before
issue 12's TUI part the bench could not run at all beside an open TUI (the TUI held the
file's write lock for its whole session; the bench gave up after 120 s).

    python benchmarks/bench_tui_beside_bench.py                     # dummy backend, 3 rounds
    python benchmarks/bench_tui_beside_bench.py --backend llamacpp --limit 8 --rounds 2
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

TUI = """
import asyncio, sys
from lampbox.tui import create_app

async def main() -> None:
    app = create_app(store_path=sys.argv[1])
    async with app.run_test(size=(120, 36)) as pilot:
        await pilot.pause(1.0)
        if sys.argv[2] == "runs":
            await pilot.press("b")
            await pilot.pause(1.0)
        print("ready", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)

asyncio.run(main())
"""


def environment() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "NO_COLOR": "1"}


def lampbox(*args: str) -> None:
    subprocess.run(
        [sys.executable, "-m", "lampbox", *args],
        check=True,
        env=environment(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def timed_bench(store: Path, out: Path, bench_args: list[str]) -> float:
    started = time.perf_counter()
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "lampbox",
            "bench",
            *bench_args,
            "--db",
            str(store),
            "--out",
            str(out),
        ],
        env=environment(),
        capture_output=True,
        text=True,
    )
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"the bench failed: {result.stderr.strip().splitlines()[-1:]}")
    return seconds


def with_tui(store: Path, screen: str, out: Path, bench_args: list[str]) -> float:
    tui = subprocess.Popen(
        [sys.executable, "-c", TUI, str(store), screen],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=environment(),
    )
    try:
        assert tui.stdout is not None
        if tui.stdout.readline().strip() != "ready":
            raise SystemExit(f"the TUI did not start: {tui.communicate()[1][-400:]}")
        return timed_bench(store, out, bench_args)
    finally:
        tui.communicate("", timeout=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="dummy")
    parser.add_argument("--retrievers", default="none,bm25")
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--rounds", type=int, default=3)
    options = parser.parse_args()
    bench_args = ["--task", "LaMP_7", "--split", "dev", "--retrievers", options.retrievers]
    bench_args += ["--k", "1", "--backend", options.backend]
    if options.limit:
        bench_args += ["--limit", str(options.limit)]
    conditions = ("alone", "users", "runs")
    seconds: dict[str, list[float]] = {name: [] for name in conditions}
    with tempfile.TemporaryDirectory() as folder:
        demo = Path(folder) / "demo.duckdb"
        lampbox("data", "demo", "--db", str(demo))
        for round_number in range(options.rounds):
            for name in conditions:
                store = Path(folder) / f"{name}-{round_number}.duckdb"
                shutil.copy(demo, store)
                out = Path(folder) / f"out-{name}-{round_number}"
                if name == "alone":
                    took = timed_bench(store, out, bench_args)
                else:
                    took = with_tui(store, name, out, bench_args)
                seconds[name].append(took)
                print(f"round {round_number + 1} {name:5}: {took:6.2f} s", flush=True)
    print(f"\nlampbox bench {' '.join(bench_args)}  (median of {options.rounds} rounds)")
    alone = statistics.median(seconds["alone"])
    labels = {"alone": "alone", "users": "TUI open, users screen", "runs": "TUI open, runs screen"}
    for name in conditions:
        median = statistics.median(seconds[name])
        print(f"  {labels[name]:24} {median:6.2f} s   x{median / alone:.2f}")


if __name__ == "__main__":
    main()
