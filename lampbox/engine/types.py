"""The core records shared by the store, the engine and both front ends."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class ProfileItem:
    """One item of a user's history (a tweet, a paper, a review, ...).

    `key` identifies the stored item (stable across questions that share it); `id` is the
    item id of the official files; `fields` holds its text fields (title, text, tag, ...).
    """

    key: str
    id: str
    fields: Mapping[str, Any]
    date: str | None = None

    def get(self, name: str, default: str = "") -> str:
        value = self.fields.get(name, default)
        return "" if value is None else str(value)


@dataclass(frozen=True)
class Question:
    """One LaMP question: input, the user's profile and (when known) the gold output."""

    task: str
    scheme: str
    split: str
    id: str
    user_id: str
    input: str
    gold: str | None = None
    profile: tuple[ProfileItem, ...] = field(default=(), repr=False)


@dataclass(frozen=True)
class Prediction:
    """One question's result in a run: the prompt (None for a model-free method), the profile
    items that went in (keys and official ids, in prompt order), what the prompt builder kept
    (and, for label decoding, every label's log-likelihood), the raw and post-processed output,
    the gold and the per-question scores."""

    question_id: str
    user_id: str
    prompt: str | None
    item_keys: tuple[str, ...]
    item_ids: tuple[str, ...]
    kept: Mapping[str, Any]
    prompt_tokens: int | None
    raw_output: str
    output: str
    gold: str | None
    scores: Mapping[str, float]
    main_score: float | None


@dataclass(frozen=True)
class UserScore:
    """One user's share of a run: how many questions, the mean profile size, the task's
    metrics over the user's questions and the main one (None while a gold is missing)."""

    user_id: str
    n_questions: int
    profile_size: float
    metrics: Mapping[str, float]
    main_score: float | None
