"""RSPG: the selector's inference overhead on a bench over its pool (Post) and Pre's
generations per question.

On commit_subject (the stand-in data; --task commit_area too), with the pool none, bm25 k=1,
recency k=1 on --backend (default llamacpp, the default model) plus the model-free bm25 and
recency top-1 rows:
1. the pool's bench on --train train questions; RSPG-Post and RSPG-Pre selectors trained on
   it for --steps steps (the packaged all-MiniLM-L6-v2, --max-length tokens);
2. Pre first, on a copy of the store where no dev answer exists yet: the bench of the
   rspg-pre row alone on --dev dev questions (its generations counted, its seconds);
3. the pool's bench on the same dev questions (every configuration generated: the reference);
4. the rspg-post row on it (the pool served from the store): the selector's inference seconds
   and the whole row's seconds, as a % of the pool's bench.
Then each selection against no personalization and the best single configuration, with the
oracle and the success rate (a smoke check at these sizes, not the issue's quality table).

    .venv/bin/python benchmarks/bench_rspg.py [--task commit_subject] [--train 32] [--dev 32] [--steps 8]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DATA = REPO.parent / "shared" / "data" / "git-commits"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="commit_subject")
    parser.add_argument("--backend", default="llamacpp")
    parser.add_argument("--model", default=None)
    parser.add_argument("--train", type=int, default=32)
    parser.add_argument("--dev", type=int, default=32)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--no-baselines", dest="baselines", action="store_false", help="A pool of model configurations only.")
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="bench-rspg-"))
    os.environ["LAMPBOX_HOME"] = str(home)
    from lampbox.bench.plan import SELECTION, Configuration, Plan
    from lampbox.bench.runner import BenchSpec, run_bench
    from lampbox.engine.defaults import default_max_new_tokens, default_model
    from lampbox.engine.generation.base import GenerationParams
    from lampbox.engine.generation.pool import GeneratorPool
    from lampbox.engine.training.trainer import TrainConfig
    from lampbox.lab.rspg import RSPGSpec, train_selector
    from lampbox.lab.specs import RunSpec
    from lampbox.store import Store
    from lampbox.store.importer import import_path

    path = home / "bench.duckdb"
    store = Store(path)
    import_path(store, DATA / args.task)
    task = store.task(args.task)
    scheme = store.resolve_scheme(args.task, "train")
    generators = GeneratorPool()

    def grid(split: str, limit: int, selectors: tuple[str, ...] = ()) -> BenchSpec:
        return BenchSpec(
            args.task, scheme, split, ("none", "bm25", "recency"), (1,), (args.backend,), model=args.model or default_model(),
            params=GenerationParams(max_new_tokens=default_max_new_tokens(task)), limit=limit, baselines=args.baselines,
            selectors=selectors,
        )  # fmt: skip

    started = time.perf_counter()
    train = run_bench(grid("train", args.train), store, generators=generators)
    print(f"train pool bench: {len(train.rows)} configurations x {args.train} questions in {time.perf_counter() - started:.1f} s")
    config = TrainConfig(epochs=20, lr=1e-5, batch_size=8, lora=None, precision="fp32", group_by_length=False, max_steps=args.steps)
    for mode in ("pre", "post"):
        started = time.perf_counter()
        spec = RSPGSpec(args.task, train.bench_key, None, mode, max_length=args.max_length, config=config)
        train_selector(spec, store, f"bench-{mode}")
        print(f"RSPG-{mode.capitalize()} selector: {args.steps} steps in {time.perf_counter() - started:.1f} s")
    store.close()

    # 2. Pre where no dev answer exists yet
    pre_path = home / "pre.duckdb"
    shutil.copy(path, pre_path)
    with Store(pre_path) as pre_store:
        pre_spec = RunSpec(args.task, scheme, "dev", method="rspg-pre", selector="bench-pre", limit=args.dev)
        started = time.perf_counter()
        pre_bench = run_bench(Plan(args.task, scheme, "dev", (Configuration(pre_spec, SELECTION),), args.dev, reference=0), pre_store, generators=generators)
        pre_seconds = time.perf_counter() - started
    pre = pre_bench.rows[0].record
    free = sum(p.prompt is None for p in pre.predictions)  # a model-free row chosen: nothing to generate
    print(f"RSPG-Pre bench ({args.dev} dev questions): {pre.generated} generated + {pre.cached} cached answers "
          f"({(pre.generated + pre.cached) / args.dev:.2f} generations per question), {free} model-free picks, "
          f"{pre_seconds:.1f} s")  # fmt: skip

    # 3. the pool's bench on dev, 4. the rspg-post row on it
    with Store(path) as dev_store:
        started = time.perf_counter()
        dev = run_bench(grid("dev", args.dev), dev_store, generators=generators)
        pool_seconds = time.perf_counter() - started
        started = time.perf_counter()
        both = run_bench(grid("dev", args.dev, ("rspg-post:bench-post", "rspg-pre:bench-pre")), dev_store, generators=generators)
        rows_seconds = time.perf_counter() - started
    generators.close()
    post = both.rows[-2].record
    selection = post.selection
    assert selection is not None
    print(f"dev pool bench: {len(dev.rows)} configurations x {args.dev} questions in {pool_seconds:.1f} s (reference)")
    print(f"RSPG-Post selector inference: {selection.selector_seconds:.2f} s = {100 * selection.selector_seconds / pool_seconds:.1f}% of the pool bench "
          f"(target <= 5%); the rspg rows with the pool served from the store: {rows_seconds:.1f} s = {100 * rows_seconds / pool_seconds:.1f}%")  # fmt: skip
    main_metric = task.main_metric
    print(f"\n{main_metric} on {args.dev} dev questions (paired randomization test p):")
    print(f"  {'configuration':<44} {main_metric:>8}")
    for row in dev.rows:
        print(f"  {row.record.label:<44} {row.record.metrics.get(main_metric, float('nan')):>8.4f}")
    for row in both.rows[-2:]:
        data = row.record.selection.to_json()
        baseline, best = data["vs_no_personalization"], data["vs_best_single"]
        print(
            f"  {data['label']:<44} {data['metrics'].get(main_metric, float('nan')):>8.4f}  "
            f"vs none {_change(baseline)}; vs best single ({best['label']}) {_change(best)}; "
            f"oracle {data['oracle'].get(main_metric, float('nan')):.4f}; success rate {data['success_rate']:.3f}"
        )
    shutil.rmtree(home, ignore_errors=True)


def _change(compared: dict) -> str:
    change = compared["relative_change"]
    return ("-" if change is None else f"{change * 100:+.1f}%") + f" p={compared['p_value']:.3f}"


if __name__ == "__main__":
    main()
