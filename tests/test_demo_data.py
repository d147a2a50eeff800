"""The packaged demo dataset: format, per-user profiles without leaks, `lampbox data demo`."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from lampbox.cli import cli
from lampbox.demo import demo_path
from lampbox.lampfiles import read_json, validate_outputs, validate_questions
from lampbox.store import Store

PREFIX = "Paraphrase the following tweet without any explanation before or after it: "


def invoke(*args: str):  # noqa: ANN201 - click's Result
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_demo_files_are_valid_lamp7_with_per_user_profiles_from_the_past() -> None:
    folder = demo_path()
    assert "not lamp data" in (folder / "README.md").read_text().lower()
    tweet_dates: dict[str, str] = {}
    users_by_split: dict[str, dict[str, int]] = {}
    for split in ("train", "dev"):
        questions = validate_questions(
            read_json(folder / f"{split}_questions.json"), f"{split}_questions.json"
        )
        task, golds = validate_outputs(
            read_json(folder / f"{split}_outputs.json"), f"{split}_outputs.json"
        )
        assert task == "LaMP_7"
        assert set(golds) == {question["id"] for question in questions}
        counts: dict[str, int] = {}
        for question in questions:
            user = question["user_id"]
            assert user and question["id"].startswith(f"{user}-q")
            counts[user] = counts.get(user, 0) + 1
            assert question["input"].startswith(PREFIX)
            assert question["input"] != PREFIX + golds[question["id"]]  # a paraphrase, not the gold
            assert 8 <= len(question["profile"]) <= 20
            for item in question["profile"]:
                assert item["id"].startswith(f"{user}-t")
                assert set(item) == {"id", "text", "date"}
                assert len(item["date"]) == 10
                tweet_dates[item["id"]] = item["date"]
        users_by_split[split] = counts
    assert users_by_split["train"] == {f"demo-u{n}": 3 for n in range(1, 9)}
    assert users_by_split["dev"] == {f"demo-u{n}": 2 for n in range(1, 9)}
    assert len(tweet_dates) >= 8 * 12  # distinct profile tweets, 12 or more per user


def test_profiles_are_chronological_prefixes_without_the_gold() -> None:
    # A profile is exactly the user's tweets up to some date (nothing later is left in, nothing
    # earlier is left out), dev profiles reach later than train ones, and no gold tweet is ever
    # in a profile.
    folder = demo_path()
    timelines: dict[str, dict[str, tuple[str, str]]] = {}
    questions_by_user: dict[str, list[tuple[str, dict]]] = {}
    golds: dict[str, str] = {}
    for split in ("train", "dev"):
        for question in json.loads((folder / f"{split}_questions.json").read_text()):
            questions_by_user.setdefault(question["user_id"], []).append((split, question))
            for item in question["profile"]:
                timelines.setdefault(question["user_id"], {})[item["id"]] = (
                    item["date"],
                    item["text"],
                )
        golds.update(
            (gold["id"], gold["output"])
            for gold in json.loads((folder / f"{split}_outputs.json").read_text())["golds"]
        )
    for user, questions in questions_by_user.items():
        timeline = timelines[user]
        assert 12 <= len(timeline) <= 20, user
        all_texts = {text for _, text in timeline.values()}
        last_dates = []
        for _, question in questions:
            last = max(item["date"] for item in question["profile"])
            expected = {item_id for item_id, (date, _) in timeline.items() if date <= last}
            assert {item["id"] for item in question["profile"]} == expected, question["id"]
            assert golds[question["id"]] not in all_texts
            last_dates.append(last)
        assert last_dates == sorted(last_dates), user  # train (first) before dev (last)


def test_demo_command_imports_once_and_is_idempotent(tmp_path: Path) -> None:
    db = tmp_path / "store.duckdb"
    first = invoke("data", "demo", "--db", str(db))
    assert first.exit_code == 0, first.output
    assert "LaMP_7 demo train: imported (24 questions)" in first.stdout
    assert "LaMP_7 demo dev: imported (16 questions)" in first.stdout
    second = invoke("data", "demo", "--db", str(db))
    assert second.exit_code == 0, second.output
    assert "LaMP_7 demo train: unchanged" in second.stdout

    with Store(db, read_only=True) as store:
        summaries = {(row.scheme, row.split): row for row in store.datasets()}
        assert set(summaries) == {("demo", "train"), ("demo", "dev")}
        assert summaries[("demo", "dev")].users == 8
        for split in ("train", "dev"):
            for question in store.questions("LaMP_7", "demo", split):
                assert question.gold
                assert question.profile
                assert all(item.id.startswith(f"{question.user_id}-t") for item in question.profile)
                assert all(item.get("text") for item in question.profile)
