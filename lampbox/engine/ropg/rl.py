"""ROPG-RL (REINFORCE): sample one candidate from the retriever's softmax; its reward is its
utility minus the utility of the retriever's top-ranked candidate (a baseline: sampling the
top item teaches nothing); loss = -log p(sampled) x reward."""

from __future__ import annotations

from typing import Any


def rl_loss(scores: Any, utilities: Any, temperature: float, sampled: int | None = None) -> Any:
    """REINFORCE loss of one question (1-d tensors over its candidates); `sampled` fixes the
    sampled candidate (tests), else it is drawn from softmax(scores / T) with torch's RNG."""
    import torch
    import torch.nn.functional as F

    log_probs = F.log_softmax(scores / temperature, dim=-1)
    if sampled is None:
        sampled = int(torch.multinomial(log_probs.detach().exp(), 1).item())
    top = int(scores.detach().argmax().item())
    reward = (utilities[sampled] - utilities[top]).detach()
    return -log_probs[sampled] * reward
