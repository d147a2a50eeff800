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
    fid_generate_encoded,
    load_seq2seq,
    new_parameter_names,
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
        return {
            "passage_ids": ids, "passage_mask": mask, "labels": labels,
            "example_index": torch.tensor([item.get("index", -1) for item in batch], dtype=torch.long),
        }  # fmt: skip


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
            "index": index,  # which example: a frozen encoder's outputs are kept by it
        }


class FrozenEncoderOutputs:
    """A frozen encoder's outputs, computed once per example and kept (on the model's device):
    the encoder does not change, so every later epoch and every dev evaluation reuses them and
    only the decoder runs. Each passage is kept at its own length; a batch is padded again to
    its longest passage, which the mask hides as encode_fused's padding is hidden."""

    def __init__(self) -> None:
        self.kept: dict[tuple[str, int], list[Any]] = {}

    def fused(self, model: Any, part: str, indices: Sequence[int], batch_passages: Sequence[Sequence[Sequence[int]]], pad_id: int) -> tuple[Any, Any]:
        """(encoder outputs, mask) as encode_fused gives them, for examples `indices` of `part`."""
        import torch
        from transformers.modeling_outputs import BaseModelOutput

        encoder = model.get_encoder()
        for index, passages in zip(indices, batch_passages, strict=True):
            if (part, index) in self.kept:
                continue
            ids, mask = pad_passages([passages], pad_id)
            device = next(model.parameters()).device
            # linears the core holds in bf16 (frozen weights under bf16 precision) run under autocast
            low = next((p.dtype for p in encoder.parameters() if p.dtype != torch.float32), None)
            was_training = encoder.training
            encoder.eval()  # no dropout: the kept outputs are what the frozen encoder computes
            try:
                with torch.no_grad(), torch.autocast(device.type, dtype=low or torch.bfloat16, enabled=low is not None):
                    hidden = encoder(input_ids=ids[0].to(device), attention_mask=mask[0].to(device)).last_hidden_state
            finally:
                encoder.train(was_training)
            self.kept[part, index] = [hidden[row, : len(p)].detach() for row, p in enumerate(passages)]
        rows = [self.kept[part, index] for index in indices]
        count = max(len(row) for row in rows)
        width = max(len(h) for row in rows for h in row)
        first = rows[0][0]
        fused = torch.zeros((len(rows), count, width, first.shape[-1]), dtype=first.dtype, device=first.device)
        mask = torch.zeros((len(rows), count, width), dtype=torch.long, device=first.device)
        for r, row in enumerate(rows):
            for c, hidden in enumerate(row):
                fused[r, c, : len(hidden)] = hidden
                mask[r, c, : len(hidden)] = 1
        return BaseModelOutput(last_hidden_state=fused.reshape(len(rows), count * width, -1)), mask.reshape(len(rows), count * width)


def fid_loss(model: Any, inputs: dict[str, Any], forward: Any = None, num_items: Any = None, encoded: Any = None) -> Any:
    """The decoder's cross-entropy on the gold tokens given the fused passages: summed, then
    divided by `num_items` (the Trainer's count of gold tokens in the whole optimizer step,
    across gradient accumulation and ranks) or, without it, by this batch's gold tokens.
    `forward` is what runs the model's own forward: under torchrun the DDP wrapper of `model`,
    so that DDP prepares the gradient all-reduce (the encoder's parameters, run here on the
    unwrapped model, are all-reduced by DDP's gradient hooks all the same). `encoded`: the
    (encoder outputs, mask) already computed (a frozen encoder's kept ones)."""
    import torch.nn.functional as F

    encoded, mask = encoded or encode_fused(model, inputs["passage_ids"], inputs["passage_mask"])
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

    frozen_outputs: FrozenEncoderOutputs | None = None

    def load_model(self, context: TrainContext) -> Any:
        if context.config.lora is not None:
            raise LampboxError("FiD trains the whole encoder-decoder (full fine-tuning); LoRA is for `train ipa`")
        model = load_seq2seq(self.model_source)
        self.frozen_outputs = None
        if context.config.freeze_encoder:
            # every encoder weight, a T5's embedding shared with the decoder included: the kept
            # outputs stay what the encoder computes
            for parameter in model.get_encoder().parameters():
                parameter.requires_grad_(False)
            self.frozen_outputs = FrozenEncoderOutputs()
        return model

    def learning_rates(self, model: Any, context: TrainContext) -> dict[str, float]:
        """The parameters trained at a rate of their own (the core's optimizer groups):
        with `cross_attention_lr`, the decoder's cross-attention and the other weights a
        warm start leaves random (fid_model.new_parameter_names)."""
        rate = context.config.cross_attention_lr
        if rate is None:
            return {}
        trainable = {name for name, p in model.named_parameters() if p.requires_grad}
        return {name: rate for name in new_parameter_names(model) if name in trainable}

    def train_dataset(self) -> Any:
        return FiDDataset(self.train_examples)

    def collator(self, model: Any, context: TrainContext) -> Any:
        tokenizer = self.tokenizer
        return FiDCollator(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id)

    def loss(self, model: Any, inputs: dict[str, Any], forward: Any, num_items: Any) -> Any | None:
        # The passages are encoded one by one and fused for the decoder, which a plain forward
        # cannot express; the decoder runs through `forward` so that DDP all-reduces.
        encoded = None
        if self.frozen_outputs is not None:
            indices = inputs["example_index"].tolist()
            passages = [self.train_examples[i].passages for i in indices]
            encoded = self.frozen_outputs.fused(model, "train", indices, passages, self._pad_id())
        return fid_loss(model, inputs, forward=forward, num_items=num_items, encoded=encoded)

    def _pad_id(self) -> int:
        tokenizer = self.tokenizer
        return int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id)

    def evaluate(self, model: Any, context: TrainContext) -> dict[str, float]:
        from lampbox.engine.training.objective import score_outputs

        config = context.config
        outputs: list[str] = []
        model.eval()
        try:
            for start in range(0, len(self.dev_examples), config.eval_batch_size):
                batch = self.dev_examples[start : start + config.eval_batch_size]
                passages = [e.passages for e in batch]
                if self.frozen_outputs is None:
                    outputs += fid_generate(model, self.tokenizer, passages, config.eval_new_tokens)
                    continue
                indices = list(range(start, start + len(batch)))
                encoded, mask = self.frozen_outputs.fused(model, "dev", indices, passages, self._pad_id())
                outputs += fid_generate_encoded(model, self.tokenizer, encoded, mask, config.eval_new_tokens)
        finally:
            model.train()
        return score_outputs(self.task, outputs, [e.gold for e in self.dev_examples])

    def mean_example_tokens(self) -> float:
        return sum(len(e) for e in self.train_examples) / max(len(self.train_examples), 1)

    def save(self, model: Any, folder: Path) -> None:
        import torch

        # frozen linears held in bf16 while training (the core's speed-up) are saved as fp32,
        # the dtype the model was loaded in
        if any(p.is_floating_point() and p.dtype != torch.float32 for p in model.parameters()):
            model.float()
        model.save_pretrained(str(folder / "model"))
        self.tokenizer.save_pretrained(str(folder / "model"))


