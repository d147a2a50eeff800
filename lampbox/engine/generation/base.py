"""The Generator protocol: batch-first text generation behind one small interface.

Backends (llamacpp, hf, openai) register by name and load lazily; they declare what they can
do as properties (streaming, log-likelihood scoring), the harlequin way.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Protocol, runtime_checkable


@dataclass(frozen=True)
class GenerationParams:
    """Decoding parameters; the default is greedy decoding."""

    max_new_tokens: int = 32
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0
    top_k: int = 0
    seed: int = 0
    stop: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["stop"] = list(self.stop)
        return data


@runtime_checkable
class Tokenizer(Protocol):
    """The generating model's tokenizer, as the prompt builder needs it."""

    def encode(self, text: str) -> list[int]:
        """Token ids of `text`, without special tokens (BOS/EOS)."""
        ...

    def decode(self, token_ids: Sequence[int]) -> str:
        """Text of `token_ids`, skipping special tokens."""
        ...


@runtime_checkable
class Generator(Protocol):
    """A loaded model that turns prompts into outputs, in order."""

    name: str  # the model name as the user gave it (manifest name, path or hub id)
    backend: str  # "llamacpp" | "hf" | "openai"

    @property
    def tokenizer(self) -> Tokenizer: ...

    @property
    def context_size(self) -> int:
        """Maximum prompt + generated tokens the model accepts."""
        ...

    @property
    def supports_streaming(self) -> bool: ...

    @property
    def supports_scoring(self) -> bool: ...

    def identity(self) -> dict[str, Any]:
        """What makes outputs of this model reproducible (file hash, chat template, ...); part of cache keys."""
        ...

    def generate(
        self,
        prompts: Sequence[str],
        params: GenerationParams,
        on_output: Callable[[int, str], None] | None = None,
        should_cancel: Callable[[], bool] | None = None,
    ) -> list[str]:
        """Generate one output per prompt, returned in order; on_output(index, text) as each finishes."""
        ...

    def stream(self, prompt: str, params: GenerationParams) -> Iterator[str]:
        """Yield text pieces as they are generated (only when supports_streaming)."""
        ...

    def score(self, prompts: Sequence[str], continuations: Sequence[str]) -> list[float]:
        """Sum of log-probabilities of each continuation after its prompt (only when supports_scoring)."""
        ...

    def close(self) -> None: ...
