"""The output projection's slow path in bfloat16 on the CPU (engine/lm_head.py), measured.

    .venv/bin/python benchmarks/bench_lm_head.py [--threads 2]

A vocabulary matrix of SmolLM2's size (49152 x 576) applied to the last position's hidden
state of B rows of 98 tokens, as `logits_to_keep=1` slices it, against the same rows in
canonical strides; float32 and bfloat16, a weight that requires grad (a loaded model) and one
that does not (a frozen base in training). Median of 5, in ms.
"""

from __future__ import annotations

import argparse
import statistics
import time


def projection(threads: int) -> None:
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(threads)
    print(f"the projection of the last position (ms, median of 5; {threads} threads)")
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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    projection(args.threads)


if __name__ == "__main__":
    main()
