"""Shown when the store holds no questions: how to get data in."""

from __future__ import annotations

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.widgets import Footer, Header, Markdown

from lampbox.tui.messages import DataImported
from lampbox.tui.screens.base import LampboxScreen

HOW_TO = """\
# This store is empty

lampbox shows LaMP data user by user; there is none in **{path}** yet.
Quit (**ctrl+q**) and get some with one of:

| command | what it brings |
| --- | --- |
| `lampbox data demo` | a small built-in LaMP_7-format set (no network) |
| `lampbox data import PATH` | official-format LaMP files, or a custom task's folder with its task.json |
| `lampbox data fetch LaMP_7` | the official LaMP_7 files (needs the network) |

then run `lampbox` again (add `--db FILE` to use another store).

Or press **d** to import the demo set into this store now, and **r** to look again.
"""


class EmptyStoreScreen(LampboxScreen):
    """The how-to for an empty store; `d` imports the demo set, `r` re-reads the store."""

    BINDINGS = [
        Binding("d", "import_demo", "Import demo data"),
        Binding("r", "reload", "Reload"),
    ]

    def compose(self) -> ComposeResult:
        yield Header()
        with VerticalScroll(id="empty-box"):
            yield Markdown(HOW_TO.format(path=self.store.path.name), id="empty-how-to")
        yield Footer()

    def action_reload(self) -> None:
        self.dismiss()

    def action_import_demo(self) -> None:
        self.notify("Importing the demo data…")
        self.import_demo()

    @work(thread=True, exclusive=True, group="import", exit_on_error=False)
    def import_demo(self) -> None:
        with self.reporting("Importing the demo data"):
            from lampbox.demo import demo_path
            from lampbox.store.importer import import_path

            report = import_path(self.store, demo_path(), task_name="LaMP_7", scheme="demo")
            total = sum(split.questions for split in report.splits)
            self.post_message(DataImported(f"LaMP_7 demo: {total} questions"))

    def on_data_imported(self, message: DataImported) -> None:
        self.notify(f"Imported {message.summary}")
        self.dismiss()
