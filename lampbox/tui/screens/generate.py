"""Generations side by side: one question, no personalization and each chosen retriever.

Every pane goes through the run pipeline (lampbox.tui.generation): the prompt is built as
a bench run builds it, a cached output is shown at once, otherwise tokens stream in from the
model in a thread worker; the finished output is cached for the bench and scored with the
task's metric.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from rich.text import Text
from textual import work
from textual.app import ComposeResult, SystemCommand
from textual.binding import Binding
from textual.containers import Horizontal
from textual.widgets import Footer, Header, Static
from textual.worker import Worker, get_current_worker

from lampbox.engine.defaults import default_max_new_tokens
from lampbox.engine.types import Question
from lampbox.store.browse import Dataset
from lampbox.tui import generation
from lampbox.tui.generation import PaneConfig
from lampbox.tui.messages import GenerationPrepared, OutputScored, TextGenerated, WorkFailed
from lampbox.tui.screens.base import LampboxScreen, one_line
from lampbox.tui.widgets.cells import cell
from lampbox.tui.widgets.generation_pane import GenerationPane


class GenerationScreen(LampboxScreen):
    """Panes of generations for one question; `p` shows the exact prompt of the focused pane."""

    BINDINGS = [
        Binding("escape", "back", "Back"),
        Binding("p", "show_prompt", "Prompt"),
        Binding("g", "generate", "Generate again"),
        Binding("ctrl+x", "cancel", "Cancel"),
        Binding("tab", "focus_next", "Next pane", show=False),
        Binding("shift+tab", "focus_previous", "Prev pane", show=False),
    ]

    def __init__(
        self,
        dataset: Dataset,
        question: Question,
        retrievers: list[str],
        k: int,
        question_text: str | None = None,
    ) -> None:
        super().__init__()
        self.dataset = dataset
        self.question = question
        self.question_text = question_text if question_text is not None else question.input
        self.configs = generation.pane_configs(retrievers, k)
        self.k = k
        self.session = 0  # bumped on each (re)generation; older messages are ignored
        self.max_new_tokens = 0

    def compose(self) -> ComposeResult:
        question = self.question
        yield Header()
        yield Static(
            f"[b]question {question.id}[/b]  ·  user {question.user_id}  ·  "
            f"{self.dataset.label}  ·  k={self.k}",
            id="generate-title",
        )
        gold = question.gold if question.gold is not None else "(not known for this split)"
        yield Static(
            Text.assemble(
                ("Question ", "bold"), cell(self.question_text, 200), "\n",
                ("Gold     ", "bold"), gold,
            ),
            id="generate-question",
        )
        with Horizontal(id="generation-panes"):
            for index, config in enumerate(self.configs):
                yield GenerationPane(index, config, id=f"pane-{index}")
        yield Static("", id="generate-status")
        yield Footer()

    def on_mount(self) -> None:
        self.action_generate()

    @property
    def panes(self) -> list[GenerationPane]:
        return list(self.query(GenerationPane))

    def status(self, text: str) -> None:
        self.query_one("#generate-status", Static).update(text)

    # -- the worker --------------------------------------------------------------------------

    def action_generate(self) -> None:
        task = self.store.task(self.question.task)
        limit = getattr(self.app, "max_new_tokens", None)
        self.max_new_tokens = limit or default_max_new_tokens(task)
        self.session += 1
        for pane in self.panes:
            pane.set_state("waiting", "waiting…")
        self.status(
            f"{generation.default_label()} · "
            f"{self.max_new_tokens} new tokens · loading the model and building the prompts…"
        )
        self.generate(self.session, self.max_new_tokens)

    @work(thread=True, exclusive=True, group="generate", exit_on_error=False)
    def generate(self, session: int, max_new_tokens: int) -> None:
        worker = get_current_worker()
        try:
            self.generate_panes(worker, session, max_new_tokens)
        except Exception as error:  # noqa: BLE001 - every failure must reach the user, not crash
            if not worker.is_cancelled:  # after a cancel, a late error is no news
                self.post_message(WorkFailed("Generating", one_line(error)))

    def generate_panes(self, worker: Worker[None], session: int, max_new_tokens: int) -> None:
        """Each pane in turn: prompt, cached or streamed output, cache, scores (worker thread)."""
        pool = self.app.generators  # type: ignore[attr-defined]
        task = self.store.task(self.question.task)
        for index, config in enumerate(self.configs):
            if worker.is_cancelled:
                return
            spec = generation.run_spec(
                self.question, self.dataset.scheme, self.dataset.split, config, max_new_tokens
            )
            prepared, cached = generation.prepare(spec, self.question, self.store, pool)
            if worker.is_cancelled:
                return
            self.post_message(GenerationPrepared(session, index, prepared, cached))
            started = time.perf_counter()
            output = cached
            if output is None:
                pieces = []
                for piece in generation.stream(prepared, pool, lambda: worker.is_cancelled):
                    pieces.append(piece)
                    self.post_message(TextGenerated(session, index, piece))
                if worker.is_cancelled:
                    return  # a partial output is never cached or scored
                output = "".join(pieces)
                generation.remember(self.store, prepared, pool, output)
            scores = generation.score(task, output, self.question.gold)
            seconds = time.perf_counter() - started
            self.post_message(OutputScored(session, index, output, scores, seconds))

    # -- handlers ----------------------------------------------------------------------------

    def pane(self, session: int, index: int) -> GenerationPane | None:
        if session != self.session:
            return None  # a message from a generation that has since been replaced
        return self.query_one(f"#pane-{index}", GenerationPane)

    def on_generation_prepared(self, message: GenerationPrepared) -> None:
        pane = self.pane(message.session, message.pane)
        if pane is not None:
            pane.set_prepared(message.prepared, message.cached)
            self.status(f"{pane.config.label}: {'cached' if message.cached else 'generating'}…")

    def on_text_generated(self, message: TextGenerated) -> None:
        pane = self.pane(message.session, message.pane)
        if pane is not None:
            pane.add_piece(message.piece)

    def on_output_scored(self, message: OutputScored) -> None:
        pane = self.pane(message.session, message.pane)
        if pane is None:
            return
        pane.set_scored(message.output, message.scores, message.seconds)
        done = sum(1 for pane in self.panes if pane.state == "done")
        self.status(
            f"{done}/{len(self.configs)} configurations done · "
            f"{self.max_new_tokens} new tokens · p: exact prompt · g: again"
        )

    def work_failed(self, message: WorkFailed) -> None:
        for pane in self.panes:
            if pane.state not in ("done", "cancelled"):
                pane.set_state("failed", message.error)
        self.status(f"{message.what} failed: {message.error}")

    # -- actions -----------------------------------------------------------------------------

    def action_back(self) -> None:
        self.workers.cancel_group(self, "generate")
        self.dismiss()

    def action_cancel(self) -> None:
        if self.workers.cancel_group(self, "generate"):
            self.session += 1  # messages the cancelled worker still sends are ignored
            for pane in self.panes:
                if pane.state != "done":
                    pane.set_state("cancelled", "cancelled (g: generate again)")
            self.status("generation cancelled")

    def action_show_prompt(self) -> None:
        from lampbox.tui.screens.prompt import PromptScreen

        focused = self.focused
        pane = focused if isinstance(focused, GenerationPane) else self.panes[0]
        if pane.prepared is None:
            self.notify("The prompt of this pane is not built yet", severity="warning")
            return
        self.app.push_screen(PromptScreen(pane.config.label, pane.prepared))

    def palette_commands(self) -> Iterable[SystemCommand]:
        yield SystemCommand("Regenerate", "Generate every pane again", self.action_generate)
        yield SystemCommand("Cancel generation", "Stop the model", self.action_cancel)
        for pane in self.panes:
            yield SystemCommand(
                f"Prompt of {pane.config.label}",
                "Show the exact prompt and the items that went in",
                lambda pane=pane: self.show_prompt_of(pane),
            )

    def show_prompt_of(self, pane: PaneConfig | GenerationPane) -> None:
        if isinstance(pane, GenerationPane):
            pane.focus()
        self.action_show_prompt()
