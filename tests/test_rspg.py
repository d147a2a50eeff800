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
        other = run_bench(BenchSpec("LaMP_7", "demo", "dev", retrievers=("none", "bm25"), ks=(1,), backends=("dummy",)), store)
    return {"db": path, "train": train, "dev": dev, "one": one, "other": other}


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


@pytest.mark.slow
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
    rows = encode_questions(tokenizer, pool.questions[:1], "post", 24, True)
    batch = PadCandidates(tokenizer.pad_token_id)(rows)
    assert batch["input_ids"].shape[:2] == (1, 5) and batch["targets"].shape == (1, 5)
    torch.manual_seed(0)
    model = selector_module(AutoModel.from_pretrained(source))
    model.encoder.embeddings.requires_grad_(False)  # the layers and the head train: half the work
    model.eval()  # no dropout: the loss changes only with the weights
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    losses = []
    for _ in range(4):
        loss = kl_loss(model(batch["input_ids"], batch["attention_mask"]), batch["targets"], 0.1)
        losses.append(loss.item())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert max(losses[1:]) < losses[0] / 2, losses


@pytest.mark.slow
def test_a_trained_selector_picks_the_better_candidate(tiny_encoder: Path, tmp_path: Path) -> None:
    """Through the training core: a pool where one configuration is always best is learned."""
    from transformers import AutoTokenizer

    from lampbox.engine.rspg.pool import CandidateAnswer, QuestionCandidates
    from lampbox.engine.rspg.selector import SelectorObjective, encode_questions, load_selector
    from lampbox.engine.training.objective import TrainingObjective
    from lampbox.engine.training.trainer import TrainConfig, train

    def question(index: int) -> QuestionCandidates:
        prompt = f"write a title for paper number {index}"
        answers = (
            CandidateAnswer("bm25 k=1", prompt, f"a title {index}", 0.2),
            CandidateAnswer("recency k=1", prompt, f"another title {index}", 0.9),
            CandidateAnswer("none", prompt, f"some words {index}", 0.1),
        )
        return QuestionCandidates(f"q{index}", "u", answers)

    tokenizer = AutoTokenizer.from_pretrained(tiny_encoder)
    train_rows = encode_questions(tokenizer, [question(i) for i in range(16)], "pre", 32, True)
    dev_rows = encode_questions(tokenizer, [question(i) for i in range(16, 24)], "pre", 32, True)
    settings = {"mode": "pre", "label": "RSPG-Pre", "max_length": 32, "configurations": ["bm25 k=1", "recency k=1", "none"]}
    objective = SelectorObjective(str(tiny_encoder), tokenizer, train_rows, dev_rows, temperature=0.1, settings=settings)
    assert isinstance(objective, TrainingObjective)
    config = TrainConfig(
        epochs=5, lr=3e-3, batch_size=4, lora=None, precision="fp32", group_by_length=False, checkpoints=False,
        warmup_ratio=0.0,
    )  # fmt: skip
    model, result = train(objective, config, tmp_path / "work")
    dev = [entry for entry in result.history if "eval_success" in entry]
    assert dev[-1]["eval_success"] == 1.0 and dev[-1]["eval_selected"] == pytest.approx(0.9)
    objective.save(model, tmp_path)
    loaded = load_selector(tmp_path)
    assert loaded.mode == "pre" and loaded.configurations == settings["configurations"]


@pytest.fixture(scope="module")
def post_selector(benches: dict[str, Any], tiny_encoder: Path) -> Any:
    """RSPG-Post trained for 2 steps on the train bench (dev: the dev bench), as `sel-post`."""
    from lampbox.engine.training.trainer import TrainConfig
    from lampbox.lab.rspg import RSPGSpec, train_selector
    from lampbox.store import Store

    config = TrainConfig(epochs=1, lr=1e-3, batch_size=8, lora=None, precision="fp32", group_by_length=False, max_steps=2)
    spec = RSPGSpec(
        "LaMP_7", benches["train"].bench_key[:10], benches["dev"].bench_key[:10], "post", str(tiny_encoder),
        max_length=48, config=config,
    )  # fmt: skip
    with Store(benches["db"]) as store:
        return train_selector(spec, store, "sel-post")


