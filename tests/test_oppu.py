"""OPPU: a task adapter, then one adapter per user of the evaluated split trained on that user's
own profile items only, from the same clean base; re-runs skip trained users; a user without
items is named; `--method oppu` serves each question with its user's adapter (outputs equal
those of base + task adapter + that user's adapter merged). A tiny random Llama with
SmolLM2's tokenizer and a tiny commit_subject-shaped dataset: ann and bob have history, cyd
has none."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from oppu_helpers import PROFILES, oppu_dataset

from lampbox.errors import LampboxError

pytestmark = pytest.mark.slow

@pytest.fixture(scope="module")
def store_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from lampbox.store import Store
    from lampbox.store.importer import import_path

    folder = tmp_path_factory.mktemp("oppu-data")
    path = folder / "oppu.duckdb"
    with Store(path) as store:
        import_path(store, oppu_dataset(folder / "commit_subject"), allow_empty_profiles=True)
    return path


def _spec(tiny_lm: Path, **overrides: Any):  # type: ignore[no-untyped-def]
    from lampbox.engine.training.trainer import LoraSettings, TrainConfig
    from lampbox.lab.oppu import OppuSpec
    from lampbox.lab.training import TrainSpec

    task_config = TrainConfig(max_steps=1, batch_size=2, precision="fp32", lr=1e-4, lora=LoraSettings(r=4, alpha=8))
    task_spec = TrainSpec(task="commit_subject", scheme="user", retriever="bm25", k=1, model=str(tiny_lm), dev_limit=0, config=task_config)
    user_config = TrainConfig(
        max_steps=2, batch_size=2, precision="fp32", lr=2e-1, checkpoints=False,
        lora=LoraSettings(r=4, alpha=8, dropout=0.0, targets=("q_proj", "v_proj")),
    )  # fmt: skip
    values: dict[str, Any] = dict(task="commit_subject", scheme="user", model=str(tiny_lm), config=user_config, task_spec=task_spec)
    values.update(overrides)
    return OppuSpec(**values)


@pytest.fixture(scope="module")
def trained(store_path: Path, tiny_lm: Path, module_home: Path) -> dict[str, Any]:
    """The set `tiny-oppu` trained once for the module, with what each user's objective held
    and the base's weights before and after."""
    import torch

    import lampbox.engine.training.adapters as adapters_module
    import lampbox.engine.training.oppu as oppu_module
    from lampbox.lab.oppu import train_oppu
    from lampbox.store import Store

    seen: dict[str, Any] = {"examples": [], "bases": [], "store_open": []}
    real_objective, real_trainer = oppu_module.user_objective, adapters_module.AdapterTrainer

    def objective(*args: Any, **kwargs: Any) -> Any:
        made = real_objective(*args, **kwargs)
        seen["examples"].append(made.train_examples)
        seen["store_open"].append(store.is_open)  # as this user's training starts
        return made

    class Watched(real_trainer):  # type: ignore[misc,valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            seen["trainer"] = self
            seen["bases"].append({k: v.clone() for k, v in self.base_weights().items()})

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(oppu_module, "user_objective", objective)
        patch.setattr(adapters_module, "AdapterTrainer", Watched)
        with Store(store_path, hold_lock=False) as store:  # gives the file back, as the command's does
            notes: list[str] = []
            seen["result"] = train_oppu(_spec(tiny_lm), store, "tiny-oppu", on_user=notes.append)
    seen["users_done"] = notes
    seen["after"] = seen["trainer"].base_weights()
    seen["equal_base"] = all(torch.equal(seen["bases"][0][k], seen["after"][k]) for k in seen["after"])
    return seen


def test_the_store_is_given_back_while_each_user_trains(trained: dict[str, Any]) -> None:
    """A bench beside `train oppu` gets the store in between: no user trains with it open (the
    read-back of the previous user's registration used to reopen it for the next one's time)."""
    assert len(trained["store_open"]) >= 2 and not any(trained["store_open"]), trained["store_open"]


