"""The Generator protocol: batch-first text generation behind one small interface.

Backends (llamacpp, hf, openai, dummy, and any registered later) register by name and load
lazily; they declare what they can do as properties (streaming, log-likelihood scoring, label
scoring, passages for Fusion-in-Decoder, per-user adapters), the harlequin way.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Protocol, runtime_checkable

from lampbox.errors import LampboxError


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


@dataclass(frozen=True)
class GenerationRequest:
    """What to generate from: a prompt, or (for Fusion-in-Decoder models) the input and the
    passages each encoded with it; the user it is for, and optionally a per-user adapter (a
    path the backend loads on top of its model)."""

    prompt: str
    passages: tuple[str, ...] = ()
    user_id: str | None = None
    adapter: str | None = None

    @property
    def plain(self) -> bool:
        """Only a prompt: every backend can generate it."""
        return not self.passages and self.adapter is None

    def cache_json(self) -> Any:
        """The request's part of a generation cache key (a plain request is just its prompt,
        so cache keys made before requests existed stay valid)."""
        if self.plain:
            return self.prompt
        data: dict[str, Any] = {"prompt": self.prompt, "passages": list(self.passages)}
        if self.adapter is not None:
            from lampbox.engine.fingerprint import path_sha256

            data["adapter"] = path_sha256(self.adapter)
        return data


Requests = Sequence["GenerationRequest | str"]


def as_request(request: GenerationRequest | str) -> GenerationRequest:
    return request if isinstance(request, GenerationRequest) else GenerationRequest(request)


def prompts_and_adapters(requests: Requests, backend: str) -> list[tuple[str, str | None]]:
    """Each request's prompt and adapter (None: the model alone), for a backend that loads
    adapters; a clear error for passages."""
    found = []
    for request in map(as_request, requests):
        if request.passages:
            raise LampboxError(
                f"the {backend} backend takes one prompt per request, not passages "
                "(Fusion-in-Decoder needs an encoder-decoder backend)"
            )
        found.append((request.prompt, request.adapter))
    return found


def plain_prompts(requests: Requests, backend: str) -> list[str]:
    """The prompts of plain requests; a clear error for what this backend cannot take."""
    prompts = []
    for prompt, adapter in prompts_and_adapters(requests, backend):
        if adapter is not None:
            raise LampboxError(f"the {backend} backend cannot load adapters ({adapter})")
        prompts.append(prompt)
    return prompts


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
    backend: str  # the registered backend name: "llamacpp" | "hf" | "openai" | "dummy" | ...

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

    @property
    def supports_label_scoring(self) -> bool:
        """Scores a task's labels as continuations of prompts (`score_labels`, `--decode labels`)."""
        ...

    @property
    def supports_passages(self) -> bool:
        """Takes requests with passages (Fusion-in-Decoder)."""
        ...

    @property
    def supports_adapters(self) -> bool:
        """Takes requests with a per-user adapter."""
        ...

    def identity(self) -> dict[str, Any]:
        """What makes outputs of this model reproducible (file hash, chat template, ...); part of cache keys."""
        ...

    def generate(
        self,
        prompts: Requests,
        params: GenerationParams,
        on_output: Callable[[int, str], None] | None = None,
        should_cancel: Callable[[], bool] | None = None,
    ) -> list[str]:
        """Generate one output per request (a GenerationRequest or a bare prompt), in order;
        on_output(index, text) as each finishes."""
        ...

    def stream(self, prompt: GenerationRequest | str, params: GenerationParams) -> Iterator[str]:
        """Yield text pieces as they are generated (only when supports_streaming)."""
        ...

    def score(self, prompts: Sequence[str], continuations: Sequence[str]) -> list[float]:
        """Sum of log-probabilities of each continuation after its prompt (only when supports_scoring)."""
        ...

    def score_labels(
        self,
        prompts: Requests,
        labels: Sequence[str],
        should_cancel: Callable[[], bool] | None = None,
    ) -> list[list[float]]:
        """For each request, the sum of log-probabilities of each label's tokens as the model's
        answer to it (after the chat template's opened assistant turn, or after the plain prompt
        and one space), in label order (only when supports_label_scoring)."""
        ...

    def close(self) -> None: ...
