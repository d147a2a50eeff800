"""Frozen weights held in the dtype autocast computes with.

Under bf16 autocast every linear layer casts its fp32 weight to bf16 at every forward pass.
For LoRA the base model's weights are frozen, so each step re-makes the same bf16 copies (on
a 2-core CPU `aten::copy_` was 13% of a training step's profile). Holding the frozen linear
weights in bf16 from the start gives the very same matmuls (the cast is the same rounding,
once instead of every step) without the copies, and half their memory. An output layer tied
to the embedding gets a bf16 copy of its own. Everything else keeps its dtype: the embedding,
the norms and the trainable adapter stay fp32, so the residual stream and the updates are
computed as before. (That is the difference from `TrainConfig.bf16_base`, which loads the
whole base in bf16.)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch


def hold_frozen_linears_in(model: Any, dtype: torch.dtype) -> int:
    """Cast the weight (and bias) of every frozen nn.Linear to `dtype`; returns how many.

    A frozen linear that shares its weight with another module (an output layer tied to the
    frozen input embedding) gets its own copy in `dtype` instead, and the embedding keeps its
    fp32 tensor: autocast re-made that bf16 copy of the vocabulary matrix (49152 x 576 for
    SmolLM2) at every step. The tie only matters for training the shared tensor, and a frozen
    one never changes. Trainable linears are left alone."""
    from torch import nn

    linears = [m for m in model.modules() if type(m) is nn.Linear]
    shared = {
        id(p)
        for m in model.modules()
        if type(m) is not nn.Linear
        for p in m.parameters(recurse=False)
    }
    held = 0
    for module in linears:
        params = dict(module.named_parameters(recurse=False))
        if any(p.requires_grad for p in params.values()):
            continue
        for name, p in params.items():
            if id(p) in shared:  # tied: a copy of its own, the other module keeps the tensor
                setattr(module, name, nn.Parameter(p.detach().to(dtype), requires_grad=False))
            else:
                p.data = p.data.to(dtype)
        held += 1
    from lampbox.engine.lm_head import canonical_head_input

    canonical_head_input(model)  # a frozen bf16 head's slow path on sliced positions (lm_head.py)
    return held
