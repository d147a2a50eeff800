"""One user's failure cases in a run: the questions where personalization did worse.

Each case shows the prompt, the retrieved items (ids and text), this run's output, the
baseline's output, the gold and both scores. `a` switches between worse questions and all.
"""

from __future__ import annotations

from collections.abc import Iterable

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult, SystemCommand
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.widgets import DataTable, Footer, Header, Static

from lampbox.engine.tasks import TaskSpec
from lampbox.engine.types import Prediction
from lampbox.tui import runs, table_data
from lampbox.tui.messages import FailuresLoaded, WorkFailed
from lampbox.tui.runs import ConfigurationRow, FailureCase
from lampbox.tui.screens.base import LampboxScreen
from lampbox.tui.screens.run_users import gain_text, score_text
from lampbox.tui.widgets.cells import cell
from lampbox.tui.widgets.generation_pane import format_scores
from lampbox.tui.widgets.table import LampboxTable


def case_detail(case: FailureCase, task: TaskSpec) -> Text:
    """Everything about one case, as a scrollable block of text."""

    def section(title: str, body: str) -> Text:
        return Text.assemble((f"{title}\n", "bold"), body, "\n\n")

    def scored(prediction: Prediction | None) -> str:
        if prediction is None:
            return "(not in the baseline run)"
        scores = format_scores(dict(prediction.scores)) or "not scored"
        return f"{prediction.output or '(empty output)'}\n  [{scores}]"

    question = case.question
    items = "\n".join(
        f"{rank}. {item.id}  {' '.join(item.get(name) for name in task.document) or '(no text)'}"
        for rank, item in enumerate(case.retrieved, start=1)
    )
    return Text.assemble(
        section(f"Question {question.id}", task.question_text(question.input)),
        section("Gold", question.gold if question.gold is not None else "(unknown)"),
        section("This run's output", scored(case.prediction)),
        section("Baseline output (no personalization)", scored(case.baseline)),
        section(f"Retrieved items ({len(case.retrieved)})", items or "(none)"),
        section("Prompt", case.prediction.prompt or "(no prompt: a model-free run)"),
    )


class FailuresScreen(LampboxScreen):
    """The questions of one user where the run scored worse than its baseline."""

    AUTO_FOCUS = "#cases"
    BINDINGS = [
        Binding("escape", "back", "Back"),
        Binding("a", "toggle_all", "Worse / all"),
        Binding("tab", "focus_next", "Next pane", show=False),
    ]

    def __init__(self, row: ConfigurationRow, user_id: str) -> None:
        super().__init__()
        self.row = row
        self.user_id = user_id
        self.only_worse = True
        self.cases: list[FailureCase] = []
        self.task_spec: TaskSpec | None = None

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static(f"[b]user {self.user_id}[/b]  ·  {self.row.label}", id="failures-title")
        with Horizontal(id="failures-body"):
            yield LampboxTable(id="cases", cursor_type="row", zebra_stripes=True)
            with VerticalScroll(id="case-box"):
                yield Static("", id="case-detail")
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one("#cases", DataTable)
        table.add_column("question", key="question", width=14)
        table.add_column("baseline", key="baseline", width=9)
        table.add_column("this run", key="score", width=9)
        table.add_column("gain", key="gain", width=9)
        self.reload()

    def reload(self) -> None:
        self.query_one("#cases", DataTable).loading = True
        self.load_cases(self.only_worse)

    @work(thread=True, exclusive=True, group="cases", exit_on_error=False)
    def load_cases(self, only_worse: bool) -> None:
        with self.reporting("Reading the user's questions"):
            cases = runs.failure_cases(self.store, self.row, self.user_id, only_worse)
            self.task_spec = self.lookup_task(self.row.task)
            self.post_message(FailuresLoaded(self.user_id, only_worse, cases))

    def on_failures_loaded(self, message: FailuresLoaded) -> None:
        if message.only_worse != self.only_worse:
            return
        self.cases = message.cases
        table = self.query_one("#cases", LampboxTable)
        table.loading = False
        table.clear()
        if self.task_spec is not None:
            table.set_export(
                table_data.failure_cases(self.row, self.user_id, self.cases, self.task_spec)
            )
        for case in self.cases:
            baseline = case.baseline.main_score if case.baseline is not None else None
            table.add_row(
                cell(case.question.id, 14),
                score_text(baseline),
                score_text(case.prediction.main_score),
                gain_text(case.gain),
                key=case.question.id,
            )
        which = "worse than the baseline" if self.only_worse else "in this run"
        self.query_one("#failures-title", Static).update(
            f"[b]user {self.user_id}[/b]  ·  {self.row.label}  ·  "
            f"{len(self.cases)} question(s) {which}  (a: {'all' if self.only_worse else 'worse'})"
        )
        if self.cases:
            self.show_case(self.cases[0])
        else:
            self.query_one("#case-detail", Static).update(
                "No question of this user did worse in this run."
            )

    @on(DataTable.RowHighlighted, "#cases")
    def case_highlighted(self, event: DataTable.RowHighlighted) -> None:
        found = [case for case in self.cases if case.question.id == event.row_key.value]
        if found:
            self.show_case(found[0])

    def show_case(self, case: FailureCase) -> None:
        if self.task_spec is not None:
            self.query_one("#case-detail", Static).update(case_detail(case, self.task_spec))
        self.query_one("#case-box", VerticalScroll).scroll_home(animate=False)

    def work_failed(self, message: WorkFailed) -> None:
        self.query_one("#cases", DataTable).loading = False

    def action_back(self) -> None:
        self.dismiss()

    def action_toggle_all(self) -> None:
        self.only_worse = not self.only_worse
        self.reload()

    def palette_commands(self) -> Iterable[SystemCommand]:
        yield SystemCommand(
            "Show all questions" if self.only_worse else "Show worse questions only",
            "Switch between the questions where the run did worse and all of them",
            self.action_toggle_all,
        )
