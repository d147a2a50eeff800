"""Readers beside a writer (issue 12, found 5): read-only commands open the store read-only, so
they run side by side; the bench takes the write lock only while it writes a batch, so readers
get in between; a reader that cannot get in says who is writing."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from lampbox.store import Store, StoreBusy
from lampbox.store import runs as run_store
from lampbox.store.migrations import MIGRATIONS

REPO = Path(__file__).resolve().parent.parent


def environment(**extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), **extra}


def lampbox_process(*args: str, **env: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "lampbox", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=environment(**env),
        cwd=REPO,
    )


def test_four_data_list_at_once_all_succeed(demo_db: Path) -> None:
    processes = [lampbox_process("data", "list", "--json", "--db", str(demo_db)) for _ in range(4)]
    results = [(process.wait(timeout=300), *process.communicate()) for process in processes]
    for code, stdout, stderr in results:
        assert code == 0, stderr
        assert '"LaMP_7"' in stdout
    assert not Path(str(demo_db) + ".writer").exists()  # readers leave no writer's note


def test_read_only_commands_do_not_take_the_write_lock(demo_db: Path) -> None:
    """Each of them succeeds while another process holds the store open for reading (which a
    write lock could not be taken beside)."""
    holder = Store(demo_db, read_only=True)
    try:
        for command in (["data", "list"], ["tasks"], ["models", "list"]):
            process = lampbox_process(*command, "--db", str(demo_db), LAMPBOX_LOCK_WAIT="0")
            code = process.wait(timeout=300)
            assert code == 0, (command, process.communicate()[1])
    finally:
        holder.close()


def test_a_reader_applies_a_pending_migration_once_then_reads(tmp_path: Path) -> None:
    import duckdb

    from lampbox.store.migrations import migrate

    path = tmp_path / "old.duckdb"
    connection = duckdb.connect(str(path))
    migrate(connection)
    # Undo m006 (by name: later migrations may follow it) so that it is pending again.
    assert "m006_run_progress" in [name for name, _ in MIGRATIONS]
    connection.execute("DELETE FROM _lampbox_migrations WHERE name = 'm006_run_progress'")
    connection.execute("ALTER TABLE runs DROP COLUMN progress_done")
    connection.execute("ALTER TABLE runs DROP COLUMN progress_phase")
    connection.close()
    with Store.for_reading(path) as store:
        assert store.read_only
        assert store.connection.execute("SELECT count(kind) FROM runs").fetchone() == (0,)


def test_a_reader_waits_then_names_the_writer(demo_db: Path, writer_holding) -> None:  # type: ignore[no-untyped-def]
    with writer_holding(demo_db) as writer:
        started = time.monotonic()
        with pytest.raises(StoreBusy) as raised:
            Store.for_reading(demo_db, wait_s=0.6)
        waited = time.monotonic() - started
        message = str(raised.value)
        assert f"busy: bench 3f2a1b0c (pid {writer.pid}) is writing" in message, message
        assert 0.3 <= waited < 10
        process = lampbox_process("data", "list", "--db", str(demo_db), LAMPBOX_LOCK_WAIT="0.5")
        code = process.wait(timeout=300)
        stderr = process.communicate()[1].strip()
        assert code == 1 and len(stderr.splitlines()) == 1, stderr
        assert "busy: bench 3f2a1b0c" in stderr and "Traceback" not in stderr
    with Store.for_reading(demo_db, wait_s=0) as store:  # and once it has gone, readers get in
        assert store.datasets()


def test_a_reader_retries_until_a_short_write_ends(demo_db: Path) -> None:
    writer = Store(demo_db)
    subprocess_reader = lampbox_process("data", "list", "--json", "--db", str(demo_db), LAMPBOX_LOCK_WAIT="60")
    time.sleep(1.5)
    writer.close()
    code = subprocess_reader.wait(timeout=300)
    assert code == 0, subprocess_reader.communicate()[1]


SLOW_BENCH = """
import sys, time
from lampbox.engine.generation.dummy import DummyGenerator
from lampbox.engine.generation.registry import register_backend
from lampbox.bench.runner import BenchSpec, run_bench
from lampbox.store import Store

