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
