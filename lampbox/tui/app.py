"""The lampbox Textual app and its factory (called by the CLI and by the snapshot tests)."""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from textual import work
from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.screen import Screen

from lampbox.engine.machine import SAMPLER_TICK_S, CpuSampler
from lampbox.errors import LampboxError
from lampbox.store.core import Store, StoreBusy, lock_wait_s
from lampbox.tui.messages import StoreOpened, StoreWaiting

if TYPE_CHECKING:
    from lampbox.engine.generation.pool import GeneratorPool
    from lampbox.engine.tasks import TaskSpec
    from lampbox.tui.generation import PaneChoice

# The app gives the store's file back between its queries (docs/tui.md): RELEASE_AFTER_S after
# the last worker used it (checked every RELEASE_EVERY_S), so a bench can write its batches.
RELEASE_AFTER_S = 0.25
RELEASE_EVERY_S = 0.25
# How long a thread holds the GIL while another waits for it (Python's default: 5 ms). The
# workers' small steps (a store query, a prompt's chat template) each wait that long for the
# GIL while the app's thread draws a screen: the three prompts of `g` were ready 0.14-0.28 s
# after the key instead of 0.05-0.11 s (benchmarks/bench_tui.py, docs/tui.md).
GIL_SWITCH_S = 0.001
STORE_WAIT_S = 120.0  # how long a query waits for another process's lock ($LAMPBOX_LOCK_WAIT)


class NotifyHandler(logging.Handler):
    """lampbox's warnings (e.g. a llama.cpp CPU variant skipped) as the app's notifications: on
    the terminal they would draw over the screen."""

    def __init__(self, app: App[None]) -> None:
        super().__init__(logging.WARNING)
        self.app = app

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if threading.get_ident() == self.app._thread_id:
            self.app.notify(message, severity="warning", timeout=12)
        else:
            with contextlib.suppress(Exception):  # the app may be closing
                self.app.call_from_thread(self.app.notify, message, severity="warning", timeout=12)


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
        self.busy: str | None = None  # who holds the store's lock while a query waits for it
        self._task_specs: dict[str, TaskSpec] = {}
        # How busy the cores are, sampled in the background: a generation picks its threads
        # from the load since a sample already old enough, without waiting (engine.machine).
        self.cpu_sampler = CpuSampler()
        self._switch_interval = sys.getswitchinterval()  # put back when the app ends
        self._warnings = NotifyHandler(self)

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

    def using_store(self) -> contextlib.AbstractContextManager[None]:
        """Around a worker's queries: the file stays open while any worker is inside."""
        return self._store.using() if self._store is not None else contextlib.nullcontext()

    def task_spec(self, name: str) -> TaskSpec:
        """A task by name, remembered for the session: a worker looks it up first, so the
        screens' handlers (main thread) never wait for the store."""
        spec = self._task_specs.get(name)
        if spec is None:
            with self.using_store():
                spec = self._task_specs[name] = self.store.task(name)
        return spec

    def on_mount(self) -> None:
        from lampbox.tui.screens.dialogs import ErrorDialog

        self.cpu_sampler.tick()
        self.set_interval(SAMPLER_TICK_S, self.cpu_sampler.tick)
        sys.setswitchinterval(GIL_SWITCH_S)  # the process's own comes back in on_unmount
        logging.getLogger("lampbox").addHandler(self._warnings)  # removed in on_unmount

        if self._store is None:
            try:
                self._wait_s()  # a bad $LAMPBOX_LOCK_WAIT is refused here, in the dialog
                # Not waiting here: a busy store is waited for in a worker (the UI stays live).
                self._store = Store(
                    self.store_path, hold_lock=False, wait_s=0, purpose="lampbox tui"
                )
            except StoreBusy:
                from lampbox.tui.screens.waiting import WaitingScreen

                self.push_screen(WaitingScreen(self.store_path))
                self.open_when_free()
                return
            except LampboxError as error:
                self.open_error = str(error)
                self.push_screen(ErrorDialog("Cannot open the store", str(error), fatal=True))
                return
        self.store_ready()

    @work(thread=True, exclusive=True, group="open", exit_on_error=False)
    def open_when_free(self) -> None:
        """The store was busy at start: open it once the other process lets go (trying in
        short waits, so that quitting meanwhile is not held up)."""
        from textual.worker import get_current_worker

        worker = get_current_worker()
        deadline = time.monotonic() + self._wait_s()

        def tell_holder(holder: str | None) -> None:
            if holder is not None:  # the waiting screen keeps its line between tries
                self.tell_waiting(holder)

        while not worker.is_cancelled:
            try:
                store = Store(
                    self.store_path, hold_lock=False, wait_s=0.5, purpose="lampbox tui",
                    on_wait=tell_holder,
                )  # fmt: skip
            except StoreBusy as error:
                if time.monotonic() < deadline:
                    continue
                self.post_message(StoreOpened(None, str(error)))
            except LampboxError as error:
                self.post_message(StoreOpened(None, str(error)))
            else:
                if worker.is_cancelled:
                    store.close()
                else:
                    self.post_message(StoreOpened(store, None))
            return

    def tell_waiting(self, holder: str | None) -> None:
        """The store's on_wait (any thread): a query waits for `holder`'s lock, or got in."""
        self.post_message(StoreWaiting(holder))

    def on_store_opened(self, message: StoreOpened) -> None:
        from lampbox.tui.screens.dialogs import ErrorDialog

        self.busy = None
        if message.store is None:
            self.open_error = message.error
            self.push_screen(ErrorDialog("Cannot open the store", message.error or "", fatal=True))
            return
        self._store = message.store
        self.pop_screen()  # the waiting screen
        self.store_ready()

    def store_ready(self) -> None:
        """The store is open: show the users, and give the file back between queries."""
        from lampbox.tui.screens.users import UsersScreen

        store = self.store
        self.sub_title = store.path.name
        if not store.hold_lock:
            store.wait_s = self._wait_s()
            store.on_wait = self.tell_waiting
            self.set_interval(RELEASE_EVERY_S, self.release_store)
        self.push_screen(UsersScreen())

    @staticmethod
    def _wait_s() -> float:
        return lock_wait_s(default=STORE_WAIT_S)

    def release_store(self) -> None:
        """Timer: close the file once no worker has used it for a moment (never waits)."""
        if self._store is not None:
            self._store.release_if_unused(RELEASE_AFTER_S)

    def on_store_waiting(self, message: StoreWaiting) -> None:
        """A query waits for another process's lock (or got in): say so in the header."""
        self.busy = message.holder
        name = (
            self._store.path.name
            if self._store is not None
            else (self.store_path.name if self.store_path else "the store")
        )
        self.sub_title = (
            name
            if message.holder is None
            else f"{name} · busy: {message.holder} is writing; waiting…"
        )

    def on_unmount(self) -> None:
        sys.setswitchinterval(self._switch_interval)
        logging.getLogger("lampbox").removeHandler(self._warnings)
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
