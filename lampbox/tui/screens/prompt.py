"""The exact prompt a configuration sends to the model, and the items that went into it;
a question's whole input (the task's instruction included)."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import DataTable, Static

from lampbox.lab.pipeline import PreparedPrompt
from lampbox.tui.widgets.cells import cell


class PromptScreen(ModalScreen[None]):
    """A prompt in a box: its items (id, kept / total tokens, text) and its full text."""

    BINDINGS = [
        Binding("escape", "dismiss", "Close"),
        Binding("p", "dismiss", "Close", show=False),
        Binding("q", "dismiss", "Close", show=False),
    ]

    def __init__(self, label: str, prepared: PreparedPrompt) -> None:
        super().__init__()
        self.label = label
        self.prepared = prepared

    def compose(self) -> ComposeResult:
        prompt = self.prepared.prompt
        with VerticalScroll(id="prompt-box"):
            yield Static(
                f"[b]Prompt · {self.label}[/b]  {prompt.token_count} of {prompt.budget} tokens"
                + (" · fell back to the bare input" if prompt.fell_back else ""),
                classes="pane-title",
            )
            yield Static(
                f"{len(prompt.items)} of {prompt.offered_items} retrieved item(s) went in"
                if self.prepared.items
                else "no profile items (no personalization)",
                id="prompt-summary",
            )
            if prompt.items:
                table: DataTable[object] = DataTable(id="prompt-items", cursor_type="row")
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
                yield table
            yield Static(Text("Prompt text", style="bold"), classes="section-title")
            yield Static(Text(prompt.text), id="prompt-text")

    async def action_dismiss(self, result: None = None) -> None:
        self.dismiss(result)


class TextScreen(ModalScreen[None]):
    """A titled text in a box (a question's whole input); closed with Escape, p or q."""

    BINDINGS = PromptScreen.BINDINGS

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
