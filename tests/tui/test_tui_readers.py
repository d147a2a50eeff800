"""The TUI beside a bench in another process (issue 12): it gives the store's file back between
its queries, so the bench writes its batches while the TUI is open; the runs screen shows the
running bench's progress and its results; a busy store makes the TUI wait and say who writes."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from textual.widgets import DataTable, Static

from lampbox.store import Store
from lampbox.store import runs as run_store
from lampbox.tui import create_app
from lampbox.tui.screens.runs import RunsScreen
from lampbox.tui.screens.users import UsersScreen
from lampbox.tui.screens.waiting import WaitingScreen

REPO = Path(__file__).resolve().parents[2]
SIZE = (120, 36)

# `lampbox bench` itself (the CLI's main), on the dummy stand-in slowed to 0.5 s a prompt so
# that the TUI sees it mid-run: 16 questions, 2 a batch; three configurations (no
# personalization, bm25 k=1, and the model-free bm25 k=1 retrieval-only baseline).
SLOW_BENCH_CLI = """
import sys, time
from lampbox.engine.generation.dummy import DummyGenerator
from lampbox.engine.generation.registry import register_backend

class SlowDummy(DummyGenerator):
    backend = "slow-dummy"
    def generate(self, prompts, params, on_output=None, should_cancel=None):
        time.sleep(0.5 * len(prompts))
        return super().generate(prompts, params, on_output, should_cancel)

register_backend("slow-dummy", SlowDummy)
from lampbox.cli import main
sys.argv = ["lampbox", *sys.argv[1:]]
main()
"""


def python(script: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(script), *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO), "NO_COLOR": "1"},
        cwd=REPO,
    )


def status_text(screen: RunsScreen) -> str:
    return str(screen.query_one("#runs-status", Static).render())


@pytest.mark.slow
async def test_a_bench_writes_while_the_tui_is_open_and_the_runs_screen_follows_it(  # type: ignore[no-untyped-def]
    demo_db: Path, tmp_path: Path, settle, until
) -> None:
    app = create_app(store_path=demo_db)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        assert isinstance(app.screen, UsersScreen)
        await pilot.press("b")
        await settle(pilot)
        screen = app.screen
        assert isinstance(screen, RunsScreen)
        assert "No benches" in status_text(screen)
        # Once idle, the TUI has given the file back.
        await until(pilot, lambda: not app.store.is_open, 5, "the TUI to release the store")

        bench = python(
            SLOW_BENCH_CLI, "bench", "--task", "LaMP_7", "--split", "dev", "--retrievers", "none,bm25",
            "--k", "1", "--backend", "slow-dummy", "--batch-size", "2", "--db", str(demo_db),
            "--out", str(tmp_path / "runs"),
        )  # fmt: skip
        try:
            # The user presses R until the bench shows up; from then on the screen polls.
            deadline = time.monotonic() + 240  # the bench alone: about 20 s
            while screen.poll_timer is None:
                assert bench.poll() is None, f"the bench ended early: {bench.communicate()}"
                assert time.monotonic() < deadline, "the bench never started beside the open TUI"
                await pilot.press("R")
                await pilot.pause(0.5)
            seen: list[str] = []
            while bench.poll() is None:
                assert time.monotonic() < deadline, "the bench never finished beside the open TUI"
                seen.append(status_text(screen))
                await pilot.pause(0.2)
            stdout, stderr = bench.communicate(timeout=60)
            assert bench.returncode == 0, stderr
        finally:
            if bench.poll() is None:
                bench.kill()
        running = [
            line for text in seen for line in text.splitlines() if line.startswith("running:")
        ]
        assert running, seen
        # which configuration (of the bench's three), and how far it had got: the screen saw
        # a configuration mid-generation, and more than one configuration running in turn
        progress = [
            re.search(r"configuration (\d) of 3, (.*) · (\w+) (\d+)/16 questions", line)
            for line in running
        ]
        assert all(progress), running
        grid = {
            "1": "no personalization slow-dummy:smollm2-135m-instruct",
            "2": "bm25 k=1 slow-dummy:smollm2-135m-instruct",
            "3": "bm25 k=1 retrieval-only",
        }
        seen_configurations = {(match[1], match[2]) for match in progress if match}
        assert seen_configurations <= set(grid.items()), running
        assert len(seen_configurations) >= 2, running
        assert any(
            match and match[3] == "generate" and 0 < int(match[4]) < 16 for match in progress
        ), running
        # The finished runs appear without R: the last poll read them and stopped polling.
        await until(pilot, lambda: screen.poll_timer is None, 30, "polling to stop")
        await settle(pilot)
        # This process cannot open the file read-only while the TUI has it open read-write.
        await until(pilot, lambda: not app.store.is_open, 5, "the TUI to release the store")
        with Store.for_reading(demo_db) as store:
            ((bench_key, _, _),) = run_store.list_benches(store)
            stored = run_store.bench_runs(store, bench_key)
        assert [row.run_key for row in screen.rows] == [run.run_key for run, _ in stored]
        assert all(run.status == "finished" for run, _ in stored)
        assert all(row.status == "finished" and row.metrics for row in screen.rows)
        assert screen.rows[1].relative_change is not None  # compared with the baseline
        table = screen.query_one("#configurations", DataTable)
        assert table.row_count == 3
        assert not any(line.startswith("running:") for line in status_text(screen).splitlines())


async def test_the_tui_waits_for_a_busy_store_and_says_who_is_writing(  # type: ignore[no-untyped-def]
    demo_db: Path, settle, until, writer_holding
) -> None:
    app = create_app(store_path=demo_db)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await until(pilot, lambda: not app.store.is_open, 5, "the TUI to release the store")
        with writer_holding(demo_db) as writer:
            await pilot.press("b")  # the runs screen reads the store: it must wait
            busy = f"busy: bench 3f2a1b0c (pid {writer.pid}) is writing"
            await until(pilot, lambda: busy in app.sub_title, 30, "the busy line")
            screen = app.screen
            assert isinstance(screen, RunsScreen)
            await pilot.press("question_mark")  # the UI stays live while the worker waits
            await pilot.pause()
            assert type(app.screen).__name__ == "HelpScreen"
            await pilot.press("escape")
            await pilot.pause()
            assert app.screen is screen and "No benches" not in status_text(screen)
        await until(pilot, lambda: "No benches" in status_text(screen), 30, "the read")
        assert app.sub_title == demo_db.name


async def test_a_store_busy_at_start_is_opened_once_free(demo_db: Path, settle, until, writer_holding) -> None:  # type: ignore[no-untyped-def]
    with writer_holding(demo_db) as writer:
        app = create_app(store_path=demo_db)
        async with app.run_test(size=SIZE) as pilot:
            await pilot.pause()
            assert isinstance(app.screen, WaitingScreen)
            busy = f"busy: bench 3f2a1b0c (pid {writer.pid}) is writing"
            await until(pilot, lambda: busy in app.sub_title, 30, "the busy line")
            writer.communicate("", timeout=60)
            await until(pilot, lambda: isinstance(app.screen, UsersScreen), 30, "the users")
            await settle(pilot)
            assert app.sub_title == demo_db.name
