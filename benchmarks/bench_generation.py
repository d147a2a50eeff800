"""Generation speed: the reference-style loop vs raw backends vs `lampbox bench`, side by side.

On commit_subject dev (BM25, k=4, SmolLM2-135M-Instruct, official 256-token IPA budget):
0. the machine: what `--backend auto` picks here, and the physical bound: measured matmul
   GFLOPS of this CPU (torch, fp32 and bf16) on the model's own shapes;
1. reference loop: transformers generate, batch 1, one question at a time (as LaMP's
   evaluate_llm does), on the same prompts;
2. raw backend calls on the same prompts: llamacpp one at a time (batch 1) and batched
   (`--batch-size` sequences in one llama.cpp context), hf float32 (batched), hf with dynamic
   int8 Linear layers (batched), hf in bfloat16 (batched); each with its ROUGE on these
   questions, its new tokens/s, and its prompt-processing tokens/s (a 1-token generation on the
   first prompts) as a fraction of what the measured GFLOPS allow (2 x matmul parameters FLOPs
   per prompt token); the auto choice's row beside them;
3. `lampbox bench` end to end (a subprocess: process start, model load, ranking, prompts,
   generation, scoring, storing) on each backend, with its peak RSS;
4. the identical bench re-run (served from the store).

Run: .venv/bin/python benchmarks/bench_generation.py [--questions 100] [--threads 2]
     [--only "llamacpp batch-1,llamacpp"] [--skip-cli]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from reference_generate import reference_loop  # noqa: E402

DEFAULT_DATA = HERE.parents[1] / "shared" / "data" / "git-commits" / "commit_subject"


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


# (backend, variant): hf variants are "int8" (quantize) or a dtype; llamacpp's "batch-1" decodes
# one prompt at a time, no variant decodes --batch-size prompts together.
CONTESTANTS = [("llamacpp", "batch-1"), ("llamacpp", None), ("hf", "float32"), ("hf", "int8"), ("hf", "bfloat16")]


def contestant_name(backend: str, variant: str | None) -> str:
    return backend + (f" {variant}" if variant else "")


def variant_options(backend: str, variant: str | None, batch_size: int) -> dict:
    """The backend options a contestant's variant sets."""
    if backend == "llamacpp":
        return {"batch_size": 1 if variant == "batch-1" else batch_size}
    options: dict = {"batch_size": batch_size}
    if variant:
        options["quantize" if variant == "int8" else "dtype"] = variant
    return options


def variant_args(backend: str, variant: str | None, batch_size: int) -> list[str]:
    """The same as `lampbox bench` options."""
    if backend == "llamacpp":
        return ["--batch-size", str(1 if variant == "batch-1" else batch_size)]
    return ["--batch-size", str(batch_size)] + ([f"--{'quantize' if variant == 'int8' else 'dtype'}", variant] if variant else [])


def raw_backend(
    backend: str, prompts: list[str], max_new_tokens: int, threads: int, batch_size: int, variant: str | None = None
) -> tuple[float, list[str], float]:
    """Seconds and outputs of one generate call on all prompts, and the seconds of a 1-token
    generation on the first 8 (prompt processing)."""
    from lampbox.engine.generation.base import GenerationParams
    from lampbox.engine.generation.registry import load_generator

    generator = load_generator(backend, None, threads=threads, **variant_options(backend, variant, batch_size))
    params = GenerationParams(max_new_tokens=max_new_tokens)
    start = time.perf_counter()
    # One call: the backend batches them itself (hf: longest first, batch_size at a time, as
    # the bench's pipeline orders its prompts; llamacpp: batch_size sequences at a time).
    outputs = generator.generate(prompts, params)
    seconds = time.perf_counter() - start
    start = time.perf_counter()
    generator.generate(prompts[:PREFILL_PROMPTS], GenerationParams(max_new_tokens=1))
    prefill = time.perf_counter() - start
    generator.close()
    return seconds, outputs, prefill


PREFILL_PROMPTS = 8


