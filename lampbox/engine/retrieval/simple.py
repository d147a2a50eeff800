"""The retrievers that read no text: `recency` (newest first), `random` (seeded) and `none`."""

from __future__ import annotations

import hashlib
from typing import Any, ClassVar

import numpy as np

from lampbox.engine.retrieval.base import BaseRetriever, Ranking
from lampbox.engine.tasks import TaskSpec
from lampbox.engine.types import ProfileItem, Question
from lampbox.errors import LampboxError

MISSING_DATE_POLICIES = ("error", "last")


def parse_date(date: str | None) -> tuple[int, ...]:
    """The reference's date key: `tuple(map(int, date.split("-")))` (YYYY-MM-DD and shorter)."""
    if date is None:
        raise ValueError("no date")
    return tuple(int(part) for part in str(date).strip().split("-"))


class RecencyRetriever(BaseRetriever):
    """Newest first, as the reference does it: a stable ascending sort by date, reversed.

    Items with equal dates therefore come out in reverse profile order (exactly like the
    reference). With missing_dates="last", items whose date is missing or does not parse
    go after the dated ones, in profile order; the default "error" names the item.
    """

    name: ClassVar[str] = "recency"
    description: ClassVar[str] = "newest profile items first (by date)"
    option_defaults: ClassVar[dict[str, Any]] = {"missing_dates": "error"}
    key_options: ClassVar[tuple[str, ...]] = ("missing_dates",)
    preferred_batch_size: ClassVar[int] = 512

    def key_values(self) -> dict[str, Any]:
        policy = str(self._options["missing_dates"])
        if policy not in MISSING_DATE_POLICIES:
            raise LampboxError(
                f"recency: missing_dates must be one of {', '.join(MISSING_DATE_POLICIES)}, "
                f"not {policy!r}"
            )
        # The default keeps the plain name so stored rankings read as `recency`.
        return {} if policy == "error" else {"missing_dates": policy}

    def rank_one(self, task: TaskSpec, question: Question) -> Ranking:
        self.key_values()  # validates the policy
        policy = str(self._options["missing_dates"])
        dated: list[tuple[tuple[int, ...], int]] = []
        undated: list[int] = []
        for position, item in enumerate(question.profile):
            try:
                dated.append((parse_date(item.date), position))
            except ValueError:
                if policy == "error":
                    raise LampboxError(_date_problem(question, item)) from None
                undated.append(position)
        ascending = sorted(dated, key=lambda pair: pair[0])
        order = [position for _, position in reversed(ascending)] + undated
        # Scores: rank-based, higher is newer (dates are not numbers).
        scores = [0.0] * len(question.profile)
        for rank, position in enumerate(order):
            scores[position] = float(len(order) - rank)
        return self.ranking(question, order, scores)


def _date_problem(question: Question, item: ProfileItem) -> str:
    shown = "no date" if item.date is None else f"date {item.date!r} is not YYYY-MM-DD"
    return (
        f"recency: question {question.id}, profile item {item.id}: {shown} "
        "(use the option missing_dates=last to put such items last)"
    )


class RandomRetriever(BaseRetriever):
    """A seeded random order; the same (seed, question id) always gives the same order."""

    name: ClassVar[str] = "random"
    description: ClassVar[str] = "a random order of the profile (seeded, reproducible)"
    option_defaults: ClassVar[dict[str, Any]] = {"seed": 0}
    key_options: ClassVar[tuple[str, ...]] = ("seed",)
    preferred_batch_size: ClassVar[int] = 512

    def key_values(self) -> dict[str, Any]:
        try:
            return {"seed": int(self._options["seed"])}
        except (TypeError, ValueError):
            seed = self._options["seed"]
            raise LampboxError(f"random: seed must be an integer, not {seed!r}") from None

    def rank_one(self, task: TaskSpec, question: Question) -> Ranking:
        # Seeded per question, so a ranking does not depend on which batch it was in.
        digest = hashlib.sha256(f"{self.key_values()['seed']}\0{question.id}".encode()).digest()
        generator = np.random.default_rng(int.from_bytes(digest[:8], "little"))
        order = generator.permutation(len(question.profile))
        scores = [0.0] * len(question.profile)
        for rank, position in enumerate(order):
            scores[int(position)] = float(len(order) - rank)
        return self.ranking(question, [int(p) for p in order], scores)


class NoRetriever(BaseRetriever):
    """No personalization: the ranking keeps profile order but puts nothing in the prompt."""

    name: ClassVar[str] = "none"
    description: ClassVar[str] = "no retrieval (k = 0: the prompt gets no profile item)"
    selects_context: ClassVar[bool] = False
    preferred_batch_size: ClassVar[int] = 1024

    def rank_one(self, task: TaskSpec, question: Question) -> Ranking:
        positions = range(len(question.profile))
        return self.ranking(question, positions, [0.0] * len(question.profile))
