"""The output projection's input in plain row-major layout (a bfloat16 slowdown on the CPU).

A causal LM asks for the logits of the last positions only (`logits_to_keep`): `hidden[:,
-1:, :]` keeps the strides of the whole sequence. With a bfloat16 weight that does not require
grad (a frozen base under LoRA training, the frozen-weight bf16 copies of training/frozen.py),
torch (2.13, CPU) computes `F.linear` on such a slice as a batched matmul over the vocabulary
matrix expanded per row, and copies that expansion first: for SmolLM2's 49152 x 576 head,
about 150 ms per row instead of a 9 ms matmul (`benchmarks/bench_lm_head.py`). A weight that
requires grad takes the fast path, but peft freezes the base when the hf backend loads a
user's adapter (OPPU), and training freezes it too. A copy of the few hidden rows in canonical
strides takes the fast path: `canonical_head_input` installs that copy as a pre-hook on the
model's output embeddings (the hf backend, training's frozen bf16 weights, dev generation);
the same values, the same logits.
"""

from __future__ import annotations

from typing import Any


def canonical_strides(shape: tuple[int, ...]) -> tuple[int, ...]:
    strides, step = [], 1
    for size in reversed(shape):
        strides.append(step)
        step *= max(size, 1)
    return tuple(reversed(strides))


def _canonical_input(module: Any, args: tuple[Any, ...]) -> tuple[Any, ...] | None:
    import torch

    hidden = args[0] if args else None
    if not isinstance(hidden, torch.Tensor) or hidden.dim() < 3:
        return None
    if hidden.stride() == canonical_strides(tuple(hidden.shape)):
        return None
    return (hidden.clone(memory_format=torch.contiguous_format), *args[1:])


def canonical_head_input(model: Any) -> None:
    """Give the model's output projection its input in canonical strides (once per model)."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if head is None or getattr(head, "_lampbox_canonical_input", False):
        return
    head.register_forward_pre_hook(_canonical_input)
    head._lampbox_canonical_input = True
