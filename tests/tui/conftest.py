"""Helpers for driving the TUI with Pilot: wait for workers instead of sleeping."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import time
from pathlib import Path

import pytest
from textual.pilot import Pilot
from textual.worker import WorkerCancelled


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    """Run `async def` tests in a fresh event loop (no asyncio plugin needed)."""
    if not inspect.iscoroutinefunction(pyfuncitem.obj):
        return None
    arguments = {name: pyfuncitem.funcargs[name] for name in pyfuncitem._fixtureinfo.argnames}
    asyncio.run(pyfuncitem.obj(**arguments))
    return True


async def settle_workers(pilot: Pilot) -> None:
    """Wait until no worker runs and every message they posted has been handled."""
    app = pilot.app
    for _ in range(500):
        await pilot.pause()
        running = [worker for worker in app.workers if not worker.is_finished]
        if not running:
            await pilot.pause()
            return
        with contextlib.suppress(WorkerCancelled):  # a replaced or busy worker is fine here
            await app.workers.wait_for_complete(running)
    raise AssertionError("workers never settled")


@pytest.fixture
def empty_store_path(tmp_path: Path) -> Path:
    """A store file with the schema and no data."""
    from lampbox.store import Store

    path = tmp_path / "empty.duckdb"
    Store(path).close()
    return path


async def wait_until(pilot: Pilot, condition, seconds: float, what: str) -> None:  # type: ignore[no-untyped-def]
    """Wait (letting the app run) until `condition()` holds; fail naming `what` after `seconds`."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {seconds:g} s for {what}")
        await pilot.pause(0.1)


@pytest.fixture
def until():  # type: ignore[no-untyped-def]
    """`await until(pilot, condition, seconds, what)`: wait for a state no worker stands for
    (a pane's last message, a timer's poll)."""
    return wait_until


@pytest.fixture
def settle():  # type: ignore[no-untyped-def]
    """`await settle(pilot)`: wait for the app's workers and their messages."""
    return settle_workers


async def open_history(app, pilot: Pilot, bench_key: str, run_key: str):  # type: ignore[no-untyped-def]
    """From the start: the runs screen (`b`) on the newest bench (which must be `bench_key`),
    `enter` on `run_key`'s row, then `h`: the per-user gains screen showing the buckets."""
    from textual.widgets import DataTable

    from lampbox.tui.screens.runs import RunsScreen

    await settle_workers(pilot)
    await pilot.press("b")
    await settle_workers(pilot)
    runs = app.screen
    assert isinstance(runs, RunsScreen) and runs.bench is not None
    assert runs.bench.bench_key == bench_key  # the newest bench
    table = runs.query_one("#configurations", DataTable)
    table.focus()
    table.move_cursor(row=[row.run_key for row in runs.rows].index(run_key))
    await pilot.press("enter")
    await settle_workers(pilot)
    await pilot.press("h")
    await settle_workers(pilot)
    return app.screen


@pytest.fixture
def history_view():  # type: ignore[no-untyped-def]
    """`await history_view(app, pilot, bench_key, run_key)`: the buckets of a run's per-user gains."""
    return open_history


@pytest.fixture(scope="session")
def bench_store_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The LaMP_7 demo set with a small bench run on its dev split (built once per session).

    Grid: no personalization, bm25 and recency at k=1 on the `dummy` backend (a stand-in
    model that answers with the prompt's first 16 words; the runs screens read stored runs and
    never generate: ranking, prompting, caching, scoring and storing are the real pipeline's),
    plus the model-free retrieval-only baselines. Tests that write must copy it (see
    `bench_store`).
    """
    from lampbox.bench.runner import BenchSpec, run_bench
    from lampbox.demo import demo_path
    from lampbox.store import Store
    from lampbox.store.importer import import_path

    path = tmp_path_factory.mktemp("bench") / "bench.duckdb"
    with Store(path) as store:
        import_path(store, demo_path(), task_name="LaMP_7", scheme="demo")
        spec = BenchSpec(
            "LaMP_7",
            "demo",
            "dev",
            retrievers=("none", "bm25", "recency"),
            ks=(1,),
            backends=("dummy",),
            model="first-words",
        )
        run_bench(spec, store)
    return path


@pytest.fixture
def bench_store(tmp_path: Path, bench_store_path: Path):  # type: ignore[no-untyped-def]
    """A private, writable copy of the bench store."""
    import shutil

    from lampbox.store import Store

    path = tmp_path / "bench.duckdb"
    shutil.copy(bench_store_path, path)
    store = Store(path)
    yield store
    store.close()


# The rows of an OPPU bench (docs/plans/oppu.toml) as `lampbox bench --config` labels them; the
# dummy backend's plan stands in for them, then the oppu rows' stored specs are made method oppu.
OPPU_ROWS = {
    "none": ("task-lora", ""),
    "rag": ("task-lora+rag bm25 k=1", "retriever=bm25 k=1"),
    "peft": ("oppu", "retriever=recency k=1"),
    "both": ("oppu+rag bm25 k=2", "retriever=bm25 k=2"),
}


@pytest.fixture
def oppu_bench(bench_store):  # type: ignore[no-untyped-def]
    """In `bench_store`, a bench whose rows fill the four PEFT-vs-RAG roles (a plan on the
    dummy backend; the PEFT rows' specs then say method oppu, the PEFT row's without
    retrieval): {"store": bench_store, "key": its key, "runs": {role: run_key}, "labels":
    {role: label}}. Each row's per-user scores are its own (different retrievers)."""
    import json

    from lampbox.bench.planfile import build_plan, parse_config_strings
    from lampbox.bench.runner import run_bench
    from lampbox.store import runs as run_store

    configs = [f"method=ipa model=first-words backend=dummy {extra} label='{label}'" for label, extra in OPPU_ROWS.values()]
    plan = build_plan(parse_config_strings(configs), bench_store.task("LaMP_7"), "demo", "dev", reference="task-lora")
    result = run_bench(plan, bench_store)
    keys = dict(zip(OPPU_ROWS, (row.record.run_key for row in result.rows), strict=True))
    for role, changes in (("peft", {"method": "oppu", "retriever": "none", "k": 0}), ("both", {"method": "oppu"})):
        stored = run_store.get_run(bench_store, keys[role])
        assert stored is not None
        bench_store.cursor().execute("UPDATE runs SET spec = ? WHERE run_key = ?", [json.dumps({**stored.spec, **changes}), keys[role]])
    labels = {role: label for role, (label, _) in OPPU_ROWS.items()}
    return {"store": bench_store, "key": result.bench_key, "runs": keys, "labels": labels}