def test_a_selector_trained_on_a_bench_composes_a_stored_run(benches: dict[str, Any], post_selector: Any) -> None:
    from lampbox.bench.compare import compare_runs
    from lampbox.lab.rspg import RSPG_RUN_KIND, apply_selector
    from lampbox.store import Store
    from lampbox.store import runs as run_store
    from lampbox.store.selection import selector_probabilities

    artifact, result = post_selector
    assert artifact.kind == "selector" and artifact.method == "rspg-post" and result.steps == 2
    assert set(artifact.metrics) == {"selected", "success"}  # dev evaluated on the dev bench
    assert artifact.spec["train_bench"] == benches["train"].bench_key  # prefixes resolved
    with Store(benches["db"]) as store:
        selection = apply_selector(store, "sel-post", benches["dev"].bench_key)
        stored = run_store.get_run(store, selection.run_key)
        assert stored is not None and stored.kind == RSPG_RUN_KIND and stored.status == "finished"
        predictions = run_store.run_predictions(store, selection.run_key)
        users = run_store.user_scores(store, selection.run_key)
        probabilities = selector_probabilities(store, "LaMP_7", "demo", predictions[0].question_id, selection.run_key)
        compared = compare_runs(store, selection.run_key[:10], benches["dev"].rows[0].record.run_key)  # compare takes it
        assert compared.n == 16 and compared.a.spec.selector == "sel-post"
    rows = benches["dev"].rows
    assert len(predictions) == 16 and sum(u.n_questions for u in users.values()) == 16
    for q, (prediction, index) in enumerate(zip(predictions, selection.chosen, strict=True)):
        assert prediction == rows[index].record.predictions[q]  # the chosen configuration's answer
        assert max(selection.probabilities[q]) == selection.probabilities[q][index]
    assert selection.selector_seconds > 0  # the encoder's inference is timed (the summary printed 0.00 s)
    mean = sum(p.main_score or 0.0 for p in predictions) / len(predictions)
    assert stored.metrics["rouge-1"] == pytest.approx(mean)
    assert probabilities is not None and probabilities.label == "RSPG-Post sel-post"  # what the TUI shows
    assert probabilities.candidates[0].probability == pytest.approx(max(selection.probabilities[0]))
    # the oracle bounds every single configuration and the selection
    singles = [row.record.metrics["rouge-1"] for row in rows]
    assert all(selection.oracle["rouge-1"] >= value for value in [*singles, mean])
    assert selection.best_single.metric == max(singles) and selection.baseline is not None
    assert selection.baseline.label == rows[0].record.label and selection.baseline.p_value is not None
    best = [max(row.record.predictions[q].main_score or 0.0 for row in rows) for q in range(16)]
    hits = sum((p.main_score or 0.0) == b for p, b in zip(predictions, best, strict=True))
    assert selection.success_rate == pytest.approx(hits / 16)
    assert selection.generations == {"post": 16 * 3, "pre": sum(rows[i].record.spec.uses_model for i in selection.chosen), "new": 0}


def test_bad_training_and_selection_inputs_are_one_clear_line(
    benches: dict[str, Any], tiny_encoder: Path, post_selector: Any
) -> None:
    from click.testing import CliRunner

    from lampbox.cli import cli

    runner = CliRunner()
    db = str(benches["db"])
    train, dev, other = (benches[name].bench_key[:10] for name in ("train", "dev", "other"))

    def fails(*args: str) -> str:
        result = runner.invoke(cli, [*args, "--db", db])
        assert result.exit_code != 0, result.output
        lines = [line for line in result.output.splitlines() if line.strip() and "demo data" not in line]
        assert len(lines) == 1, result.output
        return lines[0]

    common = ("train", "rspg", "--task", "LaMP_7", "--encoder", str(tiny_encoder), "--name", "bad", "--max-steps", "1")
    assert "on the dev split" in fails(*common, "--train-bench", dev)
    assert "another pool than the train bench" in fails(*common, "--train-bench", train, "--dev-bench", other)
    assert "a pool of one candidate" in fails(*common, "--train-bench", benches["one"].bench_key)
    assert "--temperature must be greater than 0" in fails(*common, "--train-bench", train, "--temperature", "0")
    assert "no trained selector named 'nothing'" in fails("rspg", "apply", "nothing", "--bench", dev)
    assert "another pool than selector 'sel-post'" in fails("rspg", "apply", "sel-post", "--bench", other)
    bench = ("bench", "--task", "LaMP_7", "--split", "dev", "--backend", "hf", "--retrievers", "none", "--model", "sel-post")
    assert "is an RSPG selector, not a generation model" in fails(*bench)


