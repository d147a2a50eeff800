"""Options and helpers shared by every subcommand."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from lampbox.errors import InputFileError, LampboxError

F = TypeVar("F", bound=Callable[..., Any])


class CommandError(click.ClickException):
    """A LampboxError on its way out of the CLI: one line on stderr, a non-zero exit."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code

    def format_message(self) -> str:
        return self.message


def db_option(function: F) -> F:
    """--db PATH: the store file (default: LAMPBOX_DB, else the user's data folder)."""
    return click.option(
        "--db",
        "db_path",
        type=click.Path(dir_okay=False, path_type=Path),
        default=None,
        help="Store file (DuckDB). Default: $LAMPBOX_DB, else lampbox.duckdb in the user data folder.",
    )(function)


def json_option(function: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON on stdout.")(function)


def reports_errors(function: F) -> F:
    """Turn LampboxError into a one-line message and its exit code."""

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return function(*args, **kwargs)
        except LampboxError as error:
            raise CommandError(str(error), getattr(error, "exit_code", 1)) from None
        except Exception as error:
            duckdb = sys.modules.get("duckdb")  # a DuckDB error mid-command: a damaged store file
            if duckdb is None or not isinstance(error, duckdb.Error):
                raise
            from lampbox.paths import default_db_path
            from lampbox.store.core import store_error

            raise CommandError(str(store_error(kwargs.get("db_path") or default_db_path(), error, "store error"))) from None

    return wrapper  # type: ignore[return-value]


WRITER_WAIT_S = 120.0  # a long job waits this long for readers before it gives up a write


def writer_wait_s() -> float:
    """How long a long job (bench, train) waits for the store: $LAMPBOX_LOCK_WAIT, else 120 s."""
    from lampbox.store.core import lock_wait_s

    return lock_wait_s(WRITER_WAIT_S)


def open_store(
    db_path: Path | None,
    read_only: bool = False,
    hold_lock: bool = True,
    wait_s: float | None = None,
    purpose: str = "lampbox",
) -> Any:
    from lampbox.store import Store

    return Store(db_path, read_only=read_only, hold_lock=hold_lock, wait_s=wait_s, purpose=purpose)


def open_store_for_reading(db_path: Path | None, upgradable: bool = False) -> Any:
    """The store for a command that only reads it: read-only, so that several run side by side
    and beside a bench between its writes (a new store is created, a pending migration applied).
    An `upgradable` one takes the write lock at its first write."""
    from lampbox.store import Store

    return Store.for_reading(db_path, upgradable=upgradable)


def check_not_under_a_file(path: Path, folder: bool = False) -> None:
    """An output file (or folder) can go at `path` unless a folder on its way is a file."""
    target = path if folder else path.parent
    for ancestor in (target, *target.parents):
        if ancestor.exists():
            if not ancestor.is_dir():
                raise InputFileError(path, f"cannot write here: {ancestor} is a file, not a folder")
            return


def ready_to_write(path: Path) -> Path:
    """Create the missing folders for an output file; a path under a file is an error naming both."""
    check_not_under_a_file(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise InputFileError(path, f"cannot create the folder {path.parent}: {error.strerror}") from None
    return path


def write_json_file(path: Path, data: Any, indent: int | None = None) -> None:
    """Write an output JSON file atomically (missing folders created); errors name the file."""
    from lampbox.lampfiles import write_json_atomic

    ready_to_write(path)
    try:
        write_json_atomic(path, data, indent=indent)
    except OSError as error:
        raise InputFileError(path, f"cannot write: {error.strerror}") from None


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def split_list(value: str | None) -> list[str] | None:
    """'a,b , c' -> ['a', 'b', 'c'] (None stays None)."""
    if value is None:
        return None
    return [part.strip() for part in value.split(",") if part.strip()]
