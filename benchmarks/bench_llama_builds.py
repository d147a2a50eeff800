"""llama.cpp builds side by side: prompt processing and generation tokens/s of each install.

Each argument is a folder holding an installed llama-cpp-python (`pip install --no-deps --target
DIR WHEEL`), optionally named `name=DIR`. Every measurement is a fresh subprocess with that
folder first on PYTHONPATH (lampbox itself from this checkout): it loads the CPU backend the way
lampbox does (`lampbox.engine.generation.llamacpp.load_cpu_backend`, which finds the per-CPU
variants of a GGML_BACKEND_DL build), loads the model (SmolLM2-135M-Instruct Q4_1 unless
--model), evaluates a --prompt-tokens prompt in one llama_decode (after a short warm-up), then
decodes --new-tokens tokens one at a time (greedy). Runs are interleaved (repeat 1 of every
build and thread count, then repeat 2, ...) so that load from other processes spreads over all
builds; the table gives medians and the best run.

Before the table: the CPU flags that matter here (/proc/cpuinfo) and, per build, the features
its ggml reports (llama_print_system_info) and the CPU backend library it loaded.

Building the installs (one at a time; each is minutes):

    CMAKE_ARGS="-DGGML_NATIVE=OFF" pip wheel --no-deps --no-binary llama-cpp-python \\
        llama-cpp-python==0.3.36 -w wheels/portable
    pip install --no-deps --target builds/portable wheels/portable/llama_cpp_python-*.whl

Run: .venv/bin/python benchmarks/bench_llama_builds.py portable=builds/portable \\
         native=builds/native dispatch=builds/dispatch [--threads 1,2] [--repeats 3]

A dispatch build's CPU variants side by side: `NAME=DIR@VARIANT` forces one variant
(LAMPBOX_LLAMA_CPU_VARIANT) for that column, e.g. with the venv's own install

    SP=$(.venv/bin/python -c "import llama_cpp, pathlib; print(pathlib.Path(llama_cpp.__file__).parents[1])")
    .venv/bin/python benchmarks/bench_llama_builds.py chosen=$SP cooperlake=$SP@cooperlake \\
        amx=$SP@sapphirerapids --threads 1,2

A measurement whose process dies from a signal (the AMX variant of llama-cpp-python 0.3.36 does
on some prompts) is reported as such instead of stopping the script.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# Plain English text, repeated until the prompt has the asked number of tokens.
TEXT = (
    "The store now opens read-only for commands that only read it, so two benchmarks can run "
    "side by side on one small machine without waiting for each other's locks. Each run keeps "
    "its own cache of generations keyed by the model, the prompt and the decoding parameters, "
    "and a re-run of finished work is served from that cache instead of the model. "
)
CPU_FLAGS = ("avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16",
             "avx512vbmi", "avx_vnni", "amx_tile", "amx_int8", "amx_bf16")  # fmt: skip


def timed_prompt_then_greedy(llama, tokens: list[int], new_tokens: int) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    """Seconds to evaluate `tokens` from an empty cache in one call, then seconds to take
    `new_tokens` greedy tokens one at a time (a llama_cpp.Llama)."""
    import numpy as np

    llama.reset()
    started = time.perf_counter()
    llama.eval(tokens)
    prompt_seconds = time.perf_counter() - started
    started = time.perf_counter()
    for _ in range(new_tokens):
        llama.eval([int(np.argmax(llama.scores[llama.n_tokens - 1]))])
    return prompt_seconds, time.perf_counter() - started


def worker(model: str | None, threads: int, prompt_tokens: int, new_tokens: int) -> dict[str, object]:
    """One measurement in this process (llama_cpp imported from PYTHONPATH's first entry)."""
    import llama_cpp

    from lampbox.engine.generation.llamacpp import load_cpu_backend
    from lampbox.models import resolve_model

    backend_library = load_cpu_backend()
    llama = llama_cpp.Llama(
        model_path=str(resolve_model(model).path), n_ctx=1024, n_batch=512, n_ubatch=512,
        n_threads=threads, n_threads_batch=threads, verbose=False,
    )  # fmt: skip
    tokens: list[int] = []
    while len(tokens) < prompt_tokens:
        tokens += llama.tokenize(TEXT.encode(), add_bos=False)
    tokens = tokens[:prompt_tokens]
    llama.eval(tokens[:32])  # warm-up: first-touch of weights and buffers
    prompt_seconds, generation_seconds = timed_prompt_then_greedy(llama, tokens, new_tokens)
    mapped = Path("/proc/self/maps").read_text() if Path("/proc/self/maps").exists() else ""
    libraries = sorted({line.split()[-1] for line in mapped.splitlines() if "libggml-cpu" in line})
    return {
        "llama_cpp": llama_cpp.__version__,
        "llama_cpp_file": llama_cpp.__file__,
        "system_info": llama_cpp.llama_print_system_info().decode().strip(),
        "backend_library": str(backend_library) if backend_library else None,
        "mapped_cpu_libraries": libraries,
        "prompt_tps": prompt_tokens / prompt_seconds,
        "generation_tps": new_tokens / generation_seconds,
    }


def measure(install: Path, variant: str | None, args: argparse.Namespace, threads: int) -> dict[str, object]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(install), str(REPO)])
    env.pop("LAMPBOX_LLAMA_CPU_VARIANT", None)
    if variant:
        env["LAMPBOX_LLAMA_CPU_VARIANT"] = variant
    command = [sys.executable, __file__, "--worker", "--threads", str(threads),
               "--prompt-tokens", str(args.prompt_tokens), "--new-tokens", str(args.new_tokens)]  # fmt: skip
    if args.model:
        command += ["--model", args.model]
    done = subprocess.run(command, env=env, capture_output=True, text=True, cwd=REPO)
    if done.returncode < 0:
        return {"died": signal.Signals(-done.returncode).name}
    if done.returncode != 0:
        raise SystemExit(f"{install}: the measurement failed:\n{done.stderr.strip()}")
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def cpu_flags() -> list[str]:
    from lampbox.engine.machine import cpu_flags as flags

    present = flags()
    return [flag for flag in CPU_FLAGS if flag in present]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("installs", nargs="*", help="NAME=DIR or DIR: folders holding an installed llama_cpp")
    parser.add_argument("--model", default=None, help="GGUF model (default: the manifest's default)")
    parser.add_argument("--threads", default="1,2", help="thread counts, comma-separated")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--prompt-tokens", type=int, default=200)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    thread_counts = [int(t) for t in args.threads.split(",")]
    if args.worker:
        print(json.dumps(worker(args.model, thread_counts[0], args.prompt_tokens, args.new_tokens)))
        return
    if not args.installs:
        parser.error("give at least one folder holding an installed llama-cpp-python")
    installs: dict[str, tuple[Path, str | None]] = {}
    for item in args.installs:
        name, _, folder = item.rpartition("=")
        folder, _, variant = folder.partition("@")
        path = Path(folder).resolve()
        if not (path / "llama_cpp" / "__init__.py").is_file():
            parser.error(f"{folder}: no installed llama_cpp in this folder")
        installs[name or path.name] = (path, variant or None)

    print(f"CPU flags: {' '.join(cpu_flags()) or 'none of ' + ', '.join(CPU_FLAGS)}")
    print(f"load average before: {os.getloadavg()[0]:.2f}", flush=True)
    runs: dict[tuple[str, int], list[dict[str, object]]] = {}
    for repeat in range(args.repeats):
        for name, (path, variant) in installs.items():
            for threads in thread_counts:
                result = measure(path, variant, args, threads)
                runs.setdefault((name, threads), []).append(result)
                if "died" in result:
                    print(f"  repeat {repeat + 1} {name} t{threads}: died from {result['died']}", flush=True)
                    continue
                print(f"  repeat {repeat + 1} {name} t{threads}: prompt {result['prompt_tps']:.0f} tok/s, "
                      f"generation {result['generation_tps']:.1f} tok/s", flush=True)  # fmt: skip
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    for name in installs:
        lived = [result for result in runs[(name, thread_counts[0])] if "died" not in result]
        if not lived:
            continue
        first = lived[0]
        print(f"{name}: llama-cpp-python {first['llama_cpp']}; {first['system_info']}")
        print(f"  CPU backend: {', '.join(first['mapped_cpu_libraries']) or 'linked into libggml'}")  # type: ignore[arg-type]
    print(f"\n{args.prompt_tokens}-token prompt, {args.new_tokens} new tokens; median of {args.repeats} (best)")
    print(f"{'build':<12} {'threads':>7} {'prompt tok/s':>18} {'generation tok/s':>18}")
    for (name, threads), every in runs.items():
        results = [result for result in every if "died" not in result]
        if len(results) < len(every):
            died = sorted({str(result["died"]) for result in every if "died" in result})
            print(f"{name:<12} {threads:>7} died from {', '.join(died)} in {len(every) - len(results)} of {len(every)} runs")
        if not results:
            continue
        prompt = [float(r["prompt_tps"]) for r in results]  # type: ignore[arg-type]
        generation = [float(r["generation_tps"]) for r in results]  # type: ignore[arg-type]
        print(f"{name:<12} {threads:>7} {statistics.median(prompt):>10.0f} ({max(prompt):>5.0f}) "
              f"{statistics.median(generation):>10.1f} ({max(generation):>5.1f})")  # fmt: skip


if __name__ == "__main__":
    main()
