"""Helpers the generation backends share: chat messages, stop strings, cancelling."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from lampbox.errors import LampboxError


class GenerationCancelled(LampboxError):
    """should_cancel() returned True: generation stopped before every prompt had an output."""

    def __init__(self, finished: int, total: int) -> None:
        self.finished = finished
        self.total = total
        super().__init__(f"generation cancelled after {finished} of {total} prompts")


def user_message(prompt: str) -> list[dict[str, str]]:
    """An instruct model sees the whole prompt as one user message."""
    return [{"role": "user", "content": prompt}]


def cut_at_stop(text: str, stop: Sequence[str]) -> str:
    """The text before the first stop string (the stop string itself is not kept)."""
    cut = len(text)
    for marker in stop:
        if marker:
            found = text.find(marker)
            if found != -1:
                cut = min(cut, found)
    return text[:cut]


def stop_filtered(pieces: Iterator[str], stop: Sequence[str]) -> Iterator[str]:
    """Stream pieces up to the first stop string, holding back text that may start one."""
    markers = [marker for marker in stop if marker]
    if not markers:
        yield from pieces
        return
    holdback = max(len(marker) for marker in markers) - 1
    pending = ""
    for piece in pieces:
        pending += piece
        cut = cut_at_stop(pending, markers)
        if len(cut) < len(pending):
            if cut:
                yield cut
            return
        safe = len(pending) - holdback
        if safe > 0:
            yield pending[:safe]
            pending = pending[safe:]
    if pending:
        yield pending
