"""ROPG-KD: the retriever's distribution over a question's candidates distilled towards the
language model's: KL(softmax(utility / T) || softmax(score / T)).

A proper KL divergence, where the released code applies cross-entropy to probabilities as if
they were logits (REFERENCE.md); its gradient is that of the cross-entropy with soft targets.
"""

from __future__ import annotations

from typing import Any


def kd_loss(scores: Any, utilities: Any, temperature: float) -> Any:
    """KL divergence of one question (1-d tensors over its candidates), in nats."""
    import torch.nn.functional as F

    target = F.softmax(utilities / temperature, dim=-1)
    return F.kl_div(F.log_softmax(scores / temperature, dim=-1), target, reduction="sum")
