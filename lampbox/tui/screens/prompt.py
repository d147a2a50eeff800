"""The exact prompt a configuration sends to the model, and the items that went into it;
a question's whole input (the task's instruction included). `c` copies the text to the
clipboard, `w` saves it to a file (for terminals without clipboard support)."""

from __future__ import annotations

from pathlib import Path

from rich.text import Text
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

from lampbox.errors import LampboxError
from lampbox.lab.pipeline import PreparedPrompt
from lampbox.tui import table_data
from lampbox.tui.export import file_stem, write_text
from lampbox.tui.widgets.cells import cell
from lampbox.tui.widgets.table import LampboxTable


def copy_text(app: App[object], text: str, what: str) -> None:
    """Put `text` on the clipboard (OSC 52, through the terminal) and say so."""
    app.copy_to_clipboard(text)
    app.notify(
        f"Copied {what} ({len(text):,} characters) to the clipboard. If nothing arrives, your "
        "terminal does not pass OSC 52 on: w (on the prompt) saves it to a file.",
        title="Copied",
        timeout=6,
    )


def save_text(app: App[object], text: str, name: str) -> None:
    """Ask where, then write `text` there (a bad path is reported in the box)."""
    from lampbox.tui.screens.export import ExportDialog

    def chosen(answer: tuple[str, Path] | None) -> None:
        if answer is None:
            return
        try:
            path = write_text(text, answer[1])
        except LampboxError as error:
            app.notify(f"Saving failed: {error}", severity="error", timeout=8)
        else:
            app.notify(f"Saved {len(text):,} characters to {path}", title="Saved", timeout=8)

    app.push_screen(ExportDialog(f"Save · {name}", name, formats=("txt",)), chosen)


class PromptScreen(ModalScreen[None]):
    """A prompt in a box: its items (id, kept / total tokens, text) and its full text."""

    BINDINGS = [
        Binding("escape", "dismiss", "Close"),
        Binding("p", "dismiss", "Close", show=False),
        Binding("q", "dismiss", "Close", show=False),
        Binding("c", "copy", "Copy"),
        Binding("w", "save", "Save to file"),
    ]

    def __init__(self, label: str, prepared: PreparedPrompt) -> None:
        super().__init__()
        self.label = label
        self.prepared = prepared

    @property
    def text(self) -> str:
        return self.prepared.prompt.text

    def compose(self) -> ComposeResult:
        prompt = self.prepared.prompt
        with VerticalScroll(id="prompt-box"):
            yield Static(
                f"[b]Prompt · {self.label}[/b]  {prompt.token_count} of {prompt.budget} tokens"
                + (" · fell back to the bare input" if prompt.fell_back else "")
                + "  (c: copy · w: save)",
                classes="pane-title",
            )
            yield Static(
                f"{len(prompt.items)} of {prompt.offered_items} retrieved item(s) went in"
                if self.prepared.items
                else "no profile items (no personalization)",
                id="prompt-summary",
            )
            if prompt.items:
                table = LampboxTable(id="prompt-items", cursor_type="row")
                table.add_column("#", width=3)
                table.add_column("item id", width=16)
                table.add_column("kept tokens", width=12)
                table.add_column("item", width=50)
                by_key = {item.key: item for item in self.prepared.items}
                for rank, kept in enumerate(prompt.items, start=1):
                    item = by_key.get(kept.key)
                    text = (
                        " ".join(str(v) for v in item.fields.values()) if item is not None else ""
                    )
                    table.add_row(
                        rank,
                        cell(item.id if item is not None else kept.key, 16),
                        f"{kept.kept_tokens}/{kept.total_tokens}",
                        cell(text, 50),
                    )
                table.set_export(table_data.prompt_items(self.label, self.prepared))
                yield table
            yield Static(Text("Prompt text", style="bold"), classes="section-title")
            yield Static(Text(prompt.text), id="prompt-text")

    async def action_dismiss(self, result: None = None) -> None:
        self.dismiss(result)

    def action_copy(self) -> None:
        copy_text(self.app, self.text, "the prompt")

    def action_save(self) -> None:
        save_text(self.app, self.text, file_stem("prompt", self.label))


class TextScreen(ModalScreen[None]):
    """A titled text in a box (a question's whole input); closed with Escape, p or q; `c`
    copies it, `w` saves it to a file."""

    BINDINGS = [
        *PromptScreen.BINDINGS[:3],
        Binding("c", "copy", "Copy"),
        Binding("w", "save", "Save to file"),
    ]

    def __init__(self, title: str, text: str) -> None:
        super().__init__()
        self.title_text = title
        self.text = text

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="prompt-box"):
            yield Static(Text(self.title_text, style="bold"), classes="pane-title")
            yield Static(Text(self.text), id="full-text")

    async def action_dismiss(self, result: None = None) -> None:
        self.dismiss(result)

    def action_copy(self) -> None:
        copy_text(self.app, self.text, "the text")

    def action_save(self) -> None:
        save_text(self.app, self.text, file_stem(self.title_text))
