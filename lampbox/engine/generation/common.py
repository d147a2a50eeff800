"""Helpers the generation backends share: chat messages, stop strings, cancelling."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import AnyStr

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


def settled_length(text: AnyStr, stops: Sequence[AnyStr]) -> int:
    """How much of `text` (str or UTF-8 bytes) no stop string can cut any more: the text before
    the first stop string found, less a tail that may still start one (a prefix of a stop
    string), which waits for the next text to decide. Streaming shows only this much."""
    settled = len(text)
    for stop in stops:
        found = text.find(stop)
        if found != -1:
            settled = min(settled, found)
        for start in range(max(0, len(text) - len(stop) + 1), len(text)):
            if stop.startswith(text[start:]):
                settled = min(settled, start)
                break
    return settled


def stop_filtered(pieces: Iterator[str], stop: Sequence[str]) -> Iterator[str]:
    """Stream pieces up to the first stop string, holding back text that may start one."""
    markers = [marker for marker in stop if marker]
    pending = ""
    for piece in pieces:
        pending += piece
        cut = cut_at_stop(pending, markers)
        if len(cut) < len(pending):
            if cut:
                yield cut
            return
        settled = settled_length(pending, markers)
        if settled:
            yield pending[:settled]
            pending = pending[settled:]
    if pending:
        yield pending
