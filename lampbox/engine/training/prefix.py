"""A batch's shared prompt prefix, computed once instead of once per row (OPPU's user adapters).

A user's profile pairs all start with the same tokens: the chat template's system prompt and
the task's instruction (on commit_area, 98 of a pair's 177 tokens; the item's own text and
its target come last). `SharedPrefixCollator` finds the longest prefix every row of a batch
starts with (token ids, so no question of where a tokenizer would split) and cuts it off the
rows; the loss then runs the model once on that prefix (batch 1, keeping its keys and values)
and once on the rows' own tails with those keys and values repeated for each row. Causal
attention makes this the same computation as the full rows: the prefix never sees what
follows it, each tail token sees the prefix and its own row, and each tail keeps its own
positions (a row's left padding sits between prefix and tail, masked, and the positions
skip it). The gradient reaches the adapter through both passes (the cache's keys and values
are tensors of the graph). The losses agree with the plain path up to rounding
(tests/test_shared_prefix.py); what differs is LoRA dropout, whose mask on the prefix is one
for the batch instead of one per row (the same in expectation).

Two forward passes per step: not for DDP, which expects one (user adapters train alone).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from lampbox.engine.training.data import IGNORE_INDEX, PadToLongest

MIN_SHARED_TOKENS = 16  # a shorter shared prefix is not worth a second forward pass


def shared_prefix_length(rows: Sequence[dict[str, list[int]]]) -> int:
    """How many leading tokens every row has in common, short of each row's first target
    token's predecessor (every row keeps its targets and the token before them in its tail)."""
    first = rows[0]["input_ids"]
    shared = len(first)
    for row in rows[1:]:
        ids = row["input_ids"]
        n = min(shared, len(ids))
        i = 0
        while i < n and ids[i] == first[i]:
            i += 1
        shared = i
    for row in rows:
        labels = row["labels"]
        first_target = next((i for i, label in enumerate(labels) if label != IGNORE_INDEX), len(labels))
        shared = min(shared, first_target - 1)
    return max(shared, 0)


class SharedPrefixCollator(PadToLongest):
    """Left-padded rows with tail logits (PadToLongest) less the batch's shared prefix, which
    comes as `prefix_ids` (1 x P) with the rows' `position_ids` and a mask over prefix and
    tail. A batch sharing fewer than `min_shared` tokens (or of one row) is padded as usual."""

    def __init__(self, pad_token_id: int, min_shared: int = MIN_SHARED_TOKENS) -> None:
        super().__init__(pad_token_id, tail_logits=True)
        self.min_shared = min_shared

    def __call__(self, batch: Sequence[dict[str, list[int]]]) -> dict[str, Any]:
        import torch

        shared = shared_prefix_length(batch) if len(batch) > 1 else 0
        if shared < self.min_shared:
            return super().__call__(batch)
        tails = [{"input_ids": row["input_ids"][shared:], "labels": row["labels"][shared:]} for row in batch]
        padded = super().__call__(tails)
        tail_mask = padded["attention_mask"]
        padded["prefix_ids"] = torch.tensor([batch[0]["input_ids"][:shared]], dtype=torch.long)
        # each tail token's position: after the prefix, counting its own row's tokens only
        padded["position_ids"] = shared + (tail_mask.cumsum(dim=1) - 1).clamp(min=0)
        padded["attention_mask"] = torch.cat([torch.ones((len(batch), shared), dtype=tail_mask.dtype), tail_mask], dim=1)
        return padded


def shared_prefix_loss(forward: Any, inputs: dict[str, Any]) -> Any | None:
    """The batch's loss with its shared prefix computed once (None: a batch without one, whose
    loss is the model's own). `forward` runs the model (under the trainer's autocast)."""
    if "prefix_ids" not in inputs:
        return None
    import torch

    inputs = dict(inputs)
    prefix = inputs.pop("prefix_ids")
    rows = inputs["input_ids"].shape[0]
    # no logits for the prefix: an empty index (logits_to_keep=1 would cost bfloat16's slow
    # path for one position's logits, 0.15 s a step: engine/lm_head.py)
    no_logits = torch.zeros(0, dtype=torch.long, device=prefix.device)
    cache = forward(input_ids=prefix, use_cache=True, logits_to_keep=no_logits).cache
    cache.batch_repeat_interleave(rows)
    return forward(**inputs, cache=cache, use_cache=True).loss
