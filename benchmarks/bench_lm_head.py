"""The output projection's slow path in bfloat16 on the CPU (engine/lm_head.py), measured.

    .venv/bin/python benchmarks/bench_lm_head.py [--threads 2] [--prompts 16]

1. A vocabulary matrix of SmolLM2's size (49152 x 576) applied to the last position's hidden
   state of B rows of 98 tokens, as `logits_to_keep=1` slices it, against the same rows in
   canonical strides; float32 and bfloat16, a weight that requires grad (a loaded model) and
   one that does not (a frozen base: training, or the hf backend once peft loads an adapter).
   Median of 5, in ms.
2. The hf backend serving a user's adapter (a seeded random LoRA, as bench_oppu.py makes) for
   the first --prompts commit_subject dev prompts (`--data`), greedy, 24 new tokens, in
   bfloat16 and float32: with lampbox's canonical-input hook and without it, alternated
   twice; the outputs must be the same.
"""

from __future__ import annotations

import argparse
import atexit
import json
import shutil
import statistics
import time
from pathlib import Path


def projection(threads: int) -> None:
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(threads)
    print(f"1. the projection of the last position (ms, median of 5; {threads} threads)")
    print(f"{'dtype':10} {'weight':9} {'rows':>4} {'sliced':>9} {'canonical':>10}")
    for dtype, grad in ((torch.float32, False), (torch.bfloat16, True), (torch.bfloat16, False)):
        weight = torch.nn.Parameter(torch.randn(49152, 576).to(dtype), requires_grad=grad)
        for rows in (1, 4, 8):
            hidden = torch.randn(rows, 98, 576).to(dtype)
            times = {}
            for layout in ("sliced", "canonical"):
                last = hidden[:, -1:, :]
                if layout == "canonical":
                    last = last.clone(memory_format=torch.contiguous_format)
                runs = []
                for _ in range(5):
                    started = time.perf_counter()
                    with torch.inference_mode():
                        F.linear(last, weight)
                    runs.append((time.perf_counter() - started) * 1000)
                times[layout] = statistics.median(runs)
            kind = "trainable" if grad else "frozen"
            print(f"{str(dtype).replace('torch.', ''):10} {kind:9} {rows:>4} {times['sliced']:>9.1f} {times['canonical']:>10.1f}")


def serving(data: Path, prompts: int, threads: int) -> None:
    import tempfile

    import torch
    from bench_oppu import random_adapters

    from lampbox.engine.generation.base import GenerationParams, GenerationRequest
    from lampbox.engine.generation.hf import HFGenerator
    from lampbox.engine.lm_head import canonical_head_input

    scratch = Path(tempfile.mkdtemp(prefix="bench-lm-head-"))
    atexit.register(shutil.rmtree, scratch, True)  # the random adapter: gone when the process ends
    adapter = random_adapters(scratch, 1.0)[0]
    questions = json.loads((data / "dev_questions.json").read_text())[:prompts]
    requests = [GenerationRequest(q["input"], adapter=adapter) for q in questions]
    params = GenerationParams(max_new_tokens=24)
    print(f"2. the hf backend serving a user's adapter: {len(requests)} commit_subject dev prompts, batch 8, {threads} threads (s)")
    for dtype in ("bfloat16", "float32"):
        generator = HFGenerator(dtype=dtype, threads=threads)
        torch.set_num_threads(threads)
        generator.generate(requests[:2], params)  # loads the adapter: peft freezes the base
        head = generator.model.get_output_embeddings()
        seconds: dict[bool, list[float]] = {False: [], True: []}
        outputs: dict[bool, list[str]] = {}
        for hooked in (False, True, False, True):
            head._forward_pre_hooks.clear()
            head.__dict__.pop("_lampbox_canonical_input", None)
            if hooked:
                canonical_head_input(generator.model)
            started = time.perf_counter()
            outputs[hooked] = generator.generate(requests, params)
            seconds[hooked].append(time.perf_counter() - started)
        print(f"   {dtype}: head requires grad {head.weight.requires_grad}; without the hook "
              f"{' / '.join(f'{s:.2f}' for s in seconds[False])}, with it {' / '.join(f'{s:.2f}' for s in seconds[True])}; "
              f"same outputs: {outputs[True] == outputs[False]}")  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--data", type=Path, default=Path("../shared/data/git-commits/commit_subject"))
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--only", choices=["projection", "serving"], default=None)
    args = parser.parse_args(argv)
    if args.only != "serving":
        projection(args.threads)
    if args.only != "projection":
        serving(args.data, args.prompts, args.threads)


if __name__ == "__main__":
    main()
