"""Generation speed: the reference-style loop vs raw backends vs `lampbox bench`, side by side.

On commit_subject dev (BM25, k=4, SmolLM2-135M-Instruct, official 256-token IPA budget):
1. reference loop: transformers generate, batch 1, one question at a time (as LaMP's
   evaluate_llm does), on the same prompts;
2. raw backend calls on the same prompts: llamacpp (one at a time), hf (batched), hf with
   dynamic int8 Linear layers (batched), hf in bfloat16 (batched; fast on CPUs with AMX or
   AVX512-BF16); each with its ROUGE on these questions;
3. `lampbox bench` end to end (a subprocess: process start, model load, ranking, prompts,
   generation, scoring, storing) on each backend, with its peak RSS;
4. the identical bench re-run (served from the store).

Run: .venv/bin/python benchmarks/bench_generation.py [--questions 100] [--threads 2]
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

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "git-commits" / "commit_subject"


def build_prompts(store_path: Path, questions: int, k: int, max_length: int) -> tuple[list[str], list[str]]:
    """The IPA prompts every contestant generates from (BM25 top-k, official budget; k=0: bare inputs)."""
    from lampbox.engine.generation.registry import load_tokenizer
    from lampbox.engine.methods import selected_items
    from lampbox.engine.prompting import PromptBuilder
    from lampbox.lab.pipeline import rank
    from lampbox.lab.specs import RunSpec
    from lampbox.store import Store

    with Store(store_path) as store:
        spec = RunSpec("commit_subject", "user", "dev", retriever="bm25" if k else "none", k=k, limit=questions)
        task = store.task("commit_subject")
        selected = store.questions("commit_subject", "user", "dev", limit=questions)
        rankings = rank(spec, task, selected, store)
        builder = PromptBuilder(task, load_tokenizer(), max_length=max_length)
        prompts = [builder.build(q.input, selected_items(q, rankings.get(q.id), k)).text for q in selected]
        return prompts, [q.gold or "" for q in selected]


def quality(outputs: list[str], golds: list[str]) -> str:
    """ROUGE-1 / ROUGE-L of raw (stripped) outputs, as the bench scores them."""
    from lampbox.engine.metrics import Scorer, aggregate
    from lampbox.engine.tasks import load_task_json

    task = load_task_json(DEFAULT_DATA / "task.json")
    scores = Scorer(task).score_all(zip([o.strip() for o in outputs], golds, strict=True))
    metrics = aggregate(task, scores)
    return f"R1 {metrics['rouge-1']:.3f} RL {metrics['rouge-L']:.3f}"


def reference_loop(prompts: list[str], max_new_tokens: int, threads: int) -> tuple[float, list[str]]:
    """transformers generate, one prompt at a time, greedy, chat template (the official style)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lampbox.engine.generation.hf import converted_gguf_folder
    from lampbox.models import resolve_model

    torch.set_num_threads(threads)
    folder = converted_gguf_folder(resolve_model(None).path)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    model.eval()
    outputs = []
    start = time.perf_counter()
    for prompt in prompts:
        text = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True)
        encoded = tokenizer(text, return_tensors="pt", add_special_tokens=False)
        with torch.no_grad():
            generated = model.generate(**encoded, max_new_tokens=max_new_tokens, do_sample=False)
        outputs.append(tokenizer.decode(generated[0, encoded["input_ids"].shape[1] :], skip_special_tokens=True))
    return time.perf_counter() - start, outputs


def variant_option(variant: str) -> str:
    """The hf option a contestant's variant sets: "int8" is `quantize`, a dtype is `dtype`."""
    return "quantize" if variant == "int8" else "dtype"


def raw_backend(
    backend: str, prompts: list[str], max_new_tokens: int, threads: int, batch_size: int, quantize: str | None = None
) -> tuple[float, list[str]]:
    """`quantize`: the hf variant, "int8" or a dtype such as "bfloat16" (see variant_option)."""
    from lampbox.engine.generation.base import GenerationParams
    from lampbox.engine.generation.registry import load_generator

    options: dict = {"threads": threads} if backend == "llamacpp" else {"threads": threads, "batch_size": batch_size}
    if quantize:
        options[variant_option(quantize)] = quantize
    generator = load_generator(backend, None, **options)
    params = GenerationParams(max_new_tokens=max_new_tokens)
    start = time.perf_counter()
    # One call: the backend batches them itself (hf: longest first, batch_size at a time, as
    # the bench's pipeline orders its prompts; llamacpp: one at a time).
    outputs = generator.generate(prompts, params)
    seconds = time.perf_counter() - start
    generator.close()
    return seconds, outputs


_MEASURED_CLI = """
import sys
from lampbox.cli import cli
try:
    cli(sys.argv[1:], prog_name="lampbox", standalone_mode=False)
finally:
    peak = next(line for line in open("/proc/self/status") if line.startswith("VmHWM"))
    print("peak-rss-kb", peak.split()[1], file=sys.stderr)
"""


