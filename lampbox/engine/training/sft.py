"""IPA fine-tuning as an objective: a causal LM learns (prompt -> gold) pairs, LoRA or full.

The loss is the model's own cross-entropy on the gold tokens (the prompt's labels are masked,
`data.SFTExample`), with `TrainConfig.share_prefix` computing a batch's shared prompt prefix
once (training/prefix.py); dev evaluation generates greedily from the dev prompts and scores with the
task's official metric; the result is a LoRA adapter folder (`adapter/`) or a whole model
with its tokenizer (`model/`).
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

from lampbox.engine.training.data import DevExample, PadToLongest, SFTDataset, SFTExample
from lampbox.engine.training.objective import (
    TaskExamplesObjective,
    TrainContext,
    score_outputs,
)
from lampbox.engine.training.prefix import SharedPrefixCollator, shared_prefix_loss


class SFTObjective(TaskExamplesObjective):
    """Supervised fine-tuning of a causal LM on SFTExamples (the first objective)."""

    loss_counts_tokens = False

    train_examples: list[SFTExample]
    dev_examples: list[DevExample]

    @property
    def pad_id(self) -> int:
        tokenizer = self.tokenizer
        return int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id)

    def load_model(self, context: TrainContext) -> Any:
        import torch
        from transformers import AutoModelForCausalLM

        config = context.config
        base_bf16 = config.bf16_base and config.lora is not None and context.precision == "bf16"
        attention = {"attn_implementation": config.attention} if config.attention else {}
        model = AutoModelForCausalLM.from_pretrained(
            self.model_source, dtype=torch.bfloat16 if base_bf16 else torch.float32, **attention
        )
        if config.lora is None:
            return model
        from lampbox.engine.training.lora import add_lora

        return add_lora(model, config.lora, "CAUSAL_LM")

    def train_dataset(self) -> Any:
        return SFTDataset(self.train_examples)

    def collator(self, model: Any, context: TrainContext) -> Any:
        config = context.config
        if config.pad_to:
            return PadToLongest(self.pad_id, min_width=config.pad_to)
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        forward = inspect.signature(type(base).forward)
        tail_logits = config.tail_logits and "logits_to_keep" in forward.parameters
        if config.share_prefix and tail_logits and "cache" in forward.parameters:
            return SharedPrefixCollator(self.pad_id)
        return PadToLongest(self.pad_id, tail_logits=tail_logits)

    def loss(self, model: Any, inputs: dict[str, Any], forward: Any, num_items: Any) -> Any | None:
        # the model's own cross-entropy on the gold tokens (a batch with a shared prefix: the
        # same, the prefix computed once)
        return shared_prefix_loss(forward, inputs)

    def evaluate(self, model: Any, context: TrainContext) -> dict[str, float]:
        from lampbox.engine.training.trainer import generate_dev

        config = context.config
        outputs = generate_dev(
            model, self.tokenizer, self.dev_examples, config.eval_new_tokens, config.eval_batch_size, context.precision
        )
        return score_outputs(self.task, outputs, [e.gold for e in self.dev_examples])

    def mean_example_tokens(self) -> float:
        return sum(len(e) for e in self.train_examples) / max(len(self.train_examples), 1)

    def save(self, model: Any, folder: Path) -> None:
        from peft import PeftModel

        if isinstance(model, PeftModel):
            model.save_pretrained(str(folder / "adapter"))  # the adapter only
        else:
            model.save_pretrained(str(folder / "model"))
            self.tokenizer.save_pretrained(str(folder / "model"))
