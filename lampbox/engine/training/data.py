"""Training examples: a prompt (as the model sees it at inference) and the gold to learn.

The prompt's tokens are the ones the hf backend feeds the model when it generates (the chat
template with the generation prompt, or plain text), so training and inference see the same
tokens; the labels mask every prompt token (-100), so the loss is on the gold only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lampbox.engine.tasks import TaskSpec
    from lampbox.engine.types import ProfileItem

IGNORE_INDEX = -100  # labels the loss skips (torch's cross-entropy default)


@dataclass(frozen=True)
class SFTExample:
    """One training example: the prompt's tokens, then the target's (gold + end of turn)."""

    question_id: str
    prompt_ids: tuple[int, ...]
    target_ids: tuple[int, ...]

    @property
    def input_ids(self) -> list[int]:
        return [*self.prompt_ids, *self.target_ids]

    @property
    def labels(self) -> list[int]:
        return [IGNORE_INDEX] * len(self.prompt_ids) + list(self.target_ids)

    def __len__(self) -> int:
        return len(self.prompt_ids) + len(self.target_ids)


@dataclass(frozen=True)
class DevExample:
    """A dev question: the prompt's tokens and the gold the output is scored against."""

    question_id: str
    prompt_ids: tuple[int, ...]
    gold: str


def target_ids(tokenizer: Any, gold: str, max_target_tokens: int) -> tuple[int, ...]:
    """The gold's tokens (cut to max_target_tokens) and the end-of-turn token the model must learn
    to stop with."""
    ids = list(tokenizer(gold, add_special_tokens=False)["input_ids"])[:max_target_tokens]
    if tokenizer.eos_token_id is not None:
        ids.append(int(tokenizer.eos_token_id))
    return tuple(ids)


def encode_examples(
    tokenizer: Any,
    chat: bool,
    question_ids: Sequence[str],
    prompts: Sequence[str],
    golds: Sequence[str],
    max_target_tokens: int = 64,
) -> list[SFTExample]:
    """Training examples from prompt texts and their golds (one per question)."""
    from lampbox.engine.generation.hf import prompt_ids

    return [
        SFTExample(qid, tuple(prompt_ids(tokenizer, prompt, chat)), target_ids(tokenizer, gold, max_target_tokens))
        for qid, prompt, gold in zip(question_ids, prompts, golds, strict=True)
    ]


def encode_profile_examples(
    tokenizer: Any, chat: bool, task: TaskSpec, items: Sequence[ProfileItem], max_target_tokens: int = 256
) -> list[SFTExample]:
    """A user's profile items as training examples, each the (input, target) pair the task
    defines (`TaskSpec.profile_pair`): the input as a prompt (as the hf backend builds it), or,
    for plain language modelling (input ""), no prompt but the beginning-of-text token when the
    tokenizer has one, so that the loss covers every token of the item's text."""
    from lampbox.engine.generation.hf import prompt_ids

    examples = []
    for item in items:
        text, target = task.profile_pair(item.fields)
        if text:
            prompt = tuple(prompt_ids(tokenizer, text, chat))
        else:
            prompt = (int(tokenizer.bos_token_id),) if tokenizer.bos_token_id is not None else ()
        examples.append(SFTExample(item.key, prompt, target_ids(tokenizer, target, max_target_tokens)))
    return examples


def encode_dev(
    tokenizer: Any, chat: bool, question_ids: Sequence[str], prompts: Sequence[str], golds: Sequence[str]
) -> list[DevExample]:
    from lampbox.engine.generation.hf import prompt_ids

    return [
        DevExample(qid, tuple(prompt_ids(tokenizer, prompt, chat)), gold)
        for qid, prompt, gold in zip(question_ids, prompts, golds, strict=True)
    ]


class SFTDataset:
    """The examples as the Trainer wants them: dicts of input_ids and labels."""

    def __init__(self, examples: Sequence[SFTExample]) -> None:
        self.examples = list(examples)

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int) -> dict[str, list[int]]:
        example = self.examples[index]
        return {"input_ids": example.input_ids, "labels": example.labels}


class PadToLongest:
    """Pads each batch to its own longest example (not to a fixed max length).

    With `tail_logits`, examples are padded on the left, so every target ends the row, and the
    model is asked for logits at the last (longest target + 1) positions only
    (`logits_to_keep`): the vocabulary projection and its softmax, the largest activations of a
    small LM, are not computed over prompt tokens whose labels are masked anyway. The loss is
    the same (attention is masked, and rotary positions only matter relative to each other).
    """

    def __init__(self, pad_token_id: int, tail_logits: bool = False, min_width: int = 0) -> None:
        self.pad_token_id = pad_token_id
        self.tail_logits = tail_logits
        self.min_width = min_width  # pad at least this far (a fixed-length reference)

    def __call__(self, batch: Sequence[dict[str, list[int]]]) -> dict[str, Any]:
        import torch

        width = max(self.min_width, *(len(row["input_ids"]) for row in batch))
        input_ids = torch.full((len(batch), width), self.pad_token_id, dtype=torch.long)
        labels = torch.full((len(batch), width), IGNORE_INDEX, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, item in enumerate(batch):
            n = len(item["input_ids"])
            span = slice(width - n, width) if self.tail_logits else slice(0, n)
            input_ids[row, span] = torch.tensor(item["input_ids"], dtype=torch.long)
            labels[row, span] = torch.tensor(item["labels"], dtype=torch.long)
            mask[row, span] = 1
        padded: dict[str, Any] = {"input_ids": input_ids, "attention_mask": mask, "labels": labels}
        if self.tail_logits:
            longest_target = max(sum(1 for label in row["labels"] if label != IGNORE_INDEX) for row in batch)
            keep = min(width, longest_target + 1)
            padded["labels"] = labels[:, width - keep :]
            padded["logits_to_keep"] = keep
        return padded
