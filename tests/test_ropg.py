"""ROPG: the losses on hand-computed cases, feedback stored once per (question, item, model,
prompt settings), a trained `ropg:NAME` retriever ranking and benched, and bad flags."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import pytest

from lampbox.engine.tasks import builtin_task

# -- the losses ---------------------------------------------------------------------------------


def test_kd_loss_is_the_kl_divergence_of_a_hand_computed_case() -> None:
    import torch

    from lampbox.engine.ropg.kd import kd_loss

    # softmax([1, 0]) = (a, b) with a / b = e; the target is (b, a): KL = (a - b) * ln(a / b) = a - b.
    a = math.e / (math.e + 1)
    loss = kd_loss(torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0]), temperature=1.0)
    assert float(loss) == pytest.approx(a - (1 - a), abs=1e-6)
    assert float(kd_loss(torch.tensor([0.2, 0.0]), torch.tensor([0.2, 0.0]), temperature=0.1)) == pytest.approx(0.0, abs=1e-6)


def test_kd_loss_decreases_on_a_fixed_batch_and_ranks_by_utility() -> None:
    import torch

    from lampbox.engine.ropg.kd import kd_loss

    scores = torch.zeros(4, requires_grad=True)
    utilities = torch.tensor([0.1, 0.9, 0.3, 0.0])
    optimizer = torch.optim.SGD([scores], lr=0.05)
    losses = []
    for _ in range(20):
        optimizer.zero_grad()
        loss = kd_loss(scores, utilities, temperature=0.5)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert all(later < earlier for earlier, later in zip(losses, losses[1:], strict=False))
    assert scores.argsort(descending=True).tolist() == [1, 2, 0, 3]


def test_rl_reward_sign_follows_the_utility_against_the_top_item() -> None:
    import torch

    from lampbox.engine.ropg.rl import rl_loss

    utilities = torch.tensor([0.9, 0.1, 0.5])  # the retriever's top item (index 2) has 0.5

    def gradient(sampled: int) -> list[float]:
        scores = torch.tensor([0.0, 0.0, 1.0], requires_grad=True)
        rl_loss(scores, utilities, temperature=1.0, sampled=sampled).backward()
        assert scores.grad is not None
        return scores.grad.tolist()

    assert gradient(0)[0] < 0  # better than the top item: descending raises its score
    assert gradient(1)[1] > 0  # worse: descending lowers it
    assert gradient(2) == [0.0, 0.0, 0.0]  # the top item itself: no reward, no gradient


def test_rating_utility_is_the_papers_normalised_mae() -> None:
    from lampbox.engine.ropg.feedback import UtilityScorer

    score = UtilityScorer(builtin_task("LaMP_3"))
    assert score("4", "5") == pytest.approx(0.75)  # worst 4, error 1
    assert score("1", "3") == pytest.approx(0.0)  # worst 2, error 2
    assert score("3", "3") == 1.0
    assert score("no idea", "2") == 0.0  # unparsable: the farther of 1 and 5


def test_ndcg_of_a_ranking_against_utilities() -> None:
    from lampbox.engine.ropg.objective import ndcg, ranking_metrics

    assert ndcg([3, 2, 1], [1.0, 0.5, 0.0]) == pytest.approx(1.0)
    worst = (0.0 + 0.5 / math.log2(3) + 1.0 / math.log2(4)) / (1.0 + 0.5 / math.log2(3))
    assert ndcg([1, 2, 3], [1.0, 0.5, 0.0]) == pytest.approx(worst)
    assert ndcg([1, 2], [0.0, 0.0]) is None
    assert ranking_metrics([([1, 2], [0.2, 0.6])])["utility_at_1"] == pytest.approx(0.6)


# -- feedback in the store ----------------------------------------------------------------------


def utilities(result: Any) -> dict[str, dict[str, float]]:
    return {qid: {u.item_key: u.utility for u in entry.items} for qid, entry in result.feedback.items()}


def ropg_spec(store: Any, **changes: Any) -> Any:
    from lampbox.lab.ropg import RopgSpec, ropg_config

    settings: dict[str, Any] = {
        "task": "commit_subject", "scheme": store.resolve_scheme("commit_subject", "train"), "ctx_size": 3,
        "backend": "dummy", "model": "dummy", "limit": 4, "dev_limit": 3,
        "config": ropg_config(lr=1e-4, max_steps=2, batch_size=2),
    }  # fmt: skip
    settings.update(changes)
    return RopgSpec(**settings)


def test_feedback_is_stored_per_question_and_item_and_not_recomputed(commits_store: Any) -> None:
    from lampbox.engine.generation.pool import GeneratorPool
    from lampbox.engine.ropg.feedback import feedback_key
    from lampbox.lab.ropg import collect_feedback

    spec = ropg_spec(commits_store)
    progress: list[tuple[str, int, int]] = []
    first = collect_feedback(spec, commits_store, "train", 4, on_progress=lambda *event: progress.append(event))
    assert first.computed_questions == 4 and progress[-1] == ("train", 12, 12)
    rows = commits_store.cursor().execute("SELECT feedback_key, question_id, item_key, utility FROM ropg_feedback").fetchall()
    assert len(rows) == 12 and {r[0] for r in rows} == {first.key}
    for question, items in zip(first.questions, first.candidates, strict=True):
        assert {u.item_key for u in first.feedback[question.id].items} == {item.key for item in items}
    assert any(u.utility > 0 for f in first.feedback.values() for u in f.items)

    pool = GeneratorPool()
    again = collect_feedback(spec, commits_store, "train", 4, generators=pool)
    assert again.computed_questions == 0 and utilities(again) == utilities(first)
    # a larger ctx_size computes only the new items; the old ones are kept
    wider = collect_feedback(ropg_spec(commits_store, ctx_size=4), commits_store, "train", 4, generators=pool)
    assert wider.key == first.key
    for question_id, entry in first.feedback.items():
        for utility in entry.items:
            assert wider.feedback[question_id].utility(utility.item_key) == utility.utility
    # feedback of another model (or prompt budget) is never mixed in: a key of its own
    other = collect_feedback(ropg_spec(commits_store, max_length=64), commits_store, "train", 4)
    assert other.key != first.key and other.computed_questions == 4
    from lampbox.engine.generation.base import GenerationParams

    identity = pool.get("dummy", "dummy").identity()
    task = commits_store.task("commit_subject")
    assert feedback_key(identity, GenerationParams(max_new_tokens=32), 512, task) == first.key


def test_feedback_resumes_after_an_interruption_without_recomputing(commits_store: Any) -> None:
    from lampbox.engine.generation.pool import GeneratorPool
    from lampbox.lab.ropg import collect_feedback

    spec = ropg_spec(commits_store)
    pool = GeneratorPool()
    generator = pool.get("dummy", "dummy")
    real_generate, calls = generator.generate, []

    def failing(requests: Any, *args: Any, **kwargs: Any) -> list[str]:
        calls.append(len(requests))
        if len(calls) == 3:
            raise KeyboardInterrupt  # killed while generating the third question's items
        return real_generate(requests, *args, **kwargs)

    generator.generate = failing  # type: ignore[method-assign]
    with pytest.raises(KeyboardInterrupt):
        collect_feedback(spec, commits_store, "train", 4, generators=pool, chunk_questions=1)
    stored = commits_store.cursor().execute("SELECT count(DISTINCT question_id) FROM ropg_feedback").fetchone()
    assert stored == (2,)
    generator.generate = real_generate  # type: ignore[method-assign]
    resumed = collect_feedback(spec, commits_store, "train", 4, generators=pool, chunk_questions=1)
    assert resumed.computed_questions == 2 and len(resumed.feedback) == 4


def test_feedback_can_leave_out_the_first_training_questions(commits_store: Any) -> None:
    from lampbox.errors import LampboxError
    from lampbox.lab.ropg import collect_feedback

    first = collect_feedback(ropg_spec(commits_store), commits_store, "train", 4)
    spec = ropg_spec(commits_store, skip=2, limit=2)
    later = collect_feedback(spec, commits_store, "train", 2, skip=2)
    assert [q.id for q in later.questions] == [q.id for q in first.questions[2:]]
    assert later.computed_questions == 0 and later.key == first.key  # the same feedback, reused
    assert spec.to_json()["skip"] == 2 and "skip" not in ropg_spec(commits_store).to_json()
    with pytest.raises(LampboxError, match="after the first 100000 has a gold output"):
        collect_feedback(spec, commits_store, "train", 2, skip=100000)
    with pytest.raises(LampboxError, match="--skip cannot be negative"):
        ropg_spec(commits_store, skip=-1)


@pytest.mark.slow
def test_likelihood_feedback_scores_the_gold_with_each_item_and_is_kept_apart(commits_store: Any, tiny_lm: Path) -> None:
    from lampbox.engine.generation.pool import GeneratorPool
    from lampbox.lab.ropg import collect_feedback

    pool = GeneratorPool()
    spec = ropg_spec(commits_store, backend="hf", model=str(tiny_lm), feedback="likelihood", limit=2)
    first = collect_feedback(spec, commits_store, "train", 2, generators=pool)
    values = [u.utility for entry in first.feedback.values() for u in entry.items]
    assert len(values) == 6 and all(0 < v <= 1 for v in values) and len(set(values)) > 1
    assert first.key.startswith("ropg-likelihood-")
    generated = collect_feedback(ropg_spec(commits_store, backend="hf", model=str(tiny_lm), limit=2), commits_store, "train", 2, generators=pool)
    assert generated.key != first.key and generated.computed_questions == 2
    again = collect_feedback(spec, commits_store, "train", 2, generators=pool)
    assert again.computed_questions == 0 and utilities(again) == utilities(first)


def test_likelihood_feedback_needs_a_backend_that_scores(commits_store: Any) -> None:
    from lampbox.errors import LampboxError
    from lampbox.lab.ropg import collect_feedback

    with pytest.raises(LampboxError, match="--feedback likelihood needs a backend that scores"):
        collect_feedback(ropg_spec(commits_store, feedback="likelihood"), commits_store, "train", 2)


# -- the feedback's generator: --backend auto and its dtype --------------------------------------

AMX = {"cuda": False, "amx_bf16": True, "avx512_bf16": True, "avx512_vnni": True}
NO_BF16 = {"cuda": False, "amx_bf16": False, "avx512_bf16": False, "avx512_vnni": True}


def on_machine(monkeypatch: pytest.MonkeyPatch, facts: dict[str, bool]) -> None:
    from lampbox.engine.generation import auto
    from lampbox.engine.machine import Machine

    monkeypatch.setattr(auto, "this_machine", lambda: Machine(**facts))


def test_backend_auto_resolves_as_the_bench_does(monkeypatch: pytest.MonkeyPatch, tiny_lm: Path) -> None:
    from lampbox.bench.planfile import resolve_auto

    on_machine(monkeypatch, AMX)
    choice, dtype = resolve_auto(str(tiny_lm), "ipa", None)
    assert (choice.backend, dtype) == ("hf", "bfloat16") and "backend auto: hf bfloat16" in choice.line()
    assert resolve_auto(str(tiny_lm), "ipa", "float32")[1] == "float32"  # an explicit dtype wins
    on_machine(monkeypatch, NO_BF16)
    choice, dtype = resolve_auto(str(tiny_lm), "ipa", None)
    assert (choice.backend, dtype) == ("hf", None)  # hf's CPU default (float32): nothing recorded


def test_dtype_applies_to_the_hf_backend_only(commits_store: Any) -> None:
    from lampbox.errors import LampboxError

    with pytest.raises(LampboxError, match="--dtype bfloat16 applies to the hf backend, not dummy"):
        ropg_spec(commits_store, dtype="bfloat16")
    with pytest.raises(LampboxError, match="dtype"):
        ropg_spec(commits_store, backend="hf", dtype="int4")
    assert ropg_spec(commits_store, backend="hf", dtype="bfloat16").model_options == (("dtype", "bfloat16"),)
    assert ropg_spec(commits_store, backend="hf").model_options == ()


@pytest.mark.slow
def test_train_ropg_backend_auto_prints_its_choice_and_keeps_dtypes_apart(
    commits_store_path: Path, tiny_lm: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`train ropg --backend auto` on an AMX machine: hf bfloat16, said on stderr, recorded in the
    trained retriever's spec and in the feedback key, so float32 feedback is computed apart."""
    import shutil

    from lampbox.engine.generation.pool import GeneratorPool
    from lampbox.lab.ropg import collect_feedback
    from lampbox.store import Store

    monkeypatch.setenv("LAMPBOX_HOME", str(tmp_path / "home"))
    on_machine(monkeypatch, AMX)
    db = tmp_path / "commits.duckdb"
    shutil.copy(commits_store_path, db)
    result = cli(
        "train", "ropg", "--task", "commit_subject", "--backend", "auto", "--model", str(tiny_lm), "--ctx-size", "2",
        "--limit", "2", "--dev-limit", "0", "--max-steps", "1", "--batch-size", "2", "--feedback-batch-size", "3",
        "--name", "auto-kd", "--db", str(db), "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "backend auto: hf bfloat16" in result.stderr
    info = json.loads((tmp_path / "home" / "models" / "auto-kd" / "lampbox-model.json").read_text())
    assert (info["spec"]["backend"], info["spec"]["dtype"]) == ("hf", "bfloat16")
    with Store(db) as store:
        rows = store.cursor().execute("SELECT DISTINCT feedback_key, label FROM ropg_feedback").fetchall()
        assert rows == [(info["feedback_key"], f"hf:{tiny_lm} bfloat16 k=1")]
        bf16 = collect_feedback(ropg_spec(store, backend="hf", model=str(tiny_lm), dtype="bfloat16", ctx_size=2, limit=2), store, "train", 2, generators=GeneratorPool())
        assert bf16.key == info["feedback_key"] and bf16.computed_questions == 0  # its own feedback, reused
        fp32 = collect_feedback(ropg_spec(store, backend="hf", model=str(tiny_lm), dtype="float32", ctx_size=2, limit=2), store, "train", 2, generators=GeneratorPool())
        assert fp32.key != bf16.key and fp32.computed_questions == 2  # never the bf16 utilities
        default = collect_feedback(ropg_spec(store, backend="hf", model=str(tiny_lm), ctx_size=2, limit=2), store, "train", 2, generators=GeneratorPool())
        assert default.key == fp32.key and default.computed_questions == 0  # hf's CPU default is float32


# -- a trained retriever, end to end ------------------------------------------------------------


def cli(*args: str) -> Any:
    from click.testing import CliRunner

    from lampbox.cli import cli as lampbox_cli

    return CliRunner().invoke(lampbox_cli, list(args), catch_exceptions=False)


@pytest.fixture(scope="module")
def trained(module_home: Path, commits_store_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store with commit_subject feedback and a ROPG-KD retriever `r-kd` trained 2 steps on it."""
    import shutil

    db = tmp_path_factory.mktemp("ropg") / "commits.duckdb"
    shutil.copy(commits_store_path, db)
    result = cli(
        "train", "ropg", "--task", "commit_subject", "--method", "kd", "--backend", "dummy", "--model", "dummy",
        "--ctx-size", "3", "--limit", "4", "--dev-limit", "3", "--max-steps", "2", "--batch-size", "2", "--lr", "1e-4",
        "--name", "r-kd", "--db", str(db), "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["kind"] == "retriever" and summary["steps"] == 2 and summary["retriever"] == "ropg:r-kd"
    assert set(summary["dev_metrics"]) == {"ndcg", "utility_at_1"} and 0 < summary["dev_metrics"]["ndcg"] <= 1
    return db


@pytest.mark.slow
def test_a_trained_retriever_ranks_like_dense_with_its_encoder_and_benches(trained: Path, module_home: Path) -> None:
    from lampbox.engine.retrieval import create_retriever
    from lampbox.store import Store

    folder = module_home / "models" / "r-kd"
    info = json.loads((folder / "lampbox-model.json").read_text())
    assert info["kind"] == "retriever" and info["method"] == "ropg-kd" and (folder / "encoder" / "modules.json").is_file()
    with Store(trained, read_only=True) as store:
        task = store.task("commit_subject")
        questions = store.questions("commit_subject", store.resolve_scheme("commit_subject", "dev"), "dev", limit=3)
        ropg = create_retriever("ropg:r-kd").rank(task, questions)
        dense = create_retriever("dense", model=str(folder / "encoder"), use_date=True).rank(task, questions)
        rows = store.cursor().execute("SELECT kind, method FROM artifacts WHERE name = 'r-kd'").fetchall()
    assert rows == [("retriever", "ropg-kd")]
    assert [r.item_keys for r in ropg] == [r.item_keys for r in dense]
    assert ropg[0].retriever_key.startswith("ropg{") and '"trained":"r-kd"' in ropg[0].retriever_key
    from lampbox.errors import LampboxError
    from lampbox.models import resolve_model
    from lampbox.tui import rankings

    with pytest.raises(LampboxError, match="is a trained retriever, not a generator; rank with it as ropg:r-kd"):
        resolve_model("r-kd")

    assert "ropg:r-kd" in rankings.retriever_names()  # the TUI's side-by-side rankings offer it
    # ... and keep one per name while it is unchanged, a new one once NAME is retrained
    record = folder / "lampbox-model.json"
    first = rankings.retriever("ropg:r-kd")
    assert rankings.retriever("ropg:r-kd") is first and rankings.retriever("bm25") is rankings.retriever("bm25")
    stat = record.stat()
    os.utime(record, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))  # as a retraining rewrites it
    again = rankings.retriever("ropg:r-kd")
    assert again is not first and rankings.retriever("ropg:r-kd") is again

    ranked = cli("rank", "--task", "commit_subject", "--split", "dev", "--retriever", "ropg:r-kd", "--limit", "3", "--db", str(trained), "--json")
    assert ranked.exit_code == 0, ranked.output
    bench = cli(
        "bench", "--task", "commit_subject", "--split", "dev", "--retrievers", "bm25,ropg:r-kd", "--k", "1",
        "--limit", "3", "--backend", "dummy", "--model", "dummy", "--db", str(trained), "--json",
    )  # fmt: skip
    assert bench.exit_code == 0, bench.output
    labels = [row["label"] for row in json.loads(bench.stdout)["rows"]]
    assert any("ropg:r-kd" in label for label in labels)


@pytest.mark.slow
def test_the_retrievers_key_changes_with_its_checkpoint(trained: Path, module_home: Path) -> None:
    from lampbox.engine.retrieval import create_retriever
    from lampbox.lab.specs import RunSpec, run_key
    from lampbox.store import Store

    with Store(trained, read_only=True) as store:
        task = store.task("commit_subject")
    spec = RunSpec(task="commit_subject", scheme="user", split="dev", retriever="ropg:r-kd", k=1, backend="dummy", model="dummy")
    before, run_before = create_retriever("ropg:r-kd").key, run_key(spec, task)
    readme = module_home / "models" / "r-kd" / "encoder" / "README.md"
    readme.write_text(readme.read_text() + "\nchanged\n" if readme.exists() else "changed\n")
    assert create_retriever("ropg:r-kd").key != before
    assert run_key(spec, task) != run_before


@pytest.mark.slow
def test_a_killed_training_resumes_from_its_last_complete_checkpoint(commits_store_path: Path, tmp_path: Path) -> None:
    """kill -9 during the encoder's training (the feedback stored before it): the same command
    continues from the newest complete checkpoint, trains the remaining steps only, keeps the
    best dev checkpoint and leaves no work folder; other settings are refused, not mixed."""
    import shutil
    import subprocess
    import sys

    from checkpoint_helpers import kill_at_first_checkpoint

    db = tmp_path / "store.duckdb"
    shutil.copy(commits_store_path, db)
    home = tmp_path / "home"
    env = {**os.environ, "LAMPBOX_HOME": str(home), "LAMPBOX_THREADS": "1"}
    command = [
        sys.executable, "-m", "lampbox", "train", "ropg", "--task", "commit_subject", "--backend", "dummy", "--model", "dummy",
        "--ctx-size", "3", "--limit", "8", "--dev-limit", "3", "--max-steps", "12", "--eval-every", "2", "--batch-size", "2",
        "--lr", "1e-4", "--name", "resumed", "--db", str(db), "--json",
    ]  # fmt: skip
    checkpoints = home / "models" / ".resumed.training" / "checkpoints"
    done = kill_at_first_checkpoint(command, env, checkpoints)
    assert done and done[-1] < 12

    other = subprocess.run([*command, "--lr", "1e-3"], env=env, capture_output=True, text=True, timeout=600)
    assert other.returncode != 0 and "unfinished training of 'resumed' with other settings" in other.stderr
    assert list(checkpoints.glob("checkpoint-*/lampbox-complete"))  # left as they were

    again = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "resuming from the checkpoints" in again.stderr
    summary = json.loads(again.stdout)
    assert summary["resumed_from"] >= done[-1] and summary["steps"] == 12
    info = json.loads((home / "models" / "resumed" / "lampbox-model.json").read_text())
    ndcg = {e["step"]: e["eval_ndcg"] for e in info["history"] if "eval_ndcg" in e}
    assert summary["best_step"] in ndcg and ndcg[summary["best_step"]] == max(ndcg.values())  # the best dev checkpoint kept
    assert info["result"]["best_step"] == summary["best_step"] and info["metrics"]["ndcg"] == ndcg[summary["best_step"]]
    assert not (home / "models" / ".resumed.training").exists()


@pytest.mark.slow
def test_the_rl_objective_moves_the_encoder_only_when_the_sample_differs_from_the_top() -> None:
    import torch

    from lampbox.engine.retrieval.dense import packaged_model_path
    from lampbox.engine.ropg.objective import RankingExample, RetrieverObjective
    from lampbox.engine.training.objective import TrainContext
    from lampbox.engine.training.trainer import TrainConfig

    example = RankingExample("q", "fix the parser", ("fix parser crash", "update docs", "bump version"), (1.0, 0.0, 0.5))
    objective = RetrieverObjective(packaged_model_path(), "rl", [example], [], temperature=0.1)
    model = objective.load_model(TrainContext(TrainConfig(lora=None), "cpu", "fp32"))
    inputs = objective.collator(model, None)(objective.train_dataset())  # type: ignore[arg-type]
    torch.manual_seed(0)
    seen = set()
    for _ in range(30):
        model.zero_grad()
        loss = objective.loss(model, inputs, model, None)
        loss.backward()
        moved = any(p.grad is not None and bool(p.grad.abs().sum() > 0) for p in model.parameters())
        seen.add((float(loss.detach()) != 0.0, moved))
        if len(seen) == 2:
            break
    assert seen == {(True, True), (False, False)}  # a reward moves it; sampling the top item does not


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--ctx-size", "1"], "--ctx-size must be at least 2"),
        (["--base-retriever", "none"], "proposes no candidates"),
        (["--base-retriever", "bm52"], "bm25"),
        (["--temperature", "0"], "--temperature must be greater than 0"),
        (["--backend", "nope"], "backend"),
        (["--name", "a/b"], "model name"),
        (["--dtype", "bfloat16"], "--dtype bfloat16 applies to the hf backend, not llamacpp"),
    ],
)
def test_bad_flags_are_one_clear_line(flags: list[str], message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LAMPBOX_HOME", str(tmp_path))
    args = ["train", "ropg", "--task", "commit_subject", "--name", "x", "--db", str(tmp_path / "none.duckdb"), *flags]
    result = cli(*args)
    assert result.exit_code != 0
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], result.output


def test_an_unknown_trained_retriever_is_one_clear_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lampbox.engine.retrieval import create_retriever
    from lampbox.errors import LampboxError

    monkeypatch.setenv("LAMPBOX_HOME", str(tmp_path))
    with pytest.raises(LampboxError, match="no trained retriever named 'gone'"):
        create_retriever("ropg:gone")


@pytest.fixture(scope="module")
def tiny_st_encoder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer sentence-transformers BERT without dropout (all-MiniLM-L6-v2's tokenizer):
    training is deterministic, so processes can be compared."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Pooling, Transformer
    from transformers import AutoTokenizer, BertConfig, BertModel

    from lampbox.engine.rspg.selector import encoder_source

    tokenizer = AutoTokenizer.from_pretrained(encoder_source("all-MiniLM-L6-v2"))
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=256, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
    )  # fmt: skip
    bert = tmp_path_factory.mktemp("tiny-bert")
    BertModel(config).save_pretrained(bert)
    tokenizer.save_pretrained(bert)
    transformer = Transformer(str(bert), max_seq_length=64)
    folder = tmp_path_factory.mktemp("tiny-st")
    SentenceTransformer(modules=[transformer, Pooling(32, "mean")]).save(str(folder))
    return folder


@pytest.mark.slow
def test_torchrun_on_two_processes_trains_the_retriever_one_process_trains(
    commits_store_path: Path, tiny_st_encoder: Path, tmp_path: Path
) -> None:
    """2 CPU processes (gloo): both compute the feedback, rank 0 stores it, both train ROPG-KD
    with batch 2 what one process trains with batch 4 (the stored feedback reused), within
    float noise; rank 0 alone registers and reports."""
    import os
    import shutil
    import subprocess
    import sys

    from safetensors.torch import load_file

    from lampbox.store import Store
    from lampbox.store.artifacts import list_artifacts

    db = tmp_path / "store.duckdb"
    shutil.copy(commits_store_path, db)
    home = tmp_path / "home"
    env = {**os.environ, "LAMPBOX_HOME": str(home), "LAMPBOX_THREADS": "1", "OMP_NUM_THREADS": "1"}
    common = [
        "-m", "lampbox", "train", "ropg", "--task", "commit_subject", "--method", "kd", "--backend", "dummy",
        "--model", "dummy", "--retriever-model", str(tiny_st_encoder), "--ctx-size", "3", "--limit", "8",
        "--dev-limit", "2", "--max-steps", "2", "--lr", "1e-3", "--db", str(db),
    ]  # fmt: skip
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2"]
    two = subprocess.run([*launcher, *common, "--batch-size", "2", "--name", "two"], env=env, capture_output=True, text=True, timeout=900)
    assert two.returncode == 0, two.stderr[-3000:]
    assert two.stdout.count("trained two (ropg-kd, 2 steps") == 1, two.stdout  # rank 0 alone reports (and registers)
    assert two.stderr.count("feedback train: 0/") == 1  # rank 0 alone reports the feedback
    one = subprocess.run([sys.executable, *common, "--batch-size", "4", "--name", "one"], env=env, capture_output=True, text=True, timeout=900)
    assert one.returncode == 0, one.stderr[-3000:]
    assert "feedback train: 0/" not in one.stderr  # stored by the torchrun job, reused
    with Store(db, read_only=True) as store:
        artifacts = {a.name: a for a in list_artifacts(store)}
    assert artifacts["one"].kind == artifacts["two"].kind == "retriever"
    for key in ("loss", "grad_norm"):  # the same questions in each step, the same gradients
        found = [[e[key] for e in artifacts[name].history if key in e] for name in ("one", "two")]
        # rel 1e-4: the second step starts from weights the two runs summed in different orders
        # (one batch of 4 vs two ranks' all-reduced halves); on an AMD Zen 4 CPU the second
        # loss differed by 2.8e-5 relative; another split of the questions differs by far more
        assert len(found[0]) == 2 and found[0] == pytest.approx(found[1], rel=1e-4)
    first, second, start = (
        load_file(folder / "model.safetensors")
        for folder in (home / "models" / "one" / "encoder", home / "models" / "two" / "encoder", tiny_st_encoder)
    )  # fmt: skip
    assert first.keys() == second.keys()
    moved = max(float((first[k] - start[k]).abs().max()) for k in first if k in start)
    # Adam turns float noise in near-zero gradients into steps of up to lr (measured: 3e-5 on
    # one bias on Intel, 2.3e-4 on AMD Zen 4 where the most moved was 1.5e-3): the weights are
    # compared as a whole, the distance between the two runs against the distance moved
    update = sum(float((first[k] - start[k]).pow(2).sum()) for k in first if k in start) ** 0.5
    apart = sum(float((first[k] - second[k]).pow(2).sum()) for k in first) ** 0.5
    assert moved > 1e-3 and apart < update / 100  # Zen 4: 2.3e-4 apart, 0.24 moved
