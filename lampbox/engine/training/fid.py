"""Fusion-in-Decoder as a training objective: each (input, retrieved item) pair is encoded on
its own, and the decoder attends over all the encoder outputs concatenated (Izacard & Grave;
the LaMP paper's FiD). The model code (encoding, decoding, loading, the offline base) is
generation/fid_model.py's, shared with the fid backend; here: examples, batches, the loss.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

# The model code is generation/fid_model.py's (the fid backend's too); the names the lab and
# `lampbox train fid` take from here stay importable (`X as X`: re-exported).
from lampbox.engine.generation.fid_model import (
    IGNORE_INDEX,
    encode_fused,
    fid_generate,
    load_seq2seq,
    pad_passages,
)
from lampbox.engine.generation.fid_model import OFFLINE_BASE as OFFLINE_BASE
from lampbox.engine.generation.fid_model import fid_target_ids as fid_target_ids
from lampbox.engine.generation.fid_model import passage_ids as passage_ids
from lampbox.engine.generation.fid_model import passage_limits as passage_limits
from lampbox.engine.generation.fid_model import seq2seq_config as seq2seq_config
from lampbox.engine.generation.fid_model import seq2seq_source as seq2seq_source
from lampbox.engine.training.objective import TaskExamplesObjective
from lampbox.errors import LampboxError

if TYPE_CHECKING:
    from lampbox.engine.training.objective import TrainContext


@dataclass(frozen=True)
class FiDExample:
    """One question: its passages' tokens (one pair per retrieved item) and the target's."""

    question_id: str
    passages: tuple[tuple[int, ...], ...]
    target_ids: tuple[int, ...]

    def __len__(self) -> int:
        return sum(len(p) for p in self.passages) + len(self.target_ids)


@dataclass(frozen=True)
class FiDDevExample:
    question_id: str
    passages: tuple[tuple[int, ...], ...]
    gold: str


class FiDCollator:
    def __init__(self, pad_token_id: int) -> None:
        self.pad_token_id = pad_token_id

    def __call__(self, batch: Sequence[dict[str, Any]]) -> dict[str, Any]:
        import torch

        ids, mask = pad_passages([item["passages"] for item in batch], self.pad_token_id)
        width = max(len(item["labels"]) for item in batch)
        labels = torch.full((len(batch), width), IGNORE_INDEX, dtype=torch.long)
        for row, item in enumerate(batch):
            labels[row, : len(item["labels"])] = torch.tensor(item["labels"], dtype=torch.long)
        return {"passage_ids": ids, "passage_mask": mask, "labels": labels}


class FiDDataset:
    def __init__(self, examples: Sequence[FiDExample]) -> None:
        self.examples = list(examples)

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int) -> dict[str, Any]:
        example = self.examples[index]
        # input_ids: what the length-grouped sampler measures (all passages together)
        return {
            "passages": example.passages,
            "labels": list(example.target_ids),
            "input_ids": [t for p in example.passages for t in p],
        }


def fid_loss(model: Any, inputs: dict[str, Any], forward: Any = None, num_items: Any = None) -> Any:
    """The decoder's cross-entropy on the gold tokens given the fused passages: summed, then
    divided by `num_items` (the Trainer's count of gold tokens in the whole optimizer step,
    across gradient accumulation and ranks) or, without it, by this batch's gold tokens.
    `forward` is what runs the model's own forward: under torchrun the DDP wrapper of `model`,
    so that DDP prepares the gradient all-reduce (the encoder's parameters, run here on the
    unwrapped model, are all-reduced by DDP's gradient hooks all the same)."""
    import torch.nn.functional as F

    encoded, mask = encode_fused(model, inputs["passage_ids"], inputs["passage_mask"])
    labels = inputs["labels"]
    logits = (forward or model)(encoder_outputs=encoded, attention_mask=mask, labels=labels).logits
    labels = labels.to(logits.device)
    total = F.cross_entropy(logits.float().flatten(0, 1), labels.flatten(), ignore_index=IGNORE_INDEX, reduction="sum")
    return total / (num_items if num_items is not None else labels.ne(IGNORE_INDEX).sum())


class FiDObjective(TaskExamplesObjective):
    """Fusion-in-Decoder as a training objective: the whole encoder-decoder trains on
    FiDExamples with the fused loss (`fid_loss`); dev evaluation decodes greedily from the
    fused passages and scores with the task's official metric; the result is `model/` with
    its tokenizer."""

    loss_counts_tokens = True  # fid_loss divides by the step's gold tokens (all ranks)

    train_examples: list[FiDExample]
    dev_examples: list[FiDDevExample]

    def load_model(self, context: TrainContext) -> Any:
        if context.config.lora is not None:
            raise LampboxError("FiD trains the whole encoder-decoder (full fine-tuning); LoRA is for `train ipa`")
        return load_seq2seq(self.model_source)

    def train_dataset(self) -> Any:
        return FiDDataset(self.train_examples)

    def collator(self, model: Any, context: TrainContext) -> Any:
        tokenizer = self.tokenizer
        return FiDCollator(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id)

    def loss(self, model: Any, inputs: dict[str, Any], forward: Any, num_items: Any) -> Any | None:
        # The passages are encoded one by one and fused for the decoder, which a plain forward
        # cannot express; the decoder runs through `forward` so that DDP all-reduces.
        return fid_loss(model, inputs, forward=forward, num_items=num_items)

    def evaluate(self, model: Any, context: TrainContext) -> dict[str, float]:
        from lampbox.engine.training.objective import score_outputs

        config = context.config
        outputs: list[str] = []
        model.eval()
        try:
            for start in range(0, len(self.dev_examples), config.eval_batch_size):
                batch = self.dev_examples[start : start + config.eval_batch_size]
                outputs += fid_generate(model, self.tokenizer, [e.passages for e in batch], config.eval_new_tokens)
        finally:
            model.train()
        return score_outputs(self.task, outputs, [e.gold for e in self.dev_examples])

    def mean_example_tokens(self) -> float:
        return sum(len(e) for e in self.train_examples) / max(len(self.train_examples), 1)

    def save(self, model: Any, folder: Path) -> None:
        model.save_pretrained(str(folder / "model"))
        self.tokenizer.save_pretrained(str(folder / "model"))


