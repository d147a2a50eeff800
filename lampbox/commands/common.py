"""Options and helpers shared by every subcommand."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from lampbox.errors import LampboxError

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

    return wrapper  # type: ignore[return-value]


def open_store(db_path: Path | None, read_only: bool = False) -> Any:
    from lampbox.store import Store

    return Store(db_path, read_only=read_only)


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def split_list(value: str | None) -> list[str] | None:
    """'a,b , c' -> ['a', 'b', 'c'] (None stays None)."""
    if value is None:
        return None
    return [part.strip() for part in value.split(",") if part.strip()]
