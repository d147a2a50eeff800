"""One question: input, gold, profile, and several retrievers' rankings side by side; what-if
edits (exclude or pin profile items, edit the input, a new question as this user) that the
generation panes then apply (the engine's WhatIf, lampbox.engine.whatif)."""

from __future__ import annotations

from collections.abc import Iterable

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult, SystemCommand
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import DataTable, Footer, Header, SelectionList, Static
from textual.worker import get_current_worker

from lampbox.engine.tasks import TaskSpec
from lampbox.engine.types import Question
from lampbox.engine.whatif import WhatIf
from lampbox.store import browse
from lampbox.store.browse import Dataset
from lampbox.tui import rankings, table_data
from lampbox.tui.messages import QuestionLoaded, RankingsComputed, WorkFailed
from lampbox.tui.screens.base import LampboxScreen
from lampbox.tui.widgets.cells import cell
from lampbox.tui.widgets.ranking_pane import RankingPane, shared_counts
from lampbox.tui.widgets.table import LampboxTable

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
        Binding("x", "exclude", "Exclude"),
        Binding("P", "pin", "Pin", key_display="P"),
        Binding("e", "edit_input", "Edit input", show=False),
        Binding("n", "new_question", "New question", show=False),
        Binding("u", "clear_edits", "Undo edits", show=False),
        Binding("ctrl+x", "cancel", "Cancel ranking", show=False),
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
        self.task_spec: TaskSpec | None = None
        self.edit = WhatIf()  # what-if edits of this question (empty: the question as it is)

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static(f"question {self.question_id}", id="question-title")
        yield Static("", id="question-whatif")
        with Horizontal(id="question-top"):
            with VerticalScroll(id="question-text"):
                yield Static("", id="question-input")
                yield Static("", id="question-gold")
            yield LampboxTable(id="question-profile", cursor_type="row", zebra_stripes=True)
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
        self.task_spec = message.task
        self.query_one("#question-title", Static).update(
            f"[b]question {question.id}[/b]  ·  user {question.user_id}  ·  {self.dataset.label}  ·  "
            f"{len(question.profile)} profile items"
        )
        self.show_question_text()
        profile = self.query_one("#question-profile", LampboxTable)
        profile.loading = False
        profile.set_export(table_data.question_profile(question, message.task.profile_fields))
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
            f"ranking with {', '.join(self.retrievers)} (k={self.k})… ctrl+x: cancel"
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
            f"k={self.k} · {shared} item(s) in more than one ranking (marked ×n) · "
            "what-if: x P e n (? help)"
        )

    def show_rankings(self, computed: list[rankings.ShownRanking]) -> None:
        self.rankings = computed
        area = self.query_one("#rankings", Horizontal)
        area.loading = False
        area.remove_children()
        shared = shared_counts(computed)
        area.mount_all(
            RankingPane(ranking, shared, self.document_fields, self.question) for ranking in computed
        )

    def work_failed(self, message: WorkFailed) -> None:
        self.query_one("#question-profile", DataTable).loading = False
        self.query_one("#rankings", Horizontal).loading = False
        self.query_one("#rankings-status", Static).update(f"{message.what} failed: {message.error}")

    # -- actions -----------------------------------------------------------------------------

    def action_back(self) -> None:
        self.dismiss()

    def action_generate(self) -> None:
        """Generate for this question with no personalization and each chosen retriever (with
        the what-if edits, when there are some, beside the unedited outputs)."""
        from lampbox.tui.screens.generate import GenerationScreen

        if self.question is None:
            self.notify("The question is still loading", severity="warning")
            return
        edit = None if self.edit.is_empty else self.edit
        self.app.push_screen(
            GenerationScreen(
                self.dataset,
                self.question,
                list(self.retrievers),
                self.k,
                self.shown_question_text(),
                edit=edit,
            )
        )

    # -- what-if edits -----------------------------------------------------------------------

    def highlighted_item(self) -> str | None:
        """The profile item under the cursor of the focused table (the profile or a ranking)."""
        table = self.focused
        if not isinstance(table, DataTable) or table.row_count == 0:
            return None
        key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        if self.question is None or key not in {item.key for item in self.question.profile}:
            return None
        return key

    def action_exclude(self) -> None:
        """Exclude the highlighted item from every pane's prompt (again: bring it back)."""
        key = self.highlighted_item()
        if key is None:
            self.notify("Highlight an item in the profile or a ranking (tab), then x", severity="warning")
            return
        self.set_edit(self.edit.toggle_excluded(key))

    def action_pin(self) -> None:
        """Pin the highlighted item: every retrieving pane's prompt takes it first (again: unpin)."""
        key = self.highlighted_item()
        if key is None:
            self.notify("Highlight an item in the profile or a ranking (tab), then P", severity="warning")
            return
        self.set_edit(self.edit.toggle_pinned(key))

    def action_edit_input(self) -> None:
        """Edit the question's whole input (the task's instruction included)."""
        from lampbox.tui.screens.edit_input import EditInputScreen

        question = self.question
        if question is None:
            self.notify("The question is still loading", severity="warning")
            return
        new = self.edit.new_question
        text = self.edit.input if self.edit.input is not None else question.input
        note = "The whole input, as the prompt gets it. ctrl+s uses it; the gold stays."
        if new:
            note = "Your new question, as this user (no gold). ctrl+s uses it."

        def edited(result: str | None) -> None:
            if result is None:
                return
            if not result.strip():
                self.notify("An empty input is not a question: nothing changed", severity="warning")
                return
            if result == question.input and not new:
                self.set_edit(self.edit.with_input(None))
            else:
                self.set_edit(self.edit.with_input(result, new_question=new))

        self.app.push_screen(EditInputScreen(f"Input of question {question.id}", text, note), edited)

    def action_new_question(self) -> None:
        """Type a new question as this user: the task's instruction, then your text."""
        from lampbox.tui.screens.edit_input import EditInputScreen

        question = self.question
        if question is None:
            self.notify("The question is still loading", severity="warning")
            return
        own = self.question_text
        cut = question.input.rfind(own) if own else -1
        prefix = question.input[:cut] if cut > 0 else ""

        def typed(result: str | None) -> None:
            if result is None:
                return
            if not result.strip() or result.strip() == prefix.strip():
                self.notify("A new question needs its text: nothing changed", severity="warning")
                return
            self.set_edit(self.edit.with_input(result, new_question=True))

        note = (
            f"A new question as user {question.user_id}, with this user's profile; it has no gold. "
            "ctrl+s uses it."
        )
        self.app.push_screen(EditInputScreen("A new question", prefix, note), typed)

    def action_clear_edits(self) -> None:
        if self.edit.is_empty:
            self.notify("No what-if edits to undo")
            return
        self.set_edit(WhatIf())

    def set_edit(self, edit: WhatIf) -> None:
        """Use this edit from now on, and show it: marks in the profile, the what-if line."""
        self.edit = edit
        self.show_edit()

    def shown_question_text(self) -> str:
        """The question's own text, or the edited input's."""
        if self.edit.input is None or self.task_spec is None:
            return self.question_text
        return self.task_spec.question_text(self.edit.input)

    def show_question_text(self) -> None:
        if self.edit.input is None:
            title = Text.assemble(("Question", "bold"), ("  (p: full input)\n", "dim"))
        else:
            what = "New question" if self.edit.new_question else "Question, edited"
            title = Text.assemble((what, "bold reverse"), ("  (e: edit · u: undo)\n", "dim"))
        self.query_one("#question-input", Static).update(
            Text.assemble(title, self.shown_question_text())
        )
        gold = "(not known for this split)"
        if self.edit.new_question:
            gold = "(a new question has no gold)"
        elif self.question is not None and self.question.gold is not None:
            gold = self.question.gold
        self.query_one("#question-gold", Static).update(Text.assemble(("\nGold\n", "bold"), gold))

    def show_edit(self) -> None:
        question = self.question
        if question is None:
            return
        edit = self.edit
        profile = self.query_one("#question-profile", DataTable)
        for position, item in enumerate(question.profile, start=1):
            mark: str | Text = str(position)
            text = " ".join(item.get(name) for name in self.document_fields)
            shown: str | Text = cell(text, 48)
            if item.key in edit.excluded:
                mark = Text("✗", style="bold red")
                shown = Text(str(shown), style="strike dim")
            elif item.key in edit.pinned:
                mark = Text(f"P{edit.pinned.index(item.key) + 1}", style="bold green")
            profile.update_cell(item.key, "position", mark)
            profile.update_cell(item.key, "item", shown)
        line = self.query_one("#question-whatif", Static)
        line.set_class(not edit.is_empty, "shown")
        line.update(
            Text.assemble(
                ("WHAT-IF ", "bold reverse"),
                f" {edit.describe()} · g: generate with it, beside the original · u: undo all",
            )
        )
        self.show_question_text()

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
            "What-if: edit the input (e)",
            "Change the question's input; the panes then run it beside the original",
            self.action_edit_input,
        )
        yield SystemCommand(
            "What-if: a new question as this user (n)",
            "Type a new question with this user's profile (no gold)",
            self.action_new_question,
        )
        if not self.edit.is_empty:
            yield SystemCommand(
                "What-if: undo every edit (u)", self.edit.describe(), self.action_clear_edits
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
