"""What native code this process runs, for the parent that watches it (lampbox.supervise).

A crash in a backend's native code (llama.cpp, torch) kills the process with a signal before any
Python handler can speak, so a process that loads such code writes what it loaded to a small
file named by LAMPBOX_CRASH_NOTE as it loads it; a supervising parent reads it when the process
dies from a signal and says which backend (and llama.cpp CPU variant) was running. Without the
variable nothing is written.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

NOTE_ENV = "LAMPBOX_CRASH_NOTE"

_lock = threading.Lock()
_notes: dict[str, str] = {}


def note_running(key: str, text: str) -> None:
    """Record that `text` (e.g. "the llamacpp backend with MODEL, llama.cpp CPU variant icelake")
    is loaded in this process under `key`; the same key replaces its earlier note."""
    path = os.environ.get(NOTE_ENV)
    if not path:
        return
    with _lock:
        _notes[key] = text
        _write(Path(path))


def forget_running(key: str) -> None:
    """The backend under `key` was closed."""
    path = os.environ.get(NOTE_ENV)
    if not path:
        return
    with _lock:
        if _notes.pop(key, None) is not None:
            _write(Path(path))


def _write(path: Path) -> None:
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    try:
        temporary.write_text("".join(f"{text}\n" for text in _notes.values()))
        os.replace(temporary, path)
    except OSError:
        pass  # a note is a courtesy: never let it stop the work


def read_notes(path: Path) -> list[str]:
    try:
        return [line for line in path.read_text().splitlines() if line.strip()]
    except OSError:
        return []
