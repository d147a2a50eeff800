"""Where to write a table or a prompt: a format and a file name, checked before it closes."""

from __future__ import annotations

from pathlib import Path

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, RadioButton, RadioSet, Static

from lampbox.errors import LampboxError
from lampbox.tui.export import FORMATS, check_path, chosen_format, default_path, format_of


class ExportDialog(ModalScreen["tuple[str, Path] | None"]):
    """A format (csv, parquet, json) and a path, prefilled with a new file in the current
    directory. A path that cannot be written is reported in the box, which stays open; a path
    whose extension names a format exports in that format."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(
        self, title: str, name: str, formats: tuple[str, ...] = FORMATS, folder: Path | None = None
    ) -> None:
        super().__init__()
        self.title_text = title
        self.formats = formats
        self.file_format = formats[0]
        self.path = default_path(name, self.file_format, folder)

    def compose(self) -> ComposeResult:
        with Vertical(id="export-box"):
            yield Static(self.title_text, classes="pane-title", markup=False)
            if len(self.formats) > 1:
                with RadioSet(id="export-format"):
                    for file_format in self.formats:
                        yield RadioButton(
                            file_format,
                            value=file_format == self.file_format,
                            id=f"format-{file_format}",
                        )
            yield Static("File (enter: write · escape: cancel)", classes="section-title")
            yield Input(str(self.path), id="export-path")
            yield Static("", id="export-error", markup=False)
            with Horizontal(id="export-buttons"):
                yield Button("Write", id="export-write", variant="primary")
                yield Button("Cancel", id="export-cancel")

    def on_mount(self) -> None:
        self.query_one("#export-path", Input).focus()

    @on(RadioSet.Changed, "#export-format")
    def format_changed(self, event: RadioSet.Changed) -> None:
        self.file_format = self.formats[event.index]
        field = self.query_one("#export-path", Input)
        path = Path(field.value.strip())
        if format_of(path) is not None and format_of(path) != self.file_format:
            field.value = str(path.with_suffix(f".{self.file_format}"))

    @on(Input.Submitted, "#export-path")
    @on(Button.Pressed, "#export-write")
    def write(self, event: Input.Submitted | Button.Pressed) -> None:
        event.stop()
        text = self.query_one("#export-path", Input).value
        try:
            path = check_path(text)
            chosen = chosen_format(path, self.file_format, tuple(self.formats))
        except LampboxError as error:
            self.query_one("#export-error", Static).update(f"Cannot write there: {error}")
            return
        self.dismiss((chosen, path))

    @on(Button.Pressed, "#export-cancel")
    def cancel_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        self.dismiss(None)

    def action_cancel(self) -> None:
        self.dismiss(None)
