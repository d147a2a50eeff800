"""The runs views with Pilot on a store where a small bench was run (see `bench_store_path`)."""

from __future__ import annotations

from textual.widgets import DataTable, Static

from lampbox.store import browse
from lampbox.store import runs as run_store
from lampbox.tui import create_app
from lampbox.tui.screens.failures import FailuresScreen
from lampbox.tui.screens.run_users import RunUsersScreen
from lampbox.tui.screens.runs import RunsScreen

SIZE = (120, 36)


def _keys(table: DataTable) -> list[str]:  # type: ignore[type-arg]
    return [str(key.value) for key in table.rows]


def _bench(store):  # type: ignore[no-untyped-def]
    (bench_key, _, _), *_ = run_store.list_benches(store)
    runs = run_store.bench_runs(store, bench_key)
    baseline = next(run for run, role in runs if role == "baseline")
    bm25 = next(run for run, role in runs if run.label.startswith("bm25") and role == "retrieval")
    return runs, baseline, bm25


def _expected_gains(store, run_key: str, baseline_key: str) -> dict[str, float]:  # type: ignore[no-untyped-def]
    run, base = run_store.user_scores(store, run_key), run_store.user_scores(store, baseline_key)
    return {user: run[user].main_score - base[user].main_score for user in run}


async def test_runs_users_and_failure_cases(bench_store, settle) -> None:  # type: ignore[no-untyped-def]
    runs, baseline, bm25 = _bench(bench_store)
    app = create_app(store=bench_store)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("b")
        await settle(pilot)
        screen = app.screen
        assert isinstance(screen, RunsScreen)
        configurations = screen.query_one("#configurations", DataTable)
        assert _keys(configurations) == [run.run_key for run, _ in runs]

        # The bm25 row: its per-user breakdown, biggest losers first.
        await pilot.press(*["down"] * _keys(configurations).index(bm25.run_key), "enter")
        await settle(pilot)
        users_screen = app.screen
        assert isinstance(users_screen, RunUsersScreen)
        expected = _expected_gains(bench_store, bm25.run_key, baseline.run_key)
        by_loss = sorted(expected, key=lambda user: (expected[user], user))
        table = users_screen.query_one("#user-gains", DataTable)
        assert _keys(table) == by_loss
        assert expected[by_loss[0]] < 0 < expected[by_loss[-1]]  # the bench has losers and gainers
        lost = sum(1 for gain in expected.values() if gain < 0)
        assert f"{lost} lost" in str(users_screen.query_one("#gains-status", Static).render())

        await pilot.press("r")
        await settle(pilot)
        assert _keys(table) == sorted(
            expected, key=lambda user: (expected[user], user), reverse=True
        )
        await pilot.press("r")
        await settle(pilot)

        # The biggest loser's questions where bm25 did worse than no personalization.
        loser = by_loss[0]
        await pilot.press("enter")
        await settle(pilot)
        failures = app.screen
        assert isinstance(failures, FailuresScreen)
        run_predictions = run_store.run_predictions(bench_store, bm25.run_key)
        base_scores = {
            p.question_id: p.main_score
            for p in run_store.run_predictions(bench_store, baseline.run_key)
        }
        worse = [
            p
            for p in run_predictions
            if p.user_id == loser and p.main_score < base_scores[p.question_id]
        ]
        assert worse
        assert sorted(_keys(failures.query_one("#cases", DataTable))) == sorted(
            p.question_id for p in worse
        )
        shown = failures.query_one("#cases", DataTable).get_row_at(0)
        first = next(p for p in worse if p.question_id in str(shown[0]))
        detail = str(failures.query_one("#case-detail", Static).render())
        assert first.output.split()[0] in detail
        assert first.gold is not None and first.gold.split()[0] in detail
        assert all(item_id in detail for item_id in first.item_ids)
        assert "Baseline output" in detail and "Prompt" in detail

        # `a` shows all of the user's questions, worse or not.
        await pilot.press("a")
        await settle(pilot)
        all_questions = [p.question_id for p in run_predictions if p.user_id == loser]
        assert sorted(_keys(failures.query_one("#cases", DataTable))) == sorted(all_questions)

        await pilot.press("escape", "escape", "escape")
        assert not isinstance(app.screen, RunsScreen | RunUsersScreen | FailuresScreen)


async def test_a_baseline_has_no_breakdown(bench_store, settle) -> None:  # type: ignore[no-untyped-def]
    app = create_app(store=bench_store)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        app.action_runs()
        await settle(pilot)
        await pilot.press("enter")  # the first row is the no-personalization baseline
        await settle(pilot)
        assert isinstance(app.screen, RunsScreen)
        assert any("is a baseline" in note.message for note in app._notifications)


