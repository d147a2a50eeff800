"""Trained models of every kind (issue 24, item 5): `models list --kind/--task`, what a model
stands on, `models rm` refusing a model others stand on unless `--with-dependents` and taking an
OPPU set's users' adapters with it, the m010 migration, and a training spec that owns its
learning-rate rule (the CLI passes threads as a value, never through the environment)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import fake_model, one_line_error
from click.testing import CliRunner, Result

from lampbox.cli import cli
from lampbox.errors import LampboxError
from lampbox.store import Store


def lampbox(*args: object) -> Result:
    return CliRunner().invoke(cli, [str(arg) for arg in args])


def oppu_set(home: Path, name: str, users: list[str], task_adapter: str | None = None) -> None:
    """An OPPU set as `train oppu` writes it: NAME.task (unless another task adapter is named),
    one NAME.u.<user> per user, then the set's record naming them."""
    from lampbox.model_folders import user_adapter_name

    task_adapter = task_adapter or f"{name}.task"
    if not (home / "models" / task_adapter).exists():
        fake_model(home, task_adapter)
    entries = {}
    for user in users:
        adapter = user_adapter_name(name, user)
        spec = {"method": "oppu", "task": "commit_subject", "task_adapter": task_adapter, "user": user}
        fake_model(home, adapter, "user-adapter", method="oppu", user=user, task_adapter=task_adapter, spec=spec)
        entries[user] = {"adapter": adapter, "content_hash": "h", "items": 3}
    folder = home / "models" / name
    folder.mkdir(parents=True)
    record = {"name": name, "kind": "oppu", "method": "oppu", "task": "commit_subject", "base": "smollm2-135m-instruct",
              "base_fingerprint": "fp", "task_adapter": task_adapter, "users": entries, "spec": {"task_adapter": None},
              "history": [], "metrics": {}}  # fmt: skip
    (folder / "lampbox-model.json").write_text(json.dumps(record))


def register_all(db: Path) -> None:
    result = lampbox("models", "doctor", "--fix", "--db", db)
    assert result.exit_code == 0, result.output


def listed(db: Path, *flags: str) -> list[str]:
    result = lampbox("models", "list", "--db", db, "--json", *flags)
    assert result.exit_code == 0, result.output
    return sorted(entry["name"] for entry in json.loads(result.output))


def on_disk(home: Path) -> set[str]:
    return {path.name for path in (home / "models").iterdir() if not path.name.startswith(".")}


# -- models list --kind / --task ---------------------------------------------------------------


def test_list_filters_by_kind_and_task_and_shows_what_a_user_adapter_stands_on(home: Path, db: Path) -> None:
    fake_model(home, "subject-lora")
    fake_model(home, "subject-full", "full")
    fake_model(home, "area-lora", task="commit_area")
    fake_model(home, "area-fid", "fid", method="fid", task="commit_area")
    fake_model(home, "old-fid", "full", method="fid", architecture="fid", task="commit_area")  # saved before kind fid
    fake_model(home, "subject-ropg", "retriever", method="ropg-kd")
    oppu_set(home, "s", ["ann", "bob"])
    register_all(db)

    assert listed(db, "--kind", "generator") == ["area-lora", "s.task", "subject-full", "subject-lora"]
    assert listed(db, "--kind", "lora", "--task", "commit_subject") == ["s.task", "subject-lora"]
    assert listed(db, "--kind", "fid") == ["area-fid", "old-fid"]
    assert listed(db, "--task", "commit_area") == ["area-fid", "area-lora", "old-fid"]
    assert listed(db, "--kind", "user-adapter") == ["s.u.ann", "s.u.bob"]
    assert listed(db, "--kind", "retriever", "--task", "commit_area") == []
    rows = json.loads(lampbox("models", "list", "--db", db, "--json", "--kind", "user-adapter").output)
    assert {(r["name"], r["user"], r["stands_on"]) for r in rows} == {("s.u.ann", "ann", "s.task"), ("s.u.bob", "bob", "s.task")}
    table = CliRunner().invoke(cli, ["models", "list", "--db", str(db), "--kind", "oppu"], env={"COLUMNS": "200"})
    assert table.exit_code == 0 and "stands on" in table.output and "s.task" in table.output
    empty = lampbox("models", "list", "--db", db, "--kind", "selector")
    assert empty.exit_code == 0 and "no trained models of kind selector yet" in empty.output


