"""Training: loss on the gold only, a trained model registered and used by the run pipeline,
resume after kill -9, and clear errors for bad input. A tiny random Llama with SmolLM2's
tokenizer keeps it fast."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from checkpoint_helpers import kill_at_first_checkpoint

from lampbox.errors import LampboxError


@pytest.fixture(scope="module")
def home(module_home: Path) -> Path:
    return module_home


def test_the_loss_is_on_the_gold_tokens_only(tiny_lm: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lampbox.engine.training.data import IGNORE_INDEX, PadToLongest, SFTDataset, encode_examples

    tokenizer = AutoTokenizer.from_pretrained(tiny_lm)
    examples = encode_examples(tokenizer, True, ["q1", "q2"], ["Write a subject: fix the parser", "Hi"], ["parser: fix", "x"])
    first = examples[0]
    assert first.labels[: len(first.prompt_ids)] == [IGNORE_INDEX] * len(first.prompt_ids)
    assert first.labels[len(first.prompt_ids) :] == list(first.target_ids)
    assert first.target_ids[-1] == tokenizer.eos_token_id  # the model learns to stop
    # The prompt tokens are the ones the hf backend generates from (chat template included).
    text = tokenizer.decode(first.prompt_ids)
    assert text.startswith("<|im_start|>") and text.endswith("<|im_start|>assistant\n")
    batch = PadToLongest(tokenizer.pad_token_id or 0)([SFTDataset(examples)[0], SFTDataset(examples)[1]])
    model = AutoModelForCausalLM.from_pretrained(tiny_lm)
    loss = model(**batch).loss
    # By hand: cross-entropy of the next-token predictions at gold positions only.
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    shifted, targets = logits[:, :-1], batch["labels"][:, 1:]
    keep = targets != IGNORE_INDEX
    manual = torch.nn.functional.cross_entropy(shifted[keep], targets[keep])
    assert torch.allclose(loss, manual, atol=1e-5)
    assert int(keep.sum()) == sum(len(e.target_ids) for e in examples)
    # Left padding with logits at the tail only gives the same loss, without projecting the
    # prompt tokens onto the vocabulary.
    tail = PadToLongest(tokenizer.pad_token_id or 0, tail_logits=True)([SFTDataset(examples)[0], SFTDataset(examples)[1]])
    assert tail["logits_to_keep"] == max(len(e.target_ids) for e in examples) + 1
    assert torch.allclose(model(**tail).loss, loss, atol=1e-5)


def _spec(tiny_lm: Path, **overrides):  # type: ignore[no-untyped-def]
    from lampbox.engine.training.trainer import TrainConfig
    from lampbox.lab.training import TrainSpec

    config = TrainConfig(max_steps=4, eval_every=2, batch_size=2, precision="fp32", lr=1e-3, eval_new_tokens=8)
    values = dict(task="commit_subject", scheme="user", retriever="bm25", k=2, model=str(tiny_lm), limit=8, dev_limit=4, config=config)
    values.update(overrides)
    return TrainSpec(**values)


@pytest.mark.slow
def test_a_trained_adapter_is_registered_and_runs_by_name(commits_store, tiny_lm: Path, home: Path) -> None:  # type: ignore[no-untyped-def]
    from lampbox.engine.generation.base import GenerationParams
    from lampbox.engine.training.trainer import TrainConfig
    from lampbox.lab.pipeline import run
    from lampbox.lab.specs import RunSpec, run_key
    from lampbox.lab.training import train_model
    from lampbox.models import resolve_model
    from lampbox.store.artifacts import get_artifact

    artifact, result = train_model(_spec(tiny_lm), commits_store, "tiny-bm25")
    assert artifact is not None and result.steps == 4
    assert (home / "models" / "tiny-bm25" / "adapter" / "adapter_config.json").is_file()
    assert not (home / "models" / ".tiny-bm25.training").exists()  # the job folder is cleaned up
    stored = get_artifact(commits_store, "tiny-bm25")
    assert stored is not None and stored.kind == "lora" and stored.base_model == str(tiny_lm)
    assert [e["step"] for e in stored.history if "eval_rouge-1" in e] == [2, 4]
    assert set(stored.metrics) == {"rouge-1", "rouge-L"}
    resolved = resolve_model("tiny-bm25")
    assert resolved.adapter is not None and resolved.location == str(tiny_lm.resolve())

    # The run pipeline uses it by name on the hf backend, with the prompts it was trained on:
    # the first dev questions score what the training's dev evaluation scored.
    spec = RunSpec("commit_subject", "user", "dev", retriever="bm25", k=2, backend="hf", model="tiny-bm25",
                   params=GenerationParams(max_new_tokens=8), limit=4)  # fmt: skip
    record = run(spec, commits_store)
    assert record.metrics == pytest.approx(dict(stored.metrics), abs=1e-9)

    with pytest.raises(LampboxError, match="exists"):
        train_model(_spec(tiny_lm), commits_store, "tiny-bm25")
    task = commits_store.task("commit_subject")
    before = run_key(spec, task)
    retrained = TrainConfig(max_steps=2, batch_size=2, precision="fp32", lr=5e-3)
    train_model(_spec(tiny_lm, config=retrained), commits_store, "tiny-bm25", overwrite=True)
    assert run_key(spec, task) != before  # retrained: its runs and generations are keyed anew


def test_bad_input_is_one_clear_error(commits_store, tiny_lm: Path, home: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from transformers import T5Config, T5ForConditionalGeneration

    from lampbox.lab.training import train_model

    with pytest.raises(LampboxError, match="k cannot be negative"):
        _spec(tiny_lm, k=-1)
    t5 = tmp_path / "tiny-t5"
    T5ForConditionalGeneration(T5Config(vocab_size=64, d_model=8, d_kv=4, d_ff=16, num_layers=1, num_heads=2)).save_pretrained(t5)
    with pytest.raises(LampboxError, match="not a causal LM"):
        train_model(_spec(tiny_lm, model=str(t5)), commits_store, "bad-t5")
    with pytest.raises(LampboxError, match="letters, digits"):
        train_model(_spec(tiny_lm), commits_store, "../escape")
    with pytest.raises(LampboxError, match="manifest"):
        train_model(_spec(tiny_lm), commits_store, "smollm2-135m-instruct")
    assert not list((home / "models").glob("bad-t5*"))


@pytest.mark.slow
def test_a_failed_save_registers_nothing(commits_store, tiny_lm: Path, home: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    import errno

    from lampbox.engine import fingerprint
    from lampbox.engine.training import trainer
    from lampbox.lab.training import train_model
    from lampbox.store.artifacts import get_artifact

    def disk_full(folder):  # type: ignore[no-untyped-def]
        raise OSError(errno.ENOSPC, "No space left on device")

    original = trainer.train

    def train_then_fill_the_disk(*args, **kwargs):  # type: ignore[no-untyped-def]
        result = original(*args, **kwargs)
        monkeypatch.setattr(fingerprint, "folder_sha256", disk_full)  # the save comes next
        return result

    monkeypatch.setattr(trainer, "train", train_then_fill_the_disk)
    with pytest.raises(LampboxError, match="could not save the trained model .*No space left"):
        train_model(_spec(tiny_lm, dev_limit=0), commits_store, "full-disk")
    assert get_artifact(commits_store, "full-disk") is None
    assert not [p for p in (home / "models").iterdir() if "full-disk" in p.name and not p.name.endswith(".training")]


@pytest.mark.slow
def test_a_killed_training_resumes_from_its_last_complete_checkpoint(commits_store_path: Path, tiny_lm: Path, tmp_path: Path) -> None:
    import shutil

    db = tmp_path / "store.duckdb"
    shutil.copy(commits_store_path, db)
    env = {**os.environ, "LAMPBOX_HOME": str(tmp_path / "home")}
    command = [
        sys.executable, "-m", "lampbox", "train", "ipa", "--task", "commit_subject", "--model", str(tiny_lm),
        "--k", "2", "--limit", "24", "--dev-limit", "2", "--max-steps", "10", "--eval-every", "2",
        "--batch-size", "2", "--precision", "fp32", "--name", "resumed", "--db", str(db), "--json",
    ]  # fmt: skip
    checkpoints = tmp_path / "home" / "models" / ".resumed.training" / "checkpoints"
    done = kill_at_first_checkpoint(command, env, checkpoints)
    assert done and done[-1] < 10
    again = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]
    summary = json.loads(again.stdout)
    assert summary["resumed_from"] >= done[-1] and summary["steps"] == 10
    assert "resuming from the checkpoints" in again.stderr


@pytest.mark.slow
def test_torchrun_on_two_processes_matches_one_process(commits_store_path: Path, tiny_lm: Path, tmp_path: Path) -> None:
    """DDP with gloo on CPU: 2 processes x batch 2 train the adapter 1 process x batch 4 trains
    (same examples per step, same seed), within float noise; only rank 0 wrote the store."""
    import shutil

    from safetensors.torch import load_file

    from lampbox.store import Store
    from lampbox.store.artifacts import get_artifact

    db = tmp_path / "store.duckdb"
    shutil.copy(commits_store_path, db)
    env = {**os.environ, "LAMPBOX_HOME": str(tmp_path / "home"), "OMP_NUM_THREADS": "1"}
    common = [
        "-m", "lampbox", "train", "ipa", "--task", "commit_subject", "--model", str(tiny_lm), "--k", "2",
        "--limit", "16", "--dev-limit", "0", "--max-steps", "3", "--lora-dropout", "0", "--random-order",
        "--precision", "fp32", "--lr", "1e-2", "--db", str(db), "--json",
    ]  # fmt: skip
    one = subprocess.run([sys.executable, *common, "--batch-size", "4", "--name", "one"], env=env, capture_output=True, text=True, timeout=600)
    assert one.returncode == 0, one.stderr[-2000:]
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2"]
    two = subprocess.run([*launcher, *common, "--batch-size", "2", "--name", "two"], env=env, capture_output=True, text=True, timeout=600)
    assert two.returncode == 0, two.stderr[-2000:]
    assert two.stdout.count('"name": "two"') == 1  # rank 0 alone reports (and registers)
    models = tmp_path / "home" / "models"
    first, second = (load_file(models / name / "adapter" / "adapter_model.safetensors") for name in ("one", "two"))
    assert first.keys() == second.keys()
    assert max(float((first[k] - second[k]).abs().max()) for k in first) < 1e-5
    with Store(db, read_only=True) as store:
        losses = [[e["loss"] for e in get_artifact(store, name).history if "loss" in e] for name in ("one", "two")]
    assert len(losses[0]) == 3 and losses[0] == pytest.approx(losses[1], rel=1e-5)


def test_an_unfinished_training_with_other_settings_is_refused_or_overwritten(tmp_path: Path) -> None:
    import json

    from lampbox.errors import LampboxError
    from lampbox.lab.training import check_unfinished

    work = tmp_path / ".job.training"
    work.mkdir()
    (work / "spec.json").write_text(json.dumps({"lr": 1e-4}))
    check_unfinished(work, {"lr": 1e-4}, "job", overwrite=False)  # the same settings resume
    assert work.is_dir()
    with pytest.raises(LampboxError, match="an unfinished training of 'job' with other settings"):
        check_unfinished(work, {"lr": 2e-4}, "job", overwrite=False)
    assert work.is_dir()
    check_unfinished(work, {"lr": 2e-4}, "job", overwrite=True)
    assert not work.exists()