class SlowDummy(DummyGenerator):
    backend = "slow-dummy"
    def generate(self, prompts, params, on_output=None, should_cancel=None):
        time.sleep(0.4 * len(prompts))
        return super().generate(prompts, params, on_output, should_cancel)

register_backend("slow-dummy", SlowDummy)
store = Store(sys.argv[1], hold_lock=False, wait_s=120)
spec = BenchSpec("LaMP_7", "demo", "dev", retrievers=("bm25",), ks=(1,), backends=("slow-dummy",))
print("started", flush=True)
run_bench(spec, store, batch_size=2)
store.close()
print("finished", flush=True)
"""


@pytest.mark.slow
def test_readers_get_in_between_a_running_bench_s_writes_and_see_its_progress(demo_db: Path) -> None:
    bench = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(SLOW_BENCH), str(demo_db)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=environment(),
        cwd=REPO,
    )
    try:
        assert bench.stdout is not None and bench.stdout.readline().strip() == "started"
        seen: list[tuple[str, int]] = []
        deadline = time.monotonic() + 240
        while bench.poll() is None and time.monotonic() < deadline:
            with Store.for_reading(demo_db, wait_s=30) as store:
                assert store.datasets()  # what `data list` reads
                running = [run for run in run_store.list_runs(store) if run.status == "running"]
                for run in running:
                    progress = run_store.run_progress(store, run.run_key)
                    if progress is not None:
                        seen.append(progress)
            time.sleep(0.3)
        code = bench.wait(timeout=300)
        assert code == 0, bench.communicate()[1]
    finally:
        if bench.poll() is None:
            bench.kill()
    # the reader saw the bench mid-generation (16 questions, 2 a batch, 0.8 s a batch)
    assert any(phase == "generate" and 0 < done < 16 for phase, done in seen), seen
    with Store.for_reading(demo_db) as store:
        assert {run.status for run in run_store.list_runs(store)} == {"finished"}


def test_rank_of_stored_rankings_reads_beside_another_reader(demo_db: Path, tmp_path: Path) -> None:
    first = lampbox_process("rank", "--task", "LaMP_7", "--split", "dev", "--retriever", "bm25", "--db", str(demo_db))
    assert first.wait(timeout=300) == 0, first.communicate()[1]
    holder = Store(demo_db, read_only=True)
    try:
        output = tmp_path / "rankings.json"
        again = lampbox_process(
            "rank", "--task", "LaMP_7", "--split", "dev", "--retriever", "bm25", "--output", str(output),
            "--db", str(demo_db), LAMPBOX_LOCK_WAIT="0",
        )  # fmt: skip
        assert again.wait(timeout=300) == 0, again.communicate()[1]
        assert output.exists()
    finally:
        holder.close()


def test_an_idle_store_reopens_for_each_thread() -> None:
    """After idle() a worker thread's old cursor is stale; it gets a fresh one."""
    import tempfile
    import threading

    with tempfile.TemporaryDirectory() as folder:
        store = Store(Path(folder) / "s.duckdb", hold_lock=False)
        results: list[object] = []

        def work() -> None:
            results.append(store.cursor().execute("SELECT count(*) FROM runs").fetchone())
            store.idle()
            results.append(store.cursor().execute("SELECT count(*) FROM runs").fetchone())

        thread = threading.Thread(target=work)
        thread.start()
        thread.join()
        assert results == [(0,), (0,)]
        store.close()


