"""Quantizations of SmolLM2-135M side by side: quality against the shipped Q4_1, and speed.

For each model (default: the shipped Q4_1 and the manifest's derived Q4_0 and Q8_0; any
manifest name or .gguf path) on the stand-in data in a throwaway store:
1. commit_subject dev, BM25 k=4 prompts (official 256-token budget), greedy, 32 new tokens,
   llamacpp backend: one ordinary run of lampbox's run pipeline (what `lampbox bench --task
   commit_subject --retrievers bm25 --k 4 --backend llamacpp --model NAME --limit N` runs for
   its bm25 k=4 row), ROUGE-1 / ROUGE-L with lampbox's official metric code, then for each
   model against the first: a two-sided paired randomization test on per-question ROUGE-1
   and ROUGE-L (lampbox.engine.stats), and the share of outputs identical to the first's;
2. commit_area dev (labels task, `--decode labels`: the label the model finds most likely
   answers), BM25 k=4: accuracy, with the same paired test (skip with --tasks commit_subject);
3. speed at --threads (1): prompt tokens/s over the first --speed-prompts prompts of (1), each
   evaluated fresh in one llama.cpp context, and new tokens/s (32 greedy tokens one at a time
   after each prompt); --repeats rounds interleaved across models, the best round reported
   (other processes on a shared machine slow some rounds down).

Run: nice -n 5 .venv/bin/python benchmarks/bench_quant.py --limit 48
     [--models smollm2-135m-instruct,smollm2-135m-instruct-q4_0,other.gguf] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "git-commits"
DEFAULT_MODELS = "smollm2-135m-instruct,smollm2-135m-instruct-q4_0,smollm2-135m-instruct-q8_0"


def quality_run(store, task: str, model: str, limit: int, k: int):  # type: ignore[no-untyped-def]
    """One run through lampbox's pipeline (the bench's own code): its RunRecord and seconds."""
    from lampbox.engine.defaults import default_max_new_tokens
    from lampbox.engine.generation.base import GenerationParams
    from lampbox.lab.pipeline import run
    from lampbox.lab.specs import RunSpec

    task_spec = store.task(task)
    params = GenerationParams(max_new_tokens=default_max_new_tokens(task_spec))
    decode = "labels" if task_spec.labels else "generate"  # a labels task: the most likely label answers
    spec = RunSpec(task, "user", "dev", retriever="bm25", k=k, backend="llamacpp", model=model,
                   params=params, limit=limit, decode=decode)  # fmt: skip
    started = time.perf_counter()
    record = run(spec, store, batch_size=8)
    return record, time.perf_counter() - started


def compare(record, reference, metrics: list[str]) -> dict[str, object]:  # type: ignore[no-untyped-def]
    """Paired tests on per-question scores and the share of identical outputs vs `reference`."""
    from lampbox.engine.stats import paired_randomization_test

    base = {p.question_id: p for p in reference.predictions}
    pairs = [(p, base[p.question_id]) for p in record.predictions if p.question_id in base]
    result: dict[str, object] = {"identical": sum(p.raw_output == q.raw_output for p, q in pairs) / len(pairs)}
    for metric in metrics:
        test = paired_randomization_test([p.scores[metric] for p, _ in pairs], [q.scores[metric] for _, q in pairs])
        result[metric] = {"difference": test.mean_difference, "p": test.p_value}
    return result


def speed_round(model: str, prompts: list[str], threads: int, new_tokens: int) -> tuple[float, float]:
    """(prompt tokens/s, new tokens/s) of one model on these prompts, one fresh prompt at a time."""
    from bench_llama_builds import timed_prompt_then_greedy

    from lampbox.engine.generation import load_generator

    generator = load_generator("llamacpp", model, threads=threads)
    llama = generator._llama  # type: ignore[attr-defined]
    token_lists = [generator.prompt_tokens(prompt) for prompt in prompts]  # type: ignore[attr-defined]
    llama.reset()
    llama.eval(token_lists[0][:32])  # warm-up: first touch of the weights
    prompt_seconds = generation_seconds = 0.0
    for tokens in token_lists:
        prompt, generation = timed_prompt_then_greedy(llama, tokens, new_tokens)
        prompt_seconds += prompt
        generation_seconds += generation
    generator.close()
    return sum(map(len, token_lists)) / prompt_seconds, len(token_lists) * new_tokens / generation_seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=DEFAULT_MODELS, help="comma-separated; the first is the reference")
    parser.add_argument("--tasks", default="commit_subject,commit_area")
    parser.add_argument("--limit", type=int, default=48, help="questions per task")
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3, help="speed rounds (best one reported)")
    parser.add_argument("--speed-prompts", type=int, default=8)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()
    models = [name.strip() for name in args.models.split(",")]
    tasks = [name.strip() for name in args.tasks.split(",")]

    work = Path(tempfile.mkdtemp(prefix="lampbox-bench-quant-"))
    os.environ.setdefault("LAMPBOX_HOME", str(work / "home"))
    os.environ["LAMPBOX_THREADS"] = str(args.threads)
    from lampbox.engine.metrics import aggregate  # noqa: F401  (fail early when lampbox is broken)
    from lampbox.models import resolve_model
    from lampbox.store import Store
    from lampbox.store.importer import import_path

    for model in models:
        started = time.perf_counter()
        path = resolve_model(model).path  # derived models are written here, once
        print(f"{model}: {path.name}, {path.stat().st_size / 1e6:.1f} MB ({time.perf_counter() - started:.1f} s)", flush=True)
    figures: dict[str, object] = {"models": models, "limit": args.limit, "k": args.k, "threads": args.threads}
    with Store(work / "store.duckdb") as store:
        for task in tasks:
            import_path(store, args.data / task)
        for task in tasks:
            main_metric = store.task(task).main_metric
            metrics = ["rouge-1", "rouge-L"] if main_metric.startswith("rouge") else [main_metric]
            records = {}
            for model in models:
                record, seconds = quality_run(store, task, model, args.limit, args.k)
                records[model] = record
                row: dict[str, object] = {"metrics": record.metrics, "seconds": seconds}
                if model != models[0]:
                    row["vs_reference"] = compare(record, records[models[0]], metrics)
                figures[f"{task}:{model}"] = row
                shown = ", ".join(f"{m} {record.metrics[m]:.4f}" for m in metrics)
                extra = ""
                if "vs_reference" in row:
                    versus = row["vs_reference"]
                    assert isinstance(versus, dict)
                    tests = ", ".join(f"{m} {versus[m]['difference']:+.4f} (p {versus[m]['p']:.3f})" for m in metrics)
                    extra = f"; vs {models[0]}: {tests}, identical outputs {versus['identical']:.0%}"
                print(f"{task} dev, {len(record.predictions)} questions, {model}: {shown} ({seconds:.1f} s){extra}", flush=True)
        prompts = [p.prompt or "" for p in quality_run(store, tasks[0], models[0], args.limit, args.k)[0].predictions]
    prompts = prompts[: args.speed_prompts]
    rounds: dict[str, list[tuple[float, float]]] = {model: [] for model in models}
    for _ in range(args.repeats):
        for model in models:  # interleaved, so that other processes' load spreads over all models
            rounds[model].append(speed_round(model, prompts, args.threads, 32))
    print(f"speed, {args.threads} thread(s), {len(prompts)} prompts, best of {args.repeats} rounds "
          "(prompt tok/s, new tok/s; all rounds in brackets):", flush=True)  # fmt: skip
    for model in models:
        best_prompt = max(r[0] for r in rounds[model])
        best_new = max(r[1] for r in rounds[model])
        figures[f"speed:{model}"] = {"prompt_tps": best_prompt, "new_tps": best_new, "rounds": rounds[model]}
        every = ", ".join(f"{p:.0f}/{n:.1f}" for p, n in rounds[model])
        print(f"  {model}: prompt {best_prompt:.0f} tok/s, new {best_new:.1f} tok/s  [{every}]", flush=True)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2, default=str))


if __name__ == "__main__":
    main()
