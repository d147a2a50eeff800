"""One question: input, gold, profile, and several retrievers' rankings side by side."""

from __future__ import annotations

from collections.abc import Iterable

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult, SystemCommand
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import DataTable, Footer, Header, SelectionList, Static
from textual.worker import get_current_worker

from lampbox.engine.types import Question
from lampbox.store import browse
from lampbox.store.browse import Dataset
from lampbox.tui import rankings
from lampbox.tui.messages import QuestionLoaded, RankingsComputed, WorkFailed
from lampbox.tui.screens.base import LampboxScreen
from lampbox.tui.widgets.cells import cell
from lampbox.tui.widgets.ranking_pane import RankingPane, shared_counts

DEFAULT_K = 5
PREFERRED_RETRIEVERS = ("bm25", "recency")


class QuestionScreen(LampboxScreen):
    """The question's text and gold, its profile, and the chosen retrievers' top-k rankings."""

    AUTO_FOCUS = "#retrievers"
    BINDINGS = [
        Binding("escape", "back", "Back"),
        Binding("plus,equals_sign", "change_k(1)", "k+1", key_display="+"),
        Binding("minus", "change_k(-1)", "k-1", key_display="-"),
        Binding("g", "generate", "Generate"),
        Binding("p", "show_input", "Full input"),
        Binding("ctrl+x", "cancel", "Cancel ranking"),
        Binding("tab", "focus_next", "Next pane", show=False),
    ]

    def __init__(self, dataset: Dataset, question_id: str) -> None:
        super().__init__()
        self.dataset = dataset
        self.question_id = question_id
        self.question: Question | None = None
        self.document_fields: tuple[str, ...] = ()
        self.question_text = ""
        self.k = DEFAULT_K
        self.retrievers: list[str] = []
        self.rankings: list[rankings.ShownRanking] = []

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static(f"question {self.question_id}", id="question-title")
        with Horizontal(id="question-top"):
            with VerticalScroll(id="question-text"):
                yield Static("", id="question-input")
                yield Static("", id="question-gold")
            yield DataTable(id="question-profile", cursor_type="row", zebra_stripes=True)
        with Horizontal(id="rankings-area"):
            with Vertical(id="rankings-controls"):
                yield Static("Retrievers (space)", classes="section-title")
                yield SelectionList[str](id="retrievers")
            with Vertical(id="rankings-column"):
                yield Static("", id="rankings-status")
                yield Horizontal(id="rankings")
        yield Footer()

    def on_mount(self) -> None:
        profile = self.query_one("#question-profile", DataTable)
        profile.add_column("#", key="position", width=3)
        profile.add_column("date", key="date", width=10)
        profile.add_column("item", key="item", width=48)
        profile.loading = True
        self.load_question(self.dataset, self.question_id)

    # -- workers -----------------------------------------------------------------------------

    @work(thread=True, exclusive=True, group="question", exit_on_error=False)
    def load_question(self, dataset: Dataset, question_id: str) -> None:
        with self.reporting("Reading the question"):
            question = browse.question(self.store, dataset, question_id)
            task = self.lookup_task(dataset.task)
            self.post_message(QuestionLoaded(question, tuple(task.document), task))

    @work(thread=True, exclusive=True, group="rankings", exit_on_error=False)
    def compute_rankings(self, question: Question, retrievers: list[str], k: int) -> None:
        worker = get_current_worker()
        with self.reporting("Ranking"):
            computed = []
            for name in retrievers:
                if worker.is_cancelled:
                    return
                computed.append(
                    rankings.rank_question(
                        self.store, question, name, k, lambda: worker.is_cancelled
                    )
                )
            if not worker.is_cancelled:
                self.post_message(RankingsComputed(question.id, k, computed))

    # -- handlers ----------------------------------------------------------------------------

    def on_question_loaded(self, message: QuestionLoaded) -> None:
        question = self.question = message.question
        self.document_fields = message.document_fields
        self.question_text = message.task.question_text(question.input)
        self.query_one("#question-title", Static).update(
            f"[b]question {question.id}[/b]  ·  user {question.user_id}  ·  {self.dataset.label}  ·  "
            f"{len(question.profile)} profile items"
        )
        self.query_one("#question-input", Static).update(
            Text.assemble(("Question", "bold"), ("  (p: full input)\n", "dim"), self.question_text)
        )
        gold = question.gold if question.gold is not None else "(not known for this split)"
        self.query_one("#question-gold", Static).update(Text.assemble(("\nGold\n", "bold"), gold))
        profile = self.query_one("#question-profile", DataTable)
        profile.loading = False
        for position, item in enumerate(question.profile, start=1):
            text = " ".join(item.get(name) for name in self.document_fields)
            profile.add_row(position, cell(item.date or "", 10), cell(text, 48), key=item.key)
        self.set_up_retrievers()

    def set_up_retrievers(self) -> None:
        status = self.query_one("#rankings-status", Static)
        try:
            names = rankings.retriever_names()
        except Exception as error:  # noqa: BLE001 - shown to the user, never a crash
            status.update(f"Retrieval failed to load: {error}")
            return
        chosen = [name for name in PREFERRED_RETRIEVERS if name in names] or names[:2]
        selection = self.query_one("#retrievers", SelectionList)
        with selection.prevent(SelectionList.SelectedChanged):
            selection.add_options((name, name, name in chosen) for name in names)
        self.retrievers = chosen
        self.rerank()

    @on(SelectionList.SelectedChanged, "#retrievers")
    def retrievers_changed(self, event: SelectionList.SelectedChanged[str]) -> None:
        names = list(event.selection_list.selected)
        if names != self.retrievers:
            self.retrievers = names
            self.rerank()

    def rerank(self) -> None:
        if self.question is None:
            return
        if not self.retrievers:
            self.show_rankings([])
            self.query_one("#rankings-status", Static).update("Choose one or more retrievers.")
            return
        self.query_one("#rankings-status", Static).update(
            f"ranking with {', '.join(self.retrievers)} (k={self.k})…"
        )
        self.query_one("#rankings", Horizontal).loading = True
        self.compute_rankings(self.question, list(self.retrievers), self.k)

    def on_rankings_computed(self, message: RankingsComputed) -> None:
        if message.question_id != self.question_id or message.k != self.k:
            return
        if [ranking.retriever for ranking in message.rankings] != self.retrievers:
            return  # the choice changed while this ranking ran; a newer one is on its way
        self.show_rankings(message.rankings)
        shared = sum(1 for count in shared_counts(message.rankings).values() if count > 1)
        self.query_one("#rankings-status", Static).update(
            f"k={self.k} · {shared} item(s) in more than one ranking (marked ×n)"
        )

    def show_rankings(self, computed: list[rankings.ShownRanking]) -> None:
        self.rankings = computed
        area = self.query_one("#rankings", Horizontal)
        area.loading = False
        area.remove_children()
        shared = shared_counts(computed)
        area.mount_all(RankingPane(ranking, shared, self.document_fields) for ranking in computed)

    def work_failed(self, message: WorkFailed) -> None:
        self.query_one("#question-profile", DataTable).loading = False
        self.query_one("#rankings", Horizontal).loading = False
        self.query_one("#rankings-status", Static).update(f"{message.what} failed: {message.error}")

    # -- actions -----------------------------------------------------------------------------

    def action_back(self) -> None:
        self.dismiss()

    def action_generate(self) -> None:
        """Generate for this question with no personalization and each chosen retriever."""
        from lampbox.tui.screens.generate import GenerationScreen

        if self.question is None:
            self.notify("The question is still loading", severity="warning")
            return
        self.app.push_screen(
            GenerationScreen(
                self.dataset, self.question, list(self.retrievers), self.k, self.question_text
            )
        )

    def action_show_input(self) -> None:
        """The question's whole input, the task's instruction included."""
        from lampbox.tui.screens.prompt import TextScreen

        if self.question is None:
            self.notify("The question is still loading", severity="warning")
            return
        self.app.push_screen(TextScreen(f"Input of question {self.question.id}", self.question.input))

    def action_change_k(self, step: int) -> None:
        k = max(1, min(50, self.k + step))
        if k != self.k:
            self.k = k
            self.rerank()

    def action_cancel(self) -> None:
        cancelled = self.workers.cancel_group(self, "rankings")
        if cancelled:
            self.query_one("#rankings", Horizontal).loading = False
            self.query_one("#rankings-status", Static).update("ranking cancelled")

    def palette_commands(self) -> Iterable[SystemCommand]:
        yield SystemCommand(
            "Generate side by side",
            "No personalization and each chosen retriever at k, streamed and scored",
            self.action_generate,
        )
        yield SystemCommand(
            "More retrieved items (k+1)",
            "Show one more item per ranking",
            lambda: self.action_change_k(1),
        )
        yield SystemCommand(
            "Fewer retrieved items (k-1)",
            "Show one item fewer per ranking",
            lambda: self.action_change_k(-1),
        )
