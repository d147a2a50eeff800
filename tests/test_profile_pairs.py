"""Profile items as (input, target) training pairs in each task's own format (OPPU's per-user
data): one case per built-in task, the stand-in custom tasks, a declared custom rule, and the
encoded examples."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lampbox.engine.tasks import builtin_task, load_task_json
from lampbox.errors import InputFileError, LampboxError

MOVIE_TAGS = "sci-fi, based on a book, comedy, action, twist ending, dystopia, dark comedy, classic, psychology, fantasy, romance, thought-provoking, social commentary, violence, true story"


@pytest.mark.parametrize(
    ("task", "fields", "pair"),
    [
        ("LaMP_1", {"title": "Deep nets", "abstract": "We study nets."}, ("", "Deep nets")),
        (
            "LaMP_2",
            {"description": "A robot falls in love.", "tag": "sci-fi"},
            (
                "Which tag does this movie relate to among the following tags? Just answer with the tag name without "
                f"further explanation. tags: [{MOVIE_TAGS}] description: A robot falls in love.",
                "sci-fi",
            ),
        ),
        (
            "LaMP_2N",
            {"title": "Rates", "text": "The bank raised rates.", "category": "business"},
            (
                "Which category does this article relate to among the following categories? Just answer with the "
                "category name without further explanation. categories: [food & drink, sports, education, parents, "
                "religion, travel, business, crime, science & technology, culture & arts, entertainment, politics, "
                "women, style & beauty, healthy living] article: The bank raised rates.",
                "business",
            ),
        ),
        (
            "LaMP_3",
            {"text": "Broke after two days.", "score": 1},
            (
                "What is the score of the following review on a scale of 1 to 5? just answer with 1, 2, 3, 4, or 5 "
                "without further explanation. review: Broke after two days.",
                "1",
            ),
        ),
        ("LaMP_4", {"title": "Storm hits coast", "text": "A storm..."}, ("", "Storm hits coast")),
        (
            "LaMP_5",
            {"title": "Deep nets", "abstract": "We study nets."},
            ("Generate a title for the following abstract of a paper: We study nets.", "Deep nets"),
        ),
        (
            "LaMP_6",
            {"title": "Lunch?", "text": "Are you free at noon?"},
            ("Generate a subject for the following email: Are you free at noon?", "Lunch?"),
        ),
        ("LaMP_7", {"text": "frost on the scope at 5:40am #birding"}, ("", "frost on the scope at 5:40am #birding")),
    ],
)
def test_each_builtin_task_turns_a_profile_item_into_its_own_pair(task: str, fields: dict, pair: tuple[str, str]) -> None:
    assert builtin_task(task).profile_pair(fields) == pair


def test_the_stand_in_custom_tasks_derive_their_rule_from_the_task_they_are_like(git_commits: Path) -> None:
    subject = load_task_json(git_commits / "commit_subject" / "task.json")  # like LaMP_4: plain LM of the subject
    assert subject.profile_pair({"title": "diff: faster", "text": "Speed up the diff."}) == ("", "diff: faster")
    area = load_task_json(git_commits / "commit_area" / "task.json")  # like LaMP_2: the question's format
    text, target = area.profile_pair({"text": "gitk: fix the colour of tags", "tag": "gitk"})
    assert text == area.input_prefix + "gitk: fix the colour of tags" and target == "gitk"
    assert "profile_input" not in area.to_json()  # derived: the fingerprint of older declarations stays


def test_a_custom_task_declares_its_rule_and_bad_fields_are_refused(tmp_path: Path) -> None:
    declaration = {
        "name": "recipes", "kind": "generation", "input_prefix": "Name this recipe:", "document": ["steps"],
        "profile_fields": ["name", "steps"], "ipa_item_template": '"{name}" is made by "{steps}" ',
        "profile_input": "Steps: {steps}. Name:", "profile_target": "{name}",
    }  # fmt: skip
    path = tmp_path / "task.json"
    path.write_text(json.dumps(declaration))
    task = load_task_json(path)
    assert task.profile_pair({"name": "Pancakes", "steps": "mix, fry"}) == ("Steps: mix, fry. Name:", "Pancakes")
    with pytest.raises(LampboxError, match="no field 'steps'"):
        task.profile_pair({"name": "Pancakes"})
    path.write_text(json.dumps({**declaration, "profile_target": "{title}"}))
    with pytest.raises(InputFileError, match="profile_target uses unknown field"):
        load_task_json(path)
    # without a rule: a generation task like no plain-LM task gets its input prefix + main text
    del declaration["profile_input"], declaration["profile_target"]
    declaration["target_field"] = "name"
    path.write_text(json.dumps(declaration))
    assert load_task_json(path).profile_pair({"name": "Pancakes", "steps": "mix, fry"}) == ("Name this recipe: mix, fry", "Pancakes")


@pytest.mark.slow
def test_profile_items_encode_as_training_examples(tiny_lm: Path) -> None:
    from transformers import AutoTokenizer

    from lampbox.engine.training.data import IGNORE_INDEX, encode_profile_examples
    from lampbox.engine.types import ProfileItem

    tokenizer = AutoTokenizer.from_pretrained(tiny_lm)
    tweet = ProfileItem("k1", "t1", {"text": "waxwings by the car park"})
    (lm,) = encode_profile_examples(tokenizer, True, builtin_task("LaMP_7"), [tweet])
    assert tokenizer.decode(lm.target_ids, skip_special_tokens=True) == "waxwings by the car park"
    assert len(lm.prompt_ids) <= 1 and lm.labels.count(IGNORE_INDEX) == len(lm.prompt_ids)  # the loss covers the text
    review = ProfileItem("k2", "r1", {"text": "Works fine.", "score": "4"})
    (rated,) = encode_profile_examples(tokenizer, True, builtin_task("LaMP_3"), [review])
    assert tokenizer.decode(rated.prompt_ids).endswith("review: Works fine.<|im_end|>\n<|im_start|>assistant\n")
    assert tokenizer.decode(rated.target_ids, skip_special_tokens=True) == "4"


# -- `--profile-pairs`: profile items as questions of the task for the task adapter -------------

SUBJECT = "Generate a subject for the following commit message: "


def _commit(key: str, date: str, title: str = "") -> dict:
    return {"id": key, "title": title or f"subject {key}", "text": f"message {key}", "date": date}


# Profile order is not time order: b (2021) is the oldest, d (2024) the newest; e's title is blank.
HISTORY = [_commit("a", "2023-05-01"), _commit("b", "2021-01-01"), _commit("d", "2024-02-02"), _commit("c", "2023-05-01"), _commit("e", "2022-01-01", " ")]


def _subject_task(git_commits: Path):  # type: ignore[no-untyped-def]
    return load_task_json(git_commits / "commit_subject" / "task.json")


def test_profile_questions_hold_only_the_users_earlier_items(git_commits: Path) -> None:
    from lampbox.engine.training.profile_pairs import profile_questions, time_order
    from lampbox.engine.types import ProfileItem

    task = _subject_task(git_commits)
    items = [ProfileItem(f"k{c['id']}", c["id"], c, c["date"]) for c in HISTORY]
    assert [item.id for item in time_order(items)] == ["b", "e", "a", "c", "d"]  # a before c: same date, profile order
    undated = [ProfileItem("k1", "x", {}, None), ProfileItem("k2", "y", {}, "2020-01-01")]
    assert [item.id for item in time_order(undated)] == ["x", "y"]  # a missing date: profile order
    questions = profile_questions(task, "user", "train", {"ann": items, "bob": items[:2]})
    by_id = {q.id: q for q in questions}
    assert [q.id for q in questions if q.user_id == "ann"] == [f"profile:ann:{x}" for x in "bacd"]  # e: no target
    dates = {c["id"]: c["date"] for c in HISTORY}
    for question in questions:
        item_id = question.id.rsplit(":", 1)[1]
        assert item_id not in {p.id for p in question.profile}  # never the item itself
        assert all(dates[p.id] <= dates[item_id] for p in question.profile)  # nor anything after it
        assert question.input == f"{SUBJECT}message {item_id}" and question.gold == f"subject {item_id}"
    assert [p.id for p in by_id["profile:ann:d"].profile] == ["b", "e", "a", "c"]
    assert [p.id for p in by_id["profile:ann:c"].profile] == ["b", "e", "a"]  # a: same date, earlier in the profile
    assert by_id["profile:ann:b"].profile == () and [p.id for p in by_id["profile:bob:a"].profile] == ["b"]
    with pytest.raises(LampboxError, match="makes no question of the task"):
        profile_questions(builtin_task("LaMP_7"), "user", "train", {"ann": items})


def test_question_pairs_follow_the_tasks_own_questions(git_commits: Path) -> None:
    assert builtin_task("LaMP_4").question_pair({"text": "Rain.", "title": "Wet"}) == ("Generate a headline for the following article: Rain.", "Wet")
    assert builtin_task("LaMP_6").question_pair({"text": "Hi", "title": "Re"}) == builtin_task("LaMP_6").profile_pair({"text": "Hi", "title": "Re"})
    assert builtin_task("LaMP_1").question_templates() is None and builtin_task("LaMP_7").question_templates() is None
    assert _subject_task(git_commits).question_pair(HISTORY[0])[1] == "subject a"


@pytest.fixture(scope="module")
def pairs_store(tmp_path_factory: pytest.TempPathFactory, git_commits: Path) -> Path:
    """commit_subject's task with two train questions of ann (HISTORY) and one of bob."""
    from lampbox.store import Store
    from lampbox.store.importer import import_path

    folder = tmp_path_factory.mktemp("pairs") / "commit_subject"
    folder.mkdir()
    (folder / "task.json").write_text((git_commits / "commit_subject" / "task.json").read_text())
    bob = [_commit("p", "2020-01-01"), _commit("q", "2020-02-01")]
    train = [
        {"id": "t1", "user_id": "ann", "input": f"{SUBJECT}fix the parser", "profile": HISTORY},
        {"id": "t2", "user_id": "ann", "input": f"{SUBJECT}speed up diff", "profile": HISTORY[:3]},
        {"id": "t3", "user_id": "bob", "input": f"{SUBJECT}colour moved lines", "profile": bob},
    ]
    (folder / "train_questions.json").write_text(json.dumps(train))
    golds = [{"id": q["id"], "output": f"gold {q['id']}"} for q in train]
    (folder / "train_outputs.json").write_text(json.dumps({"task": "commit_subject", "golds": golds}))
    path = folder.parent / "pairs.duckdb"
    with Store(path) as store:
        import_path(store, folder)
    return path


