"""Helpers the generation backends share: fingerprints, chat messages, stop strings, cancelling."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from pathlib import Path

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


def file_sha256(path: Path) -> str:
    """sha256 of a file, cached by (path, size, mtime) so large weights are hashed once."""
    from lampbox.paths import cache_dir

    path = path.resolve()
    stat = path.stat()
    key = f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}"
    record = cache_dir("fingerprints") / (hashlib.sha256(key.encode()).hexdigest()[:32] + ".json")
    if record.is_file():
        try:
            return str(json.loads(record.read_text())["sha256"])
        except (ValueError, KeyError):
            pass
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    record.write_text(json.dumps({"path": str(path), "sha256": digest.hexdigest()}))
    return digest.hexdigest()


def folder_sha256(folder: Path) -> str:
    """A content fingerprint of a model folder: the sha256 of its files' (name, sha256) pairs."""
    digest = hashlib.sha256()
    for file in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(f"{file.relative_to(folder)}\0{file_sha256(file)}\n".encode())
    return digest.hexdigest()


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
