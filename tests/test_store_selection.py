"""ROPG feedback and RSPG selector probabilities in the store (migration m007)."""

from __future__ import annotations

from pathlib import Path

from lampbox.engine.types import (
    Candidate,
    CandidateProbability,
    ItemFeedback,
    ItemUtility,
    SelectorProbabilities,
)
from lampbox.store import Store, selection


def feedback(question_id: str, key: str, utilities: dict[str, float]) -> ItemFeedback:
    items = tuple(
        ItemUtility(item_key, f"id-{item_key}", value) for item_key, value in utilities.items()
    )
    return ItemFeedback(question_id, key, f"label {key}", items)


def test_item_feedback_round_trip_replace_and_newest(tmp_path: Path) -> None:
    with Store(tmp_path / "s.duckdb") as store:
        assert selection.item_feedback(store, "LaMP_7", "demo", "q1") is None
        selection.save_item_feedback(
            store,
            "LaMP_7",
            "demo",
            [
                feedback("q1", "model-a", {"k1": 0.5, "k2": 0.9}),
                feedback("q2", "model-a", {"k3": 0.1}),
            ],
        )
        found = selection.item_feedback(store, "LaMP_7", "demo", "q1")
        assert (
            found is not None and found.feedback_key == "model-a" and found.label == "label model-a"
        )
        assert [(item.item_key, item.item_id, item.utility) for item in found.items] == [
            ("k2", "id-k2", 0.9),
            ("k1", "id-k1", 0.5),
        ]  # best first
        assert found.utility("k1") == 0.5 and found.utility("missing") is None
        # Saving the same key again replaces that question's rows (no duplicates).
        selection.save_item_feedback(
            store, "LaMP_7", "demo", [feedback("q1", "model-a", {"k1": 0.2})]
        )
        again = selection.item_feedback(store, "LaMP_7", "demo", "q1")
        assert again is not None and [item.item_key for item in again.items] == ["k1"]
        assert selection.item_feedback(store, "LaMP_7", "demo", "q2") is not None  # untouched
        # Another scheme or task does not see it.
        assert selection.item_feedback(store, "LaMP_7", "user", "q1") is None
        # A later feedback is the one shown; the earlier one is still there by key.
        store.connection.execute(
            "UPDATE ropg_feedback SET created_at = created_at - INTERVAL 1 HOUR"
        )
        selection.save_item_feedback(
            store, "LaMP_7", "demo", [feedback("q1", "model-b", {"k9": 1.0})]
        )
        newest = selection.item_feedback(store, "LaMP_7", "demo", "q1")
        assert newest is not None and newest.feedback_key == "model-b"
        older = selection.item_feedback(store, "LaMP_7", "demo", "q1", feedback_key="model-a")
        assert older is not None and older.utility("k1") == 0.2


def test_selector_probabilities_round_trip_and_the_pick(tmp_path: Path) -> None:
    none = Candidate.of("none", 4, "ipa", "llamacpp", "smollm2-135m-instruct")
    bm25 = Candidate.of("bm25", 4, "ipa", "llamacpp", "smollm2-135m-instruct")
    assert none == Candidate("none", 0, "ipa", "llamacpp", "smollm2-135m-instruct")  # one spelling
    scored = SelectorProbabilities(
        "q1",
        "sel-1",
        "RSPG-Post",
        (CandidateProbability(none, 0.3), CandidateProbability(bm25, 0.7)),
    )
    with Store(tmp_path / "s.duckdb") as store:
        assert selection.selector_probabilities(store, "LaMP_7", "demo", "q1") is None
        selection.save_selector_probabilities(store, "LaMP_7", "demo", [scored])
        found = selection.selector_probabilities(store, "LaMP_7", "demo", "q1")
        assert found is not None and found.label == "RSPG-Post" and found.selector_key == "sel-1"
        assert found.probability(bm25) == 0.7 and found.probability(none) == 0.3
        assert found.chosen == bm25
        assert (
            found.probability(
                Candidate.of("recency", 4, "ipa", "llamacpp", "smollm2-135m-instruct")
            )
            is None
        )
        selection.save_selector_probabilities(
            store, "LaMP_7", "demo", [scored]
        )  # replaced, not doubled
        assert len(store.connection.execute("SELECT * FROM rspg_probabilities").fetchall()) == 2
