"""The first screen: the store's datasets and a paged, searchable, sortable list of users."""

from __future__ import annotations

from collections.abc import Iterable
from functools import partial

from textual import on, work
from textual.app import ComposeResult, SystemCommand
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import DataTable, Footer, Header, Input, OptionList, Static
from textual.widgets.option_list import Option

from lampbox.store import browse
from lampbox.store.browse import Dataset, UserPage
from lampbox.tui import table_data
from lampbox.tui.messages import DatasetsLoaded, UsersPageLoaded, WorkFailed
from lampbox.tui.screens.base import LampboxScreen
from lampbox.tui.screens.user import UserScreen
from lampbox.tui.userlist import UserList
from lampbox.tui.widgets.table import PlainTable

PAGE_SIZE = 100
SORT_LABELS = {"id": "user id", "questions": "questions", "profile": "profile items"}
COLUMN_SORTS = {"user": "id", "questions": "questions", "profile": "profile"}


class UsersScreen(LampboxScreen):
    """Datasets on the left; the users of the chosen one on the right, one page at a time."""

    AUTO_FOCUS = "#users"
    BINDINGS = [
        Binding("slash", "focus_search", "Search", key_display="/"),
        Binding("s", "cycle_sort", "Sort"),
        Binding("r", "reverse", "Reverse"),
        Binding("right_square_bracket", "page(1)", "Next page", key_display="]"),
        Binding("left_square_bracket", "page(-1)", "Prev page", key_display="["),
        Binding("b", "app.runs", "Runs"),
        Binding("escape", "focus_users", "Users", show=False),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.datasets: list[Dataset] = []
        self.dataset: Dataset | None = None
        self.search = ""
        self.sort = "id"
        self.descending = False
        self.page_offset = 0
        self.page: UserPage | None = None

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal():
            with Vertical(id="datasets-column"):
                yield Static("Datasets", classes="column-title")
                yield OptionList(id="datasets")
            with Vertical(id="users-column"):
                yield Input(placeholder="search user ids  (/)", id="user-search")
                yield PlainTable(id="users", cursor_type="row", zebra_stripes=True)
                yield Static("", id="users-status")
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one("#users", DataTable)
        table.add_column("user", key="user", width=36)
        table.add_column("questions", key="questions", width=10)
        table.add_column("profile items", key="profile", width=14)
        table.loading = True
        table.focus()
        self.load_datasets()

    # -- workers -----------------------------------------------------------------------------

    @work(thread=True, exclusive=True, group="datasets", exit_on_error=False)
    def load_datasets(self) -> None:
        with self.reporting("Listing the datasets"):
            self.post_message(DatasetsLoaded(browse.datasets(self.store)))

    @work(thread=True, exclusive=True, group="users", exit_on_error=False)
    def load_page(
        self, dataset: Dataset, search: str, sort: str, descending: bool, offset: int
    ) -> None:
        with self.reporting("Reading users"):
            page = browse.user_page(
                self.store, dataset, search, sort, descending, offset, PAGE_SIZE
            )  # type: ignore[arg-type]
            self.post_message(UsersPageLoaded(dataset, page, search, sort, descending))

    def refresh_users(self, offset: int = 0) -> None:
        if self.dataset is None:
            return
        self.page_offset = offset
        self.query_one("#users", DataTable).loading = True
        self.load_page(self.dataset, self.search, self.sort, self.descending, offset)

    # -- handlers ----------------------------------------------------------------------------

    def on_datasets_loaded(self, message: DatasetsLoaded) -> None:
        self.datasets = message.datasets
        if not self.datasets:
            from lampbox.tui.screens.empty import EmptyStoreScreen

            self.query_one("#users", DataTable).loading = False
            self.app.push_screen(EmptyStoreScreen(), callback=lambda _: self.load_datasets())
            return
        options = self.query_one("#datasets", OptionList)
        options.clear_options()
        options.add_options(
            Option(f"{d.label}\n  {d.users:,} users · {d.questions:,} questions", id=str(index))
            for index, d in enumerate(self.datasets)
        )
        keep = self.dataset if self.dataset in self.datasets else self.datasets[0]
        with options.prevent(OptionList.OptionHighlighted):
            options.highlighted = self.datasets.index(keep)
        self.choose_dataset(keep, force=True)

    def choose_dataset(self, dataset: Dataset, force: bool = False) -> None:
        if dataset == self.dataset and not force:
            return
        self.dataset = dataset
        self.refresh_users(0)

    @on(OptionList.OptionHighlighted, "#datasets")
    def dataset_highlighted(self, event: OptionList.OptionHighlighted) -> None:
        if event.option.id is not None:
            self.choose_dataset(self.datasets[int(event.option.id)])

    @on(Input.Changed, "#user-search")
    def search_changed(self, event: Input.Changed) -> None:
        self.search = event.value.strip()
        self.refresh_users(0)

    @on(Input.Submitted, "#user-search")
    def search_submitted(self) -> None:
        self.query_one("#users", DataTable).focus()

    def on_users_page_loaded(self, message: UsersPageLoaded) -> None:
        current = (self.dataset, self.search, self.sort, self.descending)
        if (message.dataset, message.search, message.sort, message.descending) != current:
            return  # an answer to a request that has since changed
        self.page = message.page
        table = self.query_one("#users", PlainTable)
        table.loading = False
        table.clear()
        for row in message.page.rows:
            table.add_row(row.user_id, row.questions, row.profile_items, key=row.user_id)
        # E exports every page of the list, in this search and order.
        table.set_export(
            table_data.users(
                self.store, message.dataset, message.search, message.sort, message.descending  # type: ignore[arg-type]
            )
        )
        self.query_one("#users-status", Static).update(self.status_text())

    def work_failed(self, message: WorkFailed) -> None:
        self.query_one("#users", DataTable).loading = False

    def status_text(self) -> str:
        if self.page is None or self.dataset is None:
            return ""
        page = self.page
        arrow = "▼" if self.descending else "▲"
        found = f"{page.total:,} users" + (f" matching {self.search!r}" if self.search else "")
        if not page.rows:
            return f"no users{f' matching {self.search!r}' if self.search else ''} in {self.dataset.label}"
        shown = f"{page.offset + 1:,}–{page.offset + len(page.rows):,} of {found}"
        return f"{shown} · sorted by {SORT_LABELS[self.sort]} {arrow}"

    @on(DataTable.RowSelected, "#users")
    def user_chosen(self, event: DataTable.RowSelected) -> None:
        if self.page is None or self.dataset is None or not self.page.rows:
            return
        users = UserList(
            self.dataset,
            self.search,
            self.sort,
            self.descending,
            self.page.offset,
            tuple(row.user_id for row in self.page.rows),
            self.page.total,
            PAGE_SIZE,
        )
        self.app.push_screen(UserScreen(users, self.page.offset + event.cursor_row))

    @on(DataTable.HeaderSelected, "#users")
    def header_chosen(self, event: DataTable.HeaderSelected) -> None:
        sort = COLUMN_SORTS.get(str(event.column_key.value))
        if sort is None:
            return
        if sort == self.sort:
            self.descending = not self.descending
        else:
            self.sort, self.descending = sort, sort != "id"
        self.refresh_users(0)

    # -- actions -----------------------------------------------------------------------------

    def action_focus_search(self) -> None:
        self.query_one("#user-search", Input).focus()

    def action_focus_users(self) -> None:
        self.query_one("#users", DataTable).focus()

    def action_cycle_sort(self) -> None:
        order = list(SORT_LABELS)
        self.set_sort(order[(order.index(self.sort) + 1) % len(order)])

    def set_sort(self, sort: str, descending: bool | None = None) -> None:
        self.sort = sort
        # Counts read best largest first; ids alphabetically.
        self.descending = (sort != "id") if descending is None else descending
        self.refresh_users(0)

    def action_reverse(self) -> None:
        self.descending = not self.descending
        self.refresh_users(0)

    def action_page(self, step: int) -> None:
        if self.page is None:
            return
        offset = self.page_offset + step * PAGE_SIZE
        if 0 <= offset < max(self.page.total, 1):
            self.refresh_users(offset)

    def palette_commands(self) -> Iterable[SystemCommand]:
        for dataset in self.datasets:
            yield SystemCommand(
                f"Dataset: {dataset.label}",
                f"Browse the {dataset.users:,} users of {dataset.label}",
                partial(self.select_dataset, dataset),
            )
        for sort, label in SORT_LABELS.items():
            yield SystemCommand(
                f"Sort users by {label}",
                f"Order the users list by {label}",
                partial(self.set_sort, sort),
            )

    def select_dataset(self, dataset: Dataset) -> None:
        self.query_one("#datasets", OptionList).highlighted = self.datasets.index(dataset)
        self.choose_dataset(dataset)