async def test_a_store_without_benches_says_how_to_run_one(commits_store, settle) -> None:  # type: ignore[no-untyped-def]
    app = create_app(store=commits_store)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("b")
        await settle(pilot)
        assert isinstance(app.screen, RunsScreen)
        assert "lampbox bench" in str(app.screen.query_one("#runs-status", Static).render())


def test_gains_flip_sign_when_lower_is_better(bench_store) -> None:  # type: ignore[no-untyped-def]
    _, baseline, bm25 = _bench(bench_store)
    higher = browse.user_gains(bench_store, bm25.run_key, baseline.run_key, True)
    lower = browse.user_gains(bench_store, bm25.run_key, baseline.run_key, False)
    assert {g.user_id: g.gain for g in lower} == {g.user_id: -g.gain for g in higher}  # type: ignore[operator]
    assert [g.gain for g in lower] == sorted(g.gain for g in lower)  # type: ignore[type-var]
    worse = browse.user_question_gains(
        bench_store, bm25.run_key, baseline.run_key, higher[0].user_id
    )
    assert worse and all(gain is not None and gain < 0 for _, gain in worse)


def test_a_bench_between_two_runs_is_still_in_progress(bench_store) -> None:  # type: ignore[no-untyped-def]
    """Between one configuration's end and the next one's start nothing is running, yet the
    runs screen must keep polling: a configuration not started yet keeps the bench going."""
    from lampbox.tui import runs

    (done,) = runs.list_benches(bench_store)
    assert done.started == done.runs and not done.in_progress
    stored, _, _ = _bench(bench_store)
    (bench_key, spec, _), *_ = run_store.list_benches(bench_store)
    grid = [(run.run_key, role) for run, role in stored]
    # The same bench as just saved by a new `lampbox bench`: its last configuration not run yet.
    run_store.save_bench(bench_store, bench_key, spec, [*grid, ("not-started-yet", "retrieval")])
    (between,) = runs.list_benches(bench_store)
    assert between.running == 0 and between.started == len(grid) < between.runs
    assert between.in_progress


def _failed_bench(db):  # type: ignore[no-untyped-def]
    """Run a bench that stops on an error in its first run (method fid on llama.cpp, a
    backend without passages: issue 23, found 7); returns the error's text."""
    import pytest

    from lampbox.bench.runner import BenchSpec, run_bench
    from lampbox.errors import LampboxError
    from lampbox.store import Store

    bench = BenchSpec("LaMP_7", "demo", "dev", retrievers=("bm25",), ks=(1,), backends=("llamacpp",), method="fid", limit=2)
    with Store(db) as store, pytest.raises(LampboxError, match="backend that takes passages") as raised:
        run_bench(bench, store)
    return str(raised.value)


def test_a_bench_that_stops_on_an_error_is_recorded_failed(demo_db) -> None:  # type: ignore[no-untyped-def]
    from lampbox.store import Store
    from lampbox.tui import runs

    error = _failed_bench(demo_db)
    with Store(demo_db, read_only=True) as store:
        (summary,) = runs.list_benches(store)
        (bench_key, _, _), *_ = run_store.list_benches(store)
        assert run_store.bench_status(store, bench_key) == ("failed", error)
    assert summary.started is not None and summary.started < summary.runs  # the rest never started
    assert not summary.in_progress and summary.state_text == " · failed"


async def test_the_runs_screen_shows_a_failed_bench_and_does_not_poll_it(demo_db, settle) -> None:  # type: ignore[no-untyped-def]
    _failed_bench(demo_db)
    app = create_app(store_path=demo_db)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("b")
        await settle(pilot)
        screen = app.screen
        assert isinstance(screen, RunsScreen)
        assert screen.poll_timer is None
        assert "bench failed: method fid needs a backend that takes passages" in str(
            screen.query_one("#runs-status", Static).render()
        )


