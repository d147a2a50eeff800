"""`lampbox eval` and `lampbox eval-all` end to end: real files, real zips, a real store."""

from __future__ import annotations

import gzip
import json
import math
import zipfile
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from lampbox.cli import cli
from lampbox.engine.metrics import evaluate
from lampbox.engine.tasks import BUILTIN_TASKS, load_task_json


@pytest.fixture(autouse=True)
def no_default_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Never touch the user's store: the default points at a file that does not exist."""
    monkeypatch.setenv("LAMPBOX_DB", str(tmp_path / "absent.duckdb"))


def invoke(*args: Any) -> Result:
    return CliRunner().invoke(cli, [str(arg) for arg in args], catch_exceptions=False)


def outputs(task: str, values: dict[str, Any]) -> dict[str, Any]:
    return {"task": task, "golds": [{"id": qid, "output": value} for qid, value in values.items()]}


def write(path: Path, data: Any) -> Path:
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def assert_one_line_error(result: Result, *fragments: str) -> None:
    assert result.exit_code != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


RATING_GOLDS = {"a": "1", "b": "2", "c": "3", "d": "5"}
RATING_PREDS = {"a": "1", "b": "4", "c": "3.5", "d": "abc"}  # errors 0, 2, 0.5, 4


def test_eval_prints_and_writes_the_official_format(tmp_path: Path) -> None:
    golds = write(tmp_path / "golds.json", outputs("LaMP_3", RATING_GOLDS))
    preds = write(tmp_path / "preds.json", outputs("LaMP_3", RATING_PREDS))
    report = tmp_path / "out" / "result.json"
    result = invoke(
        "eval", "--golds", golds, "--preds", preds, "--task", "LaMP_3", "--output", report
    )
    assert result.exit_code == 0, result.stderr
    assert result.stdout.split() == ["MAE", "1.6250", "RMSE", "2.2500"]
    assert json.loads(report.read_text()) == {"MAE": 1.625, "RMSE": 2.25}
    assert [p.name for p in report.parent.iterdir()] == ["result.json"]  # no temporary left over

    as_json = invoke("eval", "--golds", golds, "--preds", preds, "--task", "lamp-3", "--json")
    assert json.loads(as_json.stdout) == {"MAE": 1.625, "RMSE": 2.25}


