"""Label decoding: a classification answer chosen by the model's log-likelihood of each label.

`--decode labels` scores every label of the task as a continuation of the prompt (the sum of
the log-probabilities of the label's tokens, lm-evaluation-harness's `acc` for multiple
choice) and answers the most likely label, so a small model that would not write a label on
its own still gives one. `generate` (the model's raw text) stays the default. See
docs/prompting.md.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from lampbox.engine.caches import GenerationCache
from lampbox.engine.generation.base import GenerationRequest, Generator
from lampbox.engine.generation.cached import CachedOutputs, cached_outputs
from lampbox.engine.tasks import TaskSpec
from lampbox.errors import LampboxError

DECODINGS = ("generate", "labels")
DEFAULT_DECODING = "generate"
LABEL_BACKENDS = ("hf", "llamacpp", "fid", "dummy")  # named in errors; the capability is the flag


def check_decoding(decode: str, task: TaskSpec | None = None) -> None:
    """A clear error for an unknown decoding, or label decoding on a task without labels."""
    if decode not in DECODINGS:
        raise LampboxError(f"unknown decoding {decode!r} (known: {', '.join(DECODINGS)})")
    if decode == "labels" and task is not None and not task.labels:
        raise LampboxError(
            f"--decode labels needs a task with a label set (classification); "
            f"{task.name} is a {task.kind} task without labels"
        )


def check_label_scoring(generator: Any) -> None:
    """A clear error when a backend (a generator or its class) cannot score labels."""
    if not getattr(generator, "supports_label_scoring", False):
        raise LampboxError(
            f"the {generator.backend} backend cannot score labels; "
            f"--decode labels needs one of {', '.join(LABEL_BACKENDS)}"
        )


def label_continuation(label: str, chat: bool) -> str:
    """What is scored after the prompt: the label itself right after the opened assistant turn
    (chat), or the label after one space (plain completion, lm-evaluation-harness's delimiter)."""
    return label if chat else f" {label}"


def score_each_prompt(
    generator: Any,
    prompts: Sequence[Any],
    labels: Sequence[str],
    prompt_tokens: Callable[[str], list[int]],
    context_size: int,
    score: Callable[[list[int], list[list[int]], str | None], list[float]],
    should_cancel: Callable[[], bool] | None = None,
) -> list[list[float]]:
    """What the hf and llamacpp backends share for `score_labels`: each label's tokens as the
    answer (label_continuation), each prompt's tokens as the backend builds them for generation,
    a check that prompt and label fit the context, then `score(prompt, labels, adapter)` per
    prompt, with the request's adapter (None: the model as loaded). Requests are scored grouped
    by adapter, as generation batches them (one switch per adapter); results come in order."""
    from lampbox.engine.generation.base import prompts_and_adapters
    from lampbox.engine.generation.common import GenerationCancelled

    label_ids = [generator.tokenizer.encode(label_continuation(label, generator.chat)) for label in labels]
    if not labels or not all(label_ids):
        raise LampboxError("label decoding needs labels that are not empty")
    longest = max(len(ids) for ids in label_ids)
    requests = prompts_and_adapters(prompts, generator.backend)
    groups: dict[str | None, list[int]] = {}
    for index, (_, adapter) in enumerate(requests):
        groups.setdefault(adapter, []).append(index)
    results: list[list[float]] = [[] for _ in requests]
    done = 0
    for adapter, rows in groups.items():
        for index in rows:
            if should_cancel and should_cancel():
                raise GenerationCancelled(done, len(requests))
            tokens = prompt_tokens(requests[index][0])
            if len(tokens) + longest > context_size:
                raise LampboxError(
                    f"{generator.name}: prompt of {len(tokens)} tokens + a label of {longest} tokens "
                    f"exceeds the context size {context_size}"
                )
            results[index] = score(tokens, label_ids, adapter)
            done += 1
    return results


def choose_label(labels: Sequence[str], logliks: Sequence[float]) -> str:
    """The most likely label (ties go to the label listed first)."""
    if len(labels) != len(logliks) or not labels:
        raise LampboxError("label decoding needs one score per label")
    best = max(range(len(labels)), key=lambda index: (logliks[index], -index))
    return labels[best]


def choose_label_normalized(labels: Sequence[str], logliks: Sequence[float]) -> str:
    """lm-evaluation-harness's `acc_norm` choice: log-likelihood per character of the label."""
    return choose_label(labels, [value / max(len(label), 1) for label, value in zip(labels, logliks, strict=True)])


def label_record(labels: Sequence[str], logliks: Sequence[float]) -> dict[str, Any]:
    """What a prediction keeps about its label decoding (stored with the prediction)."""
    return {
        "decode": "labels",
        "label_logliks": {label: round(value, 6) for label, value in zip(labels, logliks, strict=True)},
        "label_norm": choose_label_normalized(labels, logliks),
    }


def label_cache_key(identity: Mapping[str, Any], labels: Sequence[str], request: GenerationRequest | str) -> str:
    """The cache key of one request's label scores: model identity, the labels, the request
    (decoding parameters do not matter; the key never equals a generation's)."""
    prompt = request.cache_json() if isinstance(request, GenerationRequest) else request
    data = json.dumps(
        {"model": identity, "decode": "labels", "labels": list(labels), "prompt": prompt}, sort_keys=True
    )
    return hashlib.sha256(data.encode("utf-8")).hexdigest()


def score_labels_cached(
    generator: Generator,
    requests: Sequence[GenerationRequest],
    labels: Sequence[str],
    *,
    cache: GenerationCache | None = None,
    sizes: Sequence[int] | None = None,
    batch_size: int = 8,
    on_progress: Callable[[int, int], None] | None = None,
    should_cancel: Callable[[], bool] | None = None,
) -> tuple[list[list[float]], CachedOutputs]:
    """Each request's log-likelihood of every label, from the cache where it has them (kept
    there as a JSON list), computed batch by batch otherwise."""
    check_label_scoring(generator)
    identity = generator.identity()
    keys = [label_cache_key(identity, labels, request) for request in requests]

    def compute(batch: Sequence[GenerationRequest]) -> list[str]:
        scores = generator.score_labels(batch, labels, should_cancel=should_cancel)
        return [json.dumps(row) for row in scores]

    result = cached_outputs(
        generator, requests, keys, compute, cache=cache, sizes=sizes, batch_size=batch_size,
        on_progress=on_progress, should_cancel=should_cancel,
    )  # fmt: skip
    scores = [[float(value) for value in json.loads(text)] for text in result.outputs]
    for row in scores:
        if len(row) != len(labels) or any(math.isnan(value) for value in row):
            raise LampboxError(f"{generator.name}: label scores do not match the {len(labels)} labels")
    return scores, result