async def test_a_plan_bench_shows_its_labels_and_gains_against_its_reference(bench_store, settle) -> None:  # type: ignore[no-untyped-def]
    """A bench from a plan (lampbox bench --plan / --config): the runs screen, unchanged, lists
    its rows under the plan's labels and breaks a row down against the plan's reference row."""
    from lampbox.bench.planfile import build_plan, parse_config_strings
    from lampbox.bench.runner import run_bench

    source = parse_config_strings([
        "method=ipa model=first-words backend=dummy label=plain",
        "method=ipa model=first-words backend=dummy retriever=bm25 k=1 label='with bm25'",
        "method=retrieval-only retriever=recency k=1 label=recent",
    ])  # fmt: skip
    plan = build_plan(source, bench_store.task("LaMP_7"), "demo", "dev", reference="recent")
    result = run_bench(plan, bench_store)
    keys = [row.record.run_key for row in result.rows]
    app = create_app(store=bench_store)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("b")
        await settle(pilot)
        screen = app.screen
        assert isinstance(screen, RunsScreen)
        assert screen.bench is not None and screen.bench.bench_key == result.bench_key  # the newest
        configurations = screen.query_one("#configurations", DataTable)
        assert _keys(configurations) == keys
        assert [str(configurations.get_row_at(i)[0]).strip() for i in range(3)] == ["plain", "with bm25", "recent"]

        await pilot.press("down", "enter")  # "with bm25", against "recent"
        await settle(pilot)
        users_screen = app.screen
        assert isinstance(users_screen, RunUsersScreen)
        expected = _expected_gains(bench_store, keys[1], keys[2])
        table = users_screen.query_one("#user-gains", DataTable)
        assert _keys(table) == sorted(expected, key=lambda user: (expected[user], user))


def _expected_buckets(store, run_keys: dict[str, str], reference: str) -> list[tuple[str, int, dict[str, float]]]:  # type: ignore[no-untyped-def]
    """Computed here from the stored per-user scores, as the peft-vs-rag report's docs describe
    its buckets: users scored in every run, quartile edges of their profile size in the
    `reference` run (numpy's default quantiles, repeated edges merged), a size on an inner edge
    in the upper bucket. Each non-empty bucket, then all users: (label, users, {name: mean})."""
    import numpy as np

    scores = {name: run_store.user_scores(store, key) for name, key in run_keys.items()}
    base = scores[reference]
    users = [u for u in base if all(u in s and s[u].main_score is not None for s in scores.values())]
    sizes = {user: base[user].profile_size for user in users}
    edges = sorted(set(np.quantile(list(sizes.values()), [0, 0.25, 0.5, 0.75, 1]).tolist()))
    members: dict[int, list[str]] = {}
    for user, size in sizes.items():
        members.setdefault(sum(size >= edge for edge in edges[1:-1]), []).append(user)
    groups = [(f"{edges[i]:.0f}-{edges[i + 1]:.0f}", members[i]) for i in sorted(members)] + [("all users", users)]
    return [
        (label, len(group), {name: sum(s[u].main_score for u in group) / len(group) for name, s in scores.items()})
        for label, group in groups
    ]


def _expected_history(store, run_key: str, baseline_key: str) -> list[tuple[str, int, float, float]]:  # type: ignore[no-untyped-def]
    """One run against its baseline: (label, users, baseline mean, run mean) per bucket."""
    buckets = _expected_buckets(store, {"baseline": baseline_key, "run": run_key}, "baseline")
    return [(label, users, means["baseline"], means["run"]) for label, users, means in buckets]


async def test_h_shows_the_gains_by_history_size_and_back(bench_store, settle) -> None:  # type: ignore[no-untyped-def]
    """Issue 25: the per-user gains screen shows the peft-vs-rag report's history buckets for
    any configuration (here bm25 against no personalization), read in a worker; `h` again
    gives the users back as they were."""
    import pytest

    runs, baseline, bm25 = _bench(bench_store)
    expected = _expected_history(bench_store, bm25.run_key, baseline.run_key)
    assert len(expected) >= 3 and expected[-1][1] == sum(count for _, count, _, _ in expected[:-1])  # >= 2 buckets
    app = create_app(store=bench_store)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("b")
        await settle(pilot)
        configurations = app.screen.query_one("#configurations", DataTable)
        await pilot.press(*["down"] * _keys(configurations).index(bm25.run_key), "enter")
        await settle(pilot)
        screen = app.screen
        assert isinstance(screen, RunUsersScreen)
        users = screen.query_one("#user-gains", DataTable)
        by_loss = _keys(users)
        assert screen.history is None  # read only when asked

        await pilot.press("h")
        await settle(pilot)
        history = screen.query_one("#history-gains", DataTable)
        assert history.display and not users.display and screen.focused is history
        assert screen.history is not None and screen.history.roles == {}  # no OPPU rows: one row
        assert "PEFT" not in str(screen.query_one("#gains-title", Static).render())
        shown = [[str(cell) for cell in history.get_row_at(i)] for i in range(history.row_count)]
        assert [(row[0], int(row[1])) for row in shown] == [(label, n) for label, n, _, _ in expected]
        for row, (_, _, base_mean, run_mean) in zip(shown, expected, strict=True):
            gain = run_mean - base_mean
            assert row[2:5] == [f"{base_mean:.4f}", f"{run_mean:.4f}", f"{gain:+.4f}"]
            assert row[5] == f"{gain / abs(base_mean) * 100:+.1f}%"
        exported = history.export.build()  # type: ignore[union-attr]
        assert exported.columns == ("history", "users", "baseline_score", "score", "gain", "relative_gain")
        for values, (_, users_in, base_mean, run_mean) in zip(exported.rows, expected, strict=True):
            assert values[1:5] == (users_in, pytest.approx(base_mean, abs=1e-12), pytest.approx(run_mean, abs=1e-12), pytest.approx(run_mean - base_mean, abs=1e-12))
        status = str(screen.query_one("#gains-status", Static).render())
        assert f"{expected[-1][1]} users in {len(expected) - 1} buckets" in status

        await pilot.press("h")
        await settle(pilot)
        assert users.display and not history.display and screen.focused is users
        assert _keys(users) == by_loss
        assert "lost" in str(screen.query_one("#gains-status", Static).render())


