"""Import every git-commits stand-in file into a fresh store, then re-import them.

Targets (issue 2): <= 15 s for the first import, <= 2 s for the re-import, on 2 cores.
Run: .venv/bin/python benchmarks/bench_import.py [--data ../shared/data/git-commits]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from lampbox.store import Store
from lampbox.store.importer import import_path

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "git-commits"


def import_all(store: Store, data: Path) -> tuple[float, list[str]]:
    start = time.perf_counter()
    statuses = []
    for folder in sorted(path for path in data.iterdir() if (path / "task.json").exists()):
        report = import_path(store, folder)
        statuses += [f"{report.task}/{split.split}:{split.status}" for split in report.splits]
    return time.perf_counter() - start, statuses


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    args = parser.parse_args()
    files = list(args.data.rglob("*.json"))
    megabytes = sum(path.stat().st_size for path in files) / 1e6
    with tempfile.TemporaryDirectory() as folder, Store(Path(folder) / "bench.duckdb") as store:
        first, statuses = import_all(store, args.data)
        assert all(status.endswith("imported") for status in statuses), statuses
        second, statuses = import_all(store, args.data)
        assert all(status.endswith("unchanged") for status in statuses), statuses
        summaries = store.datasets()
    print(f"data: {args.data} ({len(files)} files, {megabytes:.1f} MB)")
    print(f"stored: {sum(s.questions for s in summaries)} questions in {len(summaries)} splits")
    print(f"first import into a fresh store: {first:6.2f} s   (target <= 15 s)")
    print(f"re-import of the same files:     {second:6.2f} s   (target <=  2 s)")


if __name__ == "__main__":
    main()
