"""Errors that reach the user as one clear line (the CLI prints them and exits non-zero)."""

from __future__ import annotations

from pathlib import Path


class LampboxError(Exception):
    """A problem the user can act on; its message is shown as is."""

    exit_code = 1


class InputFileError(LampboxError):
    """A file given by the user is malformed; the message names the file."""

    exit_code = 2

    def __init__(self, path: str | Path, problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}")


class UnknownNameError(LampboxError):
    """An unknown task, retriever, model or backend; suggests the closest known names."""

    exit_code = 2

    def __init__(self, kind: str, name: str, known: list[str]) -> None:
        import difflib

        self.kind = kind
        self.name = name
        self.known = sorted(known)
        close = difflib.get_close_matches(name, self.known, n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        listing = ", ".join(self.known) if len(self.known) <= 30 else f"{len(self.known)} known"
        super().__init__(f"unknown {kind} {name!r}.{hint} Known: {listing}.")
