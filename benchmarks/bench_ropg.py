"""ROPG: feedback throughput against a reference loop, and the trained retrievers' dev ranking.

On commit_subject (the stand-in data; --task commit_area too):
1. feedback of --train questions x --ctx-size items: lampbox's batched, cached path
   (collect_feedback) against a reference loop on the same (question, item) pairs (one prompt
   per call, batch 1, no cache), with the same generator; the utilities must be identical
   (greedy decoding);
2. ROPG-KD and ROPG-RL trained --steps steps on that feedback;
3. on --dev questions' feedback: NDCG of the utilities and utility@1 (IPA's metric at k = 1
   among the candidates, from the feedback alone) of the base bm25 order, dense (the untrained
   encoder), ropg-kd and ropg-rl.

    .venv/bin/python benchmarks/bench_ropg.py [--backend llamacpp] [--model M] [--train 16] [--dev 16]
        [--ctx-size 5] [--steps 20]

Figures at these sizes are a smoke check, not the issue's quality table.
"""

from __future__ import annotations

import argparse
import os
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
    parser.add_argument("--train", type=int, default=16)
    parser.add_argument("--dev", type=int, default=16)
    parser.add_argument("--ctx-size", type=int, default=5)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--lr", type=float, default=1e-5)
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="bench-ropg-"))
    os.environ["LAMPBOX_HOME"] = str(home)
    from lampbox.engine.defaults import default_max_new_tokens, default_model
    from lampbox.engine.generation.base import GenerationParams
    from lampbox.engine.generation.pool import GeneratorPool
    from lampbox.engine.methods import get_method
    from lampbox.engine.retrieval import create_retriever
    from lampbox.engine.ropg.feedback import UtilityScorer
    from lampbox.engine.ropg.objective import ranking_metrics
    from lampbox.lab.ropg import RopgSpec, collect_feedback, ropg_config, train_ropg
    from lampbox.store import Store
    from lampbox.store.importer import import_path

    store = Store(home / "bench.duckdb")
    import_path(store, DATA / args.task)
    scheme = store.resolve_scheme(args.task, "train")
    model = args.model or default_model()
    pool = GeneratorPool()

    def spec(method: str) -> RopgSpec:
        return RopgSpec(
            task=args.task, scheme=scheme, method=method, ctx_size=args.ctx_size, backend=args.backend, model=model,
            limit=args.train, dev_limit=args.dev, config=ropg_config(lr=args.lr, max_steps=args.steps, batch_size=4),
        )  # fmt: skip

    # 1. feedback: lampbox against the reference loop
    task = store.task(args.task)
    generator = pool.get(args.backend, model)
    started = time.perf_counter()
    train = collect_feedback(spec("kd"), store, "train", args.train, generators=pool)
    lampbox_s = time.perf_counter() - started
    pairs = sum(len(items) for items in train.candidates)
    params = GenerationParams(max_new_tokens=default_max_new_tokens(task))
    prepare = get_method("ipa").preparer(task, generator, params, 512)
    score = UtilityScorer(task)
    started = time.perf_counter()
    same = 0
    for question, items in zip(train.questions, train.candidates, strict=True):
        for item in items:
            output = generator.generate([prepare(question, [item]).request], params)[0]
            same += score(output, question.gold or "") == train.feedback[question.id].utility(item.key)
    reference_s = time.perf_counter() - started
    print(f"feedback, {pairs} (question, item) pairs, {args.backend}:{model}")
    print(f"  reference loop (batch 1, no cache): {reference_s:8.1f} s  {pairs / reference_s:6.2f} pairs/s")
    print(f"  lampbox (batched, cached)         : {lampbox_s:8.1f} s  {pairs / lampbox_s:6.2f} pairs/s  x{reference_s / lampbox_s:.2f}")
    print(f"  identical utilities: {same}/{pairs}")

    # 2. training, 3. dev ranking
    trained = {}
    for method in ("kd", "rl"):
        artifact, result = train_ropg(spec(method), store, f"bench-{method}", generators=pool)
        assert artifact is not None  # one process: the store's
        trained[method] = f"ropg:{artifact.name}"
        print(f"ropg-{method}: {result.steps} steps in {result.seconds:.0f} s")
    dev = collect_feedback(spec("kd"), store, "dev", args.dev, generators=pool)
    print(f"dev ranking of the candidates ({len(dev.questions)} questions, ctx {args.ctx_size}):")
    for label, name in [("bm25 (base order)", "bm25"), ("dense (untrained)", "dense"), ("ropg-kd", trained["kd"]), ("ropg-rl", trained["rl"])]:
        retriever = create_retriever(name) if name != "dense" else create_retriever("dense", use_date=True)
        scored = []
        for question, items in zip(dev.questions, dev.candidates, strict=True):
            feedback = dev.feedback.get(question.id)
            if feedback is None or len(items) < 2:
                continue
            ranking = retriever.rank(task, [question])[0]
            position = {key: rank for rank, key in enumerate(ranking.item_keys)}
            scores = [-position[item.key] for item in items]
            scored.append((scores, [feedback.utility(item.key) or 0.0 for item in items]))
        metrics = ranking_metrics(scored)
        print(f"  {label:20s} ndcg {metrics['ndcg']:.4f}  utility@1 {metrics['utility_at_1']:.4f}")


if __name__ == "__main__":
    main()