def test_each_user_adapter_learns_only_that_users_items(trained: dict[str, Any], tiny_lm: Path, module_home: Path) -> None:
    from transformers import AutoTokenizer

    from lampbox.model_folders import read_info

    result = trained["result"]
    assert result.trained == ["ann", "bob"] and result.empty == ["cyd"] and result.existing == []
    assert result.task_adapter == "tiny-oppu.task"
    tokenizer = AutoTokenizer.from_pretrained(tiny_lm)
    for user, examples in zip(["ann", "bob"], trained["examples"], strict=True):
        assert len(examples) == len(PROFILES[user])
        titles = [tokenizer.decode(e.target_ids, skip_special_tokens=True) for e in examples]
        assert titles == [item["title"] for item in PROFILES[user]]  # their own items, nothing else
        info = read_info(module_home / "models" / f"tiny-oppu.u.{user}")
        assert info["kind"] == "user-adapter" and info["user"] == user and info["task_adapter"] == "tiny-oppu.task"
        assert info["items"] == [item["id"] for item in PROFILES[user]]
    # the base (task adapter merged) is loaded once and left bit for bit as it was
    assert len(trained["bases"]) == 1 and trained["equal_base"]
    assert [(d.user_id, d.status) for d in trained["users_done"]] == [("ann", "trained"), ("bob", "trained"), ("cyd", "empty")]
    assert trained["users_done"][0].eta_seconds is not None
    assert not (module_home / "models" / "tiny-oppu.u.cyd").exists()
    record = read_info(module_home / "models" / "tiny-oppu")
    assert record["kind"] == "oppu" and set(record["users"]) == {"ann", "bob"} and record["skipped"] == ["cyd"]


def test_a_rerun_skips_trained_users(trained: dict[str, Any], store_path: Path, tiny_lm: Path, module_home: Path) -> None:
    from lampbox.lab.oppu import train_oppu
    from lampbox.store import Store
    from lampbox.store.artifacts import list_artifacts

    adapter = module_home / "models" / "tiny-oppu.u.ann" / "adapter" / "adapter_model.safetensors"
    stamp = adapter.stat().st_mtime_ns
    with Store(store_path) as store:
        result = train_oppu(_spec(tiny_lm), store, "tiny-oppu")
        kinds = {a.name: a.kind for a in list_artifacts(store)}
    assert result.trained == [] and result.existing == ["ann", "bob"] and result.empty == ["cyd"]
    assert adapter.stat().st_mtime_ns == stamp
    assert kinds == {"tiny-oppu": "oppu", "tiny-oppu.task": "lora", "tiny-oppu.u.ann": "user-adapter", "tiny-oppu.u.bob": "user-adapter"}


def test_profile_pairs_are_part_of_the_task_adapters_identity(trained: dict[str, Any], store_path: Path, tiny_lm: Path) -> None:
    """The same set with --profile-pairs is other settings: refused, its task adapter not reused."""
    from lampbox.lab.oppu import train_oppu
    from lampbox.store import Store

    spec = _spec(tiny_lm)
    with_pairs = replace(spec, task_spec=replace(spec.task_spec, profile_pairs=True))
    assert with_pairs.task_spec.to_json() != spec.task_spec.to_json()
    with Store(store_path) as store, pytest.raises(LampboxError, match="trained with other settings"):
        train_oppu(with_pairs, store, "tiny-oppu")


def test_min_profile_trains_only_the_users_with_enough_items(trained: dict[str, Any], store_path: Path, tiny_lm: Path, module_home: Path) -> None:
    """--min-profile 3: of ann (3 items), bob (2) and cyd (0) only ann gets an adapter; with
    --users, the first N of the users left; a --user under it is left out and named."""
    from lampbox.lab.oppu import select_users, train_oppu
    from lampbox.model_folders import read_info
    from lampbox.store import Store

    spec = _spec(tiny_lm, task_adapter="tiny-oppu.task", task_spec=None, min_profile=3)
    with Store(store_path) as store:
        assert select_users(_spec(tiny_lm, min_profile=2, users=1), store) == (["ann"], [])
        assert select_users(_spec(tiny_lm, min_profile=2), store) == (["ann", "bob"], [])
        assert select_users(_spec(tiny_lm, min_profile=1, user_ids=("cyd", "bob")), store) == (["bob"], ["cyd"])
        with pytest.raises(LampboxError, match="no user of commit_subject user dev has 4 or more profile items"):
            select_users(_spec(tiny_lm, min_profile=4), store)
        notes: list[str] = []
        result = train_oppu(spec, store, "tiny-min", on_note=notes.append)
        assert result is not None and result.trained == ["ann"] and result.empty == [] and result.too_few == []
        assert notes[0] == "--min-profile 3: 1 users with at least 3 profile items"
        again = train_oppu(replace(spec, user_ids=("ann", "bob")), store, "tiny-min")  # the same set: adds nobody
    assert again is not None and again.existing == ["ann"] and again.trained == [] and again.too_few == ["bob"]
    assert set(read_info(module_home / "models" / "tiny-min")["users"]) == {"ann"}
    assert not (module_home / "models" / "tiny-min.u.bob").exists()


