"""One user: their questions in the dataset and their profile items (searchable, sortable)."""

from __future__ import annotations

import time
from collections.abc import Iterable

from textual import on, work
from textual.app import ComposeResult, SystemCommand
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.timer import Timer
from textual.widgets import DataTable, Footer, Header, Input, Static

from lampbox.engine.types import ProfileItem
from lampbox.errors import LampboxError
from lampbox.store import browse
from lampbox.store.browse import QuestionRow, UserRow
from lampbox.tui import table_data
from lampbox.tui.messages import ProfileItemsLoaded, UserLoaded, WorkFailed
from lampbox.tui.screens.base import LampboxScreen
from lampbox.tui.userlist import UserList, resolve_user
from lampbox.tui.widgets.cells import cell
from lampbox.tui.widgets.table import PlainTable

PREFETCH_DELAY = 0.15  # seconds after a user is shown before its neighbours are read


class UserScreen(LampboxScreen):
    """A user's questions (top) and profile items (bottom); `]`/`[` step through the list."""

    AUTO_FOCUS = "#questions"
    BINDINGS = [
        Binding("escape", "back", "Back"),
        Binding("right_square_bracket", "step(1)", "Next user", key_display="]"),
        Binding("left_square_bracket", "step(-1)", "Prev user", key_display="["),
        Binding("slash", "focus_search", "Search", key_display="/"),
        Binding("s", "cycle_sort", "Sort"),
        Binding("r", "reverse", "Reverse"),
        Binding("p", "show_input", "Full input"),
        Binding("tab", "focus_next", "Next pane", show=False),
    ]

    def __init__(self, users: UserList, index: int) -> None:
        super().__init__()
        self.users = users
        self.index = index
        self.user: UserRow | None = None
        self.questions: list[QuestionRow] = []
        self.profile_fields: tuple[str, ...] = ()
        self.profile_search = ""
        self.profile_sort = "date"
        self.profile_descending = True
        self.loading_index: int | None = None
        self.loading_timer: Timer | None = None
        self.loaded_at = 0.0  # perf_counter() when the last user was shown (benchmarks read it)
        # The neighbours of the shown user, read ahead in a worker: `]`/`[` show them at once.
        # Keyed by (index, search, sort, descending); written by the worker thread, read here.
        self.prefetched: dict[tuple[int, str, str, bool], UserLoaded] = {}
        self.prefetch_timer: Timer | None = None

    def show_loading(self) -> None:
        if self.loading_index is not None:
            self.query_one("#questions", DataTable).loading = True
            self.query_one("#profile", DataTable).loading = True

    def stop_loading(self) -> None:
        if self.loading_timer is not None:
            self.loading_timer.stop()
            self.loading_timer = None
        self.query_one("#questions", DataTable).loading = False
        self.query_one("#profile", DataTable).loading = False

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("", id="user-title")
        with Vertical(id="user-body"):
            yield Static("Questions  (enter: open · p: full input)", classes="section-title")
            yield PlainTable(id="questions", cursor_type="row", zebra_stripes=True)
            with Horizontal(id="profile-bar"):
                yield Static("Profile", classes="section-title", id="profile-title")
                yield Input(placeholder="search the profile  (/)", id="profile-search")
            yield PlainTable(id="profile", cursor_type="row", zebra_stripes=True)
        yield Footer()

    def on_mount(self) -> None:
        questions = self.query_one("#questions", DataTable)
        questions.add_column("id", key="id", width=26)
        questions.add_column("question", key="question", width=54)
        questions.add_column("gold", key="gold", width=22)
        questions.add_column("profile", key="profile", width=7)
        questions.focus()
        self.load(self.index)

    # -- workers -----------------------------------------------------------------------------

    def load(self, index: int) -> None:
        self.loading_index = index
        ready = self.prefetched.get(self.read_key(index))
        if ready is not None:
            self.on_user_loaded(ready)
            return
        # The loading indicator shows only if the read is slow (mounting it costs a frame).
        if self.loading_timer is not None:
            self.loading_timer.stop()
        self.loading_timer = self.set_timer(0.2, self.show_loading)
        self.load_user(
            self.users, index, self.profile_search, self.profile_sort, self.profile_descending
        )

    def read_key(self, index: int) -> tuple[int, str, str, bool]:
        return (index, self.profile_search, self.profile_sort, self.profile_descending)

    def read_user(
        self, users: UserList, index: int, search: str, sort: str, descending: bool
    ) -> UserLoaded:
        """Everything the screen shows of one user (runs in a worker thread)."""
        users, user_id = resolve_user(self.store, users, index)
        if user_id is None:
            raise LampboxError(f"no user at position {index + 1} of the list")
        dataset = users.dataset
        questions = browse.user_questions(self.store, dataset, user_id)
        items = browse.profile_items(self.store, dataset, user_id, search, sort, descending)
        # Without a search the profile read is the user's whole profile: count it directly.
        n_items = len(items)
        if search:
            found = browse.user_summary(self.store, dataset, user_id)
            n_items = found.profile_items if found else 0
        summary = UserRow(user_id, len(questions), n_items)
        task = self.lookup_task(dataset.task)
        fields = [name for name in task.profile_fields if name not in ("id", "date")]
        return UserLoaded(users, summary, index, questions, items, tuple(fields), task)

    @work(thread=True, exclusive=True, group="user", exit_on_error=False)
    def load_user(
        self, users: UserList, index: int, search: str, sort: str, descending: bool
    ) -> None:
        with self.reporting("Reading the user"):
            self.post_message(self.read_user(users, index, search, sort, descending))

    @work(thread=True, exclusive=True, group="prefetch", exit_on_error=False)
    def prefetch(
        self, users: UserList, indexes: list[int], search: str, sort: str, descending: bool
    ) -> None:
        """Read the neighbours of the shown user ahead of `]`/`[` (errors wait for the real read)."""
        from textual.worker import get_current_worker

        worker = get_current_worker()
        for index in indexes:
            key = (index, search, sort, descending)
            if worker.is_cancelled or key in self.prefetched or not 0 <= index < users.total:
                continue
            try:
                with self.using_store():
                    self.prefetched[key] = self.read_user(users, index, search, sort, descending)
            except Exception:  # noqa: BLE001 - the real read reports it when the user steps there
                return

    @work(thread=True, exclusive=True, group="profile", exit_on_error=False)
    def load_profile(self, user_id: str, search: str, sort: str, descending: bool) -> None:
        with self.reporting("Reading the profile"):
            items = browse.profile_items(
                self.store, self.users.dataset, user_id, search, sort, descending
            )
            self.post_message(ProfileItemsLoaded(user_id, items))

    # -- handlers ----------------------------------------------------------------------------

    def on_user_loaded(self, message: UserLoaded) -> None:
        if message.index != self.loading_index:
            return
        self.index, self.user, self.loading_index = message.index, message.user, None
        self.users = message.users
        self.stop_loading()
        user = message.user
        position = f"user {self.index + 1:,} of {self.users.total:,}"
        self.query_one("#user-title", Static).update(
            f"[b]{user.user_id}[/b]  ·  {message.users.dataset.label}  ·  {user.questions} questions  ·  "
            f"{user.profile_items} profile items  ·  {position}"
        )
        questions = self.query_one("#questions", PlainTable)
        questions.clear()
        self.questions = message.questions
        questions.set_export(
            table_data.questions(message.users.dataset, user.user_id, message.questions, message.task)
        )
        for row in message.questions:
            questions.add_row(
                cell(row.question_id, 26),
                cell(message.task.question_text(row.input), 54),
                cell(row.gold or "—", 22),
                row.profile_size,
                key=row.question_id,
            )
        if message.profile_fields != self.profile_fields:
            self.profile_fields = message.profile_fields
            self.set_profile_columns()
        self.show_profile(message.profile_items)
        self.loaded_at = time.perf_counter()
        near, wanted = range(self.index - 2, self.index + 3), self.read_key(0)[1:]
        for key in list(self.prefetched):  # a snapshot: the prefetch worker may be adding
            if key[0] not in near or key[1:] != wanted:
                self.prefetched.pop(key, None)
        # Read ahead once this user is drawn: a worker thread running now would hold the GIL
        # while the new tables render (measured: it delayed the frame by tens of ms).
        if self.prefetch_timer is not None:
            self.prefetch_timer.stop()
        self.prefetch_timer = self.set_timer(PREFETCH_DELAY, self.prefetch_neighbours)

    def prefetch_neighbours(self) -> None:
        self.prefetch_timer = None
        self.prefetch(
            self.users,
            [self.index + 1, self.index - 1],
            self.profile_search,
            self.profile_sort,
            self.profile_descending,
        )

    def on_profile_items_loaded(self, message: ProfileItemsLoaded) -> None:
        if self.user is not None and message.user_id == self.user.user_id:
            self.show_profile(message.profile_items)

    def work_failed(self, message: WorkFailed) -> None:
        self.loading_index = None
        self.stop_loading()

    def set_profile_columns(self) -> None:
        table = self.query_one("#profile", DataTable)
        table.clear(columns=True)
        table.add_column("date", key="date", width=10)
        table.add_column("id", key="id", width=12)
        for name in self.profile_fields:
            table.add_column(name, key=name, width=self.field_width(name))

    def field_width(self, name: str) -> int:
        long_fields = {"text", "abstract", "description"}
        return 58 if name in long_fields or len(self.profile_fields) == 1 else 28

    def show_profile(self, profile_items: list[ProfileItem]) -> None:
        table = self.query_one("#profile", PlainTable)
        table.loading = False
        table.clear()
        if self.user is not None:
            table.set_export(
                table_data.profile(self.users.dataset, self.user.user_id, profile_items, self.profile_fields)
            )
        for item in profile_items:
            table.add_row(
                cell(item.date or "", 10),
                cell(item.id, 12),
                *(cell(item.get(name), self.field_width(name)) for name in self.profile_fields),
                key=item.key,
            )
        arrow = "▼" if self.profile_descending else "▲"
        found = f"{len(profile_items)} items" + (
            f" matching {self.profile_search!r}" if self.profile_search else ""
        )
        self.query_one("#profile-title", Static).update(
            f"Profile · {found} · by {self.profile_sort} {arrow}"
        )

    @on(Input.Changed, "#profile-search")
    def profile_search_changed(self, event: Input.Changed) -> None:
        self.profile_search = event.value.strip()
        self.reload_profile()

    @on(Input.Submitted, "#profile-search")
    def profile_search_submitted(self) -> None:
        self.query_one("#profile", DataTable).focus()

    def reload_profile(self) -> None:
        if self.user is not None:
            self.query_one("#profile", DataTable).loading = True
            self.load_profile(
                self.user.user_id, self.profile_search, self.profile_sort, self.profile_descending
            )

    @on(DataTable.RowSelected, "#questions")
    def question_chosen(self, event: DataTable.RowSelected) -> None:
        from lampbox.tui.screens.question import QuestionScreen

        if event.row_key.value is not None:
            self.app.push_screen(QuestionScreen(self.users.dataset, str(event.row_key.value)))

    # -- actions -----------------------------------------------------------------------------

    def action_back(self) -> None:
        self.dismiss()

    def action_step(self, step: int) -> None:
        target = (self.loading_index if self.loading_index is not None else self.index) + step
        if 0 <= target < self.users.total:
            self.load(target)

    def action_show_input(self) -> None:
        """The highlighted question's whole input, the task's instruction included."""
        from lampbox.tui.screens.prompt import TextScreen

        table = self.query_one("#questions", DataTable)
        if not self.questions or not 0 <= table.cursor_row < len(self.questions):
            self.notify("No question to show", severity="warning")
            return
        row = self.questions[table.cursor_row]
        self.app.push_screen(TextScreen(f"Input of question {row.question_id}", row.input))

    def action_focus_search(self) -> None:
        self.query_one("#profile-search", Input).focus()

    def action_cycle_sort(self) -> None:
        order = ["date", "id", *self.profile_fields]
        self.profile_sort = (
            order[(order.index(self.profile_sort) + 1) % len(order)]
            if self.profile_sort in order
            else "date"
        )
        self.profile_descending = self.profile_sort == "date"
        self.reload_profile()

    def action_reverse(self) -> None:
        self.profile_descending = not self.profile_descending
        self.reload_profile()

    def palette_commands(self) -> Iterable[SystemCommand]:
        yield SystemCommand(
            "Next user", "Show the next user of the list", lambda: self.action_step(1)
        )
        yield SystemCommand(
            "Previous user", "Show the previous user of the list", lambda: self.action_step(-1)
        )
        for name in ("date", "id", *self.profile_fields):
            yield SystemCommand(
                f"Sort profile by {name}",
                f"Order the profile items by {name}",
                lambda name=name: self.sort_profile(name),
            )

    def sort_profile(self, name: str) -> None:
        self.profile_sort, self.profile_descending = name, name == "date"
        self.reload_profile()
