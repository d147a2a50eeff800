"""Snapshots of the main screens at a fixed terminal size (pytest-textual-snapshot).

Update them after a deliberate change with `pytest tests/tui --snapshot-update` and review
the SVGs in tests/tui/__snapshots__.
"""

from __future__ import annotations

from pathlib import Path

from lampbox.tui import create_app

SIZE = (120, 36)


def _after(settle, *keys: str):  # type: ignore[no-untyped-def]
    """Press the keys, waiting for the workers before and after each; then have the footer
    show the focused widget's keys (its update after a focus change can otherwise land after
    the screenshot, e.g. `E Export` of a focused table)."""

    async def run_before(pilot) -> None:  # type: ignore[no-untyped-def]
        await settle(pilot)
        for key in keys:
            await pilot.press(key)
            await settle(pilot)
        pilot.app.screen.refresh_bindings()
        await settle(pilot)

    return run_before


def test_users_screen(snap_compare, commits_store, settle) -> None:  # type: ignore[no-untyped-def]
    assert snap_compare(
        create_app(store=commits_store), terminal_size=SIZE, run_before=_after(settle, "down")
    )


def test_user_screen(snap_compare, commits_store, settle) -> None:  # type: ignore[no-untyped-def]
    assert snap_compare(
        create_app(store=commits_store),
        terminal_size=SIZE,
        run_before=_after(settle, "down", "enter"),
    )


def test_question_screen(snap_compare, commits_store, settle) -> None:  # type: ignore[no-untyped-def]
    app = create_app(store=commits_store)
    assert snap_compare(
        app, terminal_size=SIZE, run_before=_after(settle, "down", "enter", "enter")
    )


def test_empty_store_screen(snap_compare, empty_store_path: Path, settle) -> None:  # type: ignore[no-untyped-def]
    assert snap_compare(create_app(empty_store_path), terminal_size=SIZE, run_before=_after(settle))


def test_help_screen(snap_compare, commits_store, settle) -> None:  # type: ignore[no-untyped-def]
    assert snap_compare(
        create_app(store=commits_store),
        terminal_size=SIZE,
        run_before=_after(settle, "question_mark"),
    )


def test_runs_screen(snap_compare, bench_store, settle) -> None:  # type: ignore[no-untyped-def]
    assert snap_compare(
        create_app(store=bench_store), terminal_size=SIZE, run_before=_after(settle, "b")
    )


def test_run_users_screen(snap_compare, bench_store, settle) -> None:  # type: ignore[no-untyped-def]
    # The second configuration of the bench: bm25 k=1 against no personalization.
    assert snap_compare(
        create_app(store=bench_store),
        terminal_size=SIZE,
        run_before=_after(settle, "b", "down", "enter"),
    )


def test_failures_screen(snap_compare, bench_store, settle) -> None:  # type: ignore[no-untyped-def]
    assert snap_compare(
        create_app(store=bench_store),
        terminal_size=SIZE,
        run_before=_after(settle, "b", "down", "enter", "enter"),
    )


def _whatif(settle, *after: str):  # type: ignore[no-untyped-def]
    """To the question, exclude the first profile item and pin the third, then the keys."""

    async def run_before(pilot) -> None:  # type: ignore[no-untyped-def]
        from textual.widgets import DataTable

        await _after(settle, "down", "enter", "enter")(pilot)
        pilot.app.screen.query_one("#question-profile", DataTable).focus()
        for key in ("x", "down", "down", "P", *after):
            await pilot.press(key)
            await settle(pilot)

    return run_before


def test_question_screen_with_whatif_edits(snap_compare, commits_store, settle) -> None:  # type: ignore[no-untyped-def]
    assert snap_compare(
        create_app(store=commits_store), terminal_size=SIZE, run_before=_whatif(settle)
    )


def test_whatif_generation_screen(snap_compare, commits_store, settle) -> None:  # type: ignore[no-untyped-def]
    """The edited outputs over the originals and the difference, on the dummy stand-in; the
    second `g` serves every output from the cache, so no timing shows."""
    from lampbox.tui.generation import PaneChoice

    app = create_app(store=commits_store, max_new_tokens=8)
    app.pane_choices = [PaneChoice("none", 0, "dummy"), PaneChoice("bm25", 2, "dummy")]
    assert snap_compare(app, terminal_size=SIZE, run_before=_whatif(settle, "g", "escape", "g"))
