"""ROPG: feedback throughput against a reference loop, and the trained retrievers' dev ranking.

On commit_subject (--task commit_area too), --train questions x their --ctx-size BM25 items:
1. feedback of those (question, item) pairs, on the prompts lampbox's feedback builds (IPA,
   k = 1, the feedback's 512-token budget):
   - the reference loop (issue 26's, as bench_generation.py's): plain transformers generate,
     float32, batch 1, greedy, one prompt per call (benchmarks/reference_generate.py);
   - lampbox's collect_feedback on the hf backend, each contestant in a fresh copy of the
     store (nothing cached): (a) float32 at each --batch-size (its utilities are counted
     against the reference's: greedy decoding should give the same ones), (b) at the dtype
     `--backend auto` picks on this CPU (bfloat16 with AMX or AVX512-BF16), at the first
     --batch-size, its utilities equal to the reference's counted, (c) --feedback likelihood
     (float32, one forward pass per pair, no generation): its time and its agreement with the
     float32 generate-feedback: the mean Spearman rank correlation of the utilities per
     question (questions whose generate utilities are all equal have no order and are left
     out) and how often its top item is a top item of generate-feedback; (d) where auto picks
     bfloat16, --feedback likelihood in bfloat16 too: its time, its agreement with the float32
     generate-feedback and with the float32 likelihood.
   Model loads are not timed; lampbox's seconds are the whole collect_feedback call (questions
   and candidates from stored BM25 rankings, prompts, generation, scoring, storing).
2. ROPG-KD and ROPG-RL trained --steps steps on the float32 feedback (--skip-training: not);
3. on --dev questions' feedback: NDCG of the utilities and utility@1 (IPA's metric at k = 1
   among the candidates, from the feedback alone) of the base bm25 order, dense (the untrained
   encoder), ropg-kd and ropg-rl.

    .venv/bin/python benchmarks/bench_ropg.py [--model M] [--train 16] [--dev 16] [--ctx-size 5]
        [--batch-size 8,16,32] [--threads N] [--steps 20] [--skip-training]

Figures at these sizes are a smoke check, not the issue's quality table.
"""

from __future__ import annotations

import argparse
import atexit
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from reference_generate import reference_loop  # noqa: E402

DATA = HERE.parents[1] / "shared" / "data" / "git-commits"


def cpu_flags() -> str:
    """The CPU's AVX-512 and AMX flags (what decides fp32 against bf16 speed)."""
    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    return " ".join(sorted(set(re.findall(r"\b(avx512[a-z_0-9]*|amx[a-z_0-9]*)\b", text)))) or "none"


def load_average() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def agreement(likelihood: Any, generated: Any, reference: str = "generate") -> str:
    """How the likelihood utilities order each question's candidates against generate-feedback:
    the mean Spearman correlation per question, and how often the most likely item is a top
    item by generate utility (over questions whose generate utilities are not all equal)."""
    from scipy.stats import spearmanr

    correlations: list[float] = []
    top_agrees = ordered = 0
    for question, items in zip(generated.questions, generated.candidates, strict=True):
        generate = [generated.feedback[question.id].utility(item.key) for item in items]
        scored = [likelihood.feedback[question.id].utility(item.key) for item in items]
        if len(set(generate)) < 2:
            continue  # every item equally useful: no order to agree with
        ordered += 1
        rho = float(spearmanr(generate, scored).statistic)
        if rho == rho:  # not NaN (constant likelihoods)
            correlations.append(rho)
        top_agrees += generate[scored.index(max(scored))] == max(generate)
    if not ordered:
        return "no question's generate utilities order its items: no agreement to measure"
    mean = sum(correlations) / len(correlations) if correlations else float("nan")
    return (
        f"Spearman {mean:.3f} (mean over {len(correlations)} of {len(generated.questions)} questions; the others' "
        f"{reference} utilities are all equal); top item agrees {top_agrees}/{ordered}"
    )