def _merged(tiny_lm: Path, adapters: list[Path], folder: Path) -> Path:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_lm)
    for adapter in adapters:
        model = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(tiny_lm).save_pretrained(folder)
    return folder


def test_bench_oppu_answers_each_question_with_its_users_adapter(
    trained: dict[str, Any], store_path: Path, tiny_lm: Path, module_home: Path, tmp_path: Path
) -> None:  # fmt: skip
    from lampbox.engine.generation.base import GenerationParams
    from lampbox.engine.generation.hf import HFGenerator
    from lampbox.lab.pipeline import run
    from lampbox.lab.specs import RunSpec, run_key
    from lampbox.store import Store

    params = GenerationParams(max_new_tokens=6)
    models = module_home / "models"
    with Store(store_path) as store:
        for k, retriever in ((0, "none"), (1, "bm25")):  # OPPU alone, OPPU + RAG
            spec = RunSpec("commit_subject", "user", "dev", retriever=retriever, k=k, backend="hf", model="tiny-oppu",
                           method="oppu", params=params)  # fmt: skip
            record = run(spec, store)
            by_user = {p.user_id: p for p in record.predictions}
            assert set(record.user_scores) == {"ann", "bob", "cyd"}
            outputs = {}
            for user in ("ann", "bob"):
                adapters = [models / "tiny-oppu.task" / "adapter", models / f"tiny-oppu.u.{user}" / "adapter"]
                merged = HFGenerator(str(_merged(tiny_lm, adapters, tmp_path / f"{user}-{k}")))
                outputs[user] = merged.generate([by_user[user].prompt, by_user["ann"].prompt], params)
                assert by_user[user].raw_output == outputs[user][0]
                assert len(by_user[user].item_keys) == k  # k retrieved items in the prompt (OPPU + RAG)
            assert outputs["ann"][1] != outputs["bob"][1]  # the two adapters answer ann's prompt differently
            task_only = HFGenerator(str(_merged(tiny_lm, [models / "tiny-oppu.task" / "adapter"], tmp_path / f"task-{k}")))
            assert by_user["cyd"].raw_output == task_only.generate([by_user["cyd"].prompt], params)[0]  # no adapter
        key = run_key(spec, store.task("commit_subject"))
    # a user's adapter retrained: the set's runs are keyed anew
    record_file = models / "tiny-oppu" / "lampbox-model.json"
    info = json.loads(record_file.read_text())
    info["users"]["ann"]["content_hash"] = "changed"
    record_file.write_text(json.dumps(info))
    with Store(store_path) as store:
        assert run_key(spec, store.task("commit_subject")) != key


def _invoke(*args: Any) -> Result:
    from lampbox.cli import cli

    return CliRunner().invoke(cli, [str(arg) for arg in args], catch_exceptions=False)


def _one_line(result: Result, fragment: str) -> None:
    assert result.exit_code != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0], result.stderr