def test_eval_reads_gzip_and_numbers_as_outputs(tmp_path: Path) -> None:
    golds = write(tmp_path / "golds.json", outputs("LaMP_3", {"a": 4, "b": 2}))
    preds = tmp_path / "preds.json.gz"
    preds.write_bytes(gzip.compress(json.dumps(outputs("LaMP_3", {"a": 5, "b": "2"})).encode()))
    result = invoke("eval", "--golds", golds, "--preds", preds, "--task", "LaMP_3", "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout) == {"MAE": 0.5, "RMSE": math.sqrt(0.5)}


def test_eval_custom_generation_task_from_the_store(
    git_commits: Path, commits_store_path: Path, tmp_path: Path
) -> None:
    folder = git_commits / "commit_subject"
    questions = json.loads((folder / "dev_questions.json").read_text())
    preds = {q["id"]: " ".join(q["input"].split(":", 1)[1].split()[:8]) for q in questions}
    preds_path = write(tmp_path / "preds.json", outputs("commit_subject", preds))
    golds_path = folder / "dev_outputs.json"
    result = invoke(
        "eval",
        "--golds",
        golds_path,
        "--preds",
        preds_path,
        "--task",
        "commit_subject",
        "--db",
        commits_store_path,
        "--json",
    )
    assert result.exit_code == 0, result.stderr
    golds = {g["id"]: g["output"] for g in json.loads(golds_path.read_text())["golds"]}
    expected = evaluate(load_task_json(folder / "task.json"), golds, preds)
    assert json.loads(result.stdout) == {
        "rouge-1": expected["rouge-1"],
        "rouge-L": expected["rouge-L"],
    }


def test_eval_custom_classification_task(
    git_commits: Path, commits_store_path: Path, tmp_path: Path
) -> None:
    golds_path = git_commits / "commit_area" / "dev_outputs.json"
    golds = {g["id"]: g["output"] for g in json.loads(golds_path.read_text())["golds"]}
    preds_path = write(tmp_path / "preds.json", outputs("commit_area", golds))
    result = invoke(
        "eval",
        "--golds",
        golds_path,
        "--preds",
        preds_path,
        "--task",
        "commit_area",
        "--db",
        commits_store_path,
        "--json",
    )
    assert result.exit_code == 0, result.stderr
    # Perfect answers: accuracy 1; F1 1 for each label the golds use, 0 for the others.
    used = len(set(golds.values()))
    assert json.loads(result.stdout) == {"accuracy": 1.0, "f1": pytest.approx(used / 15, abs=1e-15)}


def test_custom_task_without_a_store_is_an_unknown_task(git_commits: Path, tmp_path: Path) -> None:
    golds_path = git_commits / "commit_area" / "dev_outputs.json"
    result = invoke("eval", "--golds", golds_path, "--preds", golds_path, "--task", "commit_area")
    assert_one_line_error(result, "unknown task 'commit_area'", "LaMP_7")
    result = invoke(
        "eval",
        "--golds",
        golds_path,
        "--preds",
        golds_path,
        "--task",
        "commit_area",
        "--db",
        tmp_path / "none.duckdb",
    )
    assert_one_line_error(result, "none.duckdb: no lampbox store here")


# -- bad input --------------------------------------------------------------------------------


@pytest.fixture
def good_golds(tmp_path: Path) -> Path:
    return write(tmp_path / "golds.json", outputs("LaMP_3", RATING_GOLDS))


def test_malformed_json(tmp_path: Path, good_golds: Path) -> None:
    preds = tmp_path / "preds.json"
    preds.write_text('{"task": "LaMP_3", "golds": [', encoding="utf-8")
    result = invoke("eval", "--golds", good_golds, "--preds", preds, "--task", "LaMP_3")
    assert_one_line_error(result, str(preds), "malformed JSON")


def test_truncated_json_names_where_in_plain_words(tmp_path: Path, good_golds: Path) -> None:
    preds = tmp_path / "preds.json"
    preds.write_text('{"task": "LaMP_3", "golds": [{"id": "a", "output": "4', encoding="utf-8")
    result = invoke("eval", "--golds", good_golds, "--preds", preds, "--task", "LaMP_3")
    assert_one_line_error(result, str(preds), "malformed JSON: Unterminated string starting at line 1, column 52")
    assert "at at" not in result.stderr


def test_empty_golds_name_the_file(tmp_path: Path) -> None:
    golds = write(tmp_path / "golds.json", outputs("LaMP_7", {}))
    preds = write(tmp_path / "preds.json", outputs("LaMP_7", {}))
    result = invoke("eval", "--golds", golds, "--preds", preds, "--task", "LaMP_7")
    assert_one_line_error(result, str(golds), 'holds no golds (its "golds" list is empty)')


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        (True, "id 'a': output is a boolean (true), not a string"),
        (["x"], 'output is a list (["x"]), not a string'),
        ({"text": "x"}, "id 'a': output is an object"),
        (None, "id 'a' has no output text"),
    ],
)
def test_an_output_that_is_not_text_says_what_it_is(tmp_path: Path, good_golds: Path, value: Any, problem: str) -> None:
    preds = write(tmp_path / "preds.json", outputs("LaMP_3", {**RATING_PREDS, "a": value}))
    result = invoke("eval", "--golds", good_golds, "--preds", preds, "--task", "LaMP_3")
    assert_one_line_error(result, str(preds), problem)


def test_non_utf8_file(tmp_path: Path, good_golds: Path) -> None:
    preds = tmp_path / "preds.json"
    preds.write_bytes(
        json.dumps(outputs("LaMP_3", {"a": "caf\u00e9"}), ensure_ascii=False).encode("latin-1")
    )
    result = invoke("eval", "--golds", good_golds, "--preds", preds, "--task", "LaMP_3")
    assert_one_line_error(result, str(preds), "not UTF-8")


def test_ids_that_do_not_match(tmp_path: Path, good_golds: Path) -> None:
    preds = write(
        tmp_path / "preds.json",
        outputs("LaMP_3", {"a": "1", "b": "2", "x": "3", "y": "4", "z": "5"}),
    )
    result = invoke("eval", "--golds", good_golds, "--preds", preds, "--task", "LaMP_3")
    assert_one_line_error(
        result,
        str(preds),
        "2 gold ids without a prediction (e.g. 'c')",
        "3 prediction ids not in the golds (e.g. 'x')",
        str(good_golds),
    )


def test_predictions_for_another_task(tmp_path: Path, good_golds: Path) -> None:
    preds = write(tmp_path / "preds.json", outputs("LaMP_4", RATING_PREDS))
    result = invoke("eval", "--golds", good_golds, "--preds", preds, "--task", "LaMP_3")
    assert_one_line_error(result, str(preds), "holds task 'LaMP_4', not 'LaMP_3'")


