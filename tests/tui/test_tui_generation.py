"""Generations side by side with the real packaged model (smollm2-135m-instruct on llama.cpp)."""

from __future__ import annotations

from pathlib import Path

import pytest
from textual.widgets import SelectionList, Static

from lampbox.engine import scoring
from lampbox.lab import pipeline
from lampbox.store import Store
from lampbox.tui import create_app
from lampbox.tui.screens.generate import GenerationScreen
from lampbox.tui.screens.prompt import PromptScreen
from lampbox.tui.screens.question import QuestionScreen

SIZE = (120, 36)
TOKENS = 4  # keep the model's work small: two panes of four new tokens


@pytest.fixture
def demo_store(tmp_path: Path):  # type: ignore[no-untyped-def]
    from lampbox.demo import demo_path
    from lampbox.store.importer import import_path

    store = Store(tmp_path / "demo.duckdb")
    import_path(store, demo_path(), task_name="LaMP_7", scheme="demo")
    yield store
    store.close()


async def _open_generation(app, pilot, settle) -> GenerationScreen:  # type: ignore[no-untyped-def]
    await settle(pilot)
    await pilot.press("enter")  # the first user
    await settle(pilot)
    await pilot.press("enter")  # their first question
    await settle(pilot)
    question_screen = app.screen
    assert isinstance(question_screen, QuestionScreen)
    question_screen.query_one("#retrievers", SelectionList).deselect("recency")
    await settle(pilot)
    assert question_screen.retrievers == ["bm25"]
    await pilot.press("g")
    await settle(pilot)
    screen = app.screen
    assert isinstance(screen, GenerationScreen)
    return screen


@pytest.mark.slow
async def test_generation_fills_and_scores_the_panes(demo_store, settle) -> None:  # type: ignore[no-untyped-def]
    app = create_app(store=demo_store, max_new_tokens=TOKENS)
    async with app.run_test(size=SIZE) as pilot:
        screen = await _open_generation(app, pilot, settle)
        panes = screen.panes
        assert [pane.config.label for pane in panes] == ["no personalization", "bm25 k=5"]
        task = demo_store.task(screen.question.task)
        for pane in panes:
            assert pane.state == "done" and not pane.cached
            assert pane.output.strip() and pane.pieces >= 1
            assert pane.prepared is not None
            assert pane.prepared.spec.params.max_new_tokens == TOKENS
            # The output was cached for the bench, and scored with the task's metric.
            assert pipeline.cached_output(demo_store, pane.prepared) == pane.output
            assert pane.scores == scoring.score_output(task, pane.output, screen.question.gold)
            assert "rouge-1" in str(pane.query_one(".pane-scores", Static).render())
        assert not panes[0].prepared.items  # type: ignore[union-attr]
        assert len(panes[1].prepared.items) == 5  # type: ignore[union-attr]

        # The exact prompt is one key away.
        panes[1].focus()
        await pilot.press("p")
        await pilot.pause()
        assert isinstance(app.screen, PromptScreen)
        shown = str(app.screen.query_one("#prompt-text", Static).render())
        assert shown == panes[1].prepared.prompt.text  # type: ignore[union-attr]
        await pilot.press("escape")
        await pilot.pause()

        # A second look is served from the generation cache at once.
        outputs = [pane.output for pane in panes]
        await pilot.press("escape")
        await settle(pilot)
        await pilot.press("g")
        await settle(pilot)
        again = app.screen
        assert isinstance(again, GenerationScreen)
        assert [pane.output for pane in again.panes] == outputs
        assert all(pane.cached and pane.state == "done" for pane in again.panes)


async def test_cancel_stops_generation(demo_store, settle, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import threading

    from lampbox.tui import generation

    release = threading.Event()

    def blocked(spec, question, store, pool):  # type: ignore[no-untyped-def]
        release.wait(10)
        raise RuntimeError("should have been cancelled")

    monkeypatch.setattr(generation, "prepare", blocked)
    app = create_app(store=demo_store, max_new_tokens=TOKENS)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("enter")
        await settle(pilot)
        await pilot.press("enter")
        await settle(pilot)
        await pilot.press("g")
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, GenerationScreen)
        await pilot.press("ctrl+x")
        release.set()
        await settle(pilot)
        assert all(pane.state == "cancelled" for pane in screen.panes)
        assert "cancelled" in str(screen.query_one("#generate-status", Static).render())


async def test_a_failing_model_becomes_a_notification(demo_store, settle, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from lampbox.errors import LampboxError
    from lampbox.tui import generation

    def broken(spec, question, store, pool):  # type: ignore[no-untyped-def]
        raise LampboxError("no such model file")

    monkeypatch.setattr(generation, "prepare", broken)
    app = create_app(store=demo_store)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("enter")
        await settle(pilot)
        await pilot.press("enter")
        await settle(pilot)
        await pilot.press("g")
        await settle(pilot)
        screen = app.screen
        assert isinstance(screen, GenerationScreen)
        assert all(pane.state == "failed" for pane in screen.panes)
        messages = [note.message for note in app._notifications]
        assert any("no such model file" in message for message in messages)
