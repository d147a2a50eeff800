"""ROPG feedback beside the rankings and RSPG probabilities on the generation panes: shown
when the store holds them for the question (inserted here through the store functions), and
nothing extra when it does not."""

from __future__ import annotations

from textual.widgets import Static

from lampbox.engine.types import (
    Candidate,
    CandidateProbability,
    ItemFeedback,
    ItemUtility,
    SelectorProbabilities,
)
from lampbox.store import browse, selection
from lampbox.tui import create_app
from lampbox.tui.generation import PaneChoice
from lampbox.tui.screens.generate import GenerationScreen
from lampbox.tui.screens.question import QuestionScreen
from lampbox.tui.widgets.table import LampboxTable

SIZE = (120, 36)
PANES = [PaneChoice("none", 0, "dummy"), PaneChoice("bm25", 2, "dummy")]


def _candidate(choice: PaneChoice) -> Candidate:
    return Candidate.of(choice.retriever, choice.k, choice.method, choice.backend, choice.model)


def _first_questions(store):  # type: ignore[no-untyped-def]
    dataset = browse.datasets(store)[0]
    user = browse.user_page(store, dataset, limit=1).rows[0]
    return dataset, browse.user_questions(store, dataset, user.user_id)


async def _open_question(app, pilot, settle, down: int) -> QuestionScreen:  # type: ignore[no-untyped-def]
    await settle(pilot)
    await pilot.press("enter")
    await settle(pilot)
    await pilot.press(*["down"] * down, "enter")
    await settle(pilot)
    screen = app.screen
    assert isinstance(screen, QuestionScreen) and screen.rankings
    return screen


def _title(widget) -> str:  # type: ignore[no-untyped-def]
    return str(widget.query_one(".pane-title", Static).render())


async def test_utilities_beside_the_rankings_when_stored(bench_store, settle) -> None:  # type: ignore[no-untyped-def]
    dataset, questions = _first_questions(bench_store)
    question = browse.question(bench_store, dataset, questions[0].question_id)
    # Feedback on every profile item but the last (an item without feedback shows "–").
    utilities = {item.key: round(0.1 * (index + 1), 3) for index, item in enumerate(question.profile[:-1])}
    items = tuple(ItemUtility(item.key, item.id, utilities[item.key]) for item in question.profile[:-1])
    selection.save_item_feedback(
        bench_store, dataset.task, dataset.scheme, [ItemFeedback(question.id, "fb-1", "smollm2 rouge-1", items)]
    )
    app = create_app(store=bench_store)
    async with app.run_test(size=SIZE) as pilot:
        screen = await _open_question(app, pilot, settle, down=0)
        panes = list(screen.query(".ranking-pane"))
        assert panes
        for pane, shown in zip(panes, screen.rankings, strict=True):
            assert "util: smollm2 rouge-1" in _title(pane)
            table = pane.query_one(LampboxTable)
            assert [str(column.label) for column in table.ordered_columns] == ["#", "score", "in", "util", "item"]
            shown_utilities = [str(value) for value in table.get_column("utility")]
            expected = [
                f"{utilities[ranked.item.key]:.3f}" if ranked.item.key in utilities else "–"
                for ranked in shown.items
            ]
            assert shown_utilities == expected
            # The export has it too, typed.
            data = table.export.build()  # type: ignore[union-attr]
            assert "utility" in data.columns
            column = data.columns.index("utility")
            assert [row[column] for row in data.rows] == [utilities.get(r.item.key) for r in shown.items]

        # A question without feedback: no utility column, nothing in the title.
        await pilot.press("escape")
        await settle(pilot)
        await pilot.press("down", "enter")
        await settle(pilot)
        other = app.screen
        assert isinstance(other, QuestionScreen) and other.question_id == questions[1].question_id
        for pane in other.query(".ranking-pane"):
            assert "util" not in _title(pane)
            labels = [str(column.label) for column in pane.query_one(LampboxTable).ordered_columns]
            assert labels == ["#", "score", "in", "item"]


