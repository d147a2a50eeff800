"""One configuration's per-user breakdown: who gained and who lost against no personalization.

Users are sorted by gain, the biggest losers first (`r` flips the order); the plot shows each
user's gain against their profile size. `enter` lists the user's questions where the
configuration did worse. `h` shows the users by history size instead: the buckets of `lampbox
report --analysis peft-vs-rag` (`runs.history_gains`), each with its mean scores and gain; on an
OPPU bench, that report's analysis itself (each role's mean and gain over no personalization).
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
from lampbox.tui.messages import HistoryGainsLoaded, UserGainsLoaded, WorkFailed
from lampbox.tui.runs import ConfigurationRow, HistoryGains
from lampbox.tui.screens.base import LampboxScreen
from lampbox.tui.widgets.table import LampboxTable


def gain_text(gain: float | None) -> Text:
    if gain is None:
        return Text("–")
    return Text(f"{gain:+.4f}", style="green" if gain > 0 else ("red" if gain < 0 else ""))


def score_text(score: float | None) -> str:
    return "–" if score is None else f"{score:.4f}"


def relative_text(relative: float | None) -> str:
    return "–" if relative is None else f"{relative * 100:+.1f}%"


USERS_TITLE = "Users  (enter: questions where it did worse)"
HISTORY_TITLE = "By history size  (profile items; h: back to the users)"
OPPU_TITLE = "PEFT vs RAG by history size  (profile items; h: back to the users)"
# The PEFT-vs-RAG analysis's roles as column headings (peft_rag.ROLE_NAMES, shortened to fit).
ROLE_HEADINGS = {"none": "none", "rag": "RAG", "peft": "PEFT", "both": "PEFT+RAG"}


class RunUsersScreen(LampboxScreen):
    """A run's users with their baseline score, this run's score and the gain, and a plot."""

    AUTO_FOCUS = "#user-gains"
    BINDINGS = [
        Binding("escape", "back", "Back"),
        Binding("r", "reverse", "Reverse order"),
        Binding("h", "history", "By history size"),
        Binding("tab", "focus_next", "Next pane", show=False),
    ]

    def __init__(self, row: ConfigurationRow) -> None:
        super().__init__()
        self.row = row
        self.gains: list[UserGain] = []
        self.gainers_first = False
        self.gains_loaded = False
        self.by_history = False
        self.history: HistoryGains | None = None  # loaded the first time `h` is pressed

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static(
            f"[b]{self.row.label}[/b]  ·  {self.row.task} · {self.row.scheme} · {self.row.split}",
            id="run-title",
        )
        with Horizontal(id="run-users-body"):
            with Vertical(id="user-gains-column"):
                yield Static(USERS_TITLE, id="gains-title", classes="section-title")
                yield LampboxTable(id="user-gains", cursor_type="row", zebra_stripes=True)
                yield LampboxTable(id="history-gains", cursor_type="row", zebra_stripes=True)
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
        history = self.query_one("#history-gains", DataTable)
        self.add_history_columns(history, None)
        history.display = False
        self.load_gains()

    @work(thread=True, exclusive=True, group="gains", exit_on_error=False)
    def load_gains(self) -> None:
        with self.reporting("Reading the per-user scores"):
            self.lookup_task(self.row.task)  # for the handlers, which must not wait for the store
            self.post_message(
                UserGainsLoaded(self.row.run_key, runs.user_gains(self.store, self.row))
            )

    @work(thread=True, exclusive=True, group="history", exit_on_error=False)
    def load_history(self) -> None:
        with self.reporting("Bucketing the users by history size"):
            self.lookup_task(self.row.task)
            self.post_message(
                HistoryGainsLoaded(self.row.run_key, runs.history_gains(self.store, self.row))
            )

    def on_user_gains_loaded(self, message: UserGainsLoaded) -> None:
        self.gains = message.gains
        self.gains_loaded = True
        self.show_table()
        self.show_plot()

    def on_history_gains_loaded(self, message: HistoryGainsLoaded) -> None:
        self.history = message.history
        self.show_history()
        if self.by_history:
            self.query_one("#gains-title", Static).update(self.history_title())
            self.query_one("#history-gains", DataTable).focus()  # not focusable while loading
            self.show_status()
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
        if not self.by_history:
            self.show_status()

    @staticmethod
    def add_history_columns(table: DataTable, history: HistoryGains | None) -> None:  # type: ignore[type-arg]
        """One run against its reference, or (an OPPU bench's roles) each role's mean and gain
        over none."""
        roles = history.roles if history is not None else {}
        table.add_column("history", key="history", width=10 if roles else 12)
        table.add_column("users", key="users", width=5 if roles else 6)
        if not roles:
            table.add_column("baseline", key="baseline", width=9)
            table.add_column("this run", key="score", width=9)
            table.add_column("gain", key="gain", width=9)
            table.add_column("relative", key="relative", width=9)
            return
        assert history is not None  # the roles are its own
        table.add_column(ROLE_HEADINGS["none"], key="none", width=7)
        for role in history.gain_keys:
            table.add_column(ROLE_HEADINGS[role], key=role, width=8)
            table.add_column("gain", key=f"{role}-gain", width=7)

    def show_history(self) -> None:
        table = self.query_one("#history-gains", LampboxTable)
        table.loading = False
        if self.history is None:
            table.clear()
            return
        history = self.history
        table.clear(columns=True)
        self.add_history_columns(table, history)
        self.set_class(self.by_history and bool(history.roles), "peft-rag")  # wider (the CSS)
        table.set_export(table_data.history_gains(self.row, history))
        rows = [(f"bucket-{index}", bucket.label, bucket) for index, bucket in enumerate(history.buckets)]
        if history.overall is not None:  # labels may repeat once rounded: keys do not
            rows.append(("all", "all users", history.overall))
        for key, label, bucket in rows:
            if history.roles:
                cells: list[object] = [score_text(bucket.means["none"])]
                for role in history.gain_keys:
                    cells += [score_text(bucket.means[role]), gain_text(bucket.gains[role])]
            else:
                cells = [
                    score_text(bucket.means["baseline"]),
                    score_text(bucket.means["run"]),
                    gain_text(bucket.gains["run"]),
                    relative_text(bucket.relative["run"]),
                ]
            table.add_row(label, bucket.users, *cells, key=key)

    def history_title(self) -> str:
        return OPPU_TITLE if self.history is not None and self.history.roles else HISTORY_TITLE

    def shown_loaded(self) -> bool:
        """Whether the data of the view shown has been read (handlers never wait for it)."""
        return self.history is not None if self.by_history else self.gains_loaded

    def show_status(self) -> None:
        status = self.query_one("#gains-status", Static)
        if not self.shown_loaded():
            status.update("Bucketing the users by history size…" if self.by_history else "")
            return
        task = self.lookup_task(self.row.task)
        flipped = "" if task.higher_is_better() else " (sign flipped: lower is better)"
        if self.by_history:
            assert self.history is not None
            if self.history.overall is None:
                status.update("No user is scored in both this run and the baseline")
            elif self.history.roles:
                rows = "; ".join(f"{ROLE_HEADINGS[role]}: {label}" for role, label in self.history.roles.items())
                status.update(
                    f"This bench's `lampbox report --analysis peft-vs-rag`: {self.history.overall.users} "
                    f"users in every row, {len(self.history.buckets)} buckets of mean profile size "
                    f"(quantiles) · mean per-user {task.main_metric} and gain{flipped} over none · "
                    f"rows: {rows}"
                )
            else:
                status.update(
                    f"{self.history.overall.users} users in {len(self.history.buckets)} buckets "
                    "of mean profile size (quantiles, as `lampbox report --analysis peft-vs-rag`)"
                    f" · mean gain in {task.main_metric}{flipped} vs no personalization"
                )
            return
        lost = sum(1 for gain in self.gains if gain.gain is not None and gain.gain < 0)
        won = sum(1 for gain in self.gains if gain.gain is not None and gain.gain > 0)
        order = "biggest gains first" if self.gainers_first else "biggest losses first"
        status.update(
            f"{len(self.gains)} users · {won} gained · {lost} lost · gain in {task.main_metric}"
            f"{flipped} vs no personalization · {order}"
        )

    def show_plot(self) -> None:
        plot = self.query_one("#gain-plot", PlotextPlot)
        plt = plot.plt
        plt.clear_data()
        plt.clear_figure()
        if not self.shown_loaded():
            plot.refresh()
            return
        task = self.lookup_task(self.row.task)
        if self.by_history:
            plt.title(f"mean gain in {task.main_metric} by history size")
            plt.xlabel("profile items (mean per question)")
            if self.history is not None and self.history.buckets:
                buckets, keys = self.history.buckets, self.history.gain_keys
                if self.history.roles:
                    plt.multiple_bar(  # type: ignore[call-arg]  # plotext takes labels (the stub: label)
                        [b.label for b in buckets],
                        [[b.gains[key] for b in buckets] for key in keys],
                        labels=[ROLE_HEADINGS[key] for key in keys],
                    )
                else:
                    plt.bar([b.label for b in buckets], [b.gains["run"] for b in buckets])
                plt.horizontal_line(0)
            plot.refresh()
            return
        points = [gain for gain in self.gains if gain.gain is not None]
        plt.title(f"per-user gain in {task.main_metric} vs profile size")
        plt.xlabel("profile items (mean per question)")
        if points:
            sizes = [gain.profile_size for gain in points]
            plt.scatter(sizes, [gain.gain for gain in points], marker="dot")
            plt.horizontal_line(0)
        plot.refresh()

    def work_failed(self, message: WorkFailed) -> None:
        self.query_one("#user-gains", DataTable).loading = False
        self.query_one("#history-gains", DataTable).loading = False

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

    def action_history(self) -> None:
        self.set_view(not self.by_history)

    def set_view(self, by_history: bool) -> None:
        """The users one by one, or bucketed by history size (read the first time)."""
        self.by_history = by_history
        users = self.query_one("#user-gains", DataTable)
        history = self.query_one("#history-gains", DataTable)
        users.display, history.display = not by_history, by_history
        self.query_one("#gains-title", Static).update(self.history_title() if by_history else USERS_TITLE)
        self.set_class(by_history and self.history is not None and bool(self.history.roles), "peft-rag")
        if by_history and self.history is None:
            history.loading = True
            self.load_history()
        (history if by_history else users).focus()
        self.show_status()
        self.show_plot()

    def palette_commands(self) -> Iterable[SystemCommand]:
        yield SystemCommand(
            "Biggest losses first", "Order users by gain, ascending", lambda: self.set_order(False)
        )
        yield SystemCommand(
            "Biggest gains first", "Order users by gain, descending", lambda: self.set_order(True)
        )
        yield SystemCommand(
            "Gains by history size",
            "Bucket the users by profile size, as the peft-vs-rag report does",
            lambda: self.set_view(True),
        )
        yield SystemCommand(
            "Gains per user", "Back to the users one by one", lambda: self.set_view(False)
        )

    def set_order(self, gainers_first: bool) -> None:
        self.gainers_first = gainers_first
        self.show_table()