def test_golds_for_another_task(tmp_path: Path, good_golds: Path) -> None:
    preds = write(tmp_path / "preds.json", outputs("LaMP_3", RATING_PREDS))
    result = invoke("eval", "--golds", good_golds, "--preds", preds, "--task", "LaMP_7")
    assert_one_line_error(result, str(good_golds), "holds task 'LaMP_3', not 'LaMP_7'")


def test_unknown_task_suggests_the_closest(tmp_path: Path, good_golds: Path) -> None:
    result = invoke("eval", "--golds", good_golds, "--preds", good_golds, "--task", "LaMP_33")
    assert_one_line_error(result, "unknown task 'LaMP_33'", "Did you mean LaMP_3")


def test_news_golds_scored_as_movie_tags_point_to_lamp_2n(tmp_path: Path) -> None:
    golds = write(tmp_path / "golds.json", outputs("LaMP_2", {"a": "sports", "b": "travel"}))
    preds = write(tmp_path / "preds.json", outputs("LaMP_2", {"a": "sports", "b": "crime"}))
    result = invoke("eval", "--golds", golds, "--preds", preds, "--task", "LaMP_2")
    assert_one_line_error(result, str(golds), "not LaMP_2 labels", "they fit LaMP_2N")
    fixed = invoke("eval", "--golds", golds, "--preds", preds, "--task", "LaMP_2N", "--json")
    assert json.loads(fixed.stdout) == {
        "accuracy": 0.5,
        "f1": pytest.approx((1 + 0 + 0) / 15, abs=1e-15),
    }


# -- eval-all ---------------------------------------------------------------------------------


def make_zip(path: Path, members: dict[str, Any]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data if isinstance(data, (str, bytes)) else json.dumps(data))
    return path


CLASSIFICATION_GOLDS = {"1": "[1]", "2": "[2]"}
GENERATION_GOLDS = {"7a": "the cat sat", "7b": "a b c d"}


def golds_zip(tmp_path: Path) -> Path:
    return make_zip(
        tmp_path / "golds.zip",
        {
            "golds/LaMP_1/dev_outputs.json": outputs("LaMP_1", CLASSIFICATION_GOLDS),
            "golds/whatever.json": outputs("LaMP_3", RATING_GOLDS),
            "seven.json": outputs("LaMP_7", GENERATION_GOLDS),
            "README.txt": "not an outputs file",
        },
    )


def test_eval_all_scores_every_task_by_its_task_field(tmp_path: Path) -> None:
    preds_zip = make_zip(
        tmp_path / "preds.zip",
        {
            "a.json": outputs("LaMP_7", {"7a": "The cat!", "7b": "d c b a"}),
            "nested/b.json": outputs("LaMP_1", {"1": "[1]", "2": "[1]"}),
            "c.json.gz": gzip.compress(json.dumps(outputs("LaMP_3", RATING_PREDS)).encode()),
            "__MACOSX/._a.json": b"\x00\x05\x16\x07 resource fork",
        },
    )
    report = tmp_path / "results.json"
    result = invoke(
        "eval-all", "--golds-zip", golds_zip(tmp_path), "--preds-zip", preds_zip, "--output", report
    )
    assert result.exit_code == 0, result.stderr
    written = json.loads(report.read_text())
    assert list(written) == ["LaMP_1", "LaMP_3", "LaMP_7"]
    # LaMP_1: one right of two; F1: [1] 2/3, [2] 0.
    assert written["LaMP_1"] == {"accuracy": 0.5, "f1": pytest.approx(1 / 3, abs=1e-15)}
    assert written["LaMP_3"] == {"MAE": 1.625, "RMSE": 2.25}
    assert written["LaMP_7"] == pytest.approx({"rouge-1": 0.9, "rouge-L": 0.525}, abs=1e-15)
    assert result.stdout.splitlines()[0] == "LaMP_1  accuracy 0.5000  f1 0.3333"


