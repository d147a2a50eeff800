"""llama.cpp threads on a shared machine: 4 prompts at 1, 2, ... threads and at lampbox's
default, alone and beside competing busy processes (a Python busy loop each).

Each setting loads the model fresh (SmolLM2-135M-Instruct Q4_1 unless --model) and generates the
same 4 prompts (32 new tokens, greedy) --repeats times; the table shows the best and median
seconds per setting and their ratio to the best fixed thread count under the same load.

Run: .venv/bin/python benchmarks/bench_threads.py [--competitors 0,1] [--threads 1,2] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

PROMPTS = [
    "Write a one-line commit subject for: fix the off-by-one error in the pagination of search results.",
    "Summarize in one sentence: the store now opens read-only for commands that only read it.",
    "Give a short title for a tweet about running two benchmarks on one small machine.",
    "Write a one-line commit subject for: add a --threads option to the training command.",
]
BUSY_LOOP = "while True: pass"


def time_generation(model: str, threads: int, repeats: int) -> list[float]:
    from lampbox.engine.generation.base import GenerationParams
    from lampbox.engine.generation.llamacpp import LlamaCppGenerator

    generator = LlamaCppGenerator(model, threads=threads)
    params = GenerationParams(max_new_tokens=32)
    try:
        generator.generate(PROMPTS[:1], params)  # warm-up
        seconds = []
        for _ in range(repeats):
            started = time.perf_counter()
            generator.generate(PROMPTS, params)
            seconds.append(time.perf_counter() - started)
        return seconds
    finally:
        generator.close()


def main() -> None:
    from lampbox.engine.machine import default_threads, usable_cores

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="GGUF model (default: the manifest's default)")
    parser.add_argument("--threads", default=None, help="fixed thread counts (default: 1..usable cores)")
    parser.add_argument("--competitors", default="0,1", help="busy processes beside the generation")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    usable = usable_cores()
    fixed = [int(t) for t in args.threads.split(",")] if args.threads else list(range(1, usable + 1))
    default = default_threads()
    tui_default = default_threads(reserve=1)
    print(f"usable cores {usable}; default threads {default} (TUI {tui_default}); load {os.getloadavg()}")
    rows = []
    for competitors in (int(c) for c in args.competitors.split(",")):
        busy = [subprocess.Popen([sys.executable, "-c", BUSY_LOOP]) for _ in range(competitors)]
        try:
            results = {threads: time_generation(args.model, threads, args.repeats) for threads in fixed}
            if default not in results:
                results[default] = time_generation(args.model, default, args.repeats)
        finally:
            for process in busy:
                process.kill()
                process.wait()
        best_fixed = min(min(seconds) for seconds in results.values())
        for threads, seconds in sorted(results.items()):
            label = f"{threads}" + (" (default)" if threads == default else "")
            rows.append((competitors, label, min(seconds), statistics.median(seconds), min(seconds) / best_fixed))
        print(f"  measured with {competitors} competitor(s); load now {os.getloadavg()[0]:.2f}", flush=True)
    print(f"{'competitors':>11} {'threads':>12} {'best s':>8} {'median s':>9} {'vs best':>8}")
    for competitors, label, best, median, ratio in rows:
        print(f"{competitors:>11} {label:>12} {best:>8.2f} {median:>9.2f} {ratio:>7.2f}x")


if __name__ == "__main__":
    main()