def test_a_bad_kind_is_one_line_naming_the_kinds(home: Path, db: Path) -> None:
    line = one_line_error(lampbox("models", "list", "--kind", "adapter", "--db", db))
    assert "unknown model kind 'adapter'" in line
    assert "user-adapter" in line and "generator" in line and "selector" in line


def test_show_names_what_a_model_stands_on_and_what_stands_on_it(home: Path, db: Path) -> None:
    oppu_set(home, "s", ["ann", "bob"])
    register_all(db)
    shown = json.loads(lampbox("models", "show", "s.task", "--db", db, "--json").output)
    assert shown["stood_on_by"] == ["s", "s.u.ann", "s.u.bob"] and shown["stands_on"] is None
    shown = json.loads(lampbox("models", "show", "s", "--db", db, "--json").output)
    assert shown["parts"] == ["s.u.ann", "s.u.bob"] and shown["stands_on"] == "s.task" and shown["stood_on_by"] == []
    text = lampbox("models", "show", "s.u.ann", "--db", db).output
    assert "user: ann" in text and "stands_on: s.task" in text
    assert "dependents: OPPU set s stands on 's.u.ann' (with user adapter s.u.bob)" in text


# -- models rm: dependents named, removed only when asked ------------------------------------


def test_rm_of_a_task_adapter_names_its_dependents_then_removes_them_with_the_flag(home: Path, db: Path) -> None:
    oppu_set(home, "s", ["ann", "bob"])
    oppu_set(home, "t", ["cyd"], task_adapter="s.task")  # a second set on the same task adapter
    fake_model(home, "other")
    register_all(db)
    before = on_disk(home)
    line = one_line_error(lampbox("models", "rm", "s.task", "--db", db))
    assert "OPPU sets s, t" in line and "user adapters s.u.ann, s.u.bob, t.u.cyd" in line
    assert "stand on 's.task'" in line and "--with-dependents" in line
    assert on_disk(home) == before and "s.task" in listed(db)  # nothing removed

    result = lampbox("models", "rm", "s.task", "--with-dependents", "--db", db)
    assert result.exit_code == 0, result.output
    removed = [line.split(":")[0] for line in result.output.splitlines() if line.startswith("removed ")]
    assert removed == ["removed s", "removed t", "removed s.u.ann", "removed s.u.bob", "removed t.u.cyd", "removed s.task"]
    assert on_disk(home) == {"other"} and listed(db) == ["other"]


def test_rm_of_an_oppu_set_takes_its_users_adapters_and_keeps_its_task_adapter(home: Path, db: Path) -> None:
    oppu_set(home, "s", ["ann", "user/with:odd chars"])
    oppu_set(home, "s.u", ["zed"], task_adapter="s.task")  # a set whose name begins like s's adapters
    register_all(db)
    odd = next(name for name in on_disk(home) if name.startswith("s.u.user_with_odd_chars-"))
    result = lampbox("models", "rm", "s", "--db", db)
    assert result.exit_code == 0, result.output
    assert f"removed {odd}:" in result.output and "removed s.u.ann:" in result.output
    assert "kept s.task, which s stood on" in result.output
    assert on_disk(home) == {"s.task", "s.u", "s.u.u.zed"}
    assert listed(db) == ["s.task", "s.u", "s.u.u.zed"]


def test_rm_of_one_users_adapter_names_its_set(home: Path, db: Path) -> None:
    oppu_set(home, "s", ["ann", "bob"])
    register_all(db)
    line = one_line_error(lampbox("models", "rm", "s.u.ann", "--db", db))
    assert "OPPU set s stands on 's.u.ann' (with user adapter s.u.bob)" in line
    assert lampbox("models", "rm", "s.u.ann", "--with-dependents", "--db", db).exit_code == 0
    assert on_disk(home) == {"s.task"}


