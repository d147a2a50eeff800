"""RSPG: a stored bench as the selector's pool, the selector trained on the core, selection
composed from stored runs. Tiny sizes: dummy-backend benches on the LaMP_7 demo set."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from lampbox.errors import LampboxError

POOL = {"retrievers": ("none", "bm25", "recency"), "ks": (1,), "backends": ("dummy",)}


@pytest.fixture(scope="module")
def benches(tmp_path_factory: pytest.TempPathFactory, module_home: Path) -> dict[str, Any]:
    """A demo store with one train-split and one dev-split bench over the same pool."""
    from lampbox.bench.runner import BenchSpec, run_bench
    from lampbox.demo import demo_path
    from lampbox.store import Store
    from lampbox.store.importer import import_path

    path = tmp_path_factory.mktemp("rspg") / "demo.duckdb"
    with Store(path) as store:
        import_path(store, demo_path(), task_name="LaMP_7", scheme="demo")
        train = run_bench(BenchSpec("LaMP_7", "demo", "train", **POOL), store)  # type: ignore[arg-type]
        dev = run_bench(BenchSpec("LaMP_7", "demo", "dev", **POOL), store)  # type: ignore[arg-type]
        one = run_bench(BenchSpec("LaMP_7", "demo", "dev", retrievers=("none",), ks=(1,), backends=("dummy",)), store)
    return {"db": path, "train": train, "dev": dev, "one": one}


def test_a_bench_is_read_as_candidates_per_question(benches: dict[str, Any]) -> None:
    from lampbox.lab.rspg import bench_pool
    from lampbox.store import Store

    train = benches["train"]
    with Store(benches["db"]) as store:
        pool = bench_pool(store, train.bench_key[:8])
    labels = [row.record.label for row in train.rows]
    assert pool.configurations == labels and len(labels) == 5  # none, bm25, recency, and 2 retrieval-only
    assert any("retrieval-only" in label for label in labels)
    assert len(pool.questions) == 24 and pool.split == "train"
    baseline = train.rows[0].record
    for index, question in enumerate(pool.questions):
        assert [c.configuration for c in question.candidates] == labels
        for row, answer in zip(train.rows, question.candidates, strict=True):
            prediction = row.record.predictions[index]
            assert prediction.question_id == question.question_id
            assert answer.output == prediction.output and answer.metric == prediction.main_score
            # a model-free candidate has no prompt of its own: the unpersonalized one stands in
            assert answer.prompt == (prediction.prompt or baseline.predictions[index].prompt)


def test_bad_pools_are_one_clear_line(benches: dict[str, Any]) -> None:
    from lampbox.lab.rspg import bench_pool
    from lampbox.store import Store

    with Store(benches["db"]) as store:
        with pytest.raises(LampboxError, match="no stored bench"):
            bench_pool(store, "ffffffff")
        with pytest.raises(LampboxError, match="a pool of one candidate"):
            bench_pool(store, benches["one"].bench_key)
