"""In-prompt augmentation (IPA): LaMP's per-task templates and token budget.

The PromptBuilder renders retrieved profile items with the task's template, joins them with
", and ", and puts them before the input (or, for LaMP_1, after the word "title" of the input),
counting tokens with the generating model's tokenizer exactly as the official LaMP code does.
Every Prompt records which items went in and how much of each survived, and the prompt never
exceeds the budget it promises. Design notes and each deliberate choice: docs/prompting.md.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from lampbox.engine.defaults import DEFAULT_MAX_LENGTH
from lampbox.engine.generation.base import Tokenizer
from lampbox.engine.tasks import (
    IPA_DEFAULT_CONNECTOR,
    IPA_PATTERNS_CONNECTOR,
    IPA_WRITTEN_BY_CONNECTOR,
    TaskSpec,
)
from lampbox.engine.types import ProfileItem
from lampbox.errors import LampboxError

ITEM_JOINER = ", and "
INPUT_SHARE = 0.6  # the input keeps at most this share of the budget
INPUT_SHARE_STEP = 0.1  # ... and it drops by this much each time the items do not fit
JOINER_TOKENS = 2  # what the official arithmetic charges for each ", and "
SPLICE_WORD = "title"

# The text whose length the official code subtracts for a connector (quirk kept: LaMP_7 counts
# "are written by user." although the prompt says "are written by a person.").
_OFFICIAL_CONNECTOR_TEXT = {
    IPA_DEFAULT_CONNECTOR: "",
    IPA_PATTERNS_CONNECTOR: "Following the given patterns",
    IPA_WRITTEN_BY_CONNECTOR: "are written by user. Following the given patterns",
}
# Templates whose fixed part the official code measures with a different string (quirks kept:
# LaMP_5 drops "for", LaMP_7 measures '"" ' rather than '" " ').
_OFFICIAL_OVERHEAD_TEMPLATE = {
    '"{title}" is a title for "{abstract}" ': '"{title}" is a title " " ',
    '"{text}" ': '"" ',
}
# LaMP_1 charges a constant 2 tokens (the quotes) per title instead of measuring them.
_OFFICIAL_OVERHEAD_CONSTANT = {'"{title}"': 2}


@dataclass(frozen=True)
class PromptItem:
    """One profile item that went into a prompt, and how much of its main text survived."""

    key: str
    kept_tokens: int  # tokens of the truncated field that went in
    total_tokens: int  # tokens of that field before truncation

    @property
    def kept_fraction(self) -> float:
        return 1.0 if self.total_tokens == 0 else self.kept_tokens / self.total_tokens

    @property
    def truncated(self) -> bool:
        return self.kept_tokens < self.total_tokens

    def to_json(self) -> dict[str, Any]:
        return {"key": self.key, "kept_tokens": self.kept_tokens, "total_tokens": self.total_tokens}


@dataclass(frozen=True)
class Prompt:
    """A built prompt and the record of how it was built (stored with every prediction)."""

    text: str
    token_count: int  # tokens of `text` (plus the declared special tokens); <= budget
    budget: int  # the most tokens this prompt may have
    input_tokens: int  # tokens of the input that went in
    input_total_tokens: int  # tokens of the whole input
    items: tuple[PromptItem, ...] = ()  # the items that went in, in order
    offered_items: int = 0  # how many items were given to the builder
    fell_back: bool = False  # items were given but the prompt is the bare input
    input_share: float | None = None  # the input's share of the budget that worked (None: no items)

    @property
    def item_keys(self) -> tuple[str, ...]:
        return tuple(item.key for item in self.items)

    @property
    def input_truncated(self) -> bool:
        return self.input_tokens < self.input_total_tokens

    def to_json(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "token_count": self.token_count,
            "budget": self.budget,
            "input_tokens": self.input_tokens,
            "input_total_tokens": self.input_total_tokens,
            "items": [item.to_json() for item in self.items],
            "offered_items": self.offered_items,
            "fell_back": self.fell_back,
            "input_share": self.input_share,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Prompt:
        values = dict(data)
        values["items"] = tuple(PromptItem(**item) for item in values.get("items", ()))
        return cls(**values)


@dataclass(frozen=True)
class _Rendering:
    """Items rendered for one input share: the prompt is head + tail, the tail is input text."""

    head: str
    tail: str
    items: tuple[PromptItem, ...] = field(default=())


class PromptBuilder:
    """Builds IPA prompts for one task, counted with one model's tokenizer.

    `max_length` is the official budget (256; 512 in the feedback scorers). With `context_size`,
    the budget is also capped at context_size - reserve_new_tokens so that prompt and output
    fit the model. `special_tokens` is how many special tokens the model's tokenizer adds to
    each text (Flan-T5: 1, its </s>): the official code counts them in every length it measures.
    """

    def __init__(
        self,
        task: TaskSpec,
        tokenizer: Tokenizer,
        max_length: int = DEFAULT_MAX_LENGTH,
        context_size: int | None = None,
        reserve_new_tokens: int = 0,
        special_tokens: int = 0,
    ) -> None:
        if max_length < 1:
            raise LampboxError(f"prompt max_length must be at least 1 token, not {max_length}")
        if special_tokens < 0 or reserve_new_tokens < 0:
            raise LampboxError("special_tokens and reserve_new_tokens cannot be negative")
        budget = max_length
        if context_size is not None:
            budget = min(max_length, context_size - reserve_new_tokens)
        if budget <= special_tokens:
            raise LampboxError(
                f"a context of {context_size} tokens leaves no room for a prompt after reserving "
                f"{reserve_new_tokens} tokens for generation"
            )
        self.task = task
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.context_size = context_size
        self.reserve_new_tokens = reserve_new_tokens
        self.special_tokens = special_tokens
        self.budget = budget
        self._encode_cached = lru_cache(maxsize=8192)(self._encode_uncached)
        template = task.ipa_item_template
        self._overhead_template = _OFFICIAL_OVERHEAD_TEMPLATE.get(template, template)
        self._overhead_constant = _OFFICIAL_OVERHEAD_CONSTANT.get(template)
        connector = task.ipa_connector
        connector_text = _OFFICIAL_CONNECTOR_TEXT.get(connector, connector.strip())
        self._connector_cost = self.count(connector_text) if connector_text else 0

    # -- counting ---------------------------------------------------------------------------

    def _encode_uncached(self, text: str) -> tuple[int, ...]:
        return tuple(self.tokenizer.encode(text))

    def encode(self, text: str) -> tuple[int, ...]:
        """Token ids of `text` without special tokens (cached: profile items recur)."""
        return self._encode_cached(text)

    def count(self, text: str) -> int:
        """Tokens of `text` as the official code measures them (special tokens included)."""
        return len(self.encode(text)) + self.special_tokens

    def _count_prompt(self, text: str) -> int:
        """Like count, for whole prompts: unique texts that would only churn the cache."""
        return len(self.tokenizer.encode(text)) + self.special_tokens

    # -- building ---------------------------------------------------------------------------

    def build(self, question_input: str, profile_items: Sequence[ProfileItem] = ()) -> Prompt:
        """The IPA prompt for one input and its retrieved items (in rank order)."""
        input_total = len(self.encode(question_input))
        if not profile_items:
            return self._fit(_Rendering("", question_input), question_input, input_total, 0)
        rendering, share = self._render(question_input, profile_items)
        if rendering is None:
            bare = _Rendering("", question_input)
            return self._fit(bare, question_input, input_total, len(profile_items), fell_back=True)
        return self._fit(rendering, question_input, input_total, len(profile_items), share=share)

    def build_many(self, requests: Iterable[tuple[str, Sequence[ProfileItem]]]) -> list[Prompt]:
        """Prompts for many (input, items) pairs, in order."""
        return [self.build(question_input, items) for question_input, items in requests]

    def _render(
        self, question_input: str, profile_items: Sequence[ProfileItem]
    ) -> tuple[_Rendering | None, float | None]:
        """The official retry loop: the input's share drops by 10% until the items fit."""
        splice_at = -1
        if self.task.ipa_splice_after_title:
            splice_at = question_input.find(SPLICE_WORD)
            if splice_at == -1:  # official add_string_after_title leaves the input alone
                return None, None
            splice_at += len(SPLICE_WORD)
        input_count = self.count(question_input)
        share = INPUT_SHARE
        failed_reserve = None
        while share >= 0:  # the same float steps as the official loop (0.6, 0.5, ..., ~0)
            reserved = min(input_count, int(share * self.budget))
            if reserved == failed_reserve:  # same reservation as a failed try: same result
                share -= INPUT_SHARE_STEP
                continue
            failed_reserve = reserved
            rendered = self._render_items(profile_items, self.budget - reserved)
            if rendered is not None:
                texts, items = rendered
                joined = ITEM_JOINER.join(texts)
                if splice_at >= 0:
                    head = question_input[:splice_at] + ITEM_JOINER + joined
                    rendering = _Rendering(head, question_input[splice_at:], items)
                else:
                    rendering = _Rendering(joined + self.task.ipa_connector, question_input, items)
                # Items that overflow the whole budget (tokenizer slop) count as not fitting.
                if self.count(rendering.head) <= self.budget:
                    return rendering, round(share, 2)
            share -= INPUT_SHARE_STEP
        return None, None

    def _render_items(
        self, profile_items: Sequence[ProfileItem], items_budget: int
    ) -> tuple[list[str], tuple[PromptItem, ...]] | None:
        """Each item's main text cut to its share, unused share carried on; None: no fit."""
        count = len(profile_items)
        joiners = JOINER_TOKENS * (count - 1)
        if self.task.ipa_splice_after_title:
            per_item = (items_budget - joiners) // count
        else:
            per_item = (items_budget - 1 - joiners - self._connector_cost) // count
        saved = 0
        texts: list[str] = []
        records: list[PromptItem] = []
        truncate_field = self.task.ipa_truncate_field
        for profile_item in profile_items:
            values = _TemplateFields(profile_item)
            overhead = self._item_overhead(values)
            allowed = per_item + saved - overhead - self.special_tokens
            if allowed < 0:  # the official tokenizer call raises here
                return None
            field_ids = self.encode(profile_item.get(truncate_field))
            kept_ids = field_ids[:allowed]
            saved += per_item - (len(kept_ids) + self.special_tokens) - overhead
            values[truncate_field] = self.tokenizer.decode(kept_ids)
            texts.append(self.task.ipa_item_template.format_map(values))
            records.append(PromptItem(profile_item.key, len(kept_ids), len(field_ids)))
        return texts, tuple(records)

    def _item_overhead(self, values: _TemplateFields) -> int:
        """Tokens of an item's template without its main text, measured the official way."""
        if self._overhead_constant is not None:
            return self._overhead_constant
        placeholder = _TemplateFields(values, {self.task.ipa_truncate_field: " "})
        return self.count(self._overhead_template.format_map(placeholder))

    def _fit(
        self,
        rendering: _Rendering,
        question_input: str,
        input_total: int,
        offered: int,
        fell_back: bool = False,
        share: float | None = None,
    ) -> Prompt:
        """Assemble head + tail, cutting the tail (input text) so the prompt fits the budget."""
        text = rendering.head + rendering.tail
        token_count = self._count_prompt(text)
        input_text = question_input
        if token_count > self.budget:
            tail_ids = self.encode(rendering.tail)
            # Tokenizers that drop a leading space on decode would glue the tail to the head.
            leading_space = rendering.tail[: len(rendering.tail) - len(rendering.tail.lstrip())]
            keep = min(len(tail_ids), max(self.budget - self.count(rendering.head), 0))
            while True:
                tail = self.tokenizer.decode(tail_ids[:keep])
                if keep and leading_space and not tail[:1].isspace():
                    tail = leading_space + tail
                text = rendering.head + tail
                token_count = self._count_prompt(text)
                if token_count <= self.budget or keep == 0:
                    break
                keep = max(keep - (token_count - self.budget), 0)
            input_text = question_input[: len(question_input) - len(rendering.tail)] + tail
        if token_count > self.budget:  # defensive: the head alone fits by construction
            raise LampboxError(f"cannot fit a prompt into {self.budget} tokens")
        input_tokens = input_total if input_text == question_input else len(self.encode(input_text))
        return Prompt(
            text=text,
            token_count=token_count,
            budget=self.budget,
            input_tokens=min(input_tokens, input_total),
            input_total_tokens=input_total,
            items=rendering.items,
            offered_items=offered,
            fell_back=fell_back,
            input_share=share,
        )


class _TemplateFields(dict[str, str]):
    """An item's fields for str.format_map; a missing field renders as empty text."""

    def __init__(
        self, source: ProfileItem | Mapping[str, str], overrides: Mapping[str, str] | None = None
    ) -> None:
        if isinstance(source, ProfileItem):
            super().__init__({name: source.get(name) for name in source.fields})
        else:
            super().__init__(source)
        self.update(overrides or {})

    def __missing__(self, key: str) -> str:
        return ""
