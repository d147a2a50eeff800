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