def bench_subprocess(db: Path, backend: str, args: argparse.Namespace, out: Path, quantize: str | None = None) -> dict[str, float]:
    """`lampbox bench` for one backend (its grid: no personalization + BM25 k): wall seconds,
    each configuration's own run time from --json, and peak RSS (MB, VmHWM) of that process."""
    command = [
        sys.executable, "-c", _MEASURED_CLI, "bench", "--task", "commit_subject", "--split", "dev",
        "--retrievers", "bm25", "--k", str(args.k), "--limit", str(args.questions), "--backend", backend,
        "--max-new-tokens", str(args.max_new_tokens), "--batch-size", str(args.batch_size),
        "--threads", str(args.threads), "--no-baselines", "--db", str(db), "--out", str(out), "--json",
    ] + ([f"--{variant_option(quantize)}", quantize] if quantize else [])  # fmt: skip
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    peaks = [line.split()[1] for line in result.stderr.splitlines() if line.startswith("peak-rss-kb")]
    if result.returncode != 0 or not peaks:
        raise SystemExit(f"lampbox bench failed: {result.stderr[-2000:]}")
    rows = json.loads(result.stdout)["rows"]
    measured = {"wall": seconds, "rss_mb": int(peaks[-1]) / 1024}
    for row in rows:
        name = "bm25" if row["spec"]["retriever"] == "bm25" else "none"
        measured[name] = row["seconds"]
        measured[f"{name}-quality"] = f"R1 {row['metrics']['rouge-1']:.3f} RL {row['metrics']['rouge-L']:.3f}"
    return measured


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--questions", type=int, default=100)
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--skip-reference", action="store_true", help="Skip the (slow) reference loop.")
    args = parser.parse_args()

    from lampbox.store import Store
    from lampbox.store.importer import import_path

    work = Path(tempfile.mkdtemp(prefix="lampbox-bench-gen-"))
    os.environ.setdefault("LAMPBOX_HOME", str(work / "home"))
    seed_db = work / "seed.duckdb"
    with Store(seed_db) as store:
        import_path(store, args.data)
    prompts, golds = build_prompts(seed_db, args.questions, args.k, args.max_length)
    bare, _ = build_prompts(seed_db, args.questions, 0, args.max_length)
    results: list[tuple[str, float, str]] = []
    print(f"{len(prompts)} commit_subject dev prompts, BM25 k={args.k}, budget {args.max_length}, "
          f"{args.max_new_tokens} new tokens, {args.threads} threads", flush=True)  # fmt: skip

    reference = None
    if not args.skip_reference:
        reference, outputs = reference_loop(prompts, args.max_new_tokens, args.threads)
        results.append(("reference loop (transformers, batch 1)", reference, f"BM25 k prompts; {quality(outputs, golds)}"))
        print(f"reference loop: {reference:.1f} s", flush=True)
    contestants = [("llamacpp", None), ("hf", None), ("hf", "int8"), ("hf", "bfloat16")]
    raw: dict[tuple[str, str | None], float] = {}
    raw_bare: dict[tuple[str, str | None], float] = {}
    for backend, quantize in contestants:
        name = backend + (f" {quantize}" if quantize else "")
        batch = f"batch {args.batch_size if backend == 'hf' else 1}"
        raw[backend, quantize], outputs = raw_backend(backend, prompts, args.max_new_tokens, args.threads, args.batch_size, quantize)
        results.append((f"raw {name} ({batch})", raw[backend, quantize], f"BM25 k prompts; {quality(outputs, golds)}"))
        raw_bare[backend, quantize], outputs = raw_backend(backend, bare, args.max_new_tokens, args.threads, args.batch_size, quantize)
        results.append((f"raw {name} ({batch}), bare inputs", raw_bare[backend, quantize], f"no-personalization prompts; {quality(outputs, golds)}"))
        print(f"raw {name}: {raw[backend, quantize]:.1f} s, bare {raw_bare[backend, quantize]:.1f} s", flush=True)
    for backend, quantize in contestants:
        name = backend + (f" {quantize}" if quantize else "")
        db = work / f"bench-{backend}-{quantize}.duckdb"
        db.write_bytes(seed_db.read_bytes())
        first = bench_subprocess(db, backend, args, work / "out", quantize)
        overhead = first["bm25"] / raw[backend, quantize] - 1
        results.append((
            f"lampbox bench {name}: BM25 k={args.k} configuration", first["bm25"],
            f"overhead vs raw {overhead * 100:+.1f}% (ranking, prompts, generation, scoring, storing); "
            f"{first['bm25-quality']} (none: {first['none-quality']})",
        ))  # fmt: skip
        total_raw = raw[backend, quantize] + raw_bare[backend, quantize]
        results.append((
            f"lampbox bench {name}: whole command", first["wall"],
            f"both configurations, process start and model load: {first['wall'] / total_raw:.2f}x "
            f"the raw time on the same prompts; peak RSS {first['rss_mb']:.0f} MB",
        ))  # fmt: skip
        again = bench_subprocess(db, backend, args, work / "out", quantize)
        results.append((
            f"lampbox bench {name}: identical re-run", again["wall"],
            f"{first['wall'] / again['wall']:.0f}x faster than the first run; peak RSS {again['rss_mb']:.0f} MB",
        ))  # fmt: skip
        print(f"bench {name}: {first}, re-run {again['wall']:.2f} s", flush=True)

    print()
    print(f"{'configuration':52} {'seconds':>9} {'vs reference':>13}  notes")
    for name, seconds, notes in results:
        ratio = f"{reference / seconds:.2f}x" if reference else "-"
        print(f"{name:52} {seconds:9.2f} {ratio:>13}  {notes}")


if __name__ == "__main__":
    main()
