"""Retrieval speed: the reference-style loop vs lampbox, cold and warm, side by side.

Ranks commit_subject dev (the stand-in data) with each retriever. The reference loop builds a
rank_bm25 index per question, and re-encodes each question's whole profile with
sentence-transformers (model loaded once, which is kinder than the reference that reloads it
per question); the dense reference runs on --reference-questions questions drawn at random
(seeded) and is extrapolated to all of them by profile slots (its docs/s times the 40,185
slots; the output says so). A last row runs dense with the opt-in dtype=bfloat16 and says how
many of its rankings equal the fp32 ones.

    .venv/bin/python benchmarks/bench_retrieval.py [--reference-questions 40] [--skip-dense]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
DATA = REPO.parent / "shared" / "data" / "git-commits" / "commit_subject"


def build_store(folder: Path) -> Path:
    from lampbox.store import Store
    from lampbox.store.importer import import_path

    path = folder / "bench.duckdb"
    with Store(path) as store:
        import_path(store, DATA)
    return path


def clear_process_caches() -> None:
    """Forget every in-process cache (tokens, texts, vectors, models): a cold start."""
    from lampbox.engine.retrieval.memory import RETRIEVAL_MEMORY

    RETRIEVAL_MEMORY.clear()


def reference_bm25(task, questions) -> tuple[float, list[list[str]]]:
    from rank_bm25 import BM25Okapi

    start = time.perf_counter()
    orders = []
    for question in questions:
        profile = list(question.profile)
        corpus = [task.document_text(item.fields) for item in profile]
        index = BM25Okapi([text.split() for text in corpus])
        ranked = index.get_top_n(task.query(question.input).split(), profile, n=len(profile))
        orders.append([item.key for item in ranked])
    return time.perf_counter() - start, orders


def reference_dense(task, questions, model) -> tuple[float, list[list[str]]]:
    start = time.perf_counter()
    orders = []
    for question in questions:
        corpus = [task.document_text(item.fields) for item in question.profile]
        documents = model.encode(corpus, convert_to_numpy=True, show_progress_bar=False)
        query = model.encode(
            [task.query(question.input)], convert_to_numpy=True, show_progress_bar=False
        )[0]
        scores = documents @ query
        orders.append([question.profile[i].key for i in np.argsort(-scores, kind="stable")])
    return time.perf_counter() - start, orders


def timed(function):
    start = time.perf_counter()
    result = function()
    return time.perf_counter() - start, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference-questions", type=int, default=40)
    parser.add_argument("--skip-dense", action="store_true")
    args = parser.parse_args()

    from lampbox.engine.retrieval import create_retriever
    from lampbox.lab.ranking import rank_stored as rank_questions  # the store as the cache
    from lampbox.store import Store

    folder = Path(tempfile.mkdtemp(prefix="lampbox-bench-"))
    store = Store(build_store(folder))
    task = store.task("commit_subject")
    scheme = store.resolve_scheme(task.name, "dev")
    questions = store.questions(task.name, scheme, "dev")
    slots = sum(len(q.profile) for q in questions)
    distinct = len({i.key for q in questions for i in q.profile})
    print(f"commit_subject {scheme} dev: {len(questions)} questions, {slots} profile slots, "
          f"{distinct} distinct items")  # fmt: skip

    contestants: list[tuple[str, str, dict]] = [
        (name, name, {}) for name in ("bm25", "bm25-fast", "recency", "random", "none")
    ]
    if not args.skip_dense:
        contestants.append(("dense", "dense", {}))
        # Opt-in bf16 (not the fp32 vectors): how much faster, and how far the rankings move.
        contestants.append(("dense bf16", "dense", {"dtype": "bfloat16"}))
    rows = []
    reference_bm25_s, reference_orders = reference_bm25(task, questions)
    estimate, fp32_rankings = 0.0, []
    for label, name, options in contestants:
        clear_process_caches()
        retriever = create_retriever(name, **options)
        note = ""
        if name == "dense":
            retriever.encoder()  # load the model outside the timings (the reference gets it free too)
        cold, rankings = timed(lambda r=retriever: rank_questions(store, task, questions, r))
        warm, served = timed(lambda r=retriever: rank_questions(store, task, questions, r))
        rerank, recomputed = timed(
            lambda r=retriever: rank_questions(store, task, questions, r, recompute=True)
        )
        assert [s.item_keys for s in served] == [r.item_keys for r in rankings]
        reference = ""
        if name in ("bm25", "bm25-fast"):
            reference = f"{reference_bm25_s:.2f}"
            cold_ratio = f"{reference_bm25_s / cold:.1f}x"
            warm_ratio = f"{reference_bm25_s / warm:.0f}x"
            if name == "bm25":
                same = sum(
                    list(r.item_keys) == o for r, o in zip(rankings, reference_orders, strict=False)
                )
                note = f"identical rankings: {same}/{len(questions)}"
        elif label == "dense bf16":
            cold_ratio = f"{estimate / cold:.1f}x"
            warm_ratio = f"{estimate / warm:.0f}x"
            pairs = list(zip(rankings, fp32_rankings, strict=True))
            same = sum(a.item_keys == b.item_keys for a, b in pairs)
            top1 = sum(a.item_keys[:1] == b.item_keys[:1] for a, b in pairs)
            top4 = sum(set(a.item_keys[:4]) == set(b.item_keys[:4]) for a, b in pairs)
            note = (
                f"vs fp32 dense: identical rankings {same}/{len(pairs)}, same top-1 {top1}, "
                f"same top-4 set {top4} (not float noise: an opt-in, not the target)"
            )
        elif name == "dense":
            import random

            from sentence_transformers import SentenceTransformer

            from lampbox.engine.retrieval.dense import packaged_model_path

            model = SentenceTransformer(packaged_model_path(), device="cpu")
            chosen = sorted(random.Random(0).sample(range(len(questions)), args.reference_questions))
            sample = [questions[i] for i in chosen]
            seconds, orders = reference_dense(task, sample, model)
            sample_slots = sum(len(q.profile) for q in sample)
            estimate = seconds / sample_slots * slots
            reference = f"{estimate:.1f} (est.)"
            cold_ratio = f"{estimate / cold:.1f}x"
            warm_ratio = f"{estimate / warm:.0f}x"
            fp32_rankings = rankings
            by_id = {r.question_id: r for r in rankings}
            same = sum(list(by_id[q.id].item_keys) == o for q, o in zip(sample, orders, strict=False))
            note = (
                f"reference: {len(sample)} random questions, {sample_slots} slots in {seconds:.1f} s "
                f"({sample_slots / seconds:.0f} docs/s), extrapolated to {slots} slots; lampbox cold "
                f"{distinct / cold:.0f} distinct docs/s on {retriever.encoder().runtime}; "
                f"identical rankings on the sample: {same}/{len(sample)}"
            )
        else:
            cold_ratio = warm_ratio = "-"
        rows.append((label, reference, cold, cold_ratio, warm, warm_ratio, rerank, note))
        del recomputed

    print()
    header = ("retriever", "reference s", "cold s", "vs ref", "warm s", "vs ref", "re-rank s", "")
    print("{:<10} {:>16} {:>8} {:>7} {:>8} {:>7} {:>10}  {}".format(*header))
    for name, reference, cold, cold_ratio, warm, warm_ratio, rerank, note in rows:
        print(f"{name:<10} {reference:>16} {cold:>8.2f} {cold_ratio:>7} {warm:>8.3f} "
              f"{warm_ratio:>7} {rerank:>10.2f}  {note}")  # fmt: skip
    print(
        "cold: empty store and no in-process caches; warm: stored rankings served; "
        "re-rank: rankings recomputed with warm caches (embeddings and tokens)."
    )

    # One question re-ranked live (what the TUI does), every retriever warm.
    question = questions[0]
    live = ["bm25", "bm25-fast", "recency"] + ([] if args.skip_dense else ["dense"])
    def rerank_live():
        return [
            rank_questions(store, task, [question], create_retriever(n), recompute=True)
            for n in live
        ]

    rerank_live()  # warm: models loaded, the question's texts tokenized and embedded
    seconds, _ = timed(rerank_live)
    print(f"one question re-ranked live by {len(live)} retrievers: {seconds * 1000:.0f} ms")
    store.close()
    shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