@pytest.mark.slow
def test_train_data_gains_the_profile_pairs_with_earlier_items_retrieved(pairs_store: Path, tiny_lm: Path) -> None:
    from transformers import AutoTokenizer

    from lampbox.engine.training.trainer import LoraSettings, TrainConfig
    from lampbox.lab.training import TrainSpec, prepare_data, profile_pair_questions
    from lampbox.store import Store

    config = TrainConfig(max_steps=1, lora=LoraSettings(r=4, alpha=8))
    plain = TrainSpec(task="commit_subject", scheme="user", k=1, model=str(tiny_lm), dev_limit=0, config=config)
    spec = TrainSpec(**{**plain.__dict__, "profile_pairs": True})
    assert "profile_pairs" not in plain.to_json() and spec.to_json()["profile_pairs"] is True  # part of its identity
    with Store(pairs_store) as store:
        task = store.task("commit_subject")
        questions = store.questions("commit_subject", "user", "train")
        pairs, selected = profile_pair_questions(spec, store, task, questions)
        without, with_pairs = prepare_data(plain, store), prepare_data(spec, store)
    # ann's 4 items with a subject (e's is blank) once each, though two questions share them; bob's 2
    assert sorted(p.id for p in pairs) == sorted([f"profile:ann:{x}" for x in "abcd"] + ["profile:bob:p", "profile:bob:q"])
    dates = {c["id"]: c["date"] for c in HISTORY} | {"p": "2020-01-01", "q": "2020-02-01"}
    for pair, items in zip(pairs, selected, strict=True):
        own = pair.id.rsplit(":", 1)[1]
        assert len(items) == min(1, len(pair.profile))  # k = 1 when the user has an earlier item
        assert all(item.id != own and dates[item.id] <= dates[own] and item in pair.profile for item in items)
    assert len(without.train) == 3 and len(with_pairs.train) == 3 + 6
    tokenizer = AutoTokenizer.from_pretrained(tiny_lm)
    prompts = {e.question_id: tokenizer.decode(e.prompt_ids) for e in with_pairs.train}
    for pair, items in zip(pairs, selected, strict=True):  # the prompt holds the retrieved item, then the pair's input
        own = pair.id.rsplit(":", 1)[1]
        context = prompts[pair.id].split(f"message: message {own}")[0]
        assert [f"message {item.id}" in context for item in items] == [True] * len(items)
        assert f"message {own}" not in context and "message d" not in prompts["profile:ann:c"]
    assert "message" not in prompts["profile:ann:b"].split("commit message: message b")[0]  # the oldest item: nothing retrieved
    assert tokenizer.decode(next(e for e in with_pairs.train if e.question_id == "profile:bob:q").target_ids, skip_special_tokens=True) == "subject q"
