"""Classification with a small model: `--decode labels` against the raw generated output.

On commit_area dev (../shared/data/git-commits), runs the same grid twice with the real CLI,
`lampbox bench --decode generate` and `--decode labels` (no personalization, BM25 and recency
at k = 1 and 4, the retrieval-only baselines beside them), and prints accuracy and macro F1 of
both decodings side by side. Everything goes to a private store and LAMPBOX_HOME in the work
folder; re-running serves finished configurations from that store.

    .venv/bin/python benchmarks/bench_decode_labels.py [--limit N] [--backend llamacpp|hf]
        [--threads 1] [--work DIR]

The commands it runs, e.g. for --limit 90:

    lampbox data import ../shared/data/git-commits/commit_area --db WORK/commits.duckdb
    lampbox bench --task commit_area --split dev --backend llamacpp --threads 1 \\
        --retrievers none,bm25,recency --k 1,4 --limit 90 --decode labels --json --db WORK/commits.duckdb
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DATA = REPO.parent / "shared" / "data" / "git-commits"
LAMPBOX = [sys.executable, "-m", "lampbox"]


def lampbox(args: list[str], env: dict[str, str], log: Path) -> str:
    """Run a lampbox command; stderr goes to the log, stdout is returned."""
    started = time.perf_counter()
    with log.open("a") as handle:
        handle.write(f"\n$ lampbox {' '.join(args)}\n")
        handle.flush()
        result = subprocess.run([*LAMPBOX, *args], env=env, stdout=subprocess.PIPE, stderr=handle, text=True)
    print(f"  lampbox {' '.join(args[:2])} ... {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
    if result.returncode != 0:
        raise SystemExit(f"failed ({result.returncode}): lampbox {' '.join(args)}; see {log}")
    return result.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--limit", type=int, default=None, help="only the first N dev questions (186 in all)")
    parser.add_argument("--backend", default="llamacpp")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--work", type=Path, default=None, help="folder for the store, home and logs")
    options = parser.parse_args()
    work = options.work or Path(tempfile.mkdtemp(prefix="bench-decode-"))
    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "LAMPBOX_HOME": str(work / "home")}
    db, log = work / "commits.duckdb", work / "log.txt"
    if not db.exists():
        lampbox(["data", "import", str(DATA / "commit_area"), "--db", str(db)], env, log)
    grid = [
        "bench", "--task", "commit_area", "--split", "dev", "--backend", options.backend,
        "--threads", str(options.threads), "--retrievers", "none,bm25,recency", "--k", "1,4",
        "--out", str(work / "predictions"), "--json", "--db", str(db),
    ]  # fmt: skip
    if options.limit:
        grid += ["--limit", str(options.limit)]
    rows: dict[str, dict[str, dict]] = {}
    for decode in ("labels", "generate"):
        result = json.loads(lampbox([*grid, "--decode", decode], env, log))
        for row in result["rows"]:
            spec = row["spec"]
            name = "no personalization" if spec["k"] == 0 else f"{spec['retriever']} k={spec['k']}"
            column = "retrieval-only" if row["role"] == "retrieval-only" else decode
            rows.setdefault(name, {})[column] = row
    questions = options.limit or 186
    print(f"commit_area dev, first {questions} questions, {options.backend}:smollm2-135m-instruct; accuracy (macro F1)")
    columns = ("generate", "labels", "retrieval-only")
    print(f"{'configuration':<20}" + "".join(f"{name:>22}" for name in columns))
    for name, by_column in rows.items():
        cells = []
        for column in columns:
            metrics = by_column.get(column, {}).get("metrics")
            cells.append(f"{metrics['accuracy']:.3f} ({metrics['f1']:.3f})" if metrics else "-")
        print(f"{name:<20}" + "".join(f"{cell:>22}" for cell in cells))
    print(f"store: {db}; log: {log}")


if __name__ == "__main__":
    main()
