"""ROPG feedback: the utility of each candidate item for a question.

For each question and each of its top `ctx_size` items under a base retriever, the IPA prompt
is built with that item alone (k = 1), generated through the generation cache (a prompt
generated anywhere before is not generated again) and scored against the gold with the task
metric: accuracy (classification), the paper's normalised utility (worst - |error|) / worst
with worst = max(|gold - 1|, |gold - 5|) (ratings), the main ROUGE (generation).
With `kind="likelihood"` (lampbox's addition, no generation) an item's utility is the
probability the model gives the gold after the prompt with that item, per gold token (the
geometric mean, exp(mean log-probability), in (0, 1]): one forward pass per pair, on a
backend that scores continuations (hf).
Utilities are keyed by what made them (`feedback_key`: the generator's identity, decoding
parameters, prompt budget and the metric), never by the base retriever or ctx_size: a
(question, item) utility is the same whichever retriever proposed the item.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from lampbox.engine.caches import GenerationCache
from lampbox.engine.generation.base import GenerationParams, GenerationRequest, Generator
from lampbox.engine.generation.cached import cached_outputs, generate_cached, generation_cache_key
from lampbox.engine.methods import MethodInput, get_method
from lampbox.engine.metrics import Scorer, parse_gold_rating, parse_rating
from lampbox.engine.tasks import TaskSpec
from lampbox.engine.types import ItemFeedback, ItemUtility, ProfileItem, Question
from lampbox.errors import LampboxError

FEEDBACK_KINDS = ("generate", "likelihood")
FEEDBACK_VERSION = 1


def utility_metric(task: TaskSpec) -> str:
    """The per-question score a utility is made from."""
    if task.kind == "classification":
        return "accuracy"
    if task.kind == "rating":
        return "normalised-mae"
    return task.main_metric


class UtilityScorer:
    """Utility of one output against its gold (higher is better, in [0, 1])."""

    def __init__(self, task: TaskSpec) -> None:
        self.task = task
        self.scorer = Scorer(task)
        self.metric = utility_metric(task)

    def __call__(self, output: str, gold: str) -> float:
        if self.task.kind == "rating":
            gold_value = parse_gold_rating(gold)
            worst = max(abs(gold_value - 1), abs(gold_value - 5))
            error = abs(parse_rating(output.strip(), gold_value) - gold_value)
            return (worst - error) / worst if worst > 0 else 1.0
        return float(self.scorer.score(output.strip(), gold)[self.metric])


def feedback_key(
    identity: Mapping[str, Any],
    params: GenerationParams,
    max_length: int,
    task: TaskSpec,
    kind: str = "generate",
) -> str:
    """What made the utilities: the model, decoding, prompt settings, metric and feedback kind."""
    data = {
        "model": identity, "params": params.to_json(), "max_length": max_length, "method": "ipa", "k": 1,
        "metric": utility_metric(task), "feedback": kind, "version": FEEDBACK_VERSION,
    }  # fmt: skip
    digest = hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:24]
    return f"ropg-{kind}-{digest}"


def compute_feedback(
    task: TaskSpec,
    questions: Sequence[Question],
    candidates: Sequence[Sequence[ProfileItem]],
    generator: Generator,
    params: GenerationParams,
    max_length: int,
    *,
    label: str,
    kind: str = "generate",
    cache: GenerationCache | None = None,
    batch_size: int = 8,
    on_progress: Callable[[int, int], None] | None = None,
    should_cancel: Callable[[], bool] | None = None,
) -> list[ItemFeedback]:
    """Each question's utility for each of its candidate items (one generation per pair,
    through the cache), in question order; questions need a gold."""
    if kind not in FEEDBACK_KINDS:
        raise LampboxError(f"feedback must be one of {', '.join(FEEDBACK_KINDS)}, not {kind!r}")
    if kind == "likelihood" and not generator.supports_scoring:
        raise LampboxError(f"--feedback likelihood needs a backend that scores continuations (hf), not {generator.backend}")
    prepare = get_method("ipa").preparer(task, generator, params, max_length)
    key = feedback_key(generator.identity(), params, max_length, task, kind)
    built: list[tuple[Question, ProfileItem, MethodInput]] = []
    for question, items in zip(questions, candidates, strict=True):
        if question.gold is None:
            raise LampboxError(f"question {question.id} has no gold: feedback needs one per training question")
        built.extend((question, item, prepare(question, [item])) for item in items)
    requests = [entry.request for _, _, entry in built]
    sizes = [entry.prompt.token_count for _, _, entry in built]
    if kind == "likelihood":
        golds = [question.gold or "" for question, _, _ in built]
        values = likelihoods(generator, requests, golds, params, cache=cache, sizes=sizes, batch_size=batch_size,
                             on_progress=on_progress, should_cancel=should_cancel)  # fmt: skip
    else:
        result = generate_cached(
            generator, requests, params, cache=cache, sizes=sizes, batch_size=batch_size,
            on_progress=on_progress, should_cancel=should_cancel,
        )  # fmt: skip
        score = UtilityScorer(task)
        values = [score(output, question.gold or "") for (question, _, _), output in zip(built, result.outputs, strict=True)]
    per_question: dict[str, list[ItemUtility]] = {}
    for (question, item, _), utility in zip(built, values, strict=True):
        per_question.setdefault(question.id, []).append(ItemUtility(item.key, item.id, utility))
    return [
        ItemFeedback(question.id, key, label, tuple(per_question.get(question.id, ())))
        for question in questions
    ]


def likelihoods(
    generator: Generator,
    requests: Sequence[GenerationRequest],
    golds: Sequence[str],
    params: GenerationParams,
    *,
    cache: GenerationCache | None = None,
    sizes: Sequence[int] | None = None,
    batch_size: int = 8,
    on_progress: Callable[[int, int], None] | None = None,
    should_cancel: Callable[[], bool] | None = None,
) -> list[float]:
    """exp(mean log-probability of the gold's tokens) after each request's prompt, kept in the
    generation cache under keys of their own (the gold is part of the key)."""
    identity = generator.identity()
    keys = [
        generation_cache_key(identity, params, json.dumps({"likelihood_of": gold, "request": request.cache_json()}, sort_keys=True))
        for request, gold in zip(requests, golds, strict=True)
    ]  # fmt: skip
    gold_of = dict(zip(keys, golds, strict=True))
    request_keys = {id(request): key for request, key in zip(requests, keys, strict=True)}

    def compute(batch: Sequence[GenerationRequest]) -> list[str]:
        batch_golds = [gold_of[request_keys[id(request)]] for request in batch]
        sums = generator.score([request.prompt for request in batch], batch_golds)
        counts = [max(len(generator.tokenizer.encode(gold)), 1) for gold in batch_golds]
        return [repr(math.exp(total / count)) for total, count in zip(sums, counts, strict=True)]

    result = cached_outputs(
        generator, requests, keys, compute, cache=cache, sizes=sizes, batch_size=batch_size,
        on_progress=on_progress, should_cancel=should_cancel,
    )  # fmt: skip
    return [float(text) for text in result.outputs]
