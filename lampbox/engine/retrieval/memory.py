"""What retrieval keeps in this process's memory: one owner, every part bounded.

Retrievers memoise across questions and runs in one process (the TUI, a bench): each item's
document text, BM25's vocabulary and tokenized documents, bm25-fast's vocabularies, dense
vectors and loaded encoders. Each part is a slot of `RETRIEVAL_MEMORY` with a bound: once a
slot is full it starts over with a fresh object at its next use (between questions, never in
the middle of one; a thread still using the old object keeps it until it is done), so memory
stays bounded however many profiles a process ranks. What starts over is only recomputed or
read back from the store's caches: rankings stay the same (BM25's scores bit for bit;
bm25-fast's may differ in the last bit, its term ids being new, as in another process). `RETRIEVAL_MEMORY.clear()` forgets all
(a cold start for tests and benchmarks); `sizes()` says how full each slot is.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")

# The bounds (entries, or bytes for dense vectors). A slot past its bound starts over.
DOCUMENT_TEXTS = 1_000_000  # (document fields, use_date, item key) -> text
BM25_DOCUMENTS = 500_000  # bm25: tokenized document texts
BM25_WORDS = 2_000_000  # bm25: distinct whitespace tokens
BM25_FAST_TEXTS = 500_000  # bm25-fast: tokenized texts, per tokenizer configuration
BM25_FAST_CONFIGURATIONS = 4  # bm25-fast: tokenizer configurations kept
DENSE_VECTOR_BYTES = 512 * 2**20  # dense: vectors of every model together
DENSE_ENCODERS = 2  # dense: loaded encoders (least recently used closed first)


@dataclass
class _Slot:
    size: Callable[[Any], int]
    value: Any = None
    renewals: int = 0


class RetrievalMemory:
    """Named slots of per-process memo data, each made on first use and made anew once full."""

    def __init__(self) -> None:
        self._slots: dict[str, _Slot] = {}
        self._lock = threading.Lock()

    def slot(
        self,
        name: str,
        make: Callable[[], T],
        full: Callable[[T], bool],
        size: Callable[[T], int] = len,  # type: ignore[assignment]
    ) -> T:
        """The object kept as `name` (made now if there is none, or if the one there is full
        by this call's `full` test)."""
        slot = self._slots.get(name)
        if slot is not None and slot.value is not None and not full(slot.value):
            return slot.value  # type: ignore[no-any-return]
        with self._lock:
            slot = self._slots.setdefault(name, _Slot(size))
            slot.size = size
            if slot.value is None or full(slot.value):
                if slot.value is not None:
                    slot.renewals += 1
                slot.value = make()
            return slot.value  # type: ignore[no-any-return]

    def clear(self) -> None:
        """Forget everything (the next use of each slot starts empty)."""
        with self._lock:
            for slot in self._slots.values():
                slot.value = None

    def sizes(self) -> dict[str, int]:
        """Each slot's size now (entries, or bytes for dense vectors)."""
        return {name: slot.size(slot.value) for name, slot in sorted(self._slots.items()) if slot.value is not None}

    def renewals(self) -> dict[str, int]:
        """How many times each slot started over because it was full."""
        return {name: slot.renewals for name, slot in sorted(self._slots.items())}


RETRIEVAL_MEMORY = RetrievalMemory()


def at_most(limit: int) -> Callable[[Any], bool]:
    """A `full` test for a sized object: `limit` entries or more."""
    return lambda value: len(value) >= limit
