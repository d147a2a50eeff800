"""Bench runs in the store: benches on the left, the chosen bench's configurations on the right.

The table is the bench's own comparison (relative change of the main metric against no
personalization and the paired p-value), read from the stored runs. `enter` opens a
configuration's per-user breakdown.
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

from lampbox.tui import runs
from lampbox.tui.messages import BenchCompared, BenchesLoaded, WorkFailed
from lampbox.tui.runs import BenchSummary, ConfigurationRow
from lampbox.tui.screens.base import LampboxScreen
from lampbox.tui.widgets.cells import cell

POLL_S = 1.0  # how often the screen reads a running bench's progress again

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

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal():
            with Vertical(id="benches-column"):
                yield Static("Benches", classes="column-title")
                yield OptionList(id="benches")
            with Vertical(id="configurations-column"):
                yield Static("Configurations  (enter: per-user gains)", classes="section-title")
                yield DataTable(id="configurations", cursor_type="row", zebra_stripes=True)
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
            if not get_current_worker().is_cancelled:  # a newer read replaced this one
                self.post_message(BenchesLoaded(benches, quiet))

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
        self.benches = message.benches
        self.keep_polling(any(bench.running for bench in self.benches))
        options = self.query_one("#benches", OptionList)
        table = self.query_one("#configurations", DataTable)
        if not self.benches:
            options.clear_options()
            table.loading = False
            self.query_one("#runs-status", Static).update(NO_BENCHES)
            return
        with options.prevent(OptionList.OptionHighlighted):
            options.clear_options()
            options.add_options(
                Option(
                    f"{bench.label}\n  {bench.finished}/{bench.runs} runs"
                    f"{' · running' if bench.running else ''} · {bench.bench_key[:8]}",
                    id=bench.bench_key,
                )
                for bench in self.benches
            )
            shown = self.bench.bench_key if self.bench is not None else None
            keep = next((b for b in self.benches if b.bench_key == shown), self.benches[0])
            options.highlighted = self.benches.index(keep)
        self.choose_bench(keep, force=True, quiet=message.quiet)

    def choose_bench(self, bench: BenchSummary, force: bool = False, quiet: bool = False) -> None:
        if bench == self.bench and not force:
            return
        same = self.bench is not None and bench.bench_key == self.bench.bench_key
        self.bench = bench
        if not quiet:
            self.query_one("#configurations", DataTable).loading = True
        self.load_bench(bench.bench_key, self.rows if same else [])

    @on(OptionList.OptionHighlighted, "#benches")
    def bench_highlighted(self, event: OptionList.OptionHighlighted) -> None:
        found = [bench for bench in self.benches if bench.bench_key == event.option.id]
        if found:
            self.choose_bench(found[0])

    def on_bench_compared(self, message: BenchCompared) -> None:
        if self.bench is None or message.bench_key != self.bench.bench_key:
            return
        table = self.query_one("#configurations", DataTable)
        table.loading = False
        if message.rows == self.rows and table.row_count:
            return  # a poll that found nothing new: keep the table (and its cursor) as it is
        self.rows = message.rows
        task = self.lookup_task(self.bench.task)
        self.higher_is_better = task.higher_is_better()
        metrics = list(task.metrics)
        cursor = table.cursor_row
        table.clear(columns=True)
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
        if running:
            status = f"{running_text(self.bench, self.rows)}\n{status}"
        self.query_one("#runs-status", Static).update(status)

    def work_failed(self, message: WorkFailed) -> None:
        self.query_one("#configurations", DataTable).loading = False

    @on(DataTable.RowSelected, "#configurations")
    def configuration_chosen(self, event: DataTable.RowSelected) -> None:
        from lampbox.tui.screens.run_users import RunUsersScreen

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
