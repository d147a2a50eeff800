"""Frozen weights held in the dtype autocast computes with.

Under bf16 autocast every linear layer casts its fp32 weight to bf16 at every forward pass.
For LoRA the base model's weights are frozen, so each step re-makes the same bf16 copies (on
a 2-core CPU `aten::copy_` was 13% of a training step's profile). Holding the frozen linear
weights in bf16 from the start gives the very same matmuls (the cast is the same rounding,
once instead of every step) without the copies, and half their memory. Everything else keeps
its dtype: the embedding (and an output layer tied to it), the norms and the trainable
adapter stay fp32, so the residual stream and the updates are computed as before. (That is
the difference from `TrainConfig.bf16_base`, which loads the whole base in bf16.)
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


def hold_frozen_linears_in(model: Any, dtype: torch.dtype) -> int:
    """Cast the weight (and bias) of every frozen nn.Linear to `dtype`, except those sharing a
    tensor with a trainable or non-linear module (a tied output layer); returns how many."""
    linears = [m for m in model.modules() if type(m) is nn.Linear]
    shared = {id(p) for m in model.modules() if type(m) is not nn.Linear for p in m.parameters(recurse=False)}
    held = 0
    for module in linears:
        params = list(module.parameters(recurse=False))
        if any(p.requires_grad or id(p) in shared for p in params):
            continue
        for p in params:
            p.data = p.data.to(dtype)
        held += 1
    return held