@pytest.mark.slow
def test_torchrun_on_two_processes_trains_the_selector_one_process_trains(benches: dict[str, Any], tmp_path: Path) -> None:
    """2 CPU processes (gloo): rank 0 reads the benches, both train RSPG-Post with batch 4 what
    one process trains with batch 8 (an encoder without dropout), within float noise; rank 0
    alone registers and reports."""
    import json
    import os
    import shutil
    import subprocess
    import sys

    import torch
    from safetensors.torch import load_file
    from transformers import AutoTokenizer, BertConfig, BertModel

    from lampbox.engine.rspg.selector import encoder_source
    from lampbox.store import Store
    from lampbox.store.artifacts import get_artifact

    tokenizer = AutoTokenizer.from_pretrained(encoder_source("all-MiniLM-L6-v2"))
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        max_position_embeddings=128, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
    )  # fmt: skip
    encoder = tmp_path / "encoder"
    BertModel(config).save_pretrained(encoder)
    tokenizer.save_pretrained(encoder)
    db = tmp_path / "store.duckdb"
    shutil.copy(benches["db"], db)
    home = tmp_path / "home"
    env = {**os.environ, "LAMPBOX_HOME": str(home), "LAMPBOX_THREADS": "1", "OMP_NUM_THREADS": "1"}
    common = [
        "-m", "lampbox", "train", "rspg", "--task", "LaMP_7", "--train-bench", benches["train"].bench_key,
        "--dev-bench", benches["dev"].bench_key, "--mode", "post", "--encoder", str(encoder), "--max-length", "48",
        "--max-steps", "2", "--lr", "1e-3", "--precision", "fp32", "--db", str(db), "--json",
    ]  # fmt: skip
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2"]
    two = subprocess.run([*launcher, *common, "--batch-size", "4", "--name", "two"], env=env, capture_output=True, text=True, timeout=900)
    assert two.returncode == 0, two.stderr[-3000:]
    assert two.stdout.count('"name": "two"') == 1  # rank 0 alone reports (and registers)
    one = subprocess.run([sys.executable, *common, "--batch-size", "8", "--name", "one"], env=env, capture_output=True, text=True, timeout=900)
    assert one.returncode == 0, one.stderr[-3000:]
    summaries = [json.loads(result.stdout[result.stdout.index("{") :]) for result in (one, two)]
    assert summaries[0]["dev_metrics"] == pytest.approx(summaries[1]["dev_metrics"])
    with Store(db, read_only=True) as store:
        artifacts = [get_artifact(store, name) for name in ("one", "two")]
    assert all(a is not None and a.kind == "selector" for a in artifacts)
    for key in ("loss", "grad_norm"):  # the same questions in each step, the same gradients
        found = [[e[key] for e in a.history if key in e] for a in artifacts if a is not None]
        assert len(found[0]) == 2 and found[0] == pytest.approx(found[1], rel=1e-5)
    first, second = (torch.load(home / "models" / name / "head.pt") for name in ("one", "two"))
    assert all(float((first[k] - second[k]).abs().max()) < 1e-4 for k in first)
    weights = [load_file(home / "models" / name / "encoder" / "model.safetensors") for name in ("one", "two")]
    start = load_file(encoder / "model.safetensors")
    moved = max(float((weights[0][k] - start[k]).abs().max()) for k in weights[0] if k in start)
    # Adam turns float noise in near-zero gradients into small steps
    assert moved > 1e-3 and max(float((weights[0][k] - weights[1][k]).abs().max()) for k in weights[0]) < moved / 10
