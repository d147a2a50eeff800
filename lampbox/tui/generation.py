"""The one place the TUI reaches the generation pipeline (lampbox.lab.pipeline).

The generation panes call only the helpers here, which wrap the pipeline's single-question
functions: `prepare_question` (rank, select top k, build the IPA prompt, as a run would),
`cached_output` / `remember_output` (the generation cache the bench shares) and
`score_output` (the task metric). The TUI holds no prompting, generation or scoring code.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from lampbox.engine import scoring
from lampbox.engine.defaults import DEFAULT_BACKEND, default_model
from lampbox.engine.generation.base import GenerationParams
from lampbox.engine.generation.pool import GeneratorPool
from lampbox.engine.tasks import TaskSpec
from lampbox.engine.types import Question
from lampbox.lab import pipeline
from lampbox.lab.pipeline import PreparedPrompt
from lampbox.lab.specs import RunSpec
from lampbox.store.core import Store


@dataclass(frozen=True)
class PaneConfig:
    """One generation pane: no personalization, or a retriever at k."""

    retriever: str
    k: int

    @property
    def label(self) -> str:
        return "no personalization" if self.retriever == "none" else f"{self.retriever} k={self.k}"


def new_pool() -> GeneratorPool:
    """The app's generator pool: a model is loaded once per session, on every core."""
    return GeneratorPool(backend_options={"llamacpp": {"threads": os.cpu_count() or 1}})


def pane_configs(retrievers: list[str], k: int) -> list[PaneConfig]:
    """No personalization first, then each chosen retriever at k."""
    return [PaneConfig("none", 0)] + [
        PaneConfig(name, k) for name in retrievers if name != "none" and k > 0
    ]


def default_label() -> str:
    """The panes' model, as 'backend:model'."""
    return f"{DEFAULT_BACKEND}:{default_model()}"


def run_spec(
    question: Question, scheme: str, split: str, config: PaneConfig, tokens: int
) -> RunSpec:
    """The RunSpec a bench would use for this question's configuration (so caches are shared)."""
    return RunSpec(
        task=question.task,
        scheme=scheme,
        split=split,
        retriever=config.retriever,
        k=config.k if config.retriever != "none" else 0,
        backend=DEFAULT_BACKEND,
        model=default_model(),
        params=GenerationParams(max_new_tokens=tokens),
    )


def prepare(
    spec: RunSpec, question: Question, store: Store, pool: GeneratorPool
) -> tuple[PreparedPrompt, str | None]:
    """The prompt for one pane and the cached output, if a run or an earlier view made it."""
    prepared = pipeline.prepare_question(spec, question, store, pool)
    return prepared, pipeline.cached_output(store, prepared)


def stream(
    prepared: PreparedPrompt, pool: GeneratorPool, should_cancel: Callable[[], bool]
) -> Iterator[str]:
    """Text pieces as the model makes them; stops early (and releases the model) on cancel."""
    spec = prepared.spec
    generator = pool.get(spec.backend, spec.model, spec.model_options)
    pieces = generator.stream(prepared.input.request, spec.params)
    try:
        for piece in pieces:
            if should_cancel():
                return
            yield piece
    finally:
        close = getattr(pieces, "close", None)
        if close is not None:
            close()


def remember(store: Store, prepared: PreparedPrompt, pool: GeneratorPool, output: str) -> None:
    """Cache a finished streamed output so the bench and later views reuse it."""
    spec = prepared.spec
    generator = pool.get(spec.backend, spec.model, spec.model_options)
    pipeline.remember_output(store, prepared, generator, output)


def score(task: TaskSpec, output: str, gold: str | None) -> dict[str, float]:
    """Per-question scores of an output against the gold with the task's metric."""
    return scoring.score_output(task, output, gold)