@dataclass(frozen=True)
class Physics:
    """The model's matmul shapes and this CPU's measured matmul speed on them."""

    matmul_params: int  # weights every prompt token is multiplied by (the output layer excluded)
    gflops: dict[str, float]  # torch dtype name -> measured GFLOPS

    def bound(self, dtype: str) -> float:
        """Prompt tokens/s the measured GFLOPS allow: 2 x matmul_params FLOPs per token."""
        return self.gflops[dtype] * 1e9 / (2 * self.matmul_params)


def model_shapes() -> tuple[int, list[tuple[int, int]]]:
    """Layers and (in, out) shapes of one layer's matmuls, from the GGUF's metadata."""
    from lampbox.engine.generation.llamacpp import _open_llama
    from lampbox.models import resolve_model

    llama = _open_llama(resolve_model(None).path, vocab_only=True)
    meta = llama.metadata
    arch = meta["general.architecture"]
    hidden, ff = int(meta[f"{arch}.embedding_length"]), int(meta[f"{arch}.feed_forward_length"])
    heads, kv_heads = int(meta[f"{arch}.attention.head_count"]), int(meta[f"{arch}.attention.head_count_kv"])
    kv = kv_heads * hidden // heads
    llama.close()
    shapes = [(hidden, hidden), (hidden, kv), (hidden, kv), (hidden, hidden), (hidden, ff), (hidden, ff), (ff, hidden)]
    return int(meta[f"{arch}.block_count"]), shapes


def measure_physics(threads: int, rows: int = 256, seconds: float = 1.0) -> Physics:
    """fp32 and bf16 GFLOPS of torch matmuls of one layer's shapes with `rows` tokens, the
    fastest of repeated passes (other jobs on the cores only slow some of them down); cheap:
    about `seconds` per dtype."""
    import torch

    torch.set_num_threads(threads)
    layers, shapes = model_shapes()
    gflops = {}
    for dtype in (torch.float32, torch.bfloat16):
        pairs = [(torch.randn(rows, n_in, dtype=dtype), torch.randn(n_in, n_out, dtype=dtype)) for n_in, n_out in shapes]
        flops = sum(2 * rows * n_in * n_out for n_in, n_out in shapes)
        for x, w in pairs:  # warm-up
            x @ w
        passes: list[float] = []
        start = time.perf_counter()
        while time.perf_counter() - start < seconds or len(passes) < 3:
            began = time.perf_counter()
            for x, w in pairs:
                x @ w
            passes.append(time.perf_counter() - began)
        gflops[str(dtype).removeprefix("torch.")] = flops / min(passes) / 1e9
    return Physics(layers * sum(n_in * n_out for n_in, n_out in shapes), gflops)


def prompt_tokens(prompts: list[str]) -> list[int]:
    """Tokens of each prompt as the model sees it (chat template), counted by llama.cpp."""
    from lampbox.engine.generation.registry import load_generator

    generator = load_generator("llamacpp", None, threads=1, context_size=512)
    counts = [len(generator.prompt_tokens(prompt)) for prompt in prompts]
    generator.close()
    return counts


def new_tokens(outputs: list[str]) -> int:
    """Generated tokens, re-tokenized from the outputs (about the count generated)."""
    from lampbox.engine.generation.registry import load_tokenizer

    tokenizer = load_tokenizer()
    return sum(len(tokenizer.encode(output)) for output in outputs)


_MEASURED_CLI = """
import sys
from lampbox.cli import cli
try:
    cli(sys.argv[1:], prog_name="lampbox", standalone_mode=False)
finally:
    peak = next(line for line in open("/proc/self/status") if line.startswith("VmHWM"))
    print("peak-rss-kb", peak.split()[1], file=sys.stderr)
"""


