"""Dialogs: an error the user must read (a store that will not open, a failed step)."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Label, Static


class ErrorDialog(ModalScreen[None]):
    """An error in a box; dismissed with Enter/Escape, or quits the app when `fatal`."""

    BINDINGS = [Binding("escape", "close", "Close"), Binding("enter", "close", "Close", show=False)]

    def __init__(self, title: str, message: str, fatal: bool = False) -> None:
        super().__init__()
        self.title_text = title
        self.message = message
        self.fatal = fatal

    def compose(self) -> ComposeResult:
        with Vertical(id="error-box"):
            yield Label(self.title_text, id="error-title")
            yield Static(self.message, id="error-message", markup=False)
            yield Button("Quit" if self.fatal else "Close", id="error-close", variant="error")

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        self.action_close()

    def action_close(self) -> None:
        if self.fatal:
            self.app.exit(return_code=1, message=self.message)
        else:
            self.dismiss()
