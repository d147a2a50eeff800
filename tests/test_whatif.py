"""What-if edits: the engine's item selection and prompts, the pipeline's keys, saved what-ifs."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from lampbox.engine.generation.base import GenerationParams
from lampbox.engine.generation.pool import GeneratorPool
from lampbox.engine.prompting import PromptBuilder
from lampbox.engine.tasks import builtin_task
from lampbox.engine.types import ProfileItem, Question, Ranking
from lampbox.engine.whatif import WhatIf, score_delta
from lampbox.errors import LampboxError
from lampbox.lab import pipeline
from lampbox.lab.specs import RunSpec
from lampbox.lab.whatif import list_whatifs, save_whatif
from lampbox.store import Store
from lampbox.store import runs as run_store


class Words:
    """One token per whitespace-separated word."""

    def __init__(self) -> None:
        self.words: list[str] = []

    def encode(self, text: str) -> list[int]:
        ids = []
        for word in text.split():
            if word not in self.words:
                self.words.append(word)
            ids.append(self.words.index(word))
        return ids

    def decode(self, token_ids: Sequence[int]) -> str:
        return " ".join(self.words[token_id] for token_id in token_ids)


def make_question(count: int = 6, words: int = 3) -> Question:
    profile = tuple(
        ProfileItem(f"k{index}", f"i{index}", {"text": " ".join([f"w{index}"] * words)})
        for index in range(count)
    )
    return Question(
        "LaMP_7",
        "user",
        "dev",
        "q1",
        "u1",
        "Paraphrase the following tweet: hello there",
        "hi",
        profile,
    )


def ranking_of(
    question: Question, order: Sequence[int], context_limit: int | None = None
) -> Ranking:
    keys = tuple(f"k{index}" for index in order)
    return Ranking(
        question.id,
        "bm25",
        keys,
        keys,
        tuple(1.0 / (n + 1) for n in range(len(keys))),
        context_limit,
    )


# -- the engine ----------------------------------------------------------------------------


def test_pinned_first_excluded_skipped_and_k_kept() -> None:
    question = make_question()
    ranking = ranking_of(question, [3, 1, 4, 0, 5, 2])
    plain = WhatIf()
    assert [item.key for item in plain.select(question, ranking, 3)] == ["k3", "k1", "k4"]
    edit = WhatIf().toggle_excluded("k1").toggle_pinned("k2").toggle_pinned("k5")
    # Pinned in pin order, then the ranking without the excluded and the pinned, k in all.
    assert [item.key for item in edit.select(question, ranking, 3)] == ["k2", "k5", "k3"]
    assert [item.key for item in edit.select(question, ranking, 5)] == [
        "k2",
        "k5",
        "k3",
        "k4",
        "k0",
    ]
    # More pins than k: every pinned item stays, nothing else comes in.
    assert [item.key for item in edit.select(question, ranking, 1)] == ["k2", "k5"]
    # No personalization (k = 0, no ranking, or a retriever that selects nothing): no items.
    assert edit.select(question, ranking, 0) == []
    assert edit.select(question, None, 3) == []
    assert edit.select(question, ranking_of(question, [0, 1], context_limit=0), 3) == []


def test_toggles_move_an_item_between_excluded_and_pinned() -> None:
    edit = WhatIf().toggle_pinned("a").toggle_excluded("a")
    assert (edit.excluded, edit.pinned) == (("a",), ())
    edit = edit.toggle_pinned("a")
    assert (edit.excluded, edit.pinned) == ((), ("a",))
    assert edit.toggle_pinned("a").is_empty
    with pytest.raises(LampboxError, match="both excluded and pinned"):
        WhatIf(excluded=("a",), pinned=("a",))
    with pytest.raises(LampboxError, match="needs its text"):
        WhatIf(input=" ", new_question=True)


def test_an_edited_input_replaces_the_input_and_a_new_question_has_no_gold() -> None:
    question = make_question()
    edited = WhatIf().with_input("Paraphrase the following tweet: good morning").question(question)
    assert (edited.input, edited.gold, edited.id) == (
        "Paraphrase the following tweet: good morning",
        "hi",
        "q1",
    )
    new = WhatIf().with_input("Paraphrase the following tweet: new one", new_question=True)
    assert new.question(question).gold is None and new.describe() == "new question"
    assert WhatIf().with_input(None).question(question) is question


def test_json_round_trip_and_describe() -> None:
    edit = WhatIf(excluded=("b", "a"), pinned=("c",), input="x")
    assert edit.excluded == ("a", "b")
    assert WhatIf.from_json(edit.to_json()) == edit
    assert edit.describe() == "2 excluded · 1 pinned · input edited"
    assert score_delta({"rouge-1": 0.5, "rouge-L": 0.25}, {"rouge-1": 0.25}) == {"rouge-1": 0.25}
    assert score_delta({"rouge-1": 0.5}, {}) == {}


def test_the_edit_is_part_of_the_cache_key() -> None:
    edit = WhatIf(excluded=("k1",))
    assert WhatIf().cache_key("base", "q1") == "base"
    keys = {
        edit.cache_key("base", "q1"),
        edit.cache_key("base", "q2"),
        WhatIf(pinned=("k1",)).cache_key("base", "q1"),
    }
    assert "base" not in keys and len(keys) == 3


def test_edited_prompts_take_pinned_items_first_within_the_budget() -> None:
    task = builtin_task("LaMP_7")
    question = make_question(count=6, words=40)
    ranking = ranking_of(question, [0, 1, 2, 3, 4, 5])
    builder = PromptBuilder(task, Words(), max_length=64)
    edit = WhatIf(excluded=("k0",), pinned=("k5", "k4"))
    prompt = builder.build(question.input, edit.select(question, ranking, 4))
    assert prompt.item_keys == ("k5", "k4", "k1", "k2")
    assert prompt.token_count <= prompt.budget == 64
    assert prompt.text.index("w5") < prompt.text.index("w4") < prompt.text.index("w1")
    assert "w0" not in prompt.text
    # The same budget as the unedited prompt of the same k.
    plain = builder.build(question.input, WhatIf().select(question, ranking, 4))
    assert plain.budget == prompt.budget and plain.item_keys == ("k0", "k1", "k2", "k3")


# -- the pipeline and the store --------------------------------------------------------------


@pytest.fixture(scope="module")
def demo_store_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from lampbox.demo import demo_path
    from lampbox.store.importer import import_path

    path = tmp_path_factory.mktemp("whatif") / "demo.duckdb"
    with Store(path) as store:
        import_path(store, demo_path(), task_name="LaMP_7", scheme="demo")
    return path


@pytest.fixture
def demo_store(tmp_path: Path, demo_store_path: Path):  # type: ignore[no-untyped-def]
    import shutil

    shutil.copy(demo_store_path, tmp_path / "demo.duckdb")
    with Store(tmp_path / "demo.duckdb") as store:
        yield store


def _first_question(store: Store) -> Question:
    return store.questions("LaMP_7", "demo", "dev", limit=1)[0]


SPEC = RunSpec("LaMP_7", "demo", "dev", retriever="bm25", k=2, backend="dummy", model="first-words",
               params=GenerationParams(max_new_tokens=8))  # fmt: skip


def _ranked_rows(store: Store) -> int:
    return int(store.cursor().execute("SELECT count(*) FROM rankings").fetchone()[0])  # type: ignore[index]


def test_an_edit_never_hits_or_fills_the_unedited_cache_entry(demo_store: Store) -> None:
    pool = GeneratorPool()
    question = _first_question(demo_store)
    plain = pipeline.prepare_question(SPEC, question, demo_store, pool)
    generator = pool.get(SPEC.backend, SPEC.model)
    pipeline.remember_output(demo_store, plain, generator, "the unedited output")
    # Excluding an item that is not in the top k gives the very same prompt, and yet its own key.
    unused = next(item.key for item in question.profile if item.key not in plain.prompt.item_keys)
    same_prompt = pipeline.prepare_question(
        SPEC, question, demo_store, pool, WhatIf(excluded=(unused,))
    )
    assert same_prompt.prompt.text == plain.prompt.text
    assert same_prompt.cache_key != plain.cache_key and same_prompt.is_whatif
    assert pipeline.cached_output(demo_store, same_prompt) is None
    pipeline.remember_output(demo_store, same_prompt, generator, "the edited output")
    assert pipeline.cached_output(demo_store, plain) == "the unedited output"
    assert pipeline.cached_output(demo_store, same_prompt) == "the edited output"
    # Excluding the top item: it is skipped and the next one comes in.
    top = plain.prompt.item_keys[0]
    excluded = pipeline.prepare_question(SPEC, question, demo_store, pool, WhatIf(excluded=(top,)))
    assert top not in excluded.prompt.item_keys and len(excluded.items) == 2
    # An empty edit is the question as it is.
    assert (
        pipeline.prepare_question(SPEC, question, demo_store, pool, WhatIf()).cache_key
        == plain.cache_key
    )


def test_an_edited_input_is_ranked_without_the_stored_rankings(demo_store: Store) -> None:
    pool = GeneratorPool()
    question = _first_question(demo_store)
    pipeline.prepare_question(SPEC, question, demo_store, pool)
    stored = _ranked_rows(demo_store)
    text = question.input.replace(question.input[-30:], " a completely different tweet about lunch")
    edited = pipeline.prepare_question(SPEC, question, demo_store, pool, WhatIf().with_input(text))
    assert edited.question is not None and edited.question.input == text
    assert edited.prompt.text.endswith("a completely different tweet about lunch")
    assert _ranked_rows(demo_store) == stored  # nothing kept under the stored question's id


def test_a_saved_whatif_is_a_run_apart_from_benchmark_runs(demo_store: Store) -> None:
    from lampbox.engine import scoring

    pool = GeneratorPool()
    question = _first_question(demo_store)
    plain = pipeline.prepare_question(SPEC, question, demo_store, pool)
    edit = WhatIf(excluded=(plain.prompt.item_keys[0],))
    edited = pipeline.prepare_question(SPEC, question, demo_store, pool, edit)
    key = save_whatif(demo_store, edited, question, "edited words", "original words")
    assert run_store.list_runs(demo_store) == []  # never benchmark data
    (stored,) = run_store.list_runs(demo_store, kind="whatif")
    assert (
        stored.run_key == key
        and stored.kind == "whatif"
        and stored.spec["whatif"] == edit.to_json()
    )
    with pytest.raises(LampboxError, match="saved what-if"):
        pipeline.load_run(demo_store, key)
    (saved,) = list_whatifs(demo_store)
    task = demo_store.task("LaMP_7")
    assert (
        saved.edit == edit
        and saved.question_id == question.id
        and saved.user_id == question.user_id
    )
    assert saved.prediction.output == "edited words"
    assert saved.prediction.prompt == edited.prompt.text
    assert saved.prediction.item_keys == edited.prompt.item_keys
    assert dict(saved.prediction.scores) == scoring.score_output(
        task, "edited words", question.gold
    )
    assert saved.original_output == "original words"
    assert saved.original_scores == scoring.score_output(task, "original words", question.gold)
    assert saved.delta == {
        name: saved.prediction.scores[name] - saved.original_scores[name]
        for name in saved.original_scores
    }
    assert "what-if" in saved.label and "1 excluded" in saved.label
    # Saving it again replaces it; the question as it is cannot be saved as a what-if.
    assert save_whatif(demo_store, edited, question, "edited words", "original words") == key
    assert len(list_whatifs(demo_store)) == 1
    with pytest.raises(LampboxError, match="only an edited question"):
        save_whatif(demo_store, plain, question, "x")
