"""A pool's candidates per question and the arithmetic of choosing among them.

A candidate is one configuration's answer to a question (its prompt, output and per-question
main metric); a pool is the same configurations over the same questions. The selector's
target is the metric oriented so that higher is better (MAE-like metrics negated).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from lampbox.errors import LampboxError

PRE, POST = "pre", "post"
MODES = (PRE, POST)


@dataclass(frozen=True)
class CandidateAnswer:
    """One configuration's answer to a question."""

    configuration: str  # the configuration's label (the same across questions)
    prompt: str  # what the model saw (for a model-free configuration: the unpersonalized prompt)
    output: str
    metric: float  # the per-question main metric


@dataclass(frozen=True)
class QuestionCandidates:
    question_id: str
    user_id: str
    candidates: tuple[CandidateAnswer, ...]  # in the pool's configuration order

    def targets(self, higher_is_better: bool) -> list[float]:
        """The metrics oriented so that higher is better (the selector's target)."""
        return [c.metric if higher_is_better else -c.metric for c in self.candidates]

    def best(self, higher_is_better: bool) -> set[int]:
        """The indices of the best candidates (ties all count)."""
        targets = self.targets(higher_is_better)
        top = max(targets)
        return {index for index, value in enumerate(targets) if value == top}


def candidate_text(configuration: str, prompt: str, output: str, mode: str) -> tuple[str, str]:
    """The (first, second) text pair the selector encodes: the configuration's name (and in
    Post its output) first, the prompt second, so truncation cuts the prompt, never the output."""
    if mode not in MODES:
        raise LampboxError(f"RSPG mode must be pre or post, not {mode!r}")
    first = configuration if mode == PRE else f"{configuration} answer: {output}"
    return first, prompt


def check_pool(questions: Sequence[QuestionCandidates]) -> list[str]:
    """The pool's configurations; one clear error for an empty pool, a pool of one, or
    questions that do not have the same configurations."""
    if not questions:
        raise LampboxError("the pool has no question with a metric to learn from")
    configurations = [c.configuration for c in questions[0].candidates]
    if len(configurations) < 2:
        raise LampboxError(f"a pool of one candidate ({', '.join(configurations) or 'none'}) leaves nothing to select")
    for question in questions:
        if [c.configuration for c in question.candidates] != configurations:
            raise LampboxError(f"question {question.question_id} does not have the pool's configurations")
    return configurations


def oracle_scores(questions: Sequence[QuestionCandidates], higher_is_better: bool) -> list[float]:
    """Per question, the best candidate's metric (the oracle upper bound's per-question scores)."""
    pick = max if higher_is_better else min
    return [pick(c.metric for c in question.candidates) for question in questions]


def success_rate(questions: Sequence[QuestionCandidates], chosen: Sequence[int], higher_is_better: bool) -> float:
    """How often the chosen candidate is a best one."""
    if not questions:
        return 0.0
    hits = sum(index in q.best(higher_is_better) for q, index in zip(questions, chosen, strict=True))
    return hits / len(questions)
