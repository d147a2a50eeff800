"""OPPU's job logic without training: the spec's checks, which users are picked and how their
profiles are gathered, how torchrun ranks share them, and `train_oppu`'s bookkeeping (users
trained, reused or skipped for having no items; the set's record; the store given back while a
user trains; a set of other settings refused) with a stand-in for the adapter trainer. The real
training is test_oppu.py's, marked slow."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from oppu_helpers import PROFILES, oppu_dataset

from lampbox.errors import LampboxError


@pytest.fixture(scope="module")
def oppu_store_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from lampbox.store import Store
    from lampbox.store.importer import import_path

    folder = tmp_path_factory.mktemp("oppu-logic")
    path = folder / "oppu.duckdb"
    with Store(path) as store:
        import_path(store, oppu_dataset(folder / "commit_subject"), allow_empty_profiles=True)
    return path


def _config(**overrides: Any):  # type: ignore[no-untyped-def]
    from lampbox.engine.training.trainer import LoraSettings, TrainConfig

    values: dict[str, Any] = dict(max_steps=2, batch_size=2, precision="fp32", lr=0.1, checkpoints=False, lora=LoraSettings(r=4, alpha=8))
    values.update(overrides)
    return TrainConfig(**values)


def _spec(model: str = "tiny", **overrides: Any):  # type: ignore[no-untyped-def]
    from lampbox.lab.oppu import OppuSpec

    values: dict[str, Any] = dict(task="commit_subject", scheme="user", model=model, config=_config(), task_adapter="task-a")
    values.update(overrides)
    return OppuSpec(**values)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"task_adapter": None}, "needs a task adapter: an existing one by name, or one trained here"),
        ({"users": 0}, "--users must be at least 1 (got 0)"),
        ({"users": 2, "user_ids": ("ann",)}, "give --users N or --user ID, not both"),
        ({"config": _config(lora=None)}, "per-user adapters are LoRA adapters"),
        ({"config": _config(batch_size=0)}, "batch size and gradient accumulation must be at least 1"),
        ({"config": _config(lr=0.0)}, "--user-lr must be greater than 0 (got 0)"),
        ({"config": _config(max_steps=0)}, "--user-epochs must be positive and --user-max-steps at least 1"),
        ({"max_target_tokens": 0}, "--max-target-tokens must be at least 1 (got 0)"),
        ({"split": ""}, "the users' split cannot be empty"),
    ],
)
def test_a_bad_spec_is_one_clear_error(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(LampboxError) as error:
        _spec(**overrides)
    assert message in str(error.value)


def test_what_decides_a_users_adapter_is_in_its_json() -> None:
    spec = _spec(users=2)
    first = spec.user_json("task-a", "hash-1")
    assert first["task_adapter_hash"] == "hash-1" and first["config"]["lr"] == 0.1
    assert "users" not in first  # how many users a job takes does not change one user's adapter
    assert _spec(users=5).user_json("task-a", "hash-1") == first
    assert _spec(config=_config(lr=0.2)).user_json("task-a", "hash-1") != first
    assert spec.user_json("task-a", "hash-2") != first  # a retrained task adapter: users train again
    assert _spec(user_ids=("b", "a")).to_json()["user_ids"] == ["b", "a"]


def test_user_profiles_gather_each_users_items_once_in_first_seen_order() -> None:
    from lampbox.engine.training.oppu import user_profiles
    from lampbox.engine.types import ProfileItem, Question

    def item(key: str) -> ProfileItem:
        return ProfileItem(key, key, {"text": key})

    def question(qid: str, user: str, keys: str) -> Question:
        return Question("t", "user", "dev", qid, user, "x", profile=tuple(item(k) for k in keys))

    profiles = user_profiles([question("1", "bob", "cb"), question("2", "ann", "a"), question("3", "bob", "bdc")])
    assert list(profiles) == ["bob", "ann"]
    assert [i.key for i in profiles["bob"]] == ["c", "b", "d"] and [i.key for i in profiles["ann"]] == ["a"]


def test_users_are_picked_from_the_split_in_file_order(oppu_store_path: Path) -> None:
    from lampbox.lab.oppu import select_users
    from lampbox.store import Store

    with Store(oppu_store_path, read_only=True) as store:
        assert select_users(_spec(), store) == (["ann", "bob", "cyd"], [])
        assert select_users(_spec(users=2), store) == (["ann", "bob"], [])
        assert select_users(_spec(user_ids=("cyd", "ann", "cyd")), store) == (["cyd", "ann"], [])
        with pytest.raises(LampboxError, match="no user 'zed', 'yan' in commit_subject user dev"):
            select_users(_spec(user_ids=("ann", "zed", "yan")), store)
        with pytest.raises(LampboxError, match="no commit_subject user test questions"):
            select_users(_spec(split="test"), store)


def test_torchrun_ranks_take_every_nth_user_left(monkeypatch: pytest.MonkeyPatch) -> None:
    from lampbox.lab.oppu import _SharePlan

    todo = [(index, f"u{index}", []) for index in range(1, 8)]
    plan = _SharePlan("s", _spec(), "src", "adapter", {}, "fp", True, None, 7, todo)  # type: ignore[arg-type]
    assert plan.mine() == todo  # one process: all of them
    monkeypatch.setenv("WORLD_SIZE", "3")
    taken = []
    for rank in range(3):
        monkeypatch.setenv("RANK", str(rank))
        taken.append([user for _, user, _ in plan.mine()])
    assert taken == [["u1", "u4", "u7"], ["u2", "u5"], ["u3", "u6"]]


class _StandInTrainer:
    """AdapterTrainer's place: records what each user's adapter would learn from, writes a
    small adapter folder, and whether the store was open while it "trained"."""

    made: list[_StandInTrainer] = []
    store: Any = None

    def __init__(self, source: str, config: Any, *, task_adapter: str | None = None, threads: int | None = None) -> None:
        self.task_adapter = task_adapter
        self.examples: list[list[Any]] = []
        self.store_open: list[bool] = []
        _StandInTrainer.made.append(self)

    def train_adapter(self, objective: Any, folder: Path, **_: Any) -> Any:
        from lampbox.engine.training.trainer import TrainResult

        self.examples.append(objective.train_examples)
        self.store_open.append(_StandInTrainer.store.is_open)
        (folder / "adapter").mkdir(parents=True)
        (folder / "adapter" / "adapter_config.json").write_text(json.dumps({"examples": len(objective.train_examples)}))
        return TrainResult([], None, None, 1, 10, 0.0, None)


def test_train_oppu_trains_skips_and_reuses_users_and_writes_the_set(
    oppu_store_path: Path, tiny_lm: Path, home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import lampbox.engine.training.adapters as adapters_module
    from lampbox.engine.fingerprint import model_fingerprint
    from lampbox.lab.oppu import UserDone, train_oppu
    from lampbox.models import resolve_model
    from lampbox.store import Store

    base = resolve_model(str(tiny_lm))
    task_folder = home / "models" / "task-a"
    (task_folder / "adapter").mkdir(parents=True)
    (task_folder / "adapter" / "adapter_config.json").write_text("{}")
    record = {"name": "task-a", "kind": "lora", "task": "commit_subject", "base": str(tiny_lm),
              "base_fingerprint": model_fingerprint(base.location)}  # fmt: skip
    (task_folder / "lampbox-model.json").write_text(json.dumps(record))
    db = tmp_path / "oppu.duckdb"
    shutil.copy(oppu_store_path, db)
    monkeypatch.setattr(adapters_module, "AdapterTrainer", _StandInTrainer)
    _StandInTrainer.made = []
    spec = _spec(str(tiny_lm))

    def train(**overrides: Any) -> tuple[Any, list[UserDone]]:
        done: list[UserDone] = []
        with Store(db, hold_lock=False) as store:
            _StandInTrainer.store = store
            return train_oppu(overrides.pop("spec", spec), store, "set", on_user=done.append, **overrides), done

    result, done = train()
    (trainer,) = _StandInTrainer.made  # one loaded base for every user
    assert trainer.task_adapter == str(task_folder / "adapter")
    assert (result.trained, result.existing, result.empty) == (["ann", "bob"], [], ["cyd"])
    assert [(d.user_id, d.index, d.status) for d in done] == [("ann", 1, "trained"), ("bob", 2, "trained"), ("cyd", 3, "empty")]
    assert [len(examples) for examples in trainer.examples] == [len(PROFILES["ann"]), len(PROFILES["bob"])]
    assert trainer.store_open == [False, False]  # a bench beside the job gets the store in between
    user_info = json.loads((home / "models" / "set.u.ann" / "lampbox-model.json").read_text())
    assert user_info["kind"] == "user-adapter" and user_info["user"] == "ann" and user_info["task_adapter"] == "task-a"
    assert user_info["items"] == [item["id"] for item in PROFILES["ann"]]
    info = json.loads((home / "models" / "set" / "lampbox-model.json").read_text())
    assert info["kind"] == "oppu" and sorted(info["users"]) == ["ann", "bob"] and info["skipped"] == ["cyd"]
    assert info["users"]["bob"]["adapter"] == "set.u.bob" and info["users"]["bob"]["items"] == 2

    again, done = train()
    assert len(_StandInTrainer.made) == 1  # nothing left to train: no base loaded
    assert (again.trained, again.existing, again.empty) == ([], ["ann", "bob"], ["cyd"])
    assert [d.status for d in done] == ["existing", "existing", "empty"]
    assert json.loads((home / "models" / "set" / "lampbox-model.json").read_text())["users"] == info["users"]

    with pytest.raises(LampboxError, match="'set' was trained with other settings"):
        train(spec=_spec(str(tiny_lm), config=_config(lr=0.5)))
    retrained, _ = train(spec=_spec(str(tiny_lm), config=_config(lr=0.5)), overwrite=True)
    assert retrained.trained == ["ann", "bob"] and len(_StandInTrainer.made) == 2


def test_a_task_adapter_for_another_task_or_base_is_refused(oppu_store_path: Path, tiny_lm: Path, home: Path) -> None:
    from lampbox.lab.oppu import train_oppu
    from lampbox.store import Store

    folder = home / "models" / "task-a"
    (folder / "adapter").mkdir(parents=True)
    record = {"name": "task-a", "kind": "lora", "task": "commit_area", "base": "x", "base_fingerprint": "0" * 64}
    (folder / "lampbox-model.json").write_text(json.dumps(record))
    with Store(oppu_store_path, read_only=True) as store:
        with pytest.raises(LampboxError, match="--task-adapter task-a was trained for commit_area, not commit_subject"):
            train_oppu(_spec(str(tiny_lm)), store, "set")
        (folder / "lampbox-model.json").write_text(json.dumps({**record, "task": "commit_subject"}))
        with pytest.raises(LampboxError, match="--task-adapter task-a stands on 'x', whose weights differ"):
            train_oppu(_spec(str(tiny_lm)), store, "set")
        with pytest.raises(LampboxError, match="no trained model named 'missing'"):
            train_oppu(_spec(str(tiny_lm), task_adapter="missing"), store, "set")
