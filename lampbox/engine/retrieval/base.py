"""The Retriever protocol and helpers shared by every retriever (the Ranking it returns is an
engine type: lampbox.engine.types).

A retriever ranks each question's profile items (batch-first: a list of questions in, one
Ranking per question out, in order). Its identity (name + the options that change rankings)
is its `key`, under which a ranking cache keeps rankings so later steps reuse them.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np

from lampbox.engine.caches import EmbeddingCache
from lampbox.engine.retrieval.memory import DOCUMENT_TEXTS, RETRIEVAL_MEMORY, at_most
from lampbox.engine.tasks import TaskSpec
from lampbox.engine.types import ProfileItem, Question, Ranking  # Ranking: re-exported here too
from lampbox.errors import LampboxError

ProgressCallback = Callable[[int, int], None]  # (done, total)
CancelCheck = Callable[[], bool]


class RetrievalCancelled(LampboxError):
    """Ranking was cancelled; rankings finished before the cancel are kept in the cache."""


@dataclass
class RetrievalContext:
    """What a retriever may use besides the questions: an embedding cache and hooks."""

    embeddings: EmbeddingCache | None = None  # None: an in-memory run
    on_progress: ProgressCallback | None = None
    should_cancel: CancelCheck | None = None
    notes: list[str] = field(default_factory=list)

    def cancelled(self) -> bool:
        return bool(self.should_cancel and self.should_cancel())


@runtime_checkable
class Retriever(Protocol):
    """Ranks profile items. Capabilities are properties, so callers never test names."""

    @property
    def name(self) -> str: ...

    @property
    def options(self) -> Mapping[str, Any]: ...

    @property
    def key(self) -> str:
        """Stable identity (name + ranking-relevant options) for stored rankings."""
        ...

    @property
    def uses_encoder(self) -> bool: ...

    @property
    def selects_context(self) -> bool:
        """False for `none`: its rankings put no item into a prompt."""
        ...

    @property
    def preferred_batch_size(self) -> int: ...

    def rank(
        self, task: TaskSpec, questions: Sequence[Question], context: RetrievalContext | None = None
    ) -> list[Ranking]: ...


class BaseRetriever:
    """Common plumbing: declared options with defaults, validation and the retriever key.

    Subclasses set `name`, `option_defaults` and `key_options` (the options that change
    rankings; others such as batch sizes are left out of the key) and implement `rank_one`
    or `rank`.
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    option_defaults: ClassVar[dict[str, Any]] = {}
    key_options: ClassVar[tuple[str, ...]] = ()
    uses_encoder: ClassVar[bool] = False
    selects_context: ClassVar[bool] = True
    preferred_batch_size: ClassVar[int] = 64

    def __init__(self, **options: Any) -> None:
        unknown = sorted(set(options) - set(self.option_defaults))
        if unknown:
            known = ", ".join(sorted(self.option_defaults)) or "none"
            raise LampboxError(
                f"retriever {self.name!r} has no option {', '.join(unknown)} (its options: {known})"
            )
        merged = dict(self.option_defaults)
        merged.update({k: v for k, v in options.items() if v is not None})
        self._options = merged

    @property
    def options(self) -> Mapping[str, Any]:
        return dict(self._options)

    def key_values(self) -> dict[str, Any]:
        """The options that identify this retriever's rankings (override to normalise)."""
        return {name: self._options[name] for name in self.key_options}

    @property
    def key(self) -> str:
        """Computed once: options are fixed when the retriever is made."""
        key = self.__dict__.get("_key")
        if key is None:
            values = self.key_values()
            key = self.name
            if values:
                key += json.dumps(values, sort_keys=True, separators=(",", ":"))
            self.__dict__["_key"] = key
        return key

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.key}>"

    def rank(
        self, task: TaskSpec, questions: Sequence[Question], context: RetrievalContext | None = None
    ) -> list[Ranking]:
        context = context or RetrievalContext()
        rankings = []
        for index, question in enumerate(questions):
            if context.cancelled():
                raise RetrievalCancelled(f"{self.name}: ranking cancelled")
            rankings.append(self.rank_one(task, question))
            if context.on_progress:
                context.on_progress(index + 1, len(questions))
        return rankings

    def rank_one(self, task: TaskSpec, question: Question) -> Ranking:
        raise NotImplementedError

    def ranking(self, question: Question, order: Sequence[int], scores: Sequence[float]) -> Ranking:
        """A Ranking from profile positions (best first) and each position's score."""
        positions = order.tolist() if isinstance(order, np.ndarray) else list(order)
        items = [question.profile[i] for i in positions]
        if isinstance(scores, np.ndarray):
            ordered_scores = tuple(scores[positions].astype(np.float64).tolist())
        else:
            ordered_scores = tuple(float(scores[i]) for i in positions)
        return Ranking(
            question_id=question.id,
            retriever_key=self.key,
            item_keys=tuple([item.key for item in items]),
            item_ids=tuple([item.id for item in items]),
            scores=ordered_scores,
            context_limit=None if self.selects_context else 0,
        )


_TEXTS_FULL = at_most(DOCUMENT_TEXTS)


def document_texts(task: TaskSpec, profile: Sequence[ProfileItem], use_date: bool) -> list[str]:
    """Each item's document text as REFERENCE.md's per-task table says (date appended if asked)."""
    # (document fields, use_date, item key) -> document text; item keys are content-addressed.
    cache: dict[tuple[tuple[str, ...], bool, str], str] = RETRIEVAL_MEMORY.slot("document texts", dict, _TEXTS_FULL)
    texts = []
    for item in profile:
        key = (task.document, use_date, item.key)
        text = cache.get(key)
        if text is None:
            date = (item.date or "") if use_date else None
            text = cache[key] = task.document_text(item.fields, date)
        texts.append(text)
    return texts


def as_bool(value: Any, option: str) -> bool:
    """Options arrive from the CLI as strings too: 'true'/'1'/'yes' and friends."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise LampboxError(f"option {option}: expected true or false, got {value!r}")
