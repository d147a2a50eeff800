"""Importing LaMP-format data: content, idempotence, transactions and bad input."""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from lampbox.cli import cli
from lampbox.store import Store
from lampbox.store.importer import import_path

TWEET = "Paraphrase the following tweet without any explanation before or after it: "


def write_lamp7(folder: Path, questions: list[dict], golds: list[dict] | None = None, split: str = "dev") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{split}_questions.json").write_text(json.dumps(questions))
    if golds is not None:
        (folder / f"{split}_outputs.json").write_text(json.dumps({"task": "LaMP_7", "golds": golds}))


def small_lamp7() -> tuple[list[dict], list[dict]]:
    shared = {"id": "t1", "text": "first tweet", "date": "2020-01-01"}
    questions = [
        {"id": "q1", "input": TWEET + "hello world", "user_id": "u1", "profile": [shared, {"id": "t2", "text": "second"}]},
        {"id": "q2", "input": TWEET + "good night", "user_id": "u1", "profile": [shared]},
        {"id": "q3", "input": TWEET + "coffee", "profile": [{"id": "t9", "text": "tea"}]},
    ]
    golds = [{"id": "q1", "output": "hi all"}, {"id": "q2", "output": "nite"}, {"id": "q3", "output": "java"}]
    return questions, golds


def table_counts(store: Store) -> dict[str, int]:
    names = ["tasks", "imports", "users", "questions", "profile_items", "question_items"]
    return {name: store.connection.execute(f"SELECT count(*) FROM {name}").fetchone()[0] for name in names}


def test_import_stores_questions_profiles_and_golds(tmp_path: Path) -> None:
    questions, golds = small_lamp7()
    write_lamp7(tmp_path / "data", questions, golds)
    with Store(tmp_path / "s.duckdb") as store:
        report = import_path(store, tmp_path / "data")
        assert report.task == "LaMP_7" and report.scheme == "user"
        stored = store.questions("LaMP_7", "user", "dev")
        assert [q.id for q in stored] == ["q1", "q2", "q3"]
        assert stored[0].gold == "hi all" and stored[0].user_id == "u1"
        assert stored[2].user_id == "q3"  # no user_id: each question is its own user (LaMP user split)
        assert [item.id for item in stored[0].profile] == ["t1", "t2"]
        assert stored[0].profile[0].fields == {"text": "first tweet"} and stored[0].profile[0].date == "2020-01-01"
        # the item shared by q1 and q2 of one user is stored once
        assert stored[0].profile[0].key == stored[1].profile[0].key
        assert table_counts(store)["profile_items"] == 3
        assert [summary.users for summary in store.datasets()] == [2]


def test_same_item_id_with_other_content_is_kept_apart(tmp_path: Path) -> None:
    questions, golds = small_lamp7()
    questions[1]["profile"] = [{"id": "t1", "text": "edited tweet", "date": "2020-01-01"}]
    write_lamp7(tmp_path / "data", questions, golds)
    with Store(tmp_path / "s.duckdb") as store:
        import_path(store, tmp_path / "data")
        stored = store.questions("LaMP_7", "user", "dev")
        assert stored[1].profile[0].get("text") == "edited tweet"
        assert stored[0].profile[0].key != stored[1].profile[0].key


def test_reimport_changes_nothing_and_changed_files_replace_the_split(tmp_path: Path) -> None:
    questions, golds = small_lamp7()
    write_lamp7(tmp_path / "data", questions, golds)
    with Store(tmp_path / "s.duckdb") as store:
        import_path(store, tmp_path / "data")
        before = table_counts(store)
        report = import_path(store, tmp_path / "data")
        assert [split.status for split in report.splits] == ["unchanged"]
        assert table_counts(store) == before
        write_lamp7(tmp_path / "data", questions[:1], golds[:1])
        report = import_path(store, tmp_path / "data")
        assert [split.status for split in report.splits] == ["imported"]
        assert [q.id for q in store.questions("LaMP_7", "user", "dev")] == ["q1"]
        assert table_counts(store)["profile_items"] == 2  # orphaned items collected
        assert table_counts(store)["users"] == 1


def test_gzip_files_and_official_nested_layout(tmp_path: Path) -> None:
    questions, golds = small_lamp7()
    folder = tmp_path / "time" / "LaMP_7" / "dev"
    folder.mkdir(parents=True)
    (folder / "dev_questions.json.gz").write_bytes(gzip.compress(json.dumps(questions).encode()))
    (folder / "dev_outputs.json.gz").write_bytes(gzip.compress(json.dumps({"task": "LaMP_7", "golds": golds}).encode()))
    with Store(tmp_path / "s.duckdb") as store:
        report = import_path(store, tmp_path / "time" / "LaMP_7")
        assert report.scheme == "time"
        assert store.count_questions("LaMP_7", "time", "dev") == 3