def main() -> None:
    from lampbox.engine.defaults import feedback_batch_size

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="commit_subject")
    parser.add_argument("--model", default=None)
    parser.add_argument("--train", type=int, default=16)
    parser.add_argument("--dev", type=int, default=16)
    parser.add_argument("--ctx-size", type=int, default=5)
    parser.add_argument("--batch-size", default=str(feedback_batch_size("hf")), help="Feedback batch sizes of the float32 runs, comma-separated (the first for the others; default: train ropg's on hf).")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads of every contestant (default: lampbox's default).")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--lr", type=float, default=1e-5)
    parser.add_argument("--reference-dtype", choices=["float32", "bfloat16"], default="float32", help="The reference loop's weights (float32: the issue's reference; bfloat16: batch 1 at the dtype auto picks, so utilities compare at one dtype).")
    parser.add_argument("--prefill-floor", action="store_true", help="Also time the reference loop with 1 new token: its prompt passes alone, the part of the reference that batching the decoding cannot shrink.")
    parser.add_argument("--skip-training", action="store_true", help="Only the feedback comparison (section 1).")
    args = parser.parse_args()
    batch_sizes = [int(size) for size in args.batch_size.split(",")]

    work = Path(tempfile.mkdtemp(prefix="bench-ropg-"))
    atexit.register(shutil.rmtree, work, True)  # its stores and scratch: gone when the process ends
    os.environ.setdefault("LAMPBOX_HOME", str(work / "home"))  # set it to reuse converted models
    from lampbox.bench.planfile import auto_backend
    from lampbox.engine.defaults import default_max_new_tokens, default_model
    from lampbox.engine.generation.base import GenerationParams
    from lampbox.engine.generation.pool import GeneratorPool
    from lampbox.engine.machine import default_threads, this_machine
    from lampbox.engine.methods import get_method
    from lampbox.engine.retrieval import create_retriever
    from lampbox.engine.ropg.feedback import UtilityScorer
    from lampbox.engine.ropg.objective import ranking_metrics
    from lampbox.lab.ropg import (
        FEEDBACK_MAX_LENGTH,
        RopgSpec,
        candidate_items,
        collect_feedback,
        ropg_config,
        train_ropg,
    )
    from lampbox.store import Store
    from lampbox.store.importer import import_path

    model = args.model or default_model()
    threads = args.threads or default_threads()
    auto = auto_backend(model, "ipa")
    print(f"machine: {this_machine().describe()}; CPU flags: {cpu_flags()}; load average {load_average()}; {threads} threads")
    print(auto.line(), flush=True)

    seed = work / "seed.duckdb"
    with Store(seed) as store:  # the data and the BM25 rankings every contestant's copy starts from
        import_path(store, DATA / args.task)
        scheme = store.resolve_scheme(args.task, "train")
        task = store.task(args.task)
        questions = [q for q in store.questions(task.name, scheme, "train", limit=args.train) if q.gold is not None]
        candidates = candidate_items(store, task, questions, "bm25", args.ctx_size)
    pairs = sum(len(items) for items in candidates)

    def spec(method: str = "kd", feedback: str = "generate", dtype: str | None = None) -> RopgSpec:
        return RopgSpec(
            task=task.name, scheme=scheme, method=method, ctx_size=args.ctx_size, feedback=feedback, backend="hf",
            model=model, dtype=dtype, limit=args.train, dev_limit=args.dev,
            config=ropg_config(lr=args.lr, max_steps=args.steps, batch_size=4),
        )  # fmt: skip

    def lampbox_feedback(label: str, batch_size: int, feedback: str = "generate", dtype: str | None = None) -> tuple[float, Any, Path]:
        """collect_feedback in a fresh copy of the seed store, its generator loaded beforehand."""
        run = spec(feedback=feedback, dtype=dtype)
        pool = GeneratorPool({"hf": {"batch_size": batch_size, "threads": threads}})
        pool.get("hf", model, run.model_options)
        path = work / f"{label}.duckdb"
        shutil.copy(seed, path)
        with Store(path) as store:
            started = time.perf_counter()
            result = collect_feedback(run, store, "train", args.train, generators=pool, batch_size=batch_size)
            seconds = time.perf_counter() - started
        pool.close()
        print(f"{label}: {seconds:.1f} s", flush=True)
        return seconds, result, path

    # 1. the reference loop on lampbox's feedback prompts
    params = GenerationParams(max_new_tokens=default_max_new_tokens(task))
    prompt_pool = GeneratorPool({"hf": {"threads": threads}})
    prepare = get_method("ipa").preparer(task, prompt_pool.get("hf", model), params, FEEDBACK_MAX_LENGTH)
    prompts = [prepare(question, [item]).request.prompt for question, items in zip(questions, candidates, strict=True) for item in items]
    prompt_pool.close()
    print(f"feedback: {pairs} (question, item) pairs ({len(questions)} {task.name} train questions x BM25 top {args.ctx_size}), "
          f"hf:{model}, {params.max_new_tokens} new tokens", flush=True)  # fmt: skip
    reference_s, outputs = reference_loop(prompts, params.max_new_tokens, threads, model, args.reference_dtype)
    score = UtilityScorer(task)
    golds = [question.gold or "" for question, items in zip(questions, candidates, strict=True) for _ in items]
    keys = [(question.id, item.key) for question, items in zip(questions, candidates, strict=True) for item in items]
    reference = {key: score(output, gold) for key, output, gold in zip(keys, outputs, golds, strict=True)}
    print(f"reference loop: {reference_s:.1f} s", flush=True)

    floor_s = None
    if args.prefill_floor:  # batch 1, 1 new token: the prompts' forward passes and little else
        floor_s, _ = reference_loop(prompts, 1, threads, model, args.reference_dtype)
        print(f"reference loop, 1 new token: {floor_s:.1f} s", flush=True)

    def same(result: Any) -> str:
        equal = sum(result.feedback[qid].utility(item_key) == utility for (qid, item_key), utility in reference.items())
        return f"utilities identical to the reference's: {equal}/{pairs}"

    rows: list[tuple[str, float, str]] = [(f"reference loop (transformers generate, {args.reference_dtype}, batch 1)", reference_s, "")]
    if floor_s is not None:
        rows.append((f"reference loop, 1 new token ({args.reference_dtype}, batch 1)", floor_s, "the prompts' passes: the reference's part that batched decoding does not shrink"))
    fp32: dict[int, tuple[Any, Path]] = {}
    for batch_size in batch_sizes:
        seconds, result, path = lampbox_feedback(f"lampbox-float32-batch{batch_size}", batch_size, dtype="float32")
        fp32[batch_size] = (result, path)
        rows.append((f"lampbox feedback, hf float32, batch {batch_size}", seconds, same(result)))
    first = batch_sizes[0]
    if auto.backend == "hf" and auto.dtype != "float32":
        seconds, result, _ = lampbox_feedback(f"lampbox-{auto.dtype}-batch{first}", first, dtype=auto.dtype)
        rows.append((f"lampbox feedback, hf {auto.dtype} (auto), batch {first}", seconds, same(result)))
    else:
        rows.append((f"lampbox feedback, {auto.backend} {auto.dtype or ''} (auto)", float("nan"), "auto picks float32 (or no hf) here: the float32 rows"))
    seconds, result, _ = lampbox_feedback(f"lampbox-likelihood-batch{first}", first, feedback="likelihood", dtype="float32")
    rows.append((f"lampbox --feedback likelihood, hf float32, batch {first}", seconds, f"vs float32 generate-feedback: {agreement(result, fp32[first][0])}"))
    if auto.backend == "hf" and auto.dtype != "float32":  # the likelihood at the dtype auto picks (its own feedback key)
        likelihood32 = result
        seconds, result, _ = lampbox_feedback(f"lampbox-likelihood-{auto.dtype}-batch{first}", first, feedback="likelihood", dtype=auto.dtype)
        rows.append((
            f"lampbox --feedback likelihood, hf {auto.dtype}, batch {first}", seconds,
            f"vs float32 generate-feedback: {agreement(result, fp32[first][0])}; "
            f"vs float32 likelihood: {agreement(result, likelihood32, 'float32 likelihood')}",
        ))  # fmt: skip

    print()
    print(f"load average {load_average()}; CPU flags: {cpu_flags()}")
    print(f"{'configuration':54} {'seconds':>8} {'pairs/s':>8} {'vs reference':>13}  notes")
    for name, seconds, notes in rows:
        print(f"{name:54} {seconds:8.1f} {pairs / seconds:8.2f} {reference_s / seconds:12.2f}x  {notes}")
    if args.skip_training:
        return

    # 2. training on the float32 feedback (served from its store), 3. dev ranking
    with Store(fp32[first][1]) as store:
        pool = GeneratorPool({"hf": {"batch_size": first, "threads": threads}})
        trained = {}
        for method in ("kd", "rl"):
            artifact, trained_result = train_ropg(spec(method), store, f"bench-{method}", generators=pool, feedback_batch_size=first)
            assert artifact is not None  # one process: the store's
            trained[method] = f"ropg:{artifact.name}"
            print(f"ropg-{method}: {trained_result.steps} steps in {trained_result.seconds:.0f} s")
        dev = collect_feedback(spec(), store, "dev", args.dev, generators=pool, batch_size=first)
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