async def test_h_on_an_oppu_bench_shows_the_peft_vs_rag_analysis(bench_store, oppu_bench, settle, history_view) -> None:  # type: ignore[no-untyped-def]
    """Issue 25: on a bench whose rows the peft-vs-rag analysis finds all four roles in, `h`
    shows that report's RAG / PEFT / PEFT+RAG columns per bucket (each role's mean and its gain
    over none), whichever row was opened: the numbers recomputed here from the stored per-user
    scores and equal to `peft_vs_rag`'s; `E` exports them; `h` again gives the users back."""
    import pytest

    from lampbox.bench.peft_rag import peft_vs_rag

    bench_key, keys = oppu_bench["key"], oppu_bench["runs"]
    expected = _expected_buckets(bench_store, keys, "none")
    assert len(expected) >= 3  # >= 2 buckets and all users
    for role in ("rag", "peft", "both"):  # each role's scores differ from none's somewhere
        assert any(abs(means[role] - means["none"]) > 1e-9 for _, _, means in expected), role
    analysis = peft_vs_rag(bench_store, bench_key)
    assert analysis.rows == oppu_bench["labels"]
    app = create_app(store=bench_store)
    async with app.run_test(size=SIZE) as pilot:
        screen = await history_view(app, pilot, bench_key, keys["peft"])
        assert isinstance(screen, RunUsersScreen) and screen.row.run_key == keys["peft"]
        history = screen.query_one("#history-gains", DataTable)
        assert history.display and screen.focused is history
        headings = [str(column.label) for column in history.ordered_columns]
        assert headings == ["history", "users", "none", "RAG", "gain", "PEFT", "gain", "PEFT+RAG", "gain"]
        shown = [[str(cell) for cell in history.get_row_at(i)] for i in range(history.row_count)]
        assert [(row[0], int(row[1])) for row in shown] == [(label, n) for label, n, _ in expected]
        reported = [*analysis.buckets, analysis.overall]
        for row, (_, _, means), bucket in zip(shown, expected, reported, strict=True):
            cells = [f"{means['none']:.4f}"]
            for role in ("rag", "peft", "both"):
                gain = means[role] - means["none"]
                assert bucket.gains[role] == pytest.approx(gain, abs=1e-12)  # the report's numbers
                cells += [f"{means[role]:.4f}", f"{gain:+.4f}"]
            assert row[2:] == cells
        title = str(screen.query_one("#gains-title", Static).render())
        status = str(screen.query_one("#gains-status", Static).render())
        assert title.startswith("PEFT vs RAG by history size")
        assert "peft-vs-rag" in status and "PEFT: oppu" in status and f"{expected[-1][1]} users" in status
        assert screen.query_one("#user-gains-column").size.width == 86  # the nine columns fit

        exported = history.export.build()  # type: ignore[union-attr]
        assert exported.columns == (
            "history", "users", "none_score", "rag_score", "peft_score", "both_score", "rag_gain", "peft_gain",
            "both_gain", "rag_relative_gain", "peft_relative_gain", "both_relative_gain",
        )  # fmt: skip
        for values, bucket in zip(exported.rows, reported, strict=True):
            assert values == (
                bucket.label, bucket.users, *(bucket.means[r] for r in ("none", "rag", "peft", "both")),
                *(bucket.gains[r] for r in ("rag", "peft", "both")), *(bucket.relative[r] for r in ("rag", "peft", "both")),
            )  # fmt: skip

        await pilot.press("h")
        await settle(pilot)
        users = screen.query_one("#user-gains", DataTable)
        assert users.display and not history.display and screen.focused is users
        assert screen.query_one("#user-gains-column").size.width == 74
