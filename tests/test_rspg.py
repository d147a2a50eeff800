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


def test_the_kl_loss_on_a_hand_computed_case() -> None:
    import math

    import torch

    from lampbox.engine.rspg.selector import kl_loss

    scores = torch.tensor([[0.0, math.log(3.0)]])  # softmax: 1/4, 3/4
    targets = torch.tensor([[math.log(3.0), 0.0]])  # softmax: 3/4, 1/4
    expected = 0.75 * math.log(0.75 / 0.25) + 0.25 * math.log(0.25 / 0.75)
    assert float(kl_loss(scores, targets, 1.0)) == pytest.approx(expected, abs=1e-6)
    # T = 2 halves both logit vectors: softmax(log 3 / 2) gives 1 / (1 + sqrt 3) against sqrt 3 / (1 + sqrt 3)
    low, high = 1 / (1 + math.sqrt(3)), math.sqrt(3) / (1 + math.sqrt(3))
    assert float(kl_loss(scores, targets, 2.0)) == pytest.approx(high * math.log(high / low) + low * math.log(low / high), abs=1e-6)
    assert float(kl_loss(targets, targets, 0.5)) == pytest.approx(0.0, abs=1e-7)


def test_the_kl_loss_decreases_on_a_fixed_batch(benches: dict[str, Any]) -> None:
    """A few optimizer steps of the real selector (MiniLM + head) on one batch of the pool."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    from lampbox.engine.rspg.selector import (
        PadCandidates,
        encode_questions,
        encoder_source,
        kl_loss,
        selector_module,
    )
    from lampbox.lab.rspg import bench_pool
    from lampbox.store import Store

    with Store(benches["db"]) as store:
        pool = bench_pool(store, benches["train"].bench_key)
    source = encoder_source("all-MiniLM-L6-v2")
    tokenizer = AutoTokenizer.from_pretrained(source)
    rows = encode_questions(tokenizer, pool.questions[:2], "post", 32, True)
    batch = PadCandidates(tokenizer.pad_token_id)(rows)
    assert batch["input_ids"].shape[:2] == (2, 5) and batch["targets"].shape == (2, 5)
    torch.manual_seed(0)
    model = selector_module(AutoModel.from_pretrained(source))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    losses = []
    for _ in range(6):
        loss = kl_loss(model(batch["input_ids"], batch["attention_mask"]), batch["targets"], 0.1)
        losses.append(loss.item())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert losses[-1] < losses[0] / 2, losses