def test_test_split_without_outputs_has_no_golds(tmp_path: Path) -> None:
    questions, _ = small_lamp7()
    write_lamp7(tmp_path / "data", questions, None, split="test")
    with Store(tmp_path / "s.duckdb") as store:
        import_path(store, tmp_path / "data")
        assert all(q.gold is None for q in store.questions("LaMP_7", "user", "test"))


def test_custom_tasks_import_and_list(commits_store: Store) -> None:
    summaries = {(s.task, s.split): s for s in commits_store.datasets()}
    assert summaries["commit_subject", "dev"].users == 190
    assert summaries["commit_subject", "dev"].questions == 570
    assert summaries["commit_subject", "dev"].distinct_items == 13645
    assert summaries["commit_subject", "train"].questions == 1140
    assert summaries["commit_area", "test"].questions == 186
    assert commits_store.task("commit_area").labels[0] == "git-gui"
    question = commits_store.questions("commit_subject", "user", "dev", limit=1)[0]
    assert question.gold and question.profile and question.profile[0].get("title")


def run_cli(*args: str, db: Path) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, [*args, "--db", str(db)])
    return result.exit_code, result.stdout, result.stderr


def test_cli_import_and_list_json(tmp_path: Path, git_commits: Path) -> None:
    db = tmp_path / "s.duckdb"
    code, out, _ = run_cli("data", "import", str(git_commits / "commit_area"), db=db)
    assert code == 0 and "commit_area user dev: imported (186 questions" in out
    code, out, _ = run_cli("data", "list", "--json", db=db)
    listed = json.loads(out)
    assert {(row["task"], row["split"], row["questions"]) for row in listed} == {
        ("commit_area", "train", 337), ("commit_area", "dev", 186), ("commit_area", "test", 186),
    }  # fmt: skip
    code, out, _ = run_cli("tasks", "--json", db=db)
    assert "commit_area" in {task["name"] for task in json.loads(out)}


def bad_input_cases(tmp_path: Path) -> list[tuple[str, Path, list[str], str]]:
    """(case, path to import, extra CLI args, expected problem)."""
    questions, golds = small_lamp7()
    cases = []

    def case(name: str, questions_text: str | bytes | None, outputs: object | None = None, args: list[str] | None = None) -> Path:
        folder = tmp_path / name
        folder.mkdir(parents=True)
        if questions_text is not None:
            data = questions_text if isinstance(questions_text, bytes) else questions_text.encode()
            (folder / "dev_questions.json").write_bytes(data)
        if outputs is not None:
            (folder / "dev_outputs.json").write_text(json.dumps(outputs))
        return folder

    cases.append(("malformed", case("malformed", json.dumps(questions)[:-5]), [], "malformed JSON"))
    no_profile = [{k: v for k, v in q.items() if k != "profile"} for q in questions]
    cases.append(("no-profile", case("no-profile", json.dumps(no_profile)), [], "has no profile"))
    cases.append(("ids", case("ids", json.dumps(questions), {"task": "LaMP_7", "golds": golds[:2]}), [], "ids do not match"))
    cases.append(("unknown-task", case("unknown-task", json.dumps(questions)), ["--task", "LaMP_77"], "unknown task"))
    cases.append(("other-task", case("other-task", json.dumps(questions), {"task": "LaMP_4", "golds": golds}), [], "for LaMP_4, not LaMP_7"))
    empty = [dict(questions[0], profile=[])]
    cases.append(("empty-profile", case("empty-profile", json.dumps(empty)), [], "empty profile"))
    latin1 = json.dumps(questions, ensure_ascii=False).replace("coffee", "café").encode("latin-1")
    cases.append(("latin1", case("latin1", latin1), [], "not UTF-8"))
    cases.append(("nothing", case("nothing", None), [], "no LaMP questions files"))
    return cases


def test_bad_input_is_one_clear_line_and_leaves_the_store_unchanged(tmp_path: Path) -> None:
    db = tmp_path / "s.duckdb"
    questions, golds = small_lamp7()
    write_lamp7(tmp_path / "good", questions, golds)
    assert run_cli("data", "import", str(tmp_path / "good"), db=db)[0] == 0
    with Store(db) as store:
        before = table_counts(store)
    for name, path, args, problem in bad_input_cases(tmp_path / "bad"):
        code, _, err = run_cli("data", "import", str(path), *args, db=db)
        lines = [line for line in err.strip().splitlines() if line and not line.startswith("reading")]
        assert code != 0, name
        assert len(lines) == 1 and problem in lines[0], (name, err)
        if name not in ("unknown-task",):
            assert str(path) in lines[0], (name, lines[0])
        with Store(db) as store:
            assert table_counts(store) == before, name