def test_bad_flags_are_one_clear_line(trained: dict[str, Any], store_path: Path, tiny_lm: Path, tmp_path: Path) -> None:
    db = tmp_path / "copy.duckdb"
    shutil.copy(store_path, db)
    base = ["train", "oppu", "--task", "commit_subject", "--model", tiny_lm, "--db", db, "--name"]
    _one_line(_invoke(*base, "x1", "--users", "0"), "--users must be at least 1")
    _one_line(_invoke(*base, "x2", "--users", "2", "--user", "ann"), "not both")
    _one_line(_invoke(*base, "x3", "--user", "nobody"), "no user 'nobody'")
    _one_line(_invoke(*base, "x7", "--min-profile", "-1"), "--min-profile cannot be negative (got -1)")
    _one_line(_invoke(*base, "x8", "--min-profile", "99", "--task-adapter", "tiny-oppu.task"), "has 99 or more profile items")
    _one_line(_invoke(*base, "x4", "--task-adapter", "missing"), "no trained model named 'missing'")
    _one_line(_invoke(*base, "x5", "--task-adapter", "tiny-oppu.u.ann"), "not a LoRA adapter")
    _one_line(_invoke(*base, "tiny-oppu", "--user-lr", "0"), "--user-lr must be greater than 0")
    _one_line(_invoke(*base, "x6", "--task-adapter", "tiny-oppu.task", "--profile-pairs"), "cannot apply to an existing --task-adapter")
    # the set under other settings: refused, not mixed
    _one_line(_invoke(*base, "tiny-oppu", "--user-epochs", "3", "--task-adapter", "tiny-oppu.task"), "other settings")
    bench = ["bench", "--task", "commit_subject", "--method", "oppu", "--db", db, "--retrievers", "none", "--no-baselines"]
    _one_line(_invoke(*bench, "--backend", "hf", "--model", tiny_lm), "not one")
    _one_line(_invoke(*bench, "--backend", "fid", "--model", "tiny-oppu"), "per-user adapters (hf, llamacpp, openai), not fid")
    _one_line(_invoke(*bench, "--backend", "llamacpp", "--model", "tiny-oppu"), "needs a GGUF model")  # the set's base is not one


def test_torchrun_shards_users_and_trains_the_same_adapters_as_one_process(store_path: Path, tiny_lm: Path, tmp_path: Path) -> None:
    """2 CPU processes (gloo): the task adapter trained by both (DDP), then each user trained by
    exactly one rank; rank 0 alone registers and reports. One process on that task adapter then
    trains bit-identical user adapters (same seed, LoRA dropout on)."""
    import os
    import subprocess
    import sys

    from safetensors.torch import load_file

    from lampbox.store import Store
    from lampbox.store.artifacts import list_artifacts

    db = tmp_path / "copy.duckdb"
    shutil.copy(store_path, db)
    home = tmp_path / "home"
    env = {**os.environ, "LAMPBOX_HOME": str(home), "LAMPBOX_THREADS": "1", "OMP_NUM_THREADS": "1"}
    common = [
        "-m", "lampbox", "train", "oppu", "--task", "commit_subject", "--model", str(tiny_lm), "--k", "1",
        "--max-steps", "1", "--batch-size", "2", "--dev-limit", "0", "--precision", "fp32", "--lora-r", "4",
        "--user-max-steps", "2", "--user-lr", "0.2", "--db", str(db),
    ]  # fmt: skip
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2"]
    two = subprocess.run([*launcher, *common, "--name", "two"], env=env, capture_output=True, text=True, timeout=900)
    assert two.returncode == 0, two.stderr[-3000:]
    assert two.stdout.count("OPPU set two: 2 users trained, 0 trained before") == 1, two.stdout  # rank 0 alone reports
    assert "skipped 1 users with no profile items: cyd" in two.stdout
    trained_lines = [line for line in two.stderr.splitlines() if ": user " in line and "trained in" in line]
    by_user = {user: [line for line in trained_lines if f" {user} (" in line] for user in ("ann", "bob")}
    assert all(len(lines) == 1 for lines in by_user.values()), trained_lines  # each user exactly once
    assert {lines[0].split(":")[0] for lines in by_user.values()} == {"rank 0", "rank 1"}  # one user per rank

    one = subprocess.run(
        [sys.executable, *common, "--task-adapter", "two.task", "--name", "one", "--json"], env=env, capture_output=True, text=True,
        timeout=900,
    )  # fmt: skip
    assert one.returncode == 0, one.stderr[-3000:]
    assert json.loads(one.stdout)["trained"] == ["ann", "bob"]
    for user in ("ann", "bob"):
        first, second = (load_file(home / "models" / f"{name}.u.{user}" / "adapter" / "adapter_model.safetensors") for name in ("one", "two"))
        assert first.keys() == second.keys() and all(torch_equal(first[k], second[k]) for k in first), user
    with Store(db, read_only=True) as store:
        artifacts = {a.name: a for a in list_artifacts(store)}
    assert {name: a.kind for name, a in artifacts.items() if name.startswith("two")} == {
        "two": "oppu", "two.task": "lora", "two.u.ann": "user-adapter", "two.u.bob": "user-adapter",
    }  # fmt: skip
    record = json.loads((home / "models" / "two" / "lampbox-model.json").read_text())
    user_config = json.loads((home / "models" / "two.u.ann" / "lampbox-model.json").read_text())["spec"]["config"]
    assert user_config["share_prefix"] is True and user_config["attention"] == "eager"  # the CLI's defaults on the CPU
    assert user_config["bf16_base"] is True  # the CLI's default (in force under bf16 precision)
    assert {user: entry["content_hash"] for user, entry in record["users"].items()} == {
        user: artifacts[f"two.u.{user}"].content_hash for user in ("ann", "bob")
    }


