"""The lampbox Textual app and its factory (called by the CLI and by the snapshot tests)."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.screen import Screen

from lampbox.errors import LampboxError
from lampbox.store.core import Store

if TYPE_CHECKING:
    from lampbox.engine.generation.pool import GeneratorPool
    from lampbox.tui.generation import PaneChoice


class LampboxApp(App[None]):
    """Browse a lampbox store user by user, generate side by side, and study bench runs."""

    CSS_PATH = "lampbox.tcss"
    TITLE = "lampbox"
    BINDINGS = [
        Binding("question_mark", "help", "Help", key_display="?"),
        Binding("ctrl+q", "quit", "Quit"),
    ]

    def __init__(
        self,
        store_path: Path | None = None,
        store: Store | None = None,
        generators: GeneratorPool | None = None,
        max_new_tokens: int | None = None,
    ) -> None:
        super().__init__()
        self.store_path = store_path
        self._store = store
        self.owns_store = store is None
        self._generators = generators
        self.owns_generators = generators is None
        self._generators_lock = threading.Lock()
        self._generating = 0  # generation threads still running (cancelled ones included)
        self._generating_changed = threading.Condition()
        self.max_new_tokens = max_new_tokens  # None: the bench's default for the task
        # The generation panes' choices (model, backend, retriever, k), kept while the app runs
        # once the user changes them; None: each question's retrievers on the default model.
        self.pane_choices: list[PaneChoice] | None = None
        self.open_error: str | None = None

    @property
    def store(self) -> Store:
        if self._store is None:
            raise LampboxError("no store is open")
        return self._store

    @property
    def generators(self) -> GeneratorPool:
        """One generator pool for the session: the model is loaded once, on first use."""
        with self._generators_lock:
            if self._generators is None:
                from lampbox.tui.generation import new_pool

                self._generators = new_pool()
            return self._generators

    @contextlib.contextmanager
    def generating(self) -> Iterator[None]:
        """Around a generation thread's work: the models are not closed while one runs (a
        cancelled worker's thread runs on until its next check, maybe inside the model)."""
        with self._generating_changed:
            self._generating += 1
        try:
            yield
        finally:
            with self._generating_changed:
                self._generating -= 1
                self._generating_changed.notify_all()

    def on_mount(self) -> None:
        from lampbox.tui.screens.dialogs import ErrorDialog
        from lampbox.tui.screens.users import UsersScreen

        if self._store is None:
            try:
                self._store = Store(self.store_path)
            except LampboxError as error:
                self.open_error = str(error)
                self.push_screen(ErrorDialog("Cannot open the store", str(error), fatal=True))
                return
        self.sub_title = self._store.path.name
        self.push_screen(UsersScreen())

    def on_unmount(self) -> None:
        with self._generating_changed:  # freeing a model under a running thread crashes
            self._generating_changed.wait_for(lambda: self._generating == 0, timeout=60)
        with contextlib.suppress(Exception):  # a replaced or busy worker is fine here
            if self._generators is not None and self.owns_generators:
                self._generators.close()
        if self._store is not None and self.owns_store:
            with contextlib.suppress(Exception):
                self._store.close()

    def action_help(self) -> None:
        from lampbox.tui.screens.help import HelpScreen

        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen())

    def action_runs(self) -> None:
        from lampbox.tui.screens.runs import RunsScreen

        if self._store is not None and not isinstance(self.screen, RunsScreen):
            self.push_screen(RunsScreen())

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        yield SystemCommand("Help", "Keys and screens of lampbox", self.action_help)
        yield SystemCommand(
            "Runs and failure cases",
            "Bench runs, per-user gains, worse questions",
            self.action_runs,
        )
        yield from getattr(screen, "palette_commands", lambda: [])()


def create_app(
    store_path: str | Path | None = None,
    store: Store | None = None,
    generators: GeneratorPool | None = None,
    max_new_tokens: int | None = None,
) -> LampboxApp:
    """The app over the store at `store_path` (default: $LAMPBOX_DB or the user's store).

    Pass an open `store` (or a loaded `generators` pool) to share one (tests, benchmarks); the
    app then leaves it open. `max_new_tokens` caps the generation panes (default: the bench's
    32 for generation tasks, 8 for labels and ratings).
    """
    return LampboxApp(
        Path(store_path) if store_path is not None else None, store, generators, max_new_tokens
    )