def test_rm_of_a_set_killed_before_its_record_removes_the_users_adapters_it_left(home: Path, db: Path) -> None:
    oppu_set(home, "s", ["ann", "bob"])
    shutil.rmtree(home / "models" / "s")  # killed before the set's record was written
    register_all(db)
    result = lampbox("models", "rm", "s", "--db", db)
    assert result.exit_code == 0, result.output
    assert on_disk(home) == {"s.task"} and listed(db) == ["s.task"]


def test_rm_refuses_all_while_one_dependent_is_in_use(home: Path, db: Path) -> None:
    from lampbox.model_folders import hold_name

    oppu_set(home, "s", ["ann"])
    register_all(db)
    before = on_disk(home)
    with hold_name("s", "train oppu s"):
        line = one_line_error(lampbox("models", "rm", "s.task", "--with-dependents", "--db", db))
    assert "'s' is in use by train oppu s" in line and on_disk(home) == before


# -- kinds in the folder records and the store -----------------------------------------------


def test_a_fid_model_is_kind_fid_and_an_old_one_resolves_as_before(home: Path) -> None:
    from lampbox.models import resolve_model

    for name, kind in (("new-fid", "fid"), ("old-fid", "full")):
        folder = fake_model(home, name, kind, method="fid", architecture="fid")
        resolved = resolve_model(name)
        assert (resolved.format, resolved.location, resolved.adapter) == ("hf", str(folder / "model"), None)


