"""RSPG as bench configurations: rspg-pre:NAME and rspg-post:NAME rows beside the pool's, the
oracle and the success rate, Pre's single generation per question, report and compare on the
selections, a bench with rspg rows killed and resumed. Tiny sizes: a 2-layer random Llama on
the hf backend answers the LaMP_7 demo set; the selectors are a 2-layer random BERT trained
for 2 steps."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import lampbox

from lampbox.errors import LampboxError

POOL = {"retrievers": ("none", "bm25", "recency"), "ks": (1,), "backends": ("hf",), "baselines": False}


def pool_bench(split: str, model: Path, **extra: Any) -> Any:
    from lampbox.bench.runner import BenchSpec
    from lampbox.engine.generation.base import GenerationParams

    fields = {**POOL, **extra}
    return BenchSpec("LaMP_7", "demo", split, model=str(model), params=GenerationParams(max_new_tokens=6), **fields)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, module_home: Path, tiny_lm: Path, tiny_encoder: Path) -> dict[str, Any]:
    """A demo store with a train-split bench over a pool of three model configurations, and
    an RSPG-Pre (sel-pre) and an RSPG-Post (sel-post) selector trained on it for 2 steps."""
    from lampbox.bench.runner import run_bench
    from lampbox.demo import demo_path
    from lampbox.engine.training.trainer import TrainConfig
    from lampbox.lab.rspg import RSPGSpec, train_selector
    from lampbox.store import Store
    from lampbox.store.importer import import_path

    path = tmp_path_factory.mktemp("rspg-bench") / "demo.duckdb"
    config = TrainConfig(epochs=1, lr=1e-3, batch_size=8, lora=None, precision="fp32", group_by_length=False, max_steps=2)
    with Store(path) as store:
        import_path(store, demo_path(), task_name="LaMP_7", scheme="demo")
        train = run_bench(pool_bench("train", tiny_lm), store)
        for mode in ("pre", "post"):
            spec = RSPGSpec("LaMP_7", train.bench_key, None, mode, str(tiny_encoder), max_length=48, config=config)
            train_selector(spec, store, f"sel-{mode}")
    return {"db": path, "train": train, "home": module_home, "model": tiny_lm}


class CountingPool:
    """A GeneratorPool whose generators count the prompts they are asked to generate."""

    def __init__(self) -> None:
        from lampbox.engine.generation.pool import GeneratorPool

        self.pool = GeneratorPool()
        self.prompts: list[str] = []

    def get(self, backend: str, model: str, options: Any = ()) -> Any:
        generator = self.pool.get(backend, model, options)
        counted = self.prompts

        class Counting:
            def __getattr__(self, name: str) -> Any:
                return getattr(generator, name)

            def generate(self, prompts: Any, params: Any, **kwargs: Any) -> list[str]:
                counted.extend(getattr(p, "prompt", p) for p in prompts)
                return generator.generate(prompts, params, **kwargs)

        return Counting()


def test_rspg_pre_generates_once_per_question(trained: dict[str, Any], tmp_path: Path) -> None:
    """A bench of rspg-pre alone: the pool's prompts are built, nothing of the pool is run, and
    exactly one answer per question is generated (the chosen configuration's)."""
    from lampbox.bench.plan import SELECTION, Configuration, Plan
    from lampbox.bench.runner import run_bench
    from lampbox.lab.selection import selection_pool
    from lampbox.lab.specs import RunSpec, run_key
    from lampbox.store import Store
    from lampbox.store import runs as run_store

    db = tmp_path / "copy.duckdb"
    shutil.copy(trained["db"], db)
    counting = CountingPool()
    spec = RunSpec("LaMP_7", "demo", "dev", method="rspg-pre", selector="sel-pre")
    with Store(db) as store:
        result = run_bench(Plan("LaMP_7", "demo", "dev", (Configuration(spec, SELECTION),), reference=0), store, generators=counting)  # type: ignore[arg-type]
        pre = result.rows[0].record
        task = store.task("LaMP_7")
        statuses = [run_store.run_status(store, run_key(pool_spec, task)) for _, pool_spec in selection_pool(spec)]
    assert len(pre.predictions) == 16 and pre.spec.label == "rspg-pre:sel-pre" and result.rows[0].role == "selection"
    assert len(counting.prompts) == 16 and pre.generated == 16 and pre.cached == 0  # one generation per question
    assert sorted(counting.prompts) == sorted(p.prompt or "" for p in pre.predictions)  # each the chosen one's
    assert statuses == [None, None, None]  # no configuration of the pool was run
    labels = [row.record.label for row in trained["train"].rows]
    assert {p.kept["rspg"]["chosen"] for p in pre.predictions} <= set(labels)
    assert all(len(p.kept["rspg"]["probabilities"]) == 3 for p in pre.predictions)
    assert pre.selection is None  # no pool runs stored: no oracle to compare with


def test_rspg_rows_beside_their_pool(trained: dict[str, Any], tmp_path: Path) -> None:
    """rspg-pre and rspg-post in the grid beside the pool: the selection composes the pool's
    answers, the oracle bounds everything, the success rate and the tests are as by hand;
    report and compare take the selections like any run."""
    from lampbox.bench.compare import compare_runs
    from lampbox.bench.paper import build_report
    from lampbox.bench.runner import run_bench
    from lampbox.store import Store

    db = tmp_path / "copy.duckdb"
    shutil.copy(trained["db"], db)
    bench = pool_bench("dev", trained["model"], selectors=("rspg-post:sel-post", "rspg-pre:sel-pre"))
    with Store(db) as store:
        result = run_bench(bench, store)  # type: ignore[arg-type]
        report = build_report(store, result.bench_key[:10])
        post_row, pre_row = result.rows[3], result.rows[4]
        compared = compare_runs(store, post_row.record.run_key[:10], result.rows[0].record.run_key)
        again = run_bench(bench, store)  # type: ignore[arg-type]
    singles = [row.record for row in result.rows[:3]]
    assert [row.role for row in result.rows] == ["baseline", "retrieval", "retrieval", "selection", "selection"]
    for row in (post_row, pre_row):
        record, selection = row.record, row.record.selection
        assert selection is not None and row.baseline_label == singles[0].label and row.p_value is not None
        chosen = [[r.label for r in singles].index(p.kept["rspg"]["chosen"]) for p in record.predictions]
        assert chosen == selection.chosen
        for q, (prediction, index) in enumerate(zip(record.predictions, chosen, strict=True)):
            assert prediction.output == singles[index].predictions[q].output  # the chosen configuration's answer
        best = [max(r.predictions[q].main_score or 0.0 for r in singles) for q in range(16)]
        oracle = sum(best) / 16
        assert selection.oracle["rouge-1"] == pytest.approx(oracle)
        assert all(oracle >= r.metrics["rouge-1"] for r in [*singles, record])
        hits = sum(singles[i].predictions[q].main_score == best[q] for q, i in enumerate(chosen))
        assert selection.success_rate == pytest.approx(hits / 16)
        assert selection.best_single.metric == max(r.metrics["rouge-1"] for r in singles)
        assert sum(u.n_questions for u in record.user_scores.values()) == 16  # per-user scores
        assert selection.generations["post"] == 3 * 16 and selection.generations["pre"] == 16
    assert pre_row.record.generated == 0 and pre_row.record.cached == 16  # the pool rows generated them first
    # served from the store: the same comparison, rebuilt from the choices its predictions keep
    stored = again.rows[3].record
    assert stored.from_store and stored.selection.to_json()["oracle"] == post_row.record.selection.to_json()["oracle"]
    assert stored.selection.chosen == post_row.record.selection.chosen
    labels = [row.label for row in report.rows]
    assert "rspg-post:sel-post" in labels and "rspg-pre:sel-pre" in labels
    assert compared.n == 16 and compared.a.label == "rspg-post:sel-post"


def test_the_oracle_and_the_success_rate_by_hand() -> None:
    """Three configurations, four questions: the oracle takes each question's best (ties to
    the first), the success rate counts a pick that ties the best as a success."""
    from lampbox.engine.rspg.pool import (
        CandidateAnswer,
        QuestionCandidates,
        oracle_scores,
        success_rate,
    )

    metrics = [(0.2, 0.5, 0.1), (0.9, 0.3, 0.9), (0.0, 0.0, 0.4), (0.7, 0.8, 0.6)]
    questions = [
        QuestionCandidates(f"q{i}", "u", tuple(CandidateAnswer(name, "", "", m) for name, m in zip("abc", row, strict=True)))
        for i, row in enumerate(metrics)
    ]
    assert oracle_scores(questions, True) == [0.5, 0.9, 0.4, 0.8]
    assert oracle_scores(questions, False) == [0.1, 0.3, 0.0, 0.6]  # an error metric: the lowest
    assert success_rate(questions, [1, 2, 0, 0], True) == 0.5  # q1's 0.9 ties: a success; q3 is not
    assert success_rate(questions, [2, 1, 0, 2], False) == 1.0


def test_bad_rspg_configurations_are_one_clear_line(trained: dict[str, Any]) -> None:
    env = {**os.environ, "LAMPBOX_HOME": str(trained["home"])}
    db = str(trained["db"])

    def fails(*args: str) -> str:
        result = lampbox(*args, "--db", db, check=False, env=env)
        assert result.returncode != 0, result.stdout
        lines = [line for line in result.stderr.splitlines() if line.strip() and "demo data" not in line]
        assert len(lines) == 1, result.stderr
        return lines[0]

    grid = ("bench", "--task", "LaMP_7", "--retrievers", "none", "--backend", "dummy", "--limit", "2")
    assert "use rspg-post:sel-post" in fails(*grid, "--selectors", "rspg-pre:sel-post")
    assert "no trained selector named 'nothing'" in fails(*grid, "--selectors", "rspg-post:nothing")
    assert "--selectors takes rspg-pre:NAME or rspg-post:NAME" in fails(*grid, "--selectors", "sel-post")
    assert "RSPG rows come from --selectors" in fails(*grid, "--method", "rspg-pre")
    config = ("bench", "--task", "LaMP_7", "--limit", "2")
    assert "remove retriever" in fails(*config, "--config", "method=rspg-post selector=sel-post retriever=bm25 k=1")
    assert "selector is missing" in fails(*config, "--config", "method=rspg-post")
    assert "selector applies to method rspg-pre or rspg-post" in fails(*config, "--config", "method=retrieval-only retriever=bm25 k=1 selector=sel-post")


def test_a_pool_whose_runs_answer_different_questions_is_one_line(trained: dict[str, Any], tmp_path: Path) -> None:
    from lampbox.lab.rspg import bench_pool
    from lampbox.store import Store

    db = tmp_path / "copy.duckdb"
    shutil.copy(trained["db"], db)
    train = trained["train"]
    with Store(db) as store:
        with store.transaction() as cursor:  # as if one run had been made on other questions
            cursor.execute(
                "DELETE FROM predictions WHERE run_key = ? AND question_id = ?",
                [train.rows[1].record.run_key, train.rows[1].record.predictions[0].question_id],
            )
        with pytest.raises(LampboxError, match="does not answer the same questions as"):
            bench_pool(store, train.bench_key)


def rows_by_label(output: str) -> dict[str, dict[str, Any]]:
    return {row["label"]: row for row in json.loads(output)["rows"]}


@pytest.mark.slow
def test_a_bench_with_rspg_rows_resumes_after_a_kill(trained: dict[str, Any], tmp_path: Path) -> None:
    """Killed (SIGKILL) while rspg-pre generates its chosen answers; the same command resumes
    from the generation cache and gives the uninterrupted bench's results."""
    env = {**os.environ, "LAMPBOX_HOME": str(trained["home"])}
    db = tmp_path / "killed.duckdb"
    shutil.copy(trained["db"], db)
    args = [
        "bench", "--task", "LaMP_7", "--split", "dev", "--retrievers", "none", "--no-baselines", "--backend", "hf",
        "--model", str(trained["model"]), "--max-new-tokens", "6", "--batch-size", "1",
        "--selectors", "rspg-pre:sel-pre,rspg-post:sel-post", "--out", str(tmp_path / "preds"), "--json",
    ]  # fmt: skip
    process = subprocess.Popen([sys.executable, "-m", "lampbox", *args, "--db", str(db)], stderr=subprocess.PIPE, text=True, env=env)
    assert process.stderr is not None
    seen = []
    for line in process.stderr:
        seen.append(line)
        if line.startswith("[2/3] rspg-pre:sel-pre: generate 3/"):
            os.kill(process.pid, signal.SIGKILL)
            break
    process.wait()
    assert process.returncode == -signal.SIGKILL, "".join(seen)
    resumed = rows_by_label(lampbox(*args, "--db", str(db), env=env).stdout)
    pre, post = resumed["rspg-pre:sel-pre"], resumed["rspg-post:sel-post"]
    assert pre["cached"] >= 3 and pre["generated"] + pre["cached"] == 16  # resumed, not redone
    assert post["selection"]["questions"] == 16 and "selection" not in pre  # Pre ran before the pool was
    clean_db = tmp_path / "clean.duckdb"
    shutil.copy(trained["db"], clean_db)
    clean = rows_by_label(lampbox(*args, "--db", str(clean_db), env=env).stdout)
    for label, row in resumed.items():
        assert clean[label]["metrics"] == row["metrics"] and clean[label]["run_key"] == row["run_key"], label
    assert clean["rspg-post:sel-post"]["selection"] == post["selection"] | {"selector_seconds": clean["rspg-post:sel-post"]["selection"]["selector_seconds"]}