def test_eval_all_resolves_lamp_2_by_its_labels(tmp_path: Path) -> None:
    movie = BUILTIN_TASKS["LaMP_2"].labels
    golds = make_zip(
        tmp_path / "golds.zip", {"g.json": outputs("LaMP_2", {"a": movie[0], "b": movie[1]})}
    )
    preds = make_zip(
        tmp_path / "preds.zip", {"p.json": outputs("LaMP_2", {"a": movie[0], "b": movie[0]})}
    )
    result = invoke("eval-all", "--golds-zip", golds, "--preds-zip", preds, "--json")
    assert json.loads(result.stdout) == {
        "LaMP_2": {"accuracy": 0.5, "f1": pytest.approx((2 / 3) / 15, abs=1e-15)}
    }
    news = make_zip(
        tmp_path / "news.zip", {"g.json": outputs("LaMP_2", {"a": "sports", "b": "crime"})}
    )
    news_preds = make_zip(
        tmp_path / "news_preds.zip", {"p.json": outputs("LaMP_2", {"a": "sports", "b": "crime"})}
    )
    result = invoke("eval-all", "--golds-zip", news, "--preds-zip", news_preds, "--json")
    assert json.loads(result.stdout)["LaMP_2"] == {
        "accuracy": 1.0,
        "f1": pytest.approx(2 / 15, abs=1e-15),
    }


def test_eval_all_needs_predictions_for_every_task(tmp_path: Path) -> None:
    preds_zip = make_zip(
        tmp_path / "preds.zip", {"a.json": outputs("LaMP_7", {"7a": "x", "7b": "y"})}
    )
    result = invoke("eval-all", "--golds-zip", golds_zip(tmp_path), "--preds-zip", preds_zip)
    assert_one_line_error(result, str(preds_zip), "no predictions for task(s): LaMP_1, LaMP_3")


def test_eval_all_refuses_unsafe_member_paths(tmp_path: Path) -> None:
    for name in ("../evil.json", "/etc/evil.json", "a/../../evil.json", "C:/evil.json"):
        preds_zip = make_zip(tmp_path / "preds.zip", {name: outputs("LaMP_7", GENERATION_GOLDS)})
        result = invoke("eval-all", "--golds-zip", golds_zip(tmp_path), "--preds-zip", preds_zip)
        assert_one_line_error(result, str(preds_zip), "unsafe path", repr(name))


def test_eval_all_bad_members(tmp_path: Path) -> None:
    golds = golds_zip(tmp_path)
    twice = make_zip(
        tmp_path / "twice.zip", {"a.json": outputs("LaMP_7", {}), "b.json": outputs("LaMP_7", {})}
    )
    assert_one_line_error(
        invoke("eval-all", "--golds-zip", golds, "--preds-zip", twice), "two files for task LaMP_7"
    )
    broken = make_zip(tmp_path / "broken.zip", {"x/a.json": "{not json"})
    assert_one_line_error(
        invoke("eval-all", "--golds-zip", golds, "--preds-zip", broken),
        "broken.zip:x/a.json",
        "malformed JSON",
    )
    latin = make_zip(
        tmp_path / "latin.zip",
        {
            "a.json": json.dumps(outputs("LaMP_7", {"7a": "caf\u00e9"}), ensure_ascii=False).encode(
                "latin-1"
            )
        },
    )
    assert_one_line_error(
        invoke("eval-all", "--golds-zip", golds, "--preds-zip", latin),
        "latin.zip:a.json",
        "not UTF-8",
    )
    not_zip = write(tmp_path / "plain.zip", {"task": "LaMP_7"})
    assert_one_line_error(
        invoke("eval-all", "--golds-zip", golds, "--preds-zip", not_zip),
        "plain.zip",
        "not a zip file",
    )


def test_eval_all_custom_tasks_from_the_store(
    git_commits: Path, commits_store_path: Path, tmp_path: Path
) -> None:
    members, predictions = {}, {}
    for task in ("commit_area", "commit_subject"):
        data = json.loads((git_commits / task / "dev_outputs.json").read_text())
        members[f"{task}/dev_outputs.json"] = data
        predictions[f"{task}.json"] = data  # perfect predictions
    golds = make_zip(tmp_path / "golds.zip", members)
    preds = make_zip(tmp_path / "preds.zip", predictions)
    result = invoke(
        "eval-all", "--golds-zip", golds, "--preds-zip", preds, "--db", commits_store_path, "--json"
    )
    assert result.exit_code == 0, result.stderr
    scores = json.loads(result.stdout)
    assert scores["commit_subject"] == {"rouge-1": 1.0, "rouge-L": 1.0}
    assert scores["commit_area"]["accuracy"] == 1.0
    without_store = invoke("eval-all", "--golds-zip", golds, "--preds-zip", preds)
    assert_one_line_error(
        without_store, "golds.zip:commit_area/dev_outputs.json", "unknown task 'commit_area'"
    )
