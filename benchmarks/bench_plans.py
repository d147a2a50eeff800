"""A plan bench end to end: one run from scratch, a kill -9 and resume, and a re-run served from
the store, on commit_subject dev (../shared/data/git-commits).

The plan has 8 configurations over the 3 methods lampbox has (ipa, fid, retrieval-only): IPA
without retrieval and with BM25 k=4, recency k=2 and BM25 k=1; FiD with BM25 k=4 and recency
k=4; retrieval-only BM25 and recency top-1. Prints the wall time of each command (a fresh
process: start-up, fingerprints and store reads included) and the bench's own time (the sum of
its rows' seconds), the ratios of the fresh run to the re-run, and whether the resumed table is
the uninterrupted one.

    .venv/bin/python benchmarks/bench_plans.py [--backend dummy|llamacpp] [--limit N] [--work DIR]

--backend llamacpp: the IPA rows on the default GGUF model (llama.cpp), the FiD rows on the fid
backend with the untrained offline minilm-bert2bert base (it runs; its outputs are no measurement).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DATA = REPO.parent / "shared" / "data" / "git-commits" / "commit_subject"
LAMPBOX = [sys.executable, "-m", "lampbox"]


def plan_text(backend: str, limit: int | None) -> str:
    ipa = 'method = "ipa"\nmodel = "smollm2-135m-instruct"\n' + f'backend = "{backend}"\n'
    fid = 'method = "fid"\nmodel = "minilm-bert2bert"\n' + f'backend = "{"dummy" if backend == "dummy" else "fid"}"\n'
    rows = [
        ('label = "zero-shot"\n' + ipa),
        ('label = "IPA BM25 k=4"\n' + ipa + 'retriever = "bm25"\nk = 4\n'),
        (ipa + 'retriever = "recency"\nk = 2\n'),
        (ipa + 'retriever = "bm25"\nk = 1\n'),
        ('label = "FiD BM25 k=4"\n' + fid + 'retriever = "bm25"\nk = 4\n'),
        (fid + 'retriever = "recency"\nk = 4\n'),
        ('method = "retrieval-only"\nretriever = "bm25"\nk = 1\n'),
        ('method = "retrieval-only"\nretriever = "recency"\nk = 1\n'),
    ]
    header = 'task = "commit_subject"\nsplit = "dev"\nreference = "zero-shot"\n' + (f"limit = {limit}\n" if limit else "")
    return header + "".join(f"\n[[configurations]]\n{row}" for row in rows)


def bench(plan: Path, db: Path, out: Path, env: dict[str, str]) -> tuple[float, dict]:
    started = time.perf_counter()
    result = subprocess.run([*LAMPBOX, "bench", "--plan", str(plan), "--db", str(db), "--out", str(out), "--json"],
                            env=env, capture_output=True, text=True)  # fmt: skip
    if result.returncode != 0:
        raise SystemExit(result.stderr[-2000:])
    return time.perf_counter() - started, json.loads(result.stdout)


def killed_at(plan: Path, db: Path, out: Path, env: dict[str, str], marker: str) -> float:
    """Run the bench and kill -9 it when a progress line contains `marker`; the seconds it ran."""
    started = time.perf_counter()
    process = subprocess.Popen([*LAMPBOX, "bench", "--plan", str(plan), "--db", str(db), "--out", str(out), "--json"],
                               env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip
    assert process.stderr is not None
    for line in process.stderr:
        if marker in line:
            os.kill(process.pid, signal.SIGKILL)
            break
    process.wait()
    if process.returncode != -signal.SIGKILL:
        raise SystemExit(f"the bench was not killed at {marker!r} (exit {process.returncode})")
    return time.perf_counter() - started


def table(data: dict) -> list[tuple]:
    return [(r["label"], r["run_key"], r["metrics"], r["p_value"]) for r in data["rows"]]


def bench_seconds(data: dict) -> float:
    return sum(row["seconds"] for row in data["rows"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", choices=["dummy", "llamacpp"], default="dummy")
    parser.add_argument("--limit", type=int, default=None, help="dev questions (default: all 570)")
    parser.add_argument("--work", default=None)
    args = parser.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="lampbox-plans-"))
    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "LAMPBOX_HOME": str(work / "home")}
    plan = work / "plan.toml"
    plan.write_text(plan_text(args.backend, args.limit))
    fresh_db, killed_db = work / "fresh.duckdb", work / "killed.duckdb"
    subprocess.run([*LAMPBOX, "data", "import", str(DATA), "--db", str(fresh_db)], env=env, check=True, capture_output=True)
    shutil.copy(fresh_db, killed_db)
    n = args.limit or 570
    print(f"work folder {work}; plan {plan}: 8 configurations, {n} questions, backend {args.backend}", flush=True)

    # The fingerprints (GGUF, the offline FiD base) are hashed once per lampbox home: a warm-up
    # bench on a throwaway copy keeps that out of the timed runs.
    warm_db = work / "warm.duckdb"
    shutil.copy(fresh_db, warm_db)
    warm_plan = work / "warm.toml"
    warm_plan.write_text(plan_text(args.backend, 1))
    bench(warm_plan, warm_db, work / "warm", env)

    fresh_wall, fresh = bench(plan, fresh_db, work / "fresh", env)
    print(f"fresh:    {fresh_wall:8.2f} s wall, bench {bench_seconds(fresh):8.2f} s", flush=True)
    done = max(8, min(16, n // 2 // 8 * 8))  # progress comes per batch of 8
    killed_wall = killed_at(plan, killed_db, work / "killed", env, f"[5/8] FiD BM25 k=4: generate {done}/")
    resumed_wall, resumed = bench(plan, killed_db, work / "killed", env)
    same = table(resumed) == table(fresh)
    print(f"killed:   {killed_wall:8.2f} s in (configuration 5 of 8, generating); resumed {resumed_wall:.2f} s wall;"
          f" table identical to the fresh run: {same}", flush=True)  # fmt: skip
    again_wall, again = bench(plan, fresh_db, work / "fresh", env)
    served = all(row["from_store"] for row in again["rows"]) and table(again) == table(fresh)
    print(f"re-run:   {again_wall:8.2f} s wall, bench {bench_seconds(again):8.2f} s; every row from the store: {served}")
    print(f"ratio fresh / re-run: {fresh_wall / again_wall:.1f}x wall (whole commands), "
          f"{bench_seconds(fresh) / bench_seconds(again):.1f}x the bench's own time")  # fmt: skip
    if not (same and served):
        raise SystemExit("the resumed or re-run table differs")


if __name__ == "__main__":
    main()
