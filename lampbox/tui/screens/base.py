"""What every lampbox screen shares: failed work becomes a notification, never a crash."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import TYPE_CHECKING

from textual.app import SystemCommand
from textual.screen import Screen

from lampbox.store.core import Store
from lampbox.tui.messages import WorkFailed

if TYPE_CHECKING:
    from lampbox.engine.tasks import TaskSpec


def one_line(error: BaseException) -> str:
    """An exception as one line for a notification."""
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


class LampboxScreen(Screen[None]):
    """A screen whose workers report failures with `reporting(what)`."""

    @property
    def store(self) -> Store:
        return self.app.store  # type: ignore[attr-defined, no-any-return]

    def using_store(self) -> AbstractContextManager[None]:
        """Around a worker's queries (the app gives the file back when no worker is inside)."""
        return self.app.using_store()  # type: ignore[attr-defined, no-any-return]

    def lookup_task(self, name: str) -> TaskSpec:
        """The task, remembered by the app once a worker has looked it up."""
        return self.app.task_spec(name)  # type: ignore[attr-defined, no-any-return]

    @contextmanager
    def reporting(self, what: str) -> Iterator[None]:
        """Run a worker's body on the store; any error is posted as WorkFailed instead of
        crashing the app."""
        try:
            with self.using_store():
                yield
        except Exception as error:  # noqa: BLE001 - every failure must reach the user, not crash
            self.post_message(WorkFailed(what, one_line(error)))

    def on_work_failed(self, message: WorkFailed) -> None:
        self.notify(f"{message.what} failed: {message.error}", severity="error", timeout=8)
        self.work_failed(message)

    def work_failed(self, message: WorkFailed) -> None:
        """Hook for screens that clear a loading state when their work fails."""

    def palette_commands(self) -> Iterable[SystemCommand]:
        """Commands this screen adds to the command palette."""
        return []
