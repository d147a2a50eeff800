"""Bench runs in the store: benches on the left, the chosen bench's configurations on the right.

The table is the bench's own comparison (relative change of the main metric against no
personalization and the paired p-value), read from the stored runs. `enter` opens a
configuration's per-user breakdown. Saved what-ifs (`s` on an edited question's generations)
are listed apart, under "What-ifs": each row one pane's edited output, scored, beside the
unedited question's score and the difference.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import partial

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult, SystemCommand
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.timer import Timer
from textual.widgets import DataTable, Footer, Header, OptionList, Static
from textual.widgets.option_list import Option
from textual.worker import get_current_worker

from lampbox.tui import runs, table_data
from lampbox.tui.messages import BenchCompared, BenchesLoaded, WorkFailed
from lampbox.tui.runs import BenchSummary, ConfigurationRow, SavedWhatIf
from lampbox.tui.screens.base import LampboxScreen
from lampbox.tui.widgets.cells import cell
from lampbox.tui.widgets.generation_pane import format_delta, format_scores
from lampbox.tui.widgets.table import LampboxTable

POLL_S = 1.0  # how often the screen reads a running bench's progress again

WHATIFS = "whatifs"  # the option id of the saved what-ifs in the benches list
NO_BENCHES = (
    "No benches in this store yet. Run one, e.g.\n"
    "  lampbox bench --task LaMP_7 --retrievers none,bm25 --k 1 --limit 8\n"
    "then press R to read the store again."
)


def change_text(change: float | None, higher_is_better: bool) -> Text:
    """A relative change, green when the configuration did better than its baseline."""
    if change is None:
        return Text("–")
    better = change > 0 if higher_is_better else change < 0
    style = "green" if better else ("red" if change != 0 else "")
    return Text(f"{change:+.1%}", style=style)


def running_text(bench: BenchSummary, rows: list[ConfigurationRow]) -> str:
    """'running: configuration 2 of 5, bm25 k=1 dummy:m · generate 6/16 questions'."""
    parts = []
    for position, row in enumerate(rows, start=1):
        if row.status == "running":
            parts.append(
                f"running: configuration {position} of {bench.runs}, {row.label} · "
                f"{row.progress_text} questions"
            )
    return "; ".join(parts) + f" (read every {POLL_S:g} s)"


def _delta_text(delta: float, higher_is_better: bool) -> Text:
    """A score difference, green when the edit did better."""
    better = delta > 0 if higher_is_better else delta < 0
    style = "green" if better else ("red" if delta != 0 else "")
    return Text(f"{delta:+.3f}", style=style)


class RunsScreen(LampboxScreen):
    """The store's benches and, for the chosen one, its configurations against the baseline."""

    AUTO_FOCUS = "#configurations"
    BINDINGS = [
        Binding("escape", "back", "Back"),
        Binding("R", "reload", "Reload"),
        Binding("tab", "focus_next", "Next pane", show=False),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.benches: list[BenchSummary] = []
        self.bench: BenchSummary | None = None
        self.rows: list[ConfigurationRow] = []
        self.higher_is_better = True
        self.poll_timer: Timer | None = None  # set while a bench in the store is running
        self.whatifs: list[SavedWhatIf] = []
        self.showing_whatifs = False

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal():
            with Vertical(id="benches-column"):
                yield Static("Benches", classes="column-title")
                yield OptionList(id="benches")
            with Vertical(id="configurations-column"):
                yield Static("Configurations  (enter: per-user gains)", classes="section-title")
                yield LampboxTable(id="configurations", cursor_type="row", zebra_stripes=True)
                yield Static("", id="runs-status")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#configurations", DataTable).loading = True
        self.load_benches()

    def on_screen_resume(self) -> None:
        """Back on this screen: runs that finished meanwhile appear (read quietly)."""
        if self.benches:
            self.load_benches(quiet=True)

    # -- workers -----------------------------------------------------------------------------

    @work(thread=True, exclusive=True, group="benches", exit_on_error=False)
    def load_benches(self, quiet: bool = False) -> None:
        with self.reporting("Listing the benches"):
            benches = runs.list_benches(self.store)
            whatifs = runs.list_whatifs(self.store)
            for task in {saved.task for saved in whatifs}:
                self.lookup_task(task)  # for the handler, which must not wait for the store
            if not get_current_worker().is_cancelled:  # a newer read replaced this one
                self.post_message(BenchesLoaded(benches, whatifs, quiet))

    @work(thread=True, exclusive=True, group="compare", exit_on_error=False)
    def load_bench(self, bench_key: str, known: list[ConfigurationRow]) -> None:
        with self.reporting("Comparing the bench's runs"):
            rows = runs.compare_bench(self.store, bench_key, known)
            if rows:
                self.lookup_task(rows[0].task)  # for the handler, which must not wait for the store
            if not get_current_worker().is_cancelled:  # a newer read replaced this one
                self.post_message(BenchCompared(bench_key, rows))

    def poll(self) -> None:
        """Timer, while a bench runs: read its progress again, unless the last read is still
        waiting (for the store, maybe: the bench may be writing a batch)."""
        busy = [worker for worker in self.workers if worker.group in ("benches", "compare")]
        if not any(worker.is_running for worker in busy):
            self.load_benches(quiet=True)

    def keep_polling(self, running: bool) -> None:
        """Poll every POLL_S while a bench runs; stop once none does."""
        if running and self.poll_timer is None:
            self.poll_timer = self.set_interval(POLL_S, self.poll)
        elif not running and self.poll_timer is not None:
            self.poll_timer.stop()
            self.poll_timer = None

    # -- handlers ----------------------------------------------------------------------------

    def on_benches_loaded(self, message: BenchesLoaded) -> None:
        shown_whatifs = [saved.run_key for saved in self.whatifs]
        self.benches = message.benches
        self.whatifs = message.whatifs
        self.keep_polling(any(bench.in_progress for bench in self.benches))
        options = self.query_one("#benches", OptionList)
        table = self.query_one("#configurations", DataTable)
        if not self.benches and not self.whatifs:
            options.clear_options()
            table.loading = False
            self.query_one("#runs-status", Static).update(NO_BENCHES)
            return
        whatifs = bool(self.whatifs) and (self.showing_whatifs or not self.benches)
        with options.prevent(OptionList.OptionHighlighted):
            options.clear_options()
            options.add_options(
                Option(
                    f"{bench.label}\n  {bench.finished}/{bench.runs} runs"
                    f"{bench.state_text} · {bench.bench_key[:8]}",
                    id=bench.bench_key,
                )
                for bench in self.benches
            )
            if self.whatifs:
                options.add_option(
                    Option(
                        f"What-ifs\n  {len(self.whatifs)} saved (not benchmark data)", id=WHATIFS
                    )
                )
            if whatifs:
                options.highlighted = len(self.benches)
            else:
                shown = self.bench.bench_key if self.bench is not None else None
                keep = next((b for b in self.benches if b.bench_key == shown), self.benches[0])
                options.highlighted = self.benches.index(keep)
        if whatifs:
            unchanged = [saved.run_key for saved in self.whatifs] == shown_whatifs
            if not (message.quiet and self.showing_whatifs and unchanged):
                self.show_whatifs()  # a poll that found no new what-if keeps the table as it is
            return
        self.choose_bench(keep, force=True, quiet=message.quiet)

    def choose_bench(self, bench: BenchSummary, force: bool = False, quiet: bool = False) -> None:
        if bench == self.bench and not force and not self.showing_whatifs:
            return
        same = self.bench is not None and bench.bench_key == self.bench.bench_key
        self.showing_whatifs = False
        self.bench = bench
        if not quiet:
            self.query_one("#configurations", DataTable).loading = True
        self.load_bench(bench.bench_key, self.rows if same else [])

    @on(OptionList.OptionHighlighted, "#benches")
    def bench_highlighted(self, event: OptionList.OptionHighlighted) -> None:
        if event.option.id == WHATIFS:
            self.show_whatifs()
            return
        found = [bench for bench in self.benches if bench.bench_key == event.option.id]
        if found:
            self.choose_bench(found[0])

    def show_whatifs(self) -> None:
        """The saved what-ifs in the table: edited score, the original's, the difference."""
        from lampbox.engine.metrics import question_key

        self.showing_whatifs = True
        self.bench = None
        self.rows = []  # a bench shown again is drawn afresh
        table = self.query_one("#configurations", LampboxTable)
        table.export = None  # E writes the what-ifs as shown, not the last bench
        table.loading = False
        table.clear(columns=True)
        table.add_column("what-if", key="label", width=40)
        table.add_column("user", key="user", width=10)
        table.add_column("metric", key="metric", width=8)
        table.add_column("edited", key="edited", width=7)
        table.add_column("original", key="original", width=8)
        table.add_column("Δ", key="delta", width=7)
        for saved in self.whatifs:
            task = self.lookup_task(saved.task)  # looked up by load_benches
            metric = question_key(task)
            edited = saved.prediction.scores.get(metric)
            original = saved.original_scores.get(metric)
            delta = saved.delta.get(metric)
            higher = task.higher_is_better()
            table.add_row(
                cell(saved.label, 40),
                cell(saved.user_id, 10),
                cell(metric, 8),
                "–" if edited is None else f"{edited:.3f}",
                "–" if original is None else f"{original:.3f}",
                Text("–") if delta is None else _delta_text(delta, higher),
                key=saved.run_key,
            )
        self.query_one("#runs-status", Static).update(
            f"{len(self.whatifs)} saved what-if(s): one question each, edited (items excluded or "
            "pinned, input edited, or a new question) · never benchmark data · enter: details"
        )

    def show_whatif(self, run_key: str) -> None:
        from lampbox.tui.screens.prompt import TextScreen

        found = [saved for saved in self.whatifs if saved.run_key == run_key]
        if not found:
            return
        saved = found[0]
        prediction = saved.prediction
        lines = [
            f"question {saved.question_id} · user {saved.user_id} · {saved.configuration}",
            f"edit: {saved.edit.describe()}",
            f"excluded items: {', '.join(saved.edit.excluded) or '-'}",
            f"pinned items (in order): {', '.join(saved.edit.pinned) or '-'}",
            f"items that went in: {', '.join(prediction.item_ids) or '-'}",
            "",
            f"edited output: {prediction.output}",
            f"scores: {format_scores(dict(prediction.scores)) or 'no gold'}",
        ]
        if saved.original_output is not None:
            lines += [
                f"original output: {saved.original_output}",
                f"scores: {format_scores(saved.original_scores) or 'no gold'}",
                f"difference: {format_delta(saved.delta) or '-'}",
            ]
        lines += ["", f"gold: {prediction.gold if prediction.gold is not None else '-'}"]
        lines += ["", "prompt:", prediction.prompt or ""]
        self.app.push_screen(TextScreen(f"What-if {saved.run_key[:8]}", "\n".join(lines)))

    def on_bench_compared(self, message: BenchCompared) -> None:
        if self.showing_whatifs:
            return
        if self.bench is None or message.bench_key != self.bench.bench_key:
            return
        table = self.query_one("#configurations", LampboxTable)
        table.loading = False
        if message.rows == self.rows and table.row_count:
            return  # a poll that found nothing new: keep the table (and its cursor) as it is
        self.rows = message.rows
        task = self.lookup_task(self.bench.task)
        self.higher_is_better = task.higher_is_better()
        metrics = list(task.metrics)
        cursor = table.cursor_row
        table.clear(columns=True)
        table.set_export(table_data.configurations(self.bench, self.rows, metrics))
        table.add_column("configuration", key="label", width=38)
        table.add_column("role", key="role", width=14)
        for name in metrics:
            table.add_column(name, key=name, width=7)
        table.add_column("change", key="change", width=7)
        table.add_column("p", key="p", width=5)
        for row in self.rows:
            values = [
                f"{row.metrics[name]:.4f}" if name in row.metrics else "–" for name in metrics
            ]
            if row.status == "finished":
                role: str | Text = row.role
            elif row.status == "running":
                role = Text(row.progress_text, style="yellow")
            else:
                role = Text(f"{row.status}!", style="red")
            table.add_row(
                cell(row.label, 38),
                role,
                *values,
                change_text(row.relative_change, self.higher_is_better),
                "–" if row.p_value is None else f"{row.p_value:.3f}",
                key=row.run_key,
            )
        if self.rows:
            table.move_cursor(row=min(cursor, len(self.rows) - 1))
        direction = "higher" if self.higher_is_better else "lower"
        status = (
            f"{len(self.rows)} configurations · change: relative change of {task.main_metric} "
            f"({direction} is better) vs no personalization · p: paired randomization test"
        )
        running = [row for row in self.rows if row.status == "running"]
        if self.bench.status in ("failed", "cancelled"):
            status = f"bench {self.bench.status}: {self.bench.error or 'no reason recorded'}\n{status}"
        elif running:
            status = f"{running_text(self.bench, self.rows)}\n{status}"
        self.query_one("#runs-status", Static).update(status)

    def work_failed(self, message: WorkFailed) -> None:
        self.query_one("#configurations", DataTable).loading = False

    @on(DataTable.RowSelected, "#configurations")
    def configuration_chosen(self, event: DataTable.RowSelected) -> None:
        from lampbox.tui.screens.run_users import RunUsersScreen

        if self.showing_whatifs:
            self.show_whatif(str(event.row_key.value))
            return
        found = [row for row in self.rows if row.run_key == event.row_key.value]
        if not found:
            return
        row = found[0]
        if row.status != "finished":
            self.notify(f"{row.label} is {row.status}: nothing to break down", severity="warning")
        elif row.baseline_key is None:
            self.notify(f"{row.label} is a baseline: choose a configuration to compare with it")
        else:
            self.app.push_screen(RunUsersScreen(row))

    # -- actions -----------------------------------------------------------------------------

    def action_back(self) -> None:
        self.dismiss()

    def action_reload(self) -> None:
        self.query_one("#configurations", DataTable).loading = True
        self.rows = []
        self.load_benches()

    def palette_commands(self) -> Iterable[SystemCommand]:
        for bench in self.benches:
            yield SystemCommand(
                f"Bench: {bench.label} ({bench.bench_key[:8]})",
                f"Show the {bench.runs} configurations of this bench",
                partial(self.select_bench, bench),
            )

    def select_bench(self, bench: BenchSummary) -> None:
        self.query_one("#benches", OptionList).highlighted = self.benches.index(bench)
        self.choose_bench(bench)
