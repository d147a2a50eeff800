"""A table's full data and writing it to CSV, Parquet or JSON (the tables' `E` key).

`TableData` is what a table holds behind its rendered cells: every row (not only the page on
screen), the real column names and typed values (numbers as numbers, None for a missing
value, lists as lists). Writing goes to a temporary file beside the target that is renamed
over it once complete, so a failed export leaves nothing half-written. Parquet is written by
DuckDB (already a dependency). No Textual here: the writers are plain functions.
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lampbox.errors import LampboxError

FORMATS = ("csv", "parquet", "json")


@dataclass(frozen=True)
class TableData:
    """A table's rows with their column names."""

    columns: tuple[str, ...]
    rows: Sequence[Sequence[Any]]

    def records(self) -> list[dict[str, Any]]:
        return [dict(zip(self.columns, row, strict=True)) for row in self.rows]


@dataclass(frozen=True)
class TableExport:
    """What a table's `E` writes: `build` makes the full data in a worker thread (it may read
    the store, so it must not touch widgets); `name` is the default file name's stem."""

    name: str
    build: Callable[[], TableData]


def file_stem(*parts: object) -> str:
    """A safe file name stem from parts: 'runs', 'LaMP_7 · user · dev' -> 'runs-LaMP_7-user-dev'."""
    text = "-".join(str(part) for part in parts if str(part))
    text = re.sub(r"[^A-Za-z0-9_.=+-]+", "-", text).strip("-.")
    return text[:120] or "table"


def default_path(data_name: str, file_format: str, folder: Path | None = None) -> Path:
    """A new file for the table in `folder` (default: the current directory), numbered so that
    an earlier export is not replaced."""
    folder = folder if folder is not None else Path.cwd()
    path = folder / f"{data_name}.{file_format}"
    number = 2
    while path.exists():
        path = folder / f"{data_name}-{number}.{file_format}"
        number += 1
    return path


def format_of(path: str | Path) -> str | None:
    """The format a file name asks for by its extension, if it is one of FORMATS."""
    suffix = Path(path).suffix.lower().lstrip(".")
    return suffix if suffix in FORMATS else None


def chosen_format(path: Path, file_format: str, formats: tuple[str, ...] = FORMATS) -> str:
    """The format to write `path` in: the one its extension names, else `file_format`. Where
    there is a choice of formats, an extension lampbox does not write (out.xlsx) is a
    LampboxError rather than a CSV file under that name."""
    suffix = path.suffix.lower().lstrip(".")
    if suffix in formats:
        return suffix
    if suffix and len(formats) > 1:
        raise LampboxError(f".{suffix} is not a format lampbox writes: end the name with .{', .'.join(formats)}")
    return file_format


def check_path(text: str) -> Path:
    """The file an export may write to, or a LampboxError saying in one line why not."""
    if not text.strip():
        raise LampboxError("give a file name")
    path = Path(text.strip()).expanduser()
    if not path.is_absolute():
        path = Path.cwd() / path
    if path.is_dir():
        raise LampboxError(f"{path} is a folder: give a file name in it")
    folder = path.parent
    if not folder.is_dir():
        raise LampboxError(f"no folder {folder}")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise LampboxError(f"cannot write in {folder} (permission denied)")
    if path.exists() and not os.access(path, os.W_OK):
        raise LampboxError(f"cannot replace {path} (permission denied)")
    return path


def write_table(data: TableData, path: Path, file_format: str) -> Path:
    """Write all of `data` to `path` in `file_format` (csv, parquet or json), atomically."""
    if file_format not in FORMATS:
        raise LampboxError(f"unknown format {file_format!r} (choose one of {', '.join(FORMATS)})")
    writer = {"csv": _write_csv, "parquet": _write_parquet, "json": _write_json}[file_format]
    return _write_atomically(path, lambda temporary: writer(data, temporary))


def write_text(text: str, path: Path) -> Path:
    """Write a text (a prompt) to `path`, atomically like `write_table`."""
    return _write_atomically(path, lambda temporary: temporary.write_text(text, encoding="utf-8"))


