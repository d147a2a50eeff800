"""The core records shared by the store, the engine and both front ends."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
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
class Ranking:
    """One question's profile items, best first, with the retriever's scores.

    `context_limit` caps how many items a prompt may take from this ranking (0 for the
    `none` retriever: it orders nothing into the prompt); None means no cap.
    """

    question_id: str
    retriever_key: str
    item_keys: tuple[str, ...]
    item_ids: tuple[str, ...]
    scores: tuple[float, ...]
    context_limit: int | None = None

    def __len__(self) -> int:
        return len(self.item_keys)

    def top_keys(self, k: int) -> tuple[str, ...]:
        """The keys of the best k items a prompt may use."""
        limit = k if self.context_limit is None else min(k, self.context_limit)
        return self.item_keys[: max(limit, 0)]


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


@dataclass(frozen=True)
class ItemUtility:
    """ROPG feedback on one candidate profile item of a question: the task metric of the output
    generated with only that item in the prompt (higher is better; MAE is turned into
    (worst - mae) / worst)."""

    item_key: str
    item_id: str
    utility: float


@dataclass(frozen=True)
class ItemFeedback:
    """One question's ROPG feedback: each candidate item's utility. `feedback_key` names what
    made it (the generating model's fingerprint, template and metric), `label` says it briefly."""

    question_id: str
    feedback_key: str
    label: str
    items: tuple[ItemUtility, ...]

    def utility(self, item_key: str) -> float | None:
        return next((item.utility for item in self.items if item.item_key == item_key), None)


@dataclass(frozen=True)
class Candidate:
    """A configuration an RSPG selector chooses among: a retriever at k with a method on a
    backend and model (no personalization is retriever "none" at k 0)."""

    retriever: str
    k: int
    method: str
    backend: str
    model: str

    @classmethod
    def of(cls, retriever: str, k: int, method: str, backend: str, model: str) -> Candidate:
        """The candidate, with every unpersonalized choice spelled as "none" at k 0."""
        if retriever == "none" or k <= 0:
            retriever, k = "none", 0
        return cls(retriever, k, method, backend, model)

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> Candidate:
        """The candidate a stored run's spec describes (a model-free run: no backend, no model)."""
        return cls.of(
            str(spec.get("retriever", "none")), int(spec.get("k", 0)), str(spec.get("method", "ipa")),
            str(spec.get("backend", "")), str(spec.get("model", "")),
        )  # fmt: skip


@dataclass(frozen=True)
class PoolAnswer:
    """One candidate of an RSPG selection for a question: its configuration, and its stored
    answer and main score (None when its run is not stored: Pre runs only the chosen one)."""

    label: str
    candidate: Candidate
    output: str | None
    score: float | None


@dataclass(frozen=True)
class CandidateProbability:
    candidate: Candidate
    probability: float


@dataclass(frozen=True)
class SelectorProbabilities:
    """An RSPG selector's probabilities over the candidates for one question; `selector_key`
    names the trained selector, `label` says it briefly (e.g. "RSPG-Post")."""

    question_id: str
    selector_key: str
    label: str
    candidates: tuple[CandidateProbability, ...]

    def probability(self, candidate: Candidate) -> float | None:
        return next(
            (entry.probability for entry in self.candidates if entry.candidate == candidate), None
        )

    @property
    def chosen(self) -> Candidate | None:
        """The candidate the selector would pick (the most probable; the first on a tie)."""
        if not self.candidates:
            return None
        return max(self.candidates, key=lambda entry: entry.probability).candidate


def oracle_pick(answers: Sequence[PoolAnswer], higher_is_better: bool = True) -> Candidate | None:
    """The candidate with the best stored score (the first on a tie); None unless every
    candidate's score is known."""
    if not answers or any(answer.score is None for answer in answers):
        return None
    sign = 1.0 if higher_is_better else -1.0
    return max(answers, key=lambda answer: sign * float(answer.score)).candidate  # type: ignore[arg-type]
