"""--skip N: leave out the first N questions (in file order, after --users/--min-profile pick
the users, before --limit), e.g. the training questions a fine-tuned model saw. It keeps the
keys of runs and benches that do not set it, flows through the grid, --config, a plan file and
RSPG rows' pools, and a skip past every question is one line naming the split's count."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import DUMMY_BENCH, fake_model, one_line_error
from click.testing import CliRunner

from lampbox.errors import LampboxError


def _file_questions(git_commits: Path, task: str = "commit_area", split: str = "dev") -> list[tuple[str, str]]:
    """(question id, user id) of a split, read from its file, in file order."""
    return [(str(q["id"]), str(q["user_id"])) for q in json.loads((git_commits / task / f"{split}_questions.json").read_text())]


def _first_users(questions: list[tuple[str, str]], count: int) -> list[str]:
    return list(dict.fromkeys(user for _, user in questions))[:count]


def test_store_questions_skip_before_limit(commits_store_path: Path, git_commits: Path) -> None:
    from lampbox.store import Store

    ids = [qid for qid, _ in _file_questions(git_commits)]
    with Store(commits_store_path, read_only=True) as store:
        skipped = store.questions("commit_area", "user", "dev", limit=4, skip=3, with_profiles=False)
        rest = store.questions("commit_area", "user", "dev", skip=180, with_profiles=False)
        count = store.count_questions("commit_area", "user", "dev", user_ids=_first_users(_file_questions(git_commits), 2))
    assert [q.id for q in skipped] == ids[3:7]
    assert [q.id for q in rest] == ids[180:] and len(rest) == len(ids) - 180
    assert count == sum(user in _first_users(_file_questions(git_commits), 2) for _, user in _file_questions(git_commits))


def test_select_questions_skips_after_the_users_and_before_the_limit(commits_store: Any, git_commits: Path) -> None:
    from lampbox.lab.pipeline import select_questions
    from lampbox.lab.specs import RunSpec

    questions = _file_questions(git_commits)
    ids = [qid for qid, _ in questions]
    spec = RunSpec("commit_area", "user", "dev", retriever="recency", k=1, method="retrieval-only", skip=5, limit=3)
    assert [q.id for q in select_questions(commits_store, spec)] == ids[5:8]
    assert [q.id for q in select_questions(commits_store, replace(spec, limit=None))] == ids[5:]
    users = _first_users(questions, 4)
    theirs = [qid for qid, user in questions if user in users]
    assert len(theirs) > 7
    with_users = select_questions(commits_store, replace(spec, users=4))
    assert [q.id for q in with_users] == theirs[5:8]  # the skip counts the 4 users' questions, not the split's
    assert {q.user_id for q in with_users} <= set(users)


def test_a_skip_past_every_question_is_one_line(commits_store: Any, git_commits: Path) -> None:
    from lampbox.lab.pipeline import run
    from lampbox.lab.specs import RunSpec

    questions = _file_questions(git_commits)
    spec = RunSpec("commit_area", "user", "dev", retriever="recency", k=1, method="retrieval-only", skip=len(questions))
    with pytest.raises(LampboxError, match=rf"^--skip {len(questions)} leaves no question: commit_area user dev has {len(questions)} questions$"):
        run(spec, commits_store)
    theirs = sum(user in _first_users(questions, 2) for _, user in questions)
    with pytest.raises(LampboxError, match=rf"--skip {theirs} leaves no question: .* has {theirs} questions \(the first 2 users\)"):
        run(replace(spec, skip=theirs, users=2), commits_store)
    assert len(run(replace(spec, skip=theirs - 1, users=2), commits_store).predictions) == 1  # one left: no error
    with pytest.raises(LampboxError, match="skip must be a whole number >= 0, not -1"):
        replace(spec, skip=-1)


def test_the_run_and_bench_keys_change_only_when_it_is_set(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from test_bench_plans import keys_with

    from lampbox.lab.specs import RunSpec, spec_from_json

    monkeypatch.setenv("LAMPBOX_HOME", str(tmp_path))
    seen = {skip: keys_with("skip", skip)[1] for skip in (0, 200, 300)}
    assert not set(seen[200]) & set(seen[300])  # two skips are two runs
    spec = RunSpec("LaMP_2", "user", "dev")
    assert "skip" not in spec.to_json() and spec_from_json(spec.to_json()).skip == 0
    assert spec_from_json(replace(spec, skip=7).to_json()) == replace(spec, skip=7)


def _pool_selector(home: Path, name: str, skip: int) -> None:
    """A selector folder as `lampbox train rspg` leaves it, its pool taken from a bench that
    skipped `skip` train questions (the pool runs' stored specs carry it)."""
    from lampbox.lab.specs import RunSpec

    folder = fake_model(home, name, kind="selector", task="LaMP_7")
    pool = [
        RunSpec("LaMP_7", "demo", "train", retriever=retriever, k=k, backend="dummy", limit=8, skip=skip)
        for retriever, k in (("none", 0), ("bm25", 1))
    ]
    settings = {"mode": "post", "task": "LaMP_7", "configurations": [s.label for s in pool], "pool": [s.to_json() for s in pool]}
    (folder / "selector.json").write_text(json.dumps(settings))


def test_rspg_pools_run_on_the_selections_questions(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A selector trained on a --skip train bench applies to a dev bench without a skip (its pool
    runs on the dev bench's questions), and an rspg row of a --skip bench selects among the
    pool's runs over the same skipped questions."""
    from lampbox.bench.runner import BenchSpec, build_grid
    from lampbox.engine.tasks import BUILTIN_TASKS
    from lampbox.lab.selection import selection_pool
    from lampbox.lab.specs import RunSpec, run_key

    monkeypatch.setenv("LAMPBOX_HOME", str(tmp_path))
    _pool_selector(tmp_path, "sel", skip=12)
    task = BUILTIN_TASKS["LaMP_7"]
    dev = RunSpec("LaMP_7", "demo", "dev", method="rspg-post", selector="sel", limit=4)
    pool = selection_pool(dev)
    assert [s.skip for _, s in pool] == [0, 0] and {(s.split, s.limit) for _, s in pool} == {("dev", 4)}
    skipping = BenchSpec("LaMP_7", "demo", "train", retrievers=("none", "bm25"), ks=(1,), backends=("dummy",),
                         baselines=False, limit=4, skip=5, selectors=("rspg-post:sel",))  # fmt: skip
    grid = build_grid(skipping, task)
    models, (selection, role) = [spec for spec, _ in grid[:-1]], grid[-1]
    assert role == "selection" and selection.skip == 5
    pool_specs = [s for _, s in selection_pool(selection)]
    assert [run_key(s, task) for s in pool_specs] == [run_key(s, task) for s in models]  # the bench's own rows
    assert run_key(selection, task) != run_key(replace(selection, skip=0), task)


def _bench(home: Path, db: Path, *args: str) -> Any:
    from lampbox.cli import cli

    return CliRunner(env={"LAMPBOX_HOME": str(home)}).invoke(cli, ["bench", "--db", str(db), *args])


def test_bench_flag_grid_config_and_plan(demo_db: Path, tmp_path: Path) -> None:
    from lampbox.demo import demo_path
    from lampbox.store import Store
    from lampbox.store.runs import run_predictions

    ids = [str(q["id"]) for q in json.loads((demo_path() / "dev_questions.json").read_text())]
    home, out = tmp_path / "home", ("--out", str(tmp_path / "preds"))
    grid = _bench(home, demo_db, *DUMMY_BENCH, "--skip", "6", "--json", *out)  # --limit 8
    assert grid.exit_code == 0, grid.output
    config = _bench(home, demo_db, "--task", "LaMP_7", "--limit", "8", "--skip", "6", "--json", *out,
                    "--config", "method=retrieval-only retriever=recency k=1")  # fmt: skip
    assert config.exit_code == 0, config.output
    plan_file = tmp_path / "plan.toml"
    plan_file.write_text('task = "LaMP_7"\nskip = 6\nlimit = 8\n[[configurations]]\nmethod = "retrieval-only"\nretriever = "recency"\nk = 1\n')
    planned = _bench(home, demo_db, "--plan", str(plan_file), "--json", *out)
    assert planned.exit_code == 0, planned.output
    results = [json.loads(r.stdout) for r in (grid, config, planned)]
    assert [result["spec"]["skip"] for result in results] == [6, 6, 6]  # in each bench's record
    assert results[1]["rows"][0]["run_key"] == results[2]["rows"][0]["run_key"]  # --config and plan: one run
    grid_rows = {row["label"]: row["run_key"] for row in results[0]["rows"]}
    assert results[1]["rows"][0]["run_key"] == grid_rows["recency k=1 retrieval-only"]
    with Store(demo_db, read_only=True) as store:
        for result in results:
            for row in result["rows"]:
                assert [p.question_id for p in run_predictions(store, row["run_key"])] == ids[6:14], row["label"]
    table = _bench(home, demo_db, *DUMMY_BENCH, "--skip", "6", *out)
    assert table.exit_code == 0 and "8 questions after the first 6" in table.stdout
    plan_table = _bench(home, demo_db, "--plan", str(plan_file), "--skip", "10", *out)  # the flag overrides the plan
    assert plan_table.exit_code == 0 and "8 questions after the first 10" in plan_table.stdout


def test_bench_bad_skips_are_one_line(commits_store_path: Path, git_commits: Path, tmp_path: Path) -> None:
    import shutil

    from lampbox.store import Store
    from lampbox.store import runs as run_store

    db, home = tmp_path / "commits.duckdb", tmp_path / "home"
    shutil.copy(commits_store_path, db)
    count = len(_file_questions(git_commits))
    grid = ("--task", "commit_area", "--backend", "dummy", "--retrievers", "recency", "--k", "1")
    past = _bench(home, db, *grid, "--skip", str(count))
    assert one_line_error(past) == f"Error: --skip {count} leaves no question: commit_area user dev has {count} questions"
    plan_file = tmp_path / "plan.toml"
    plan_file.write_text('task = "commit_area"\nskip = 400\nusers = 3\n[[configurations]]\nmethod = "retrieval-only"\nretriever = "recency"\nk = 1\n')
    theirs = sum(user in _first_users(_file_questions(git_commits), 3) for _, user in _file_questions(git_commits))
    message = f"--skip 400 leaves no question: commit_area user dev has {theirs} questions (the first 3 users)"
    assert one_line_error(_bench(home, db, "--plan", str(plan_file))) == f"Error: {message}"
    with Store(db) as store:  # (the failed in-process commands' store is still open in this process)
        assert run_store.list_benches(store) == [] and run_store.list_runs(store) == []  # nothing half-written
    assert "-1 is not in the range x>=0" in _bench(home, db, *grid, "--skip", "-1").output
    plan_file.write_text('task = "commit_area"\nskip = -2\n[[configurations]]\nmethod = "retrieval-only"\nretriever = "recency"\nk = 1\n')
    assert "skip must be a whole number >= 0, not -2" in one_line_error(_bench(home, db, "--plan", str(plan_file)))