def _write_atomically(path: Path, write: Callable[[Path], object]) -> Path:
    """`write` a temporary file beside `path`, then rename it into place: a failed write leaves
    no part file and an earlier file at `path` untouched."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.part")
    try:
        write(temporary)
        os.replace(temporary, path)
    except OSError as error:
        raise LampboxError(f"cannot write {path}: {error.strerror or error}") from error
    finally:
        with contextlib.suppress(OSError):
            temporary.unlink()
    return path


def _plain(value: Any) -> Any:
    """A value JSON can hold: non-finite floats become None, tuples lists, others as they are."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (list, tuple)):
        return [_plain(entry) for entry in value]
    if isinstance(value, dict):
        return {str(key): _plain(entry) for key, entry in value.items()}
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


def _write_json(data: TableData, path: Path) -> None:
    """A JSON array of objects, one per row, keyed by column name."""
    records = [{name: _plain(value) for name, value in record.items()} for record in data.records()]
    lines = ",\n".join(json.dumps(record, ensure_ascii=False) for record in records)
    path.write_text(f"[\n{lines}\n]\n" if records else "[]\n", encoding="utf-8")


def _write_csv(data: TableData, path: Path) -> None:
    """A header row of column names; None (and NaN) as an empty cell, lists as JSON text."""

    def text(value: Any) -> Any:
        if value is None or (isinstance(value, float) and not math.isfinite(value)):
            return ""
        if isinstance(value, (list, tuple, dict)):
            return json.dumps(_plain(value), ensure_ascii=False)
        return value

    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(data.columns)
        writer.writerows([text(value) for value in row] for row in data.rows)


def column_type(values: Sequence[Any]) -> str:
    """The DuckDB type of a column from its non-missing values."""
    present = [value for value in values if value is not None]
    if not present:
        return "VARCHAR"
    if all(isinstance(value, bool) for value in present):
        return "BOOLEAN"
    if all(isinstance(value, int) and not isinstance(value, bool) for value in present):
        return "BIGINT"
    if all(isinstance(value, (int, float)) and not isinstance(value, bool) for value in present):
        return "DOUBLE"
    if all(isinstance(value, (list, tuple)) for value in present):
        inner = column_type([entry for value in present for entry in value])
        return f"{inner}[]"
    return "VARCHAR"


def _typed(value: Any, sql_type: str) -> Any:
    if value is None:
        return None
    if sql_type.endswith("[]"):
        return [_typed(entry, sql_type[:-2]) for entry in value]
    if sql_type == "DOUBLE":
        return float(value)
    if sql_type == "VARCHAR" and not isinstance(value, str):
        return json.dumps(_plain(value)) if isinstance(value, (list, tuple, dict)) else str(value)
    return value


def _write_parquet(data: TableData, path: Path) -> None:
    """One typed column per table column, through an in-memory DuckDB table."""
    import duckdb

    columns = list(zip(*data.rows, strict=True)) if data.rows else [() for _ in data.columns]
    types = [column_type(values) for values in columns]
    selects = ", ".join(
        f"unnest(${index + 1}::{sql_type}[]) AS {_quote(name)}"
        for index, (name, sql_type) in enumerate(zip(data.columns, types, strict=True))
    )
    values = [
        [_typed(value, sql_type) for value in column]
        for column, sql_type in zip(columns, types, strict=True)
    ]
    connection = duckdb.connect()
    try:
        if data.rows:
            connection.execute(f"CREATE TABLE export AS SELECT {selects}", values)
        else:
            definition = ", ".join(
                f"{_quote(name)} {sql_type}"
                for name, sql_type in zip(data.columns, types, strict=True)
            )
            connection.execute(f"CREATE TABLE export ({definition})")
        target = str(path).replace("'", "''")
        connection.execute(f"COPY export TO '{target}' (FORMAT PARQUET)")
    except duckdb.Error as error:
        raise LampboxError(f"cannot write {path.name} as Parquet: {error}") from error
    finally:
        connection.close()


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'
