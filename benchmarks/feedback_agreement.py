"""Likelihood- against generate-feedback on the questions of a store (issue 26).

For a split's first --limit questions and their BM25 top --ctx-size items, this script computes
both kinds of ROPG feedback with one generator. Feedback already in the store is reused, under
the same keys `lampbox train ropg` uses, so it also fills the store for a later `train ropg
--feedback likelihood`. It prints how the likelihood orders each question's candidates against
the generate utilities: the mean Spearman correlation per question, and how often its most
likely item has the best generate utility. These are bench_ropg.py's measures, here at a
training run's size rather than on a fresh store.

    LAMPBOX_DB=/tmp/s17/q/home/lampbox.duckdb .venv/bin/python benchmarks/feedback_agreement.py \
        --task commit_subject --model smollm2-135m-instruct --dtype bfloat16 --limit 80 --ctx-size 20
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_ropg import agreement, cpu_flags, load_average  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", required=True)
    parser.add_argument("--model", default=None, help="The generator (default: the manifest's default).")
    parser.add_argument("--dtype", default=None, help="hf weight dtype (default: hf's).")
    parser.add_argument("--split", default="train")
    parser.add_argument("--limit", type=int, default=None, help="The split's first N questions (default: all).")
    parser.add_argument("--ctx-size", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=None, help="Feedback batch (default: train ropg's on hf).")
    parser.add_argument("--db", default=None, help="The store (default: $LAMPBOX_DB, else lampbox's).")
    args = parser.parse_args()

    from lampbox.engine.defaults import default_model
    from lampbox.engine.generation.pool import GeneratorPool
    from lampbox.lab.ropg import RopgSpec, collect_feedback
    from lampbox.paths import default_db_path
    from lampbox.store import Store

    model = args.model or default_model()
    print(f"CPU flags: {cpu_flags()}; load average {load_average()}", flush=True)
    pool = GeneratorPool()
    results = {}
    with Store(Path(args.db) if args.db else default_db_path()) as store:
        scheme = store.resolve_scheme(args.task, args.split)
        for feedback in ("generate", "likelihood"):
            spec = RopgSpec(
                task=args.task, scheme=scheme, split=args.split, ctx_size=args.ctx_size, feedback=feedback,
                backend="hf", model=model, dtype=args.dtype, limit=args.limit,
            )  # fmt: skip
            started = time.perf_counter()
            results[feedback] = result = collect_feedback(spec, store, args.split, args.limit, generators=pool, batch_size=args.batch_size)
            pairs = sum(len(items) for items in result.candidates)
            print(f"{feedback}: {len(result.questions)} questions, {pairs} pairs, {result.computed_questions} questions computed now, "
                  f"{time.perf_counter() - started:.1f} s", flush=True)  # fmt: skip
    pool.close()
    print(f"likelihood vs generate ({args.task} {args.split}, hf:{model} {args.dtype or ''}, ctx {args.ctx_size}): "
          f"{agreement(results['likelihood'], results['generate'])}; load average {load_average()}")  # fmt: skip


if __name__ == "__main__":
    main()
