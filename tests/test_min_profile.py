"""--min-profile N: only the users whose every question has at least N profile items (the
issue's "users with >= 10 profile items"), on the stand-in commit_area dev split, where users
have 6, 8 and 9 items; it composes with --users (the first N of those users), keeps the keys of
runs and benches that do not set it, and flows through the grid, --config and a plan file."""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import one_line_error
from click.testing import CliRunner

from lampbox.errors import LampboxError


def _smallest_profiles(git_commits: Path, task: str = "commit_area", split: str = "dev") -> dict[str, int]:
    """Each user's smallest profile over their questions, read from the files, users in file order."""
    sizes: dict[str, list[int]] = defaultdict(list)
    for question in json.loads((git_commits / task / f"{split}_questions.json").read_text()):
        sizes[question["user_id"]].append(len(question["profile"]))
    return {user: min(found) for user, found in sizes.items()}


def test_first_users_keeps_the_users_with_enough_profile_items(commits_store_path: Path, git_commits: Path) -> None:
    from lampbox.store import Store

    smallest = _smallest_profiles(git_commits)
    assert {6, 8, 9} <= set(smallest.values())  # the stand-in has users under 10
    expected = [user for user, size in smallest.items() if size >= 10]
    with Store(commits_store_path, read_only=True) as store:
        everyone = store.first_users("commit_area", "user", "dev")
        enough = store.first_users("commit_area", "user", "dev", min_profile=10)
        first_three = store.first_users("commit_area", "user", "dev", 3, min_profile=10)
        nine = store.first_users("commit_area", "user", "dev", min_profile=9)
        assert store.first_users("commit_area", "user", "dev", min_profile=0) == everyone
    assert everyone == list(smallest)
    assert enough == expected and 0 < len(enough) < len(everyone)
    assert first_three == expected[:3]
    assert set(nine) - set(enough) == {user for user, size in smallest.items() if size == 9}


def test_a_run_with_min_profile_answers_only_those_users(commits_store: Any, git_commits: Path) -> None:
    from lampbox.lab.pipeline import run
    from lampbox.lab.specs import RunSpec

    smallest = _smallest_profiles(git_commits)
    spec = RunSpec("commit_area", "user", "dev", retriever="recency", k=1, method="retrieval-only", min_profile=10)
    record = run(spec, commits_store)
    assert {p.user_id for p in record.predictions} == {user for user, size in smallest.items() if size >= 10}
    first_two = run(replace(spec, users=2), commits_store)
    assert list(dict.fromkeys(p.user_id for p in first_two.predictions)) == [u for u, s in smallest.items() if s >= 10][:2]
    with pytest.raises(LampboxError, match="no user of commit_area user dev has 1000 or more profile items"):
        run(replace(spec, min_profile=1000), commits_store)
    with pytest.raises(LampboxError, match="min_profile cannot be negative"):
        replace(spec, min_profile=-1)


def test_the_run_and_bench_keys_change_only_when_it_is_set(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from test_bench_plans import keys_with

    from lampbox.lab.specs import RunSpec

    monkeypatch.setenv("LAMPBOX_HOME", str(tmp_path))
    for min_profile in (None, 10):
        keys_with("min_profile", min_profile)
    assert "min_profile" not in RunSpec("LaMP_2", "user", "dev").to_json()


def _bench(db: Path, *args: str) -> Any:
    from lampbox.cli import cli

    return CliRunner().invoke(
        cli, ["bench", "--task", "commit_area", "--db", str(db), "--json", "--min-profile", *args], catch_exceptions=False
    )


def test_bench_flag_grid_config_and_plan(commits_store_path: Path, git_commits: Path, tmp_path: Path) -> None:
    import shutil

    from lampbox.store import Store
    from lampbox.store.runs import run_predictions

    db = tmp_path / "bench.duckdb"
    shutil.copy(commits_store_path, db)
    wanted = [user for user, size in _smallest_profiles(git_commits).items() if size >= 10][:2]
    grid = _bench(db, "10", "--users", "2", "--backend", "dummy", "--retrievers", "recency", "--k", "1", "--out", str(tmp_path))
    assert grid.exit_code == 0, grid.stderr
    config = _bench(db, "10", "--users", "2", "--config", "method=retrieval-only retriever=recency k=1", "--out", str(tmp_path))
    assert config.exit_code == 0, config.stderr
    plan_file = tmp_path / "plan.toml"
    plan_file.write_text('min_profile = 10\nusers = 2\n[[configurations]]\nmethod = "retrieval-only"\nretriever = "recency"\nk = 1\n')
    from lampbox.cli import cli

    planned = CliRunner().invoke(
        cli, ["bench", "--task", "commit_area", "--db", str(db), "--json", "--plan", str(plan_file), "--out", str(tmp_path)]
    )
    assert planned.exit_code == 0, planned.stderr
    results = [json.loads(r.stdout) for r in (grid, config, planned)]
    assert [result["spec"]["min_profile"] for result in results] == [10, 10, 10]  # in each bench's record
    with Store(db, read_only=True) as store:
        for result in results:
            for row in result["rows"]:
                users = list(dict.fromkeys(p.user_id for p in run_predictions(store, row["run_key"])))
                assert users == wanted, row["label"]
    assert "-1 is not in the range x>=0" in _bench(db, "-1").output
    plan_file.write_text('min_profile = -2\n[[configurations]]\nmethod = "retrieval-only"\nretriever = "recency"\nk = 1\n')
    bad = CliRunner().invoke(cli, ["bench", "--task", "commit_area", "--db", str(db), "--plan", str(plan_file)])
    assert "min_profile must be a whole number >= 0, not -2" in one_line_error(bad)