def bench_subprocess(db: Path, backend: str, args: argparse.Namespace, out: Path, variant: str | None = None) -> dict[str, float]:
    """`lampbox bench` for one backend (its grid: no personalization + BM25 k): wall seconds,
    each configuration's own run time from --json, and peak RSS (MB, VmHWM) of that process."""
    command = [
        sys.executable, "-c", _MEASURED_CLI, "bench", "--task", "commit_subject", "--split", "dev",
        "--retrievers", "bm25", "--k", str(args.k), "--limit", str(args.questions), "--backend", backend,
        "--max-new-tokens", str(args.max_new_tokens),
        "--threads", str(args.threads), "--no-baselines", "--db", str(db), "--out", str(out), "--json",
    ] + variant_args(backend, variant, args.batch_size)  # fmt: skip
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
    parser.add_argument("--only", help="Comma-separated contestants (e.g. 'llamacpp batch-1,llamacpp,hf float32').")
    parser.add_argument("--skip-cli", action="store_true", help="Skip the `lampbox bench` subprocess runs.")
    parser.add_argument("--skip-bare", action="store_true", help="Skip the raw runs on bare (k=0) inputs.")
    args = parser.parse_args()

    from lampbox.engine.generation.auto import choose_backend
    from lampbox.engine.machine import this_machine
    from lampbox.store import Store
    from lampbox.store.importer import import_path

    machine = this_machine()
    auto = choose_backend("ipa", "gguf", True, machine)
    auto_name = contestant_name(auto.backend, auto.dtype)
    contestants = [(backend, variant) for backend, variant in CONTESTANTS]
    if args.only:
        wanted = [name.strip() for name in args.only.split(",")]
        contestants = [c for c in contestants if contestant_name(*c) in wanted]
    physics = measure_physics(args.threads)
    print(f"machine: {machine.describe()}, {args.threads} threads; {auto.line()}", flush=True)
    print(
        f"matmul bound (torch, the model's shapes, 256 rows): fp32 {physics.gflops['float32']:.1f} GFLOPS, "
        f"bf16 {physics.gflops['bfloat16']:.1f} GFLOPS; {physics.matmul_params / 1e6:.1f}M matmul parameters "
        f"per prompt token -> at most {physics.bound('float32'):.0f} (fp32) / {physics.bound('bfloat16'):.0f} (bf16) "
        "prompt tokens/s",
        flush=True,
    )

    work = Path(tempfile.mkdtemp(prefix="lampbox-bench-gen-"))
    os.environ.setdefault("LAMPBOX_HOME", str(work / "home"))
    seed_db = work / "seed.duckdb"
    with Store(seed_db) as store:
        import_path(store, args.data)
    prompts, golds = build_prompts(seed_db, args.questions, args.k, args.max_length)
    bare, _ = build_prompts(seed_db, args.questions, 0, args.max_length)
    prefill_tokens = sum(prompt_tokens(prompts[:PREFILL_PROMPTS]))
    results: list[tuple[str, float, str]] = []
    print(f"{len(prompts)} commit_subject dev prompts, BM25 k={args.k}, budget {args.max_length}, "
          f"{args.max_new_tokens} new tokens, {args.threads} threads, batch size {args.batch_size}", flush=True)  # fmt: skip

    reference = None
    if not args.skip_reference:
        reference, outputs = reference_loop(prompts, args.max_new_tokens, args.threads)
        results.append(("reference loop (transformers, batch 1)", reference, f"BM25 k prompts; {quality(outputs, golds)}"))
        print(f"reference loop: {reference:.1f} s", flush=True)
    raw: dict[tuple[str, str | None], float] = {}
    prefills: dict[tuple[str, str | None], float] = {}  # seconds of the 1-token run on the first prompts
    raw_bare: dict[tuple[str, str | None], float] = {}
    speeds: dict[tuple[str, str | None], str] = {}
    for backend, variant in contestants:
        name = contestant_name(backend, variant)
        batch = f"batch {1 if variant == 'batch-1' else args.batch_size}"
        raw[backend, variant], outputs, prefill = raw_backend(backend, prompts, args.max_new_tokens, args.threads, args.batch_size, variant)
        prefills[backend, variant] = prefill
        prefill_rate = prefill_tokens / prefill
        speeds[backend, variant] = (
            f"{new_tokens(outputs) / raw[backend, variant]:.1f} new tok/s; prompt {prefill_rate:.0f} tok/s = "
            f"{prefill_rate / physics.bound('float32'):.0%} of the fp32 / {prefill_rate / physics.bound('bfloat16'):.0%} "
            "of the bf16 matmul bound"
        )  # fmt: skip
        results.append((f"raw {name} ({batch})", raw[backend, variant], f"BM25 k prompts; {quality(outputs, golds)}; {speeds[backend, variant]}"))
        print(f"raw {name}: {raw[backend, variant]:.1f} s; {speeds[backend, variant]}", flush=True)
        if not args.skip_bare:
            raw_bare[backend, variant], outputs, _ = raw_backend(backend, bare, args.max_new_tokens, args.threads, args.batch_size, variant)
            results.append((f"raw {name} ({batch}), bare inputs", raw_bare[backend, variant], f"no-personalization prompts; {quality(outputs, golds)}"))
            print(f"raw {name}: bare {raw_bare[backend, variant]:.1f} s", flush=True)
    chosen = next((c for c in contestants if contestant_name(*c) == auto_name), None)
    if chosen is not None:
        results.append((f"auto on this machine = raw {auto_name}", raw[chosen], f"the row above, chosen by --backend auto; {speeds[chosen]}"))
    else:
        results.append((f"auto on this machine = {auto_name}", float("nan"), "not among the measured contestants"))
    batched, one_by_one = ("llamacpp", None), ("llamacpp", "batch-1")
    if batched in raw and one_by_one in raw:
        ratio = raw[one_by_one] / raw[batched]
        bare_ratio = f", bare inputs {raw_bare[one_by_one] / raw_bare[batched]:.2f}x" if batched in raw_bare else ""
        print(f"llamacpp batch {args.batch_size} vs batch 1 on the same prompts: {ratio:.2f}x{bare_ratio} (target >= 2x)", flush=True)
        # Amdahl: batching shares the weight reads of decoding steps; each prompt is still
        # processed in its own calls. Were decoding free, the batched run would still take the
        # batch-1 prompt processing of every prompt (measured on the first prompts, scaled by tokens).
        prefill_all = prefills[one_by_one] * sum(prompt_tokens(prompts)) / prefill_tokens
        share = prefill_all / raw[one_by_one]
        print(f"  prompt processing is {share:.0%} of the batch-1 time ({prefill_all:.1f} of {raw[one_by_one]:.1f} s): "
              f"with decoding free, batching could reach at most {1 / share:.2f}x on these prompts", flush=True)  # fmt: skip
        results.append((
            "llamacpp batched vs batch 1", raw[batched],
            f"{ratio:.2f}x (target >= 2x); prompt processing {share:.0%} of batch 1, so at most {1 / share:.2f}x "
            "if batched decoding cost nothing",
        ))  # fmt: skip
    for backend, variant in contestants if not args.skip_cli else []:
        name = contestant_name(backend, variant)
        db = work / f"bench-{backend}-{variant}.duckdb"
        db.write_bytes(seed_db.read_bytes())
        first = bench_subprocess(db, backend, args, work / "out", variant)
        overhead = first["bm25"] / raw[backend, variant] - 1
        results.append((
            f"lampbox bench {name}: BM25 k={args.k} configuration", first["bm25"],
            f"overhead vs raw {overhead * 100:+.1f}% (ranking, prompts, generation, scoring, storing); "
            f"{first['bm25-quality']} (none: {first['none-quality']})",
        ))  # fmt: skip
        if (backend, variant) in raw_bare:
            against = f"{first['wall'] / (raw[backend, variant] + raw_bare[backend, variant]):.2f}x the raw time on the same prompts"
        else:
            against = "the raw time on bare prompts was not measured (--skip-bare)"
        results.append((
            f"lampbox bench {name}: whole command", first["wall"],
            f"both configurations, process start and model load: {against}; peak RSS {first['rss_mb']:.0f} MB",
        ))  # fmt: skip
        again = bench_subprocess(db, backend, args, work / "out", variant)
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
