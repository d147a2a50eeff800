"""A box to edit a question's input, or to type a new question as the same user."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Static, TextArea


class EditInputScreen(ModalScreen[str | None]):
    """The input in an editable text area; `ctrl+s` (or Use) returns it, Escape returns None."""

    BINDINGS = [
        Binding("escape", "cancel", "Cancel"),
        Binding("ctrl+s", "use", "Use"),
    ]

    def __init__(self, title: str, text: str, note: str) -> None:
        super().__init__()
        self.title_text = title
        self.text = text
        self.note = note

    def compose(self) -> ComposeResult:
        with Vertical(id="edit-box"):
            yield Static(Text(self.title_text, style="bold"), classes="pane-title")
            yield Static(self.note, id="edit-note", markup=False)
            yield TextArea(self.text, id="edit-text", soft_wrap=True, show_line_numbers=False)
            with Horizontal(id="edit-buttons"):
                yield Button("Use (ctrl+s)", id="edit-use", variant="primary")
                yield Button("Cancel (esc)", id="edit-cancel")

    def on_mount(self) -> None:
        area = self.query_one("#edit-text", TextArea)
        area.focus()
        area.move_cursor(area.document.end)

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        if event.button.id == "edit-use":
            self.action_use()
        else:
            self.action_cancel()

    def action_use(self) -> None:
        self.dismiss(self.query_one("#edit-text", TextArea).text)

    def action_cancel(self) -> None:
        self.dismiss(None)
