"""LoRA dropout with a cheap random mask, for training on the CPU.

peft puts an `nn.Dropout` before every LoRA adapter (the paper's LoRA dropout, 0.05 by default):
on SmolLM2 with q/k/v/o adapters that is 120 masks per forward pass, each as large as the
layer's input. On the CPU, torch draws a dropout mask with its Mersenne Twister, one thread,
a few milliseconds per mask: measured on a 2-core CPU, `aten::bernoulli_` alone was 8-14% of a
training step and the mask's scaling and multiplication several percent more
(benchmarks/bench_training.py throughput, contestants `lampbox-bf16` and `lampbox-bf16-torchdrop`).

`CheapDropout` is the same inverted dropout (each element kept with probability 1 - p and
scaled by 1 / (1 - p); identity in eval mode) with the mask drawn from numpy's PCG64, which
makes 64 random bits at a time, compared as 32-bit integers (so p is exact to 2^-32). Its seed
comes from torch's generator on every call, so seeds, and the RNG state a checkpoint saves,
decide the masks exactly as they decide torch's own dropout. On CUDA torch's dropout is cheap
and stays.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

_SPAN = 1 << 32


class CheapDropout(nn.Module):
    """Inverted dropout with a mask from numpy's PCG64 (seeded from torch's generator)."""

    def __init__(self, p: float) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout probability must be in [0, 1), not {p}")
        self.p = p
        # An element is kept when its 32-bit draw, read as a signed integer, is >= threshold.
        self.threshold = round(p * _SPAN) - (1 << 31)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        count = x.numel()
        seed = int(torch.randint(0, 2**62, (1,)).item())
        raw = np.random.Generator(np.random.PCG64(seed)).bit_generator.random_raw((count + 1) // 2)
        draws = torch.from_numpy(raw.view(np.int32)[:count]).view(x.shape)
        mask = (draws >= self.threshold).to(x.dtype).mul_(1.0 / (1.0 - self.p))
        return x * mask

    def extra_repr(self) -> str:
        return f"p={self.p}"


def use_cheap_lora_dropout(model: Any) -> int:
    """Replace the dropout before every LoRA adapter of a peft model by CheapDropout (same p);
    returns how many were replaced."""
    replaced = 0
    for module in model.modules():
        dropouts = getattr(module, "lora_dropout", None)
        if not isinstance(dropouts, nn.ModuleDict):
            continue
        for name, dropout in list(dropouts.items()):
            if isinstance(dropout, nn.Dropout) and dropout.p > 0.0:
                dropouts[name] = CheapDropout(dropout.p)
                replaced += 1
    return replaced