def test_an_interrupted_import_leaves_the_store_as_it_was(tmp_path: Path, git_commits: Path) -> None:
    db = tmp_path / "s.duckdb"
    questions, golds = small_lamp7()
    write_lamp7(tmp_path / "good", questions, golds)
    with Store(db) as store:
        import_path(store, tmp_path / "good")
        before = table_counts(store)
    process = subprocess.Popen(
        [sys.executable, "-m", "lampbox", "data", "import", str(git_commits / "commit_subject"), "--db", str(db)],
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stderr is not None
    for line in process.stderr:
        if line.startswith("storing"):  # inside the transaction now
            os.kill(process.pid, signal.SIGKILL)
            break
    process.wait()
    assert process.returncode == -signal.SIGKILL
    with Store(db) as store:
        assert table_counts(store) == before
        assert store.schemes("commit_subject") == []


@pytest.mark.parametrize("flag", [[], ["--allow-empty-profiles"]])
def test_empty_profiles_can_be_allowed_explicitly(tmp_path: Path, flag: list[str]) -> None:
    questions, golds = small_lamp7()
    questions[2]["profile"] = []
    write_lamp7(tmp_path / "data", questions, golds)
    code, _, err = run_cli("data", "import", str(tmp_path / "data"), *flag, db=tmp_path / "s.duckdb")
    assert (code == 0) == bool(flag), err


AREA = "Which area does this commit relate to? commit: "


def write_area_task(folder: Path, labels: object, golds: list[str], task: dict | None = None) -> Path:
    """A small custom classification task: task.json, dev questions and golds."""
    folder.mkdir(parents=True, exist_ok=True)
    declaration = {
        "name": "tiny_area", "kind": "classification", "labels": labels, "input_prefix": AREA,
        "query_after": "commit: ", "profile_fields": ["text", "tag"], "document": ["text"],
        "ipa_item_template": 'the area for "{text}" is "{tag}" ', **(task or {}),
    }  # fmt: skip
    (folder / "task.json").write_text(json.dumps(declaration))
    questions = [
        {"id": f"q{i}", "input": AREA + f"change {i}", "user_id": "u1",
         "profile": [{"id": f"p{i}", "text": f"old change {i}", "tag": gold}]}
        for i, gold in enumerate(golds)
    ]  # fmt: skip
    (folder / "dev_questions.json").write_text(json.dumps(questions))
    outputs = {"task": declaration["name"], "golds": [{"id": f"q{i}", "output": gold} for i, gold in enumerate(golds)]}
    (folder / "dev_outputs.json").write_text(json.dumps(outputs))
    return folder


def test_golds_that_are_not_labels_are_named_at_import(tmp_path: Path) -> None:
    folder = write_area_task(tmp_path / "area", ["doc", "tests"], ["doc", "gui", "web", "gui", "x", "y"])
    code, _, err = run_cli("data", "import", str(folder), db=tmp_path / "s.duckdb")
    lines = [line for line in err.strip().splitlines() if not line.startswith("reading")]
    assert code != 0 and len(lines) == 1, err
    assert str(folder / "dev_outputs.json") in lines[0]
    assert "5 gold(s) are not tiny_area labels: 'gui', 'web', 'x' and 1 more" in lines[0]
    with Store(tmp_path / "s.duckdb") as store:
        assert table_counts(store)["questions"] == 0 and table_counts(store)["tasks"] == 0


def test_labels_that_no_gold_uses_are_fine(tmp_path: Path) -> None:
    folder = write_area_task(tmp_path / "area", ["doc", "tests", "never-used"], ["doc", " tests "])
    code, out, err = run_cli("data", "import", str(folder), db=tmp_path / "s.duckdb")
    assert code == 0 and "tiny_area user dev: imported (2 questions, 2 golds" in out, err


def test_a_profile_item_without_any_document_field_is_refused_with_its_id(tmp_path: Path) -> None:
    folder = write_area_task(tmp_path / "area", ["doc"], ["doc", "doc"])
    questions = json.loads((folder / "dev_questions.json").read_text())
    questions[1]["profile"].append({"id": "p-empty", "tag": "doc", "date": "2020-01-01"})
    (folder / "dev_questions.json").write_text(json.dumps(questions))
    code, _, err = run_cli("data", "import", str(folder), db=tmp_path / "s.duckdb")
    lines = [line for line in err.strip().splitlines() if not line.startswith("reading")]
    assert code != 0 and len(lines) == 1, err
    assert str(folder / "dev_questions.json") in lines[0]
    assert "question 'q1': profile item 'p-empty' has none of tiny_area's document fields (text)" in lines[0]


def test_a_changed_task_json_is_refused_unless_replaced(tmp_path: Path) -> None:
    db = tmp_path / "s.duckdb"
    folder = write_area_task(tmp_path / "area", ["doc", "tests"], ["doc", "tests"])
    code, out, err = run_cli("data", "import", str(folder), db=db)
    assert code == 0 and "imported" in out, err

    write_area_task(folder, ["doc", "tests", "gui"], ["doc", "tests"])  # same data, new labels
    code, out, err = run_cli("data", "import", str(folder), db=db)
    lines = [line for line in err.strip().splitlines() if not line.startswith("reading")]
    assert code != 0 and len(lines) == 1, err
    assert str(folder / "task.json") in lines[0] and "changed: labels" in lines[0] and "--replace-task" in lines[0]
    with Store(db) as store:
        assert store.task("tiny_area").labels == ("doc", "tests")  # nothing replaced silently

    code, out, err = run_cli("data", "import", str(folder), "--replace-task", db=db)
    assert code == 0, err
    assert "tiny_area: task definition replaced (changed: labels)" in out
    assert "tiny_area user dev: unchanged" in out
    with Store(db) as store:
        assert store.task("tiny_area").labels == ("doc", "tests", "gui")
    code, out, err = run_cli("data", "import", str(folder), db=db)
    assert code == 0 and "replaced" not in out, err

    # new labels must still fit the golds, stored or imported
    write_area_task(folder, ["doc", "gui"], ["doc", "tests"])
    code, out, err = run_cli("data", "import", str(folder), "--replace-task", db=db)
    assert code != 0 and "1 gold(s) are not tiny_area labels: 'tests'" in err, err
    with Store(db) as store:
        assert store.task("tiny_area").labels == ("doc", "tests", "gui")


def test_stored_golds_of_other_splits_must_fit_a_replaced_definition(tmp_path: Path) -> None:
    db = tmp_path / "s.duckdb"
    folder = write_area_task(tmp_path / "area", ["doc", "tests"], ["doc", "tests"])
    assert run_cli("data", "import", str(folder), db=db)[0] == 0
    only_task = tmp_path / "only-train"
    write_area_task(only_task, ["doc"], ["doc"])
    (only_task / "dev_questions.json").rename(only_task / "train_questions.json")
    (only_task / "dev_outputs.json").rename(only_task / "train_outputs.json")
    code, _, err = run_cli("data", "import", str(only_task), "--replace-task", db=db)
    assert code != 0 and "stored user dev golds" in err and "'tests'" in err, err
    with Store(db) as store:
        assert store.task("tiny_area").labels == ("doc", "tests") and store.schemes("tiny_area", "train") == []


def test_runs_keep_the_task_definition_they_were_made_with(tmp_path: Path) -> None:
    from lampbox.engine.fingerprint import task_fingerprint
    from lampbox.lab.pipeline import run
    from lampbox.lab.specs import RunSpec
    from lampbox.store import runs as run_store

    folder = write_area_task(tmp_path / "area", ["doc", "tests"], ["doc", "tests", "doc"])
    spec = RunSpec("tiny_area", "user", "dev", retriever="bm25", k=1, method="retrieval-only")
    with Store(tmp_path / "s.duckdb") as store:
        import_path(store, folder)
        first = run(spec, store)
        old_hash = task_fingerprint(store.task("tiny_area"))
        assert first.task_hash == old_hash and run(spec, store).from_store

        write_area_task(folder, ["doc", "tests", "gui"], ["doc", "tests", "doc"])
        report = import_path(store, folder, replace_task=True)
        assert report.task_status == "replaced" and report.task_changes == ["labels"]
        second = run(spec, store)
        assert not second.from_store and second.run_key != first.run_key
        assert second.task_hash == task_fingerprint(store.task("tiny_area")) != old_hash
        # the old result stays, under the definition it was made with
        kept = run_store.get_run(store, first.run_key)
        assert kept is not None and kept.status == "finished" and kept.task_hash == old_hash
        assert run_store.get_run(store, second.run_key).task_hash == second.task_hash


@pytest.mark.parametrize("columns", ["80", "50"])
def test_data_list_never_truncates_task_names(tmp_path: Path, columns: str) -> None:
    db = tmp_path / "s.duckdb"
    name = "personalized_commit_area_tagging"
    write_area_task(tmp_path / "area", ["doc"], ["doc"], task={"name": name})
    questions, golds = small_lamp7()
    write_lamp7(tmp_path / "tweets", questions, golds)
    for folder in ("area", "tweets"):
        assert run_cli("data", "import", str(tmp_path / folder), db=db)[0] == 0
    result = CliRunner().invoke(cli, ["data", "list", "--db", str(db)], env={"COLUMNS": columns})
    assert result.exit_code == 0, result.output
    rows = [line for line in result.stdout.splitlines() if line.startswith("│")]
    assert len(rows) == 2
    assert rows[0].startswith("│ LaMP_7 ") and rows[1].startswith(f"│ {name} │"), result.stdout
