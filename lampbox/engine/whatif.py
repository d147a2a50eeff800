"""What-if edits of one question: profile items excluded or pinned, the input replaced, or a
new question asked as the same user.

A WhatIf is data (frozen, hashable, JSON), applied the same way for every caller: `question`
is the question as edited, `select` picks the prompt's items (the pinned ones first, in the
order they were pinned, then the ranking's best items that are neither excluded nor pinned, up
to k; the prompt builder then fits them into the usual budget), and `cache_key` keeps an edited
output apart from the unedited question's cache entry. Design notes: docs/tui.md (What-ifs).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from lampbox.engine.types import ProfileItem, Question, Ranking
from lampbox.errors import LampboxError


@dataclass(frozen=True)
class WhatIf:
    """An edit of one question. Empty (the default) means the question as it is."""

    excluded: tuple[str, ...] = ()  # profile item keys the prompt must skip (sorted)
    pinned: tuple[str, ...] = ()  # profile item keys the prompt takes first, in this order
    input: str | None = None  # the whole input that replaces the question's (instruction included)
    new_question: bool = False  # `input` is a new question asked as this user: no gold

    def __post_init__(self) -> None:
        if set(self.excluded) & set(self.pinned):
            raise LampboxError("a profile item cannot be both excluded and pinned")
        if len(set(self.pinned)) != len(self.pinned):
            raise LampboxError("a profile item is pinned once")
        if self.new_question and not (self.input or "").strip():
            raise LampboxError("a new question needs its text")
        object.__setattr__(self, "excluded", tuple(sorted(set(self.excluded))))

    # -- state -------------------------------------------------------------------------------

    @property
    def is_empty(self) -> bool:
        return not (self.excluded or self.pinned or self.input is not None)

    @property
    def changes_items(self) -> bool:
        return bool(self.excluded or self.pinned)

    @property
    def changes_input(self) -> bool:
        return self.input is not None

    def describe(self) -> str:
        """A short human summary, e.g. '1 excluded · 2 pinned · input edited'."""
        parts = []
        if self.excluded:
            parts.append(f"{len(self.excluded)} excluded")
        if self.pinned:
            parts.append(f"{len(self.pinned)} pinned")
        if self.new_question:
            parts.append("new question")
        elif self.input is not None:
            parts.append("input edited")
        return " · ".join(parts) or "no edit"

    # -- changes (each returns a new WhatIf) -------------------------------------------------

    def toggle_excluded(self, key: str) -> WhatIf:
        """Exclude an item (un-pinning it), or bring an excluded one back."""
        if key in self.excluded:
            return replace(self, excluded=tuple(k for k in self.excluded if k != key))
        return replace(
            self, excluded=(*self.excluded, key), pinned=tuple(k for k in self.pinned if k != key)
        )

    def toggle_pinned(self, key: str) -> WhatIf:
        """Pin an item after the ones pinned before (no longer excluded), or unpin it."""
        if key in self.pinned:
            return replace(self, pinned=tuple(k for k in self.pinned if k != key))
        return replace(
            self, pinned=(*self.pinned, key), excluded=tuple(k for k in self.excluded if k != key)
        )

    def with_input(self, text: str | None, new_question: bool = False) -> WhatIf:
        """The input replaced by `text` (None: the question's own input again)."""
        return replace(self, input=text, new_question=new_question and text is not None)

    # -- applying ----------------------------------------------------------------------------

    def question(self, question: Question) -> Question:
        """The question as edited: its input replaced; a new question has no gold."""
        if self.input is None:
            return question
        gold = None if self.new_question else question.gold
        return replace(question, input=self.input, gold=gold)

    def select(self, question: Question, ranking: Ranking | None, k: int) -> list[ProfileItem]:
        """The prompt's items: pinned first (in pin order), then the ranking's best items that
        are neither excluded nor pinned, until there are k (pinned items beyond k all stay).
        Without a ranking or with k = 0 (no personalization) the prompt takes no item."""
        if ranking is None or k <= 0 or ranking.context_limit == 0:
            return []
        by_key = {item.key: item for item in question.profile}
        pinned = [by_key[key] for key in self.pinned if key in by_key]
        skip = set(self.excluded) | set(self.pinned)
        limit = k if ranking.context_limit is None else min(k, ranking.context_limit)
        rest = [by_key[key] for key in ranking.item_keys if key not in skip and key in by_key]
        return pinned + rest[: max(limit - len(pinned), 0)]

    def cache_key(self, key: str, question_id: str) -> str:
        """A generation cache key for the edited question, never the unedited one's `key`."""
        if self.is_empty:
            return key
        data = json.dumps(
            {"whatif": self.to_json(), "question": question_id, "key": key}, sort_keys=True
        )
        return "whatif-" + hashlib.sha256(data.encode("utf-8")).hexdigest()

    @property
    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(self.to_json(), sort_keys=True).encode()).hexdigest()[:16]

    # -- JSON --------------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        return {
            "excluded": list(self.excluded),
            "pinned": list(self.pinned),
            "input": self.input,
            "new_question": self.new_question,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> WhatIf:
        return cls(
            tuple(data.get("excluded", ())),
            tuple(data.get("pinned", ())),
            data.get("input"),
            bool(data.get("new_question", False)),
        )


def score_delta(edited: Mapping[str, float], original: Mapping[str, float]) -> dict[str, float]:
    """Edited minus original, per metric both have (empty when either lacks a gold)."""
    return {name: edited[name] - original[name] for name in edited if name in original}
