"""Several requests on one model, each output shown as it grows (the TUI's generation panes).

A backend that streams a whole batch (`generate_streaming`: hf, and llama.cpp for greedy
decoding) generates them together, so every request shows its first tokens early (hf: after a
single prefill; llama.cpp: right after its own prompt is evaluated). Otherwise the requests
stream one after another, and a backend that cannot stream (fid) generates them as one batch
and reports each output whole.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from lampbox.engine.generation.base import GenerationParams, GenerationRequest, Generator
from lampbox.engine.generation.common import GenerationCancelled

PieceCallback = Callable[[int, str], None]  # (request index, new text)


def streams_batches(generator: object, params: GenerationParams | None = None) -> bool:
    """Whether the generator (or its class) streams a whole batch at once with these params
    (default: greedy): it has `generate_streaming`, and `streams_together(params)` if it says."""
    if not callable(getattr(generator, "generate_streaming", None)):
        return False
    together = getattr(generator, "streams_together", None)
    return together is None or bool(together(params or GenerationParams()))


def generate_streaming(
    generator: Generator,
    requests: Sequence[GenerationRequest],
    params: GenerationParams,
    on_piece: PieceCallback,
    on_output: PieceCallback | None = None,
    should_cancel: Callable[[], bool] | None = None,
) -> list[str]:
    """One output per request, in order; on_piece(index, text) as text arrives and
    on_output(index, output) as each finishes. Raises GenerationCancelled on cancel (a partial
    output is never reported to on_output)."""
    if streams_batches(generator, params):
        outputs: list[str] = generator.generate_streaming(  # type: ignore[attr-defined]
            requests, params, on_piece, should_cancel
        )
        for index, output in enumerate(outputs):
            if on_output:
                on_output(index, output)
        return outputs
    if not generator.supports_streaming:

        def whole(index: int, output: str) -> None:
            on_piece(index, output)
            if on_output:
                on_output(index, output)

        return generator.generate(requests, params, on_output=whole, should_cancel=should_cancel)
    return stream_one_after_another(generator, requests, params, on_piece, on_output, should_cancel)


def stream_one_after_another(
    generator: Generator,
    requests: Sequence[GenerationRequest | str],
    params: GenerationParams,
    on_piece: PieceCallback,
    on_output: PieceCallback | None = None,
    should_cancel: Callable[[], bool] | None = None,
) -> list[str]:
    """Each request streamed in turn (`generator.stream`), the next once the last is done."""
    outputs: list[str] = []
    for index, request in enumerate(requests):
        pieces: list[str] = []
        stream = generator.stream(request, params)
        try:
            for piece in stream:
                if should_cancel and should_cancel():
                    raise GenerationCancelled(index, len(requests))
                pieces.append(piece)
                on_piece(index, piece)
        finally:
            close = getattr(stream, "close", None)  # releases the model's lock at once
            if close is not None:
                close()
        if should_cancel and should_cancel():
            raise GenerationCancelled(index, len(requests))
        outputs.append("".join(pieces))
        if on_output:
            on_output(index, outputs[-1])
    return outputs
