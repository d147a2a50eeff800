"""Every default of a run, in one place (the CLI, the bench, the TUI and the specs read them here)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lampbox.engine.tasks import TaskSpec

DEFAULT_BACKEND = "llamacpp"
HF_DTYPES = ("float32", "bfloat16", "float16")  # weight dtypes the hf backend's `dtype` option takes
DEFAULT_MAX_LENGTH = 256  # the official IPA prompt budget in tokens (512 in the feedback scorers)
DEFAULT_RETRIEVERS = ("none", "bm25", "dense", "recency", "random")
DEFAULT_KS = (1, 2, 4)
FEEDBACK_BATCH_SIZE = 8  # ROPG feedback: (question, item) prompts decoded together ...
FEEDBACK_BATCH_SIZES = {"hf": 16}  # ... by backend where measured faster (benchmarks/bench_ropg.py, docs/ropg.md)


def feedback_batch_size(backend: str) -> int:
    """ROPG feedback: how many (question, item) prompts `backend` decodes together by default."""
    return FEEDBACK_BATCH_SIZES.get(backend, FEEDBACK_BATCH_SIZE)


def default_model() -> str:
    """The model manifest's default model name."""
    from lampbox.models import default_model as manifest_default

    return manifest_default()


def interactive_model() -> str:
    """The model the TUI's generation panes use unless one is chosen (the manifest's
    `interactive`: the default model in a format llama.cpp runs faster)."""
    from lampbox.models import interactive_model as manifest_interactive

    return manifest_interactive()


def default_max_new_tokens(task: TaskSpec) -> int:
    """Tokens to generate: 32 for generation tasks, 8 for labels and ratings."""
    return 32 if task.kind == "generation" else 8