def test_m010_fills_users_task_adapters_and_fid_kinds_of_rows_made_before(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lampbox.store import migrations
    from lampbox.store.artifacts import list_artifacts

    path = tmp_path / "old.duckdb"
    before = [entry for entry in migrations.MIGRATIONS if entry[0] < "m010"]
    monkeypatch.setattr(migrations, "MIGRATIONS", before)
    with Store(path) as store:
        rows = [
            ("area-fid", "full", "fid", {}),
            ("s.u.ann", "user-adapter", "oppu", {"user": "ann", "task_adapter": "s.task"}),
            ("s", "oppu", "oppu", {"task_adapter": None}),
            ("t", "oppu", "oppu", {"task_adapter": "mine"}),
            ("plain", "lora", "ipa", {"task_adapter": "not-an-oppu-field"}),
        ]
        with store.transaction() as cursor:
            for name, kind, method, spec in rows:
                cursor.execute(
                    "INSERT INTO artifacts (name, kind, method, task, base_model, base_fingerprint, spec, history, "
                    "metrics, path, content_hash) VALUES (?, ?, ?, 'commit_subject', 'b', 'fp', ?, '[]', '{}', 'p', 'h')",
                    [name, kind, method, json.dumps(spec)],
                )  # fmt: skip
    monkeypatch.undo()
    with Store(path) as store:
        found = {a.name: (a.kind, a.user_id, a.stands_on) for a in list_artifacts(store)}
    assert found == {
        "area-fid": ("fid", None, None), "s.u.ann": ("user-adapter", "ann", "s.task"), "s": ("oppu", None, "s.task"),
        "t": ("oppu", None, "mine"), "plain": ("lora", None, None),
    }  # fmt: skip


def test_every_kind_a_job_writes_is_a_known_kind() -> None:
    from lampbox.engine.ropg.retriever import RETRIEVER_KIND
    from lampbox.lab.oppu import SET_KIND, USER_KIND
    from lampbox.lab.rspg import SELECTOR_KIND
    from lampbox.model_folders import KIND_GROUPS, KINDS

    assert {RETRIEVER_KIND, SET_KIND, USER_KIND, SELECTOR_KIND, "lora", "full", "fid"} == set(KINDS)
    assert all(set(kinds) <= set(KINDS) for kinds in KIND_GROUPS.values())


# -- the training spec owns its defaults; threads are a value, not an environment variable ----


def test_the_learning_rate_rule_lives_in_the_spec() -> None:
    from lampbox.engine.training.trainer import LoraSettings
    from lampbox.lab.training import FULL_LR, LORA_LR, TrainSpec

    assert (LORA_LR, FULL_LR) == (2e-4, 5e-5)
    fields: dict[str, Any] = {"task": "commit_subject", "scheme": "user"}
    assert TrainSpec.build(config={"lora": LoraSettings()}, **fields).config.lr == LORA_LR
    assert TrainSpec.build(config={"lora": None, "lr": None}, **fields).config.lr == FULL_LR
    assert TrainSpec.build(config={"lora": None, "lr": 1e-3}, **fields).config.lr == 1e-3
    with pytest.raises(LampboxError, match="--lr must be greater than 0"):
        TrainSpec.build(config={"lora": None, "lr": 0.0}, **fields)
    with pytest.raises(LampboxError, match="unknown retriever 'bm26'"):
        TrainSpec.build(config={"lora": None}, retriever="bm26", **fields)


@pytest.mark.parametrize(("flags", "lr", "threads"), [(["--full"], 5e-5, None), (["--lora", "--threads", "3"], 2e-4, 3), (["--full", "--lr", "1e-3"], 1e-3, None)])
def test_train_ipa_hands_the_spec_its_defaults_and_threads_as_a_value(
    flags: list[str], lr: float, threads: int | None, home: Path, tmp_path: Path, commits_store_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    import lampbox.lab.training as training

    seen: dict[str, Any] = {}

    def fake_train_model(spec: Any, store: Any, name: str, **options: Any) -> Any:
        seen.update(spec=spec, threads=options.get("threads"), environ=os.environ.get("LAMPBOX_THREADS"))
        raise LampboxError("stopped by the test")

    monkeypatch.setattr(training, "train_model", fake_train_model)
    monkeypatch.delenv("LAMPBOX_THREADS", raising=False)
    db = tmp_path / "commits.duckdb"
    shutil.copy(commits_store_path, db)
    line = one_line_error(lampbox("train", "ipa", "--task", "commit_subject", "--name", "x", "--db", db, *flags))
    assert line.endswith("stopped by the test")
    assert seen["spec"].config.lr == lr and (seen["spec"].config.lora is None) == ("--full" in flags)
    assert seen["threads"] == threads and seen["environ"] is None


def test_threads_below_one_are_one_line(home: Path, db: Path) -> None:
    line = one_line_error(lampbox("train", "ipa", "--task", "commit_subject", "--name", "x", "--threads", "0", "--db", db))
    assert "--threads must be at least 1 (got 0)" in line


@pytest.mark.parametrize(("command", "module", "function"), [("oppu", "lampbox.lab.oppu", "train_oppu"), ("ropg", "lampbox.lab.ropg", "train_ropg")])
def test_train_oppu_and_ropg_hand_threads_to_the_job_as_a_value(
    command: str, module: str, function: str, home: Path, tmp_path: Path, commits_store_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    import importlib

    seen: dict[str, Any] = {}

    def fake_job(*args: Any, **options: Any) -> Any:
        generators = options.get("generators")
        pool_options = generators._backend_options if generators is not None else None
        seen.update(threads=options.get("threads"), pool=pool_options, environ=os.environ.get("LAMPBOX_THREADS"))
        raise LampboxError("stopped by the test")

    monkeypatch.setattr(importlib.import_module(module), function, fake_job)
    monkeypatch.delenv("LAMPBOX_THREADS", raising=False)
    db = tmp_path / "commits.duckdb"
    shutil.copy(commits_store_path, db)
    line = one_line_error(lampbox("train", command, "--task", "commit_subject", "--name", "x", "--threads", "2", "--db", db))
    assert line.endswith("stopped by the test")
    assert seen["threads"] == 2 and seen["environ"] is None
    if command == "ropg":  # the feedback's generator runs on them too
        # (and decode the feedback 8 at a time: llamacpp's default, the default backend; a loading
        # option of both batching backends, as bench's --batch-size is)
        assert seen["pool"] == {"llamacpp": {"threads": 2, "batch_size": 8}, "hf": {"threads": 2, "batch_size": 8}}
