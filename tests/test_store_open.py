"""Opening a store: a file that is not a DuckDB database is refused, never silently replaced."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from lampbox.cli import cli
from lampbox.demo import demo_path
from lampbox.errors import InputFileError
from lampbox.store import Store

NOT_STORES = {
    "dev_questions.json": json.dumps([{"id": "q1", "input": "x", "profile": []}]).encode(),
    "out.csv": b"id,output\nq1,hello\n",
    "empty.duckdb": b"",
}


@pytest.fixture(params=sorted(NOT_STORES))
def not_a_store(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    path = tmp_path / request.param
    path.write_bytes(NOT_STORES[request.param])
    return path


@pytest.mark.parametrize(
    "command",
    [
        ["data", "demo"],
        ["data", "import", str(demo_path()), "--task", "LaMP_7"],
        ["data", "list"],
        ["tasks"],
    ],
)
def test_a_file_that_is_not_a_store_is_refused_and_left_alone(not_a_store: Path, command: list[str]) -> None:
    before = not_a_store.read_bytes()
    result = CliRunner().invoke(cli, [*command, "--db", str(not_a_store)])
    assert result.exit_code != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and str(not_a_store) in lines[0] and "not a DuckDB database" in lines[0], result.stderr
    assert "Traceback" not in result.output
    assert not_a_store.read_bytes() == before


@pytest.mark.parametrize("read_only", [False, True])
def test_store_refuses_a_file_that_is_not_duckdb(not_a_store: Path, read_only: bool) -> None:
    with pytest.raises(InputFileError, match="empty file" if not NOT_STORES[not_a_store.name] else "not a DuckDB"):
        Store(not_a_store, read_only=read_only)


def test_a_new_file_and_an_existing_store_open(tmp_path: Path) -> None:
    path = tmp_path / "new.json"  # any name: a file that does not exist yet becomes a store
    with Store(path) as store:
        store.connection.execute("CREATE TABLE kept (x INTEGER)")
    with Store(path, read_only=True) as store:
        assert store.connection.execute("SELECT count(*) FROM kept").fetchone() == (0,)


def test_long_jobs_wait_two_minutes_for_the_store_unless_told_otherwise(monkeypatch: pytest.MonkeyPatch) -> None:
    from lampbox.commands.common import writer_wait_s

    monkeypatch.delenv("LAMPBOX_LOCK_WAIT", raising=False)
    assert writer_wait_s() == 120.0
    monkeypatch.setenv("LAMPBOX_LOCK_WAIT", "600")
    assert writer_wait_s() == 600.0