def torch_equal(first: Any, second: Any) -> bool:
    import torch

    return bool(torch.equal(first, second))


def test_a_plan_bench_of_none_rag_task_lora_oppu_and_the_peft_vs_rag_analysis(
    trained: dict[str, Any], store_path: Path, tiny_lm: Path, tmp_path: Path
) -> None:  # fmt: skip
    """`--config` rows on the set are labelled task-lora / oppu / oppu+rag; a second bench is
    served from the store; the analysis finds its rows from the runs (none and rag on the set's
    model, the task adapter: the paper's non-personalized model) and its gains are those rows'."""
    db = tmp_path / "plan.duckdb"
    shutil.copy(store_path, db)
    common = "backend=hf max_new_tokens=4"
    configs = [
        f"label=base method=ipa model={tiny_lm} {common}",
        f"method=ipa model=tiny-oppu {common}",
        f"method=ipa model=tiny-oppu retriever=bm25 k=1 {common}",
        f"method=oppu model=tiny-oppu {common}",
        f"method=oppu model=tiny-oppu retriever=bm25 k=1 {common}",
    ]
    args = ["bench", "--task", "commit_subject", "--db", db, "--json", *(a for c in configs for a in ("--config", c))]
    first = _invoke(*args)
    assert first.exit_code == 0, first.stderr
    data = json.loads(first.stdout)
    labels = [row["label"] for row in data["rows"]]
    assert labels == ["base", "task-lora", "task-lora+rag bm25 k=1", "oppu", "oppu+rag bm25 k=1"]
    again = json.loads(_invoke(*args).stdout)
    assert again["bench_key"] == data["bench_key"] and [r["run_key"] for r in again["rows"]] == [r["run_key"] for r in data["rows"]]
    report = _invoke("report", data["bench_key"], "--db", db, "--analysis", "peft-vs-rag", "--format", "json", "--no-plot")
    analysis = json.loads(report.stdout)
    assert analysis["rows"] == {"none": "task-lora", "rag": "task-lora+rag bm25 k=1", "peft": "oppu", "both": "oppu+rag bm25 k=1"}
    rows = {row["label"]: row for row in data["rows"]}
    # one question per user: the mean per-user score is the row's rouge-1
    for role, label in (("rag", "task-lora+rag bm25 k=1"), ("peft", "oppu"), ("both", "oppu+rag bm25 k=1")):
        expected = rows[label]["metrics"]["rouge-1"] - rows["task-lora"]["metrics"]["rouge-1"]
        assert analysis["overall"]["gains"][role] == pytest.approx(expected, abs=1e-9)
    assert analysis["overall"]["users"] == 3
    # The TUI's `h` on this bench (an OPPU bench: all four roles found) shows the report's numbers.
    from lampbox.bench.peft_rag import oppu_bench_analysis
    from lampbox.store import Store

    with Store(db, read_only=True) as store:
        shown = oppu_bench_analysis(store, data["bench_key"])
    assert shown is not None and json.loads(json.dumps(shown.to_json())) == analysis
    # the task adapter named as itself (as benchmarks/paper_stand_in.sh does) is the set's model too
    from dataclasses import replace

    from lampbox.bench.paper import load_bench
    from lampbox.bench.peft_rag import pick_rows

    with Store(db, read_only=True) as store:
        key, _, records, _ = load_bench(store, data["bench_key"])
    renamed = [
        (replace(record, spec=replace(record.spec, model="tiny-oppu.task")) if record.spec.model == "tiny-oppu" and record.spec.method == "ipa" else record, label)
        for record, label in records
    ]  # fmt: skip
    assert [r.spec.model for r, _ in renamed].count("tiny-oppu.task") == 2
    picked = pick_rows(renamed, {}, key, [])
    assert (picked["none"].spec.model, picked["rag"].spec.model) == ("tiny-oppu.task", "tiny-oppu.task")  # not the base row