def test_idle_leaves_the_file_open_while_another_thread_is_using_it(tmp_path: Path) -> None:
    """The TUI's workers share one store: one worker's idle() must not close the file under
    another's query; the file closes when the last one leaves, and release_if_unused (the
    TUI's timer) closes it only once nobody has used it for a while."""
    import threading

    store = Store(tmp_path / "s.duckdb", hold_lock=False)
    inside, leave = threading.Event(), threading.Event()
    results: list[object] = []

    def reader() -> None:
        with store.using():
            cursor = store.cursor()
            inside.set()
            leave.wait(30)
            results.append(cursor.execute("SELECT count(*) FROM runs").fetchone())

    thread = threading.Thread(target=reader)
    thread.start()
    assert inside.wait(30)
    store.idle()  # another thread is inside using(): the file stays open for it
    assert store.is_open
    assert not store.release_if_unused()
    leave.set()
    thread.join(30)
    assert results == [(0,)]
    assert not store.is_open  # closed as the last user left, as idle() had asked
    with store.using():
        store.cursor().execute("SELECT 1").fetchone()
    assert store.is_open
    assert not store.release_if_unused(unused_for_s=60)  # used just now
    assert store.release_if_unused(unused_for_s=0) and not store.is_open
    with Store.for_reading(tmp_path / "s.duckdb", wait_s=0) as other:  # the file is free
        assert other.datasets() == []
    store.close()


def test_opening_tells_on_wait_who_holds_the_lock(demo_db: Path, writer_holding) -> None:  # type: ignore[no-untyped-def]
    told: list[str | None] = []
    with writer_holding(demo_db) as writer:
        try:
            store = Store(demo_db, hold_lock=False, wait_s=0.3, on_wait=told.append)
        except StoreBusy:
            store = None
    assert store is None
    assert told == [f"bench 3f2a1b0c (pid {writer.pid})", None]
    told.clear()
    with Store(demo_db, hold_lock=False, wait_s=30, on_wait=told.append) as store:
        assert store.datasets()
    assert told == []  # nobody held it: nothing to tell


def test_threads_caching_the_same_generations_at_once_all_succeed(tmp_path: Path) -> None:
    """The TUI's panes on two models can make the same generation (an OPPU set's user without
    an adapter, beside the set's task adapter) and cache it from two threads at once. Real
    threads, released together, many rounds: every write succeeds and the first output stays
    (without the writes taking turns, DuckDB fails one of them on the duplicate key)."""
    import threading

    store = Store(tmp_path / "race.duckdb")
    store.cursor().execute("SELECT 1").fetchall()
    rounds, writers = 40, 4
    errors: list[BaseException] = []
    start = threading.Barrier(writers)

    def write(name: str) -> None:
        for r in range(rounds):
            start.wait(30)
            try:
                run_store.cache_generations(store, "m", "hf", {f"k{r}": name, f"k{r}-{name}": name})
            except BaseException as error:  # noqa: BLE001 - collected and asserted below
                errors.append(error)

    threads = [threading.Thread(target=write, args=(f"w{i}",)) for i in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert errors == []
    cached = run_store.cached_generations(store, [f"k{r}" for r in range(rounds)])
    assert len(cached) == rounds and set(cached.values()) <= {f"w{i}" for i in range(writers)}
    own = run_store.cached_generations(
        store, [f"k{r}-w{i}" for r in range(rounds) for i in range(writers)]
    )
    assert len(own) == rounds * writers
    store.close()


def test_a_second_cache_write_waits_for_the_first_and_keeps_its_output(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading
    from contextlib import contextmanager

    store = Store(tmp_path / "race.duckdb")
    plain = Store.transaction
    inside, leave = threading.Event(), threading.Event()
    entered: list[str] = []

    @contextmanager
    def pausing(self: Store):  # type: ignore[no-untyped-def]
        entered.append(threading.current_thread().name)
        with plain(self) as cursor:
            yield cursor
            if threading.current_thread().name == "first":
                inside.set()
                leave.wait(30)

    monkeypatch.setattr(Store, "transaction", pausing)
    first = threading.Thread(
        name="first", target=run_store.cache_generations, args=(store, "m", "hf", {"k": "first"})
    )
    second = threading.Thread(
        name="second",
        target=run_store.cache_generations,
        args=(store, "m", "hf", {"k": "second", "k2": "second"}),
    )
    first.start()
    assert inside.wait(30)
    second.start()
    second.join(0.5)
    assert second.is_alive() and entered == ["first"]  # waits for the first write's commit
    leave.set()
    first.join(30)
    second.join(30)
    assert entered == ["first", "second"]
    assert run_store.cached_generations(store, ["k", "k2"]) == {"k": "first", "k2": "second"}
    store.close()
