"""TUI speed: user switch time (through Pilot), warm re-rank time over 4 retrievers, and
the generation panes' path (prompt build, time to the first streamed piece, pieces per second).

Run: .venv/bin/python benchmarks/bench_tui.py [--workdir DIR] [--switches 100]

Stores: the git-commits stand-in (../shared/data/git-commits) and a generated LaMP_7-format
store with 10,000 users (benchmarks/synthetic_store.py; built once, reused from --workdir).
Targets (issue): user switch p95 <= 100 ms; re-rank of one question over 4 retrievers, warm,
<= 300 ms; a what-if (exclude one item, regenerate one pane) shows its first token <= 1 s
(`--only-whatif` measures that alone).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from synthetic_store import build_synthetic_store  # noqa: E402

GIT_COMMITS = HERE.parent.parent / "shared" / "data" / "git-commits"
SIZE = (120, 36)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def build_commits_store(path: Path) -> Path:
    from lampbox.store import Store
    from lampbox.store.importer import import_path

    if not path.exists():
        with Store(path) as store:
            import_path(store, GIT_COMMITS / "commit_subject")
            import_path(store, GIT_COMMITS / "commit_area")
    return path


async def settle(pilot) -> None:  # type: ignore[no-untyped-def]
    from textual.worker import WorkerCancelled

    for _ in range(1000):
        await pilot.pause()
        running = [worker for worker in pilot.app.workers if not worker.is_finished]
        if not running:
            return
        with contextlib.suppress(WorkerCancelled):  # a replaced or busy worker is fine here
            await pilot.app.workers.wait_for_complete(running)


async def user_switches(
    store_path: Path, dataset_index: int, switches: int
) -> tuple[list[float], list[float], list[float], list[float]]:
    """Open the dataset's first user, then time `]` (next user) until the screen shows it.

    Returns (key press -> new user's tables filled; key press -> the last frame rendered
    after that (the compositor's update handed to the driver: what a terminal would draw);
    key press -> Pilot settled after it; Pilot's round trip for an unbound key, the
    harness's own baseline). Pilot's settling waits until the process has been idle for a
    20 ms window, so its round trip is bounded below by the harness, not by the app.
    """
    from textual.widgets import OptionList

    from lampbox.tui import create_app
    from lampbox.tui.screens.user import UserScreen

    app = create_app(store_path)
    frames: list[float] = []  # perf_counter() of every frame the app renders
    display = app._display

    def recording_display(screen, renderable):  # type: ignore[no-untyped-def]
        if renderable is not None:
            frames.append(time.perf_counter())
        return display(screen, renderable)

    app._display = recording_display  # type: ignore[method-assign]
    painted: list[float] = []
    shown: list[float] = []
    round_trips: list[float] = []
    idle: list[float] = []
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        app.screen.query_one("#datasets", OptionList).highlighted = dataset_index
        await settle(pilot)
        await pilot.press("enter")
        await settle(pilot)
        screen = app.screen
        assert isinstance(screen, UserScreen)
        for _ in range(20):  # Pilot's own cost: a key nothing is bound to
            started = time.perf_counter()
            await pilot.press("f12")
            await settle(pilot)
            idle.append(time.perf_counter() - started)
        for _ in range(switches):
            before = screen.index
            started = time.perf_counter()
            await pilot.press("right_square_bracket")
            await settle(pilot)
            round_trips.append(time.perf_counter() - started)
            if screen.index == before:
                break  # end of the list
            shown.append(screen.loaded_at - started)
            # The last frame of this switch: the tables' rows appear once DataTable has
            # measured them (on idle), which can take a second frame after the first one.
            after = [frame for frame in frames if frame >= screen.loaded_at]
            if after:
                painted.append(after[-1] - started)
    return shown, painted, round_trips, idle


def rerank_times(
    store_path: Path, retrievers: list[str], repeats: int
) -> tuple[float, list[float], list[float]]:
    """Cold, then warm re-rank times of one question over the retrievers (the TUI's path)."""
    from lampbox.store import Store, browse
    from lampbox.tui import rankings

    with Store(store_path) as store:
        dataset = browse.datasets(store)[0]
        user = browse.user_page(store, dataset, sort="profile", descending=True, limit=1).rows[0]
        question_id = browse.user_questions(store, dataset, user.user_id)[0].question_id
        started = time.perf_counter()
        question = browse.question(store, dataset, question_id)
        for name in retrievers:
            rankings.rank_question(store, question, name, 5)
        cold = time.perf_counter() - started
        warm, warm_with_read = [], []
        for repeat in range(repeats):
            started = time.perf_counter()
            question = browse.question(store, dataset, question_id)
            read = time.perf_counter()
            for name in retrievers:
                rankings.rank_question(store, question, name, 5 + repeat % 3)
            done = time.perf_counter()
            warm.append(done - read)
            warm_with_read.append(done - started)
    return cold, warm, warm_with_read


def generation_times(workdir: Path, tokens: int) -> None:
    """The generation panes' path on the LaMP_7 demo set: none, then bm25 k=4 (no cache)."""
    from lampbox.demo import demo_path
    from lampbox.engine.defaults import DEFAULT_BACKEND, default_model
    from lampbox.store import Store, browse
    from lampbox.store.importer import import_path
    from lampbox.tui import generation

    path = workdir / "demo-generation.duckdb"
    path.unlink(missing_ok=True)  # a fresh store: nothing comes from the generation cache
    with Store(path) as store:
        import_path(store, demo_path(), task_name="LaMP_7", scheme="demo")
        dataset = next(d for d in browse.datasets(store) if d.split == "dev")
        row = browse.user_page(store, dataset, limit=1).rows[0]
        question_id = browse.user_questions(store, dataset, row.user_id)[0].question_id
        question = browse.question(store, dataset, question_id)
        pool = generation.new_pool()
        started = time.perf_counter()
        pool.get(DEFAULT_BACKEND, default_model())
        print(f"  model load: {(time.perf_counter() - started) * 1000:.0f} ms")
        for choice in generation.default_choices(["bm25"], 4):
            spec = generation.run_spec(question, dataset.scheme, dataset.split, choice, tokens)
            started = time.perf_counter()
            prepared, _ = generation.prepare(spec, question, store, pool)
            built = time.perf_counter()
            first: float | None = None
            pieces = 0

            def on_piece(row: int, piece: str) -> None:
                nonlocal first, pieces
                first = first or time.perf_counter()
                pieces += 1

            generation.generate_outputs([prepared], pool, on_piece, lambda *_: None, lambda: False)
            done = time.perf_counter()
            rate = (pieces - 1) / (done - first) if first and pieces > 1 and done > first else 0.0
            print(
                f"  {choice.label}: prompt {prepared.prompt.token_count} tokens built in "
                f"{(built - started) * 1000:.0f} ms · first piece after "
                f"{((first or done) - built) * 1000:.0f} ms · {pieces} pieces, {rate:.1f}/s"
            )
        pool.close()


def whatif_times(workdir: Path, tokens: int, repeats: int) -> None:
    """The what-if target: the bm25 k=4 pane shown, then its top item excluded and the pane
    regenerated; time from the edit to the first streamed piece (prompt built, model loaded)."""
    from lampbox.demo import demo_path
    from lampbox.engine.defaults import DEFAULT_BACKEND, default_model
    from lampbox.engine.whatif import WhatIf
    from lampbox.store import Store, browse
    from lampbox.store.importer import import_path
    from lampbox.tui import generation
    from lampbox.tui.generation import PaneChoice

    path = workdir / "demo-whatif.duckdb"
    path.unlink(missing_ok=True)  # a fresh store: no what-if comes from the cache
    with Store(path) as store:
        import_path(store, demo_path(), task_name="LaMP_7", scheme="demo")
        dataset = next(d for d in browse.datasets(store) if d.split == "dev")
        questions = [
            browse.question(store, dataset, row.question_id)
            for user in browse.user_page(store, dataset, limit=repeats).rows
            for row in browse.user_questions(store, dataset, user.user_id)[:1]
        ]
        pool = generation.new_pool()
        pool.get(DEFAULT_BACKEND, default_model())
        firsts, builds = [], []
        for question in questions:
            spec = generation.run_spec(
                question, dataset.scheme, dataset.split, PaneChoice("bm25", 4), tokens
            )
            shown, _ = generation.prepare(spec, question, store, pool)  # the pane before the edit
            edit = WhatIf().toggle_excluded(shown.prompt.item_keys[0])
            started = time.perf_counter()
            prepared, cached = generation.prepare_whatif(spec, question, store, pool, edit)
            assert cached is None and prepared.is_whatif
            built = time.perf_counter()
            first: list[float] = []

            def on_piece(row: int, piece: str, first: list[float] = first) -> None:
                if not first:
                    first.append(time.perf_counter())

            generation.generate_outputs([prepared], pool, on_piece, lambda *_: None, lambda: False)
            builds.append(built - started)
            firsts.append((first[0] if first else time.perf_counter()) - started)
        pool.close()
    report("what-if prompt built (rank, edit, tokenize)", builds)
    report("what-if: edit -> first streamed piece (target <= 1000 ms)", firsts)


def report(label: str, values: list[float]) -> None:
    print(
        f"  {label}: n={len(values)}  p50 {percentile(values, 0.5) * 1000:.1f} ms  "
        f"p95 {percentile(values, 0.95) * 1000:.1f} ms  max {max(values) * 1000:.1f} ms  "
        f"mean {statistics.mean(values) * 1000:.1f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--workdir", type=Path, default=Path(tempfile.gettempdir()) / "lampbox-bench-tui"
    )
    parser.add_argument("--switches", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--retrievers", default="bm25,bm25-fast,recency,dense")
    parser.add_argument("--skip-rerank", action="store_true")
    parser.add_argument("--skip-generation", action="store_true")
    parser.add_argument("--tokens", type=int, default=32, help="new tokens per generation pane")
    parser.add_argument("--skip-whatif", action="store_true")
    parser.add_argument(
        "--only-whatif", action="store_true", help="measure the what-if target and stop"
    )
    parser.add_argument("--whatifs", type=int, default=5, help="questions (users) for the what-if")
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    retrievers = [name.strip() for name in args.retrievers.split(",") if name.strip()]

    if not args.skip_generation and not args.only_whatif:
        print(f"generation panes (smollm2-135m-instruct on llama.cpp, {args.tokens} new tokens)")
        generation_times(args.workdir, args.tokens)
    if not args.skip_whatif:
        print(f"what-if, exclude the top bm25 item of a k=4 pane ({args.tokens} new tokens)")
        whatif_times(args.workdir, args.tokens, args.whatifs)
    if args.only_whatif:
        return

    started = time.perf_counter()
    synthetic = build_synthetic_store(args.workdir / "synthetic-10000.duckdb", 10_000)
    commits = build_commits_store(args.workdir / "commits.duckdb")
    print(f"stores ready in {time.perf_counter() - started:.1f} s ({args.workdir})")

    for label, path, dataset_index in (
        ("git-commits, commit_subject user dev (190 users)", commits, 4),
        ("generated LaMP_7 user dev (10,000 users)", synthetic, 0),
    ):
        work = args.workdir / f"work-{path.name}"
        shutil.copy(path, work)  # rankings get stored: keep the built stores pristine
        print(f"\n{label}")
        shown, painted, round_trips, idle = asyncio.run(
            user_switches(work, dataset_index, args.switches)
        )
        report("user switch, ] pressed -> new user's tables filled", shown)
        report("user switch, ] pressed -> new user's frame rendered", painted)
        report("user switch, Pilot round trip (press + wait for idle)", round_trips)
        report("Pilot round trip of an unbound key (harness baseline)", idle)
        from lampbox.tui import rankings

        rankings._retrievers.clear()
        if args.skip_rerank:
            continue
        try:
            cold, warm, warm_with_read = rerank_times(work, retrievers, args.repeats)
        except Exception as error:  # noqa: BLE001 - report and go on with the other store
            print(f"  re-rank failed: {error}")
            continue
        print(
            f"  re-rank over {', '.join(retrievers)}: cold {cold * 1000:.0f} ms (models load, rankings stored)"
        )
        report("re-rank warm", warm)
        report("re-rank warm, question read included", warm_with_read)
        work.unlink()


if __name__ == "__main__":
    main()