async def test_selector_probabilities_on_the_panes_when_stored(bench_store, settle) -> None:  # type: ignore[no-untyped-def]
    dataset, questions = _first_questions(bench_store)
    recency = Candidate.of("recency", 2, "ipa", "dummy", PANES[0].model)
    scored = SelectorProbabilities(
        questions[0].question_id,
        "selector-1",
        "RSPG-Post",
        (
            CandidateProbability(_candidate(PANES[0]), 0.25),
            CandidateProbability(_candidate(PANES[1]), 0.6),
            CandidateProbability(recency, 0.15),
        ),
    )
    selection.save_selector_probabilities(bench_store, dataset.task, dataset.scheme, [scored])
    app = create_app(store=bench_store, max_new_tokens=4)
    app.pane_choices = list(PANES)
    async with app.run_test(size=SIZE) as pilot:
        await _open_question(app, pilot, settle, down=0)
        await pilot.press("g")
        await settle(pilot)
        screen = app.screen
        assert isinstance(screen, GenerationScreen)
        titles = [_title(pane) for pane in screen.panes]
        assert "RSPG-Post p=0.250" in titles[0] and "★" not in titles[0]
        assert "RSPG-Post p=0.600" in titles[1] and "★ selector's pick" in titles[1]
        # A pane whose choice the selector did not score says so; the pick stays marked.
        screen.panes[0].focus()
        await pilot.press("m")
        await settle(pilot)
        from textual.widgets import Input

        box = app.screen
        box.query_one("#choice-k", Input).value = "3"
        box.query_one("#choice-retriever").value = "recency"  # type: ignore[attr-defined]
        await pilot.pause()
        await pilot.click("#choice-use")
        await settle(pilot)
        titles = [_title(pane) for pane in screen.panes]
        assert "RSPG-Post not a candidate" in titles[0]
        assert "★ selector's pick" in titles[1]

        # Another question, no probabilities stored: nothing extra on the panes.
        await pilot.press("escape")
        await settle(pilot)
        await pilot.press("escape")
        await settle(pilot)
        await pilot.press("down", "enter")
        await settle(pilot)
        await pilot.press("g")
        await settle(pilot)
        screen = app.screen
        assert isinstance(screen, GenerationScreen)
        assert screen.question.id == questions[1].question_id
        for pane in screen.panes:
            title = _title(pane)
            assert "RSPG" not in title and "p=" not in title and "★" not in title


async def test_a_selection_lists_its_candidates_and_marks_the_oracle(bench_store, settle) -> None:  # type: ignore[no-untyped-def]
    """A selection stored as a run naming its pool: the panes mark the oracle's pick (the best
    stored score) beside the selector's, and the list under the panes gives every candidate's
    probability, stored answer and score."""
    from lampbox.engine.types import Prediction
    from lampbox.store import runs as run_store

    dataset, questions = _first_questions(bench_store)
    question_id = questions[0].question_id
    pool = []
    for index, (choice, output, score) in enumerate(zip(PANES, ("the none answer", "the bm25 answer"), (0.7, 0.2), strict=True)):
        key = f"pool-{index}"
        spec = {"task": dataset.task, "scheme": dataset.scheme, "split": dataset.split, "retriever": choice.retriever,
                "k": choice.k, "method": choice.method, "backend": choice.backend, "model": choice.model}  # fmt: skip
        run_store.start_run(bench_store, key, f"pool {index}", spec, 1)
        prediction = Prediction(question_id, "u", "p", (), (), {}, 1, output, output, "gold", {"rouge-1": score}, score)
        run_store.finish_run(bench_store, key, {"rouge-1": score}, [prediction], [], None)
        pool.append(key)
    selection_spec = {"task": dataset.task, "scheme": dataset.scheme, "split": dataset.split, "method": "rspg-post",
                      "selector": "sel", "pool": pool, "configurations": ["no retrieval", "bm25 two"]}  # fmt: skip
    run_store.start_run(bench_store, "sel-run", "rspg-post:sel", selection_spec, 1, kind="rspg")
    scored = SelectorProbabilities(question_id, "sel-run", "rspg-post:sel", (
        CandidateProbability(_candidate(PANES[0]), 0.3), CandidateProbability(_candidate(PANES[1]), 0.7),
    ))  # fmt: skip
    selection.save_selector_probabilities(bench_store, dataset.task, dataset.scheme, [scored])
    app = create_app(store=bench_store, max_new_tokens=4)
    app.pane_choices = list(PANES)
    async with app.run_test(size=SIZE) as pilot:
        await _open_question(app, pilot, settle, down=0)
        await pilot.press("g")
        await settle(pilot)
        screen = app.screen
        assert isinstance(screen, GenerationScreen)
        titles = [_title(pane) for pane in screen.panes]
        assert "◆ oracle's pick" in titles[0] and "★" not in titles[0]  # none scored 0.7: the oracle's
        assert "★ selector's pick" in titles[1] and "◆" not in titles[1]
        listed = str(screen.query_one("#generate-selection", Static).render())
        lines = listed.splitlines()[1:]
        assert lines[0].startswith(" ◆ p=0.300  score 0.700") and "no retrieval: the none answer" in lines[0]
        assert lines[1].startswith("★  p=0.700  score 0.200") and "bm25 two: the bm25 answer" in lines[1]
