"""Shown at start while another process (a bench writing a batch) holds the store's lock."""

from __future__ import annotations

from pathlib import Path

from textual.app import ComposeResult
from textual.screen import Screen
from textual.widgets import Footer, Header, Static


class WaitingScreen(Screen[None]):
    """The header says who holds the lock; the users screen replaces this once the store opens."""

    def __init__(self, store_path: Path | None) -> None:
        super().__init__()
        self.store_path = store_path

    def compose(self) -> ComposeResult:
        yield Header()
        name = self.store_path.name if self.store_path is not None else "the store"
        yield Static(
            f"Waiting for {name}: another process is writing to it (ctrl+q quits).",
            id="waiting-note",
        )
        yield Footer()
