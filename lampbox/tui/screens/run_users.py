"""One configuration's per-user breakdown: who gained and who lost against no personalization.

Users are sorted by gain, the biggest losers first (`r` flips the order); the plot shows each
user's gain against their profile size. `enter` lists the user's questions where the
configuration did worse.
"""

from __future__ import annotations

from collections.abc import Iterable

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult, SystemCommand
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import DataTable, Footer, Header, Static
from textual_plotext import PlotextPlot

from lampbox.store.browse import UserGain
from lampbox.tui import runs, table_data
from lampbox.tui.messages import UserGainsLoaded, WorkFailed
from lampbox.tui.runs import ConfigurationRow
from lampbox.tui.screens.base import LampboxScreen
from lampbox.tui.widgets.table import LampboxTable


def gain_text(gain: float | None) -> Text:
    if gain is None:
        return Text("–")
    return Text(f"{gain:+.4f}", style="green" if gain > 0 else ("red" if gain < 0 else ""))


def score_text(score: float | None) -> str:
    return "–" if score is None else f"{score:.4f}"


class RunUsersScreen(LampboxScreen):
    """A run's users with their baseline score, this run's score and the gain, and a plot."""

    AUTO_FOCUS = "#user-gains"
    BINDINGS = [
        Binding("escape", "back", "Back"),
        Binding("r", "reverse", "Reverse order"),
        Binding("tab", "focus_next", "Next pane", show=False),
    ]

    def __init__(self, row: ConfigurationRow) -> None:
        super().__init__()
        self.row = row
        self.gains: list[UserGain] = []
        self.gainers_first = False

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static(
            f"[b]{self.row.label}[/b]  ·  {self.row.task} · {self.row.scheme} · {self.row.split}",
            id="run-title",
        )
        with Horizontal(id="run-users-body"):
            with Vertical(id="user-gains-column"):
                yield Static(
                    "Users  (enter: questions where it did worse)", classes="section-title"
                )
                yield LampboxTable(id="user-gains", cursor_type="row", zebra_stripes=True)
            yield PlotextPlot(id="gain-plot")
        yield Static("", id="gains-status")
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one("#user-gains", DataTable)
        table.add_column("user", key="user", width=16)
        table.add_column("questions", key="questions", width=9)
        table.add_column("profile", key="profile", width=8)
        table.add_column("baseline", key="baseline", width=9)
        table.add_column("this run", key="score", width=9)
        table.add_column("gain", key="gain", width=9)
        table.loading = True
        self.load_gains()

    @work(thread=True, exclusive=True, group="gains", exit_on_error=False)
    def load_gains(self) -> None:
        with self.reporting("Reading the per-user scores"):
            self.lookup_task(self.row.task)  # for the handlers, which must not wait for the store
            self.post_message(
                UserGainsLoaded(self.row.run_key, runs.user_gains(self.store, self.row))
            )

    def on_user_gains_loaded(self, message: UserGainsLoaded) -> None:
        self.gains = message.gains
        self.show_table()
        self.show_plot()

    def ordered(self) -> list[UserGain]:
        """Biggest losses first, or biggest gains first; users without a gain go last."""
        scored = [gain for gain in self.gains if gain.gain is not None]
        unscored = [gain for gain in self.gains if gain.gain is None]
        scored.sort(key=lambda gain: (gain.gain, gain.user_id), reverse=self.gainers_first)
        return scored + unscored

    def show_table(self) -> None:
        table = self.query_one("#user-gains", LampboxTable)
        table.loading = False
        table.clear()
        ordered = self.ordered()
        table.set_export(table_data.user_gains(self.row, ordered))
        for gain in ordered:
            table.add_row(
                gain.user_id,
                gain.questions,
                f"{gain.profile_size:.0f}",
                score_text(gain.baseline_score),
                score_text(gain.score),
                gain_text(gain.gain),
                key=gain.user_id,
            )
        task = self.lookup_task(self.row.task)
        lost = sum(1 for gain in self.gains if gain.gain is not None and gain.gain < 0)
        won = sum(1 for gain in self.gains if gain.gain is not None and gain.gain > 0)
        order = "biggest gains first" if self.gainers_first else "biggest losses first"
        flipped = "" if task.higher_is_better() else " (sign flipped: lower is better)"
        self.query_one("#gains-status", Static).update(
            f"{len(self.gains)} users · {won} gained · {lost} lost · gain in {task.main_metric}"
            f"{flipped} vs no personalization · {order}"
        )

    def show_plot(self) -> None:
        plot = self.query_one("#gain-plot", PlotextPlot)
        plt = plot.plt
        plt.clear_data()
        plt.clear_figure()
        points = [gain for gain in self.gains if gain.gain is not None]
        task = self.lookup_task(self.row.task)
        plt.title(f"per-user gain in {task.main_metric} vs profile size")
        plt.xlabel("profile items (mean per question)")
        if points:
            sizes = [gain.profile_size for gain in points]
            plt.scatter(sizes, [gain.gain for gain in points], marker="dot")
            plt.horizontal_line(0)
        plot.refresh()

    def work_failed(self, message: WorkFailed) -> None:
        self.query_one("#user-gains", DataTable).loading = False

    @on(DataTable.RowSelected, "#user-gains")
    def user_chosen(self, event: DataTable.RowSelected) -> None:
        from lampbox.tui.screens.failures import FailuresScreen

        if event.row_key.value is not None:
            self.app.push_screen(FailuresScreen(self.row, str(event.row_key.value)))

    def action_back(self) -> None:
        self.dismiss()

    def action_reverse(self) -> None:
        self.gainers_first = not self.gainers_first
        self.show_table()

    def palette_commands(self) -> Iterable[SystemCommand]:
        yield SystemCommand(
            "Biggest losses first", "Order users by gain, ascending", lambda: self.set_order(False)
        )
        yield SystemCommand(
            "Biggest gains first", "Order users by gain, descending", lambda: self.set_order(True)
        )

    def set_order(self, gainers_first: bool) -> None:
        self.gainers_first = gainers_first
        self.show_table()
