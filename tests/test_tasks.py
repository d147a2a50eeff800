"""Task specs: queries, documents, detection and custom task declarations."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lampbox.engine.tasks import BUILTIN_TASKS, builtin_task, detect_task, load_task_json
from lampbox.errors import InputFileError, UnknownNameError


def test_every_lamp_task_is_declared() -> None:
    assert set(BUILTIN_TASKS) == {"LaMP_1", "LaMP_2", "LaMP_2N", "LaMP_3", "LaMP_4", "LaMP_5", "LaMP_6", "LaMP_7"}
    assert builtin_task("LaMP_2N").file_task == "LaMP_2"
    assert builtin_task("lamp-7").name == "LaMP_7"
    assert builtin_task("LaMP_3").metrics == ("mae", "rmse")
    assert not builtin_task("LaMP_3").higher_is_better()
    assert len(builtin_task("LaMP_2").labels) == 15 and len(builtin_task("LaMP_2N").labels) == 15


def test_unknown_task_suggests_the_closest() -> None:
    with pytest.raises(UnknownNameError, match="Did you mean LaMP_7"):
        builtin_task("LaMP_77")


def test_lamp1_query_is_the_two_candidate_titles() -> None:
    spec = BUILTIN_TASKS["LaMP_1"]
    text = (
        'For an author who has written the paper with the title "Deep nets", which reference is related? '
        'Just answer with [1] or [2] without explanation. [1]: "Old trees" [2]: "New forests"'
    )
    assert spec.query(text) == "Old trees New forests"


@pytest.mark.parametrize(
    ("task", "text", "query"),
    [
        ("LaMP_2", "Which tag does this movie relate to among the following tags? tags: [x] description: A film. ", "A film."),
        ("LaMP_2N", "Which category does this article relate to among the following categories? article: News here", "News here"),
        ("LaMP_3", "What is the score of the following review on a scale of 1 to 5? review: Great: really", "Great: really"),
        ("LaMP_4", "Generate a headline for the following article: Body: text", "Body: text"),
        ("LaMP_5", "Generate a title for the following abstract of a paper: We study x: y", "We study x: y"),
        ("LaMP_7", "Paraphrase the following tweet without any explanation before or after it: hi: there", "hi: there"),
    ],
)
def test_queries_follow_the_official_extraction(task: str, text: str, query: str) -> None:
    assert BUILTIN_TASKS[task].query(text) == query


def test_question_text_is_the_input_after_the_instruction() -> None:
    lamp7 = BUILTIN_TASKS["LaMP_7"]
    text = lamp7.input_prefix + " so tired of waiting: again"
    assert lamp7.question_text(text) == "so tired of waiting: again"
    lamp2 = BUILTIN_TASKS["LaMP_2"]
    assert lamp2.question_text(lamp2.input_prefix + " tags: [comedy, classic] description: A film.") == "A film."
    lamp1 = (
        'For an author who has written the paper with the title "Deep nets", which reference is related? '
        'Just answer with [1] or [2] without explanation. [1]: "Old trees" [2]: "New forests"'
    )
    assert BUILTIN_TASKS["LaMP_1"].question_text(lamp1) == '"Deep nets": [1] "Old trees" [2] "New forests"'


def test_missing_marker_falls_back_to_the_whole_input() -> None:
    assert BUILTIN_TASKS["LaMP_3"].query("  no marker here ") == "no marker here"


def test_document_text_and_date_option() -> None:
    spec = BUILTIN_TASKS["LaMP_4"]
    assert spec.document_text({"title": "T", "text": "body"}) == "T body"
    assert spec.document_text({"title": "T", "text": "body"}, "2020-01-02") == "T body date: 2020-01-02"


def test_detect_task_from_input() -> None:
    assert detect_task("Which tag does this movie relate to among the following tags? ...").name == "LaMP_2"
    assert detect_task("Which category does this article relate to among the following categories? ...").name == "LaMP_2N"
    assert detect_task("Something else") is None


def test_stand_in_task_declarations_load(git_commits: Path) -> None:
    subject = load_task_json(git_commits / "commit_subject" / "task.json")
    assert subject.custom and subject.kind == "generation" and subject.like == "LaMP_4"
    assert subject.metrics == ("rouge-1", "rouge-L")
    assert subject.query("Generate a subject for the following commit message: body: more") == "body: more"
    assert subject.document_text({"title": "t", "text": "x"}) == "t x"
    assert subject.ipa_truncate_field == "text" and subject.target_field == "title"
    area = load_task_json(git_commits / "commit_area" / "task.json")
    assert area.kind == "classification" and len(area.labels) == 15 and area.target_field == "tag"
    assert area.query("... areas: [a, b] commit: the body") == "the body"


@pytest.mark.parametrize(
    ("declaration", "problem"),
    [
        ({"name": "x", "kind": "generation", "input_prefix": "p"}, "missing key"),
        ({"name": "LaMP_4", "kind": "generation", "input_prefix": "p", "document": ["text"], "ipa_item_template": "{text}"}, "built-in"),
        ({"name": "x", "kind": "poetry", "input_prefix": "p", "document": ["text"], "ipa_item_template": "{text}"}, "kind"),
        ({"name": "x", "kind": "classification", "input_prefix": "p", "document": ["text"], "ipa_item_template": "{text}"}, "labels"),
        ({"name": "x", "kind": "generation", "input_prefix": "p", "document": ["text"], "ipa_item_template": "{nope}"}, "unknown field"),
        ({"name": "x", "kind": "generation", "input_prefix": "p", "document": ["text"], "ipa_item_template": "{text}", "metrics": ["accuracy"]}, "do not fit"),
    ],
)
def test_bad_task_declarations_name_the_file(tmp_path: Path, declaration: dict, problem: str) -> None:
    path = tmp_path / "task.json"
    path.write_text(json.dumps(declaration))
    with pytest.raises(InputFileError, match=problem) as caught:
        load_task_json(path)
    assert str(path) in str(caught.value)


CLASSIFICATION = {"name": "x", "kind": "classification", "input_prefix": "p", "document": ["text"], "ipa_item_template": "{text}"}


@pytest.mark.parametrize(
    ("labels", "problem"),
    [
        ("notalist", 'labels must be a list of strings, not "notalist"'),
        ({"a": 1}, "labels must be a list of strings"),
        ([1, 2, 3], "label #0 is 1, not a string"),
        (["a", None], "label #1 is null, not a string"),
        (["a", "b", "a"], "label 'a' appears twice"),
        (["a", ""], "label #1 is empty"),
        (["a", "  "], "label #1 is empty"),
        (["a", " b"], "label ' b' has spaces around it"),
    ],
)
def test_labels_are_a_list_of_unique_non_empty_strings(tmp_path: Path, labels: object, problem: str) -> None:
    path = tmp_path / "task.json"
    path.write_text(json.dumps({**CLASSIFICATION, "labels": labels}))
    with pytest.raises(InputFileError, match=problem) as caught:
        load_task_json(path)
    assert str(caught.value).startswith(f"{path}: ")


def test_good_labels_are_kept_in_order(tmp_path: Path) -> None:
    path = tmp_path / "task.json"
    path.write_text(json.dumps({**CLASSIFICATION, "labels": ["b", "a", "never used by a gold"]}))
    assert load_task_json(path).labels == ("b", "a", "never used by a gold")
