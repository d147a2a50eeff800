"""`dummy`: a deterministic, instant stand-in model for wiring tests (lm-evaluation-harness's idea).

It answers every prompt with the prompt's first `words` words (16 by default), streams them
word by word, tokenizes on whitespace, and scores labels by how often the prompt quotes them. Its identity says it is a stand-in, so its
outputs never share a cache key with a real model's. Nothing is loaded.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from lampbox.engine.generation.base import (
    GenerationParams,
    GenerationRequest,
    Requests,
    as_request,
)
from lampbox.engine.generation.common import GenerationCancelled, cut_at_stop


class WordTokenizer:
    """Whitespace words, numbered in order of first appearance (stable within a process)."""

    def __init__(self) -> None:
        self._ids: dict[str, int] = {}
        self._words: list[str] = []
        self._lock = threading.Lock()

    def encode(self, text: str) -> list[int]:
        with self._lock:
            ids = []
            for word in text.split():
                index = self._ids.get(word)
                if index is None:
                    index = self._ids[word] = len(self._words)
                    self._words.append(word)
                ids.append(index)
            return ids

    def decode(self, token_ids: Sequence[int]) -> str:
        return " ".join(self._words[index] for index in token_ids)


class DummyGenerator:
    """The first `words` words of each prompt (passages and adapters are accepted and recorded
    in nothing but the request: the answer depends on the prompt alone)."""

    backend = "dummy"
    supports_streaming = True
    supports_scoring = False
    supports_label_scoring = True
    supports_passages = True
    supports_adapters = True
    loads_local_weights = False

    def __init__(
        self, model: str | None = None, *, words: int = 16, context_size: int = 4096, **_: Any
    ) -> None:
        self.name = model or "dummy"
        self.words = int(words)
        self.context_size = int(context_size)
        self._tokenizer = WordTokenizer()

    @property
    def tokenizer(self) -> WordTokenizer:
        return self._tokenizer

    def identity(self) -> dict[str, Any]:
        return {"backend": self.backend, "model": self.name, "words": self.words, "stand_in": True}

    def _answer(self, request: GenerationRequest, params: GenerationParams) -> str:
        words = request.prompt.split()[: min(self.words, params.max_new_tokens)]
        return cut_at_stop(" ".join(words), params.stop)

    def generate(
        self,
        prompts: Requests,
        params: GenerationParams,
        on_output: Callable[[int, str], None] | None = None,
        should_cancel: Callable[[], bool] | None = None,
    ) -> list[str]:
        outputs = []
        for index, request in enumerate(map(as_request, prompts)):
            if should_cancel and should_cancel():
                raise GenerationCancelled(index, len(prompts))
            outputs.append(self._answer(request, params))
            if on_output:
                on_output(index, outputs[-1])
        return outputs

    def stream(self, prompt: GenerationRequest | str, params: GenerationParams) -> Iterator[str]:
        for index, word in enumerate(self._answer(as_request(prompt), params).split()):
            yield word if index == 0 else " " + word

    def score(self, prompts: Sequence[str], continuations: Sequence[str]) -> list[float]:
        from lampbox.errors import LampboxError

        raise LampboxError("the dummy backend does not score continuations")

    def score_labels(
        self,
        prompts: Requests,
        labels: Sequence[str],
        should_cancel: Callable[[], bool] | None = None,
    ) -> list[list[float]]:
        """A stand-in log-likelihood: each label's share of the label mentions in the prompt,
        add-one smoothed (log((1 + count) / (len(labels) + all counts))): deterministic, and with
        retrieved items in the prompt it votes like the retrieval-only baseline."""
        results = []
        for index, request in enumerate(map(as_request, prompts)):
            if should_cancel and should_cancel():
                raise GenerationCancelled(index, len(prompts))
            counts = [request.prompt.count(f'"{label}"') for label in labels]
            total = len(labels) + sum(counts)
            results.append([math.log((1 + count) / total) for count in counts])
        return results

    def close(self) -> None:
        pass
