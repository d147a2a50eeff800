"""`lampbox compare RUN RUN` on real stored runs (dummy backend, demo data)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest
from cli_helpers import DUMMY_BENCH, lampbox

from lampbox.engine.stats import paired_randomization_test
from lampbox.store import Store
from lampbox.store import runs as run_store


@pytest.fixture(scope="module")
def runs(dummy_bench: dict, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A bench of 8 questions and a one-row bench of the first 4: run keys by label."""
    folder = tmp_path_factory.mktemp("compare")
    db = folder / "demo.duckdb"
    shutil.copy(dummy_bench["db"], db)
    env = {**dummy_bench["env"], "LAMPBOX_HOME": str(folder / "home")}
    short = DUMMY_BENCH[:-1] + ["4"]
    short_rows = json.loads(lampbox("bench", *short, "--retrievers", "none", "--no-baselines", "--db", str(db), "--json", env=env).stdout)["rows"]
    keys = {row["label"]: row["run_key"] for row in dummy_bench["rows"]}
    return {"db": db, "env": env, "keys": keys, "short": short_rows[0]["run_key"]}


def compare(runs: dict, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return lampbox("compare", *args, "--db", str(runs["db"]), env=runs["env"], check=check)


def test_wins_ties_losses_flips_and_the_paired_test(runs: dict) -> None:
    bm25 = runs["keys"]["bm25 k=1 dummy:smollm2-135m-instruct"]
    recency = runs["keys"]["recency k=1 retrieval-only"]
    data = json.loads(compare(runs, bm25[:10], recency[:10], "--json").stdout)
    assert data["a"]["run_key"] == bm25 and data["b"]["run_key"] == recency
    assert data["wins"] + data["ties"] + data["losses"] == data["n_questions"] == 8
    assert len(data["flips"]) == data["wins"] + data["losses"] > 0
    with Store(runs["db"], read_only=True) as store:
        a = {p.question_id: p for p in run_store.run_predictions(store, bm25)}
        b = {p.question_id: p for p in run_store.run_predictions(store, recency)}
    expected = paired_randomization_test([a[q].main_score for q in a], [b[q].main_score for q in a])  # type: ignore[misc]
    assert data["p_value"] == expected.p_value
    assert data["mean_difference"] == pytest.approx(expected.mean_difference)
    for flip in data["flips"]:
        question = a[flip["question_id"]]
        assert flip["user_id"] == question.user_id and flip["score_a"] == question.main_score
        assert flip["difference"] == pytest.approx(flip["score_a"] - flip["score_b"]) and flip["difference"] != 0
    assert [abs(f["difference"]) for f in data["flips"]] == sorted((abs(f["difference"]) for f in data["flips"]), reverse=True)

    reverse = json.loads(compare(runs, recency, bm25, "--json").stdout)
    assert (reverse["wins"], reverse["losses"], reverse["p_value"]) == (data["losses"], data["wins"], data["p_value"])

    text = compare(runs, bm25, recency, "--show", "2").stdout
    assert f"A better on {data['wins']}, ties {data['ties']}, B better on {data['losses']}" in text
    first = data["flips"][0]
    assert "questions that flip" in text
    assert re.search(rf"{first['question_id']}\s+│\s+{first['user_id']}\s+│\s+{first['score_a']:.4f}", text), text


def test_a_run_against_itself_ties_everywhere(runs: dict) -> None:
    key = runs["keys"]["no personalization dummy:smollm2-135m-instruct"]
    data = json.loads(compare(runs, key, key, "--json").stdout)
    assert (data["wins"], data["ties"], data["losses"], data["p_value"], data["flips"]) == (0, 8, 0, 1.0, [])


@pytest.mark.parametrize(
    ("which", "message"),
    [
        ("short", "the runs are on different questions: 4 only in A (e.g. "),
        ("unknown", "no run 'ffffffff'"),
    ],
)
def test_bad_input_is_one_line(runs: dict, which: str, message: str) -> None:
    first = runs["keys"]["no personalization dummy:smollm2-135m-instruct"]
    second = runs["short"] if which == "short" else "ffffffff"
    result = compare(runs, first, second, check=False)
    assert result.returncode != 0 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and message in result.stderr
