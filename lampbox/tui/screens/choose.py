"""What a generation pane runs: model (manifest or trained), backend, retriever and k."""

from __future__ import annotations

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Select, Static

from lampbox.tui.generation import ModelOption, PaneChoice, refusal

MAX_K = 50


class PaneChoiceScreen(ModalScreen["PaneChoice | None"]):
    """A pane's choice in a box. Only the backends a model runs on are offered (a LoRA model:
    hf; a FiD model: fid); `Use` checks the whole choice again and says what is wrong."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(
        self, title: str, choice: PaneChoice, models: list[ModelOption], retrievers: list[str]
    ) -> None:
        super().__init__()
        self.title_text = title
        self.choice = choice
        self.models = list(models)
        if not any(option.name == choice.model for option in self.models):
            # A model from elsewhere (an older choice, a path): kept, on its own backend.
            self.models.insert(0, ModelOption(choice.model, choice.model, (choice.backend,), choice.method))
        self.retrievers = list(retrievers) or ["none"]
        if choice.retriever not in self.retrievers:
            self.retrievers.append(choice.retriever)

    def option(self, name: str) -> ModelOption:
        return next(option for option in self.models if option.name == name)

    def compose(self) -> ComposeResult:
        choice = self.choice
        with Vertical(id="choice-box"):
            yield Static(self.title_text, classes="pane-title", markup=False)
            yield Static("Model", classes="section-title")
            yield Select(
                [(option.label, option.name) for option in self.models],
                value=choice.model,
                allow_blank=False,
                id="choice-model",
            )
            yield Static("Backend", classes="section-title")
            yield Select(
                [(name, name) for name in self.option(choice.model).backends],
                value=choice.backend
                if choice.backend in self.option(choice.model).backends
                else self.option(choice.model).backends[0],
                allow_blank=False,
                id="choice-backend",
            )
            with Horizontal(id="choice-retrieval"):
                with Vertical():
                    yield Static("Retriever", classes="section-title")
                    yield Select(
                        [(name, name) for name in self.retrievers],
                        value=choice.retriever,
                        allow_blank=False,
                        id="choice-retriever",
                    )
                with Vertical(id="choice-k-column"):
                    yield Static("k", classes="section-title")
                    yield Input(str(choice.k), type="integer", id="choice-k")
            yield Static(self.option(choice.model).why, id="choice-note", markup=False)
            with Horizontal(id="choice-buttons"):
                yield Button("Use", id="choice-use", variant="primary")
                yield Button("Cancel", id="choice-cancel")

    @on(Select.Changed, "#choice-model")
    def model_changed(self, event: Select.Changed) -> None:
        option = self.option(str(event.value))
        backend = self.query_one("#choice-backend", Select)
        current = backend.value
        backend.set_options((name, name) for name in option.backends)
        backend.value = current if current in option.backends else option.backends[0]
        self.query_one("#choice-note", Static).update(option.why)
        self.query_one("#choice-note", Static).remove_class("refused")

    def chosen(self) -> PaneChoice | str:
        """The choice on screen, or why it cannot be used."""
        model = str(self.query_one("#choice-model", Select).value)
        backend = self.query_one("#choice-backend", Select).value
        retriever = str(self.query_one("#choice-retriever", Select).value)
        text = self.query_one("#choice-k", Input).value.strip()
        if not text.isdigit() or not 0 <= int(text) <= MAX_K:
            return f"k must be a whole number from 0 to {MAX_K}"
        k = int(text)
        if retriever != "none" and k == 0:
            retriever = "none"
        choice = PaneChoice(retriever, k if retriever != "none" else 0, str(backend), model, self.option(model).method)
        return refusal(choice, self.models) or choice

    def submit(self) -> None:
        chosen = self.chosen()
        if isinstance(chosen, str):
            note = self.query_one("#choice-note", Static)
            note.update(chosen)
            note.add_class("refused")
            self.notify(chosen, severity="error", timeout=6)
            return
        self.dismiss(chosen)

    @on(Button.Pressed, "#choice-use")
    def use_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        self.submit()

    @on(Input.Submitted, "#choice-k")
    def k_submitted(self) -> None:
        self.submit()

    @on(Button.Pressed, "#choice-cancel")
    def cancel_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        self.dismiss(None)

    def action_cancel(self) -> None:
        self.dismiss(None)
