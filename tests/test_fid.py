"""Fusion-in-Decoder on a tiny random T5 (with the packaged MiniLM's BERT tokenizer): passages
encoded separately and fused, training, and inference through the run pipeline."""

from __future__ import annotations

from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def home(module_home: Path) -> Path:
    return module_home


@pytest.fixture(scope="module")
def tiny_t5(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch
    from transformers import AutoTokenizer, T5Config, T5ForConditionalGeneration

    from lampbox.engine.retrieval.dense import packaged_model_path

    tokenizer = AutoTokenizer.from_pretrained(packaged_model_path())
    torch.manual_seed(0)
    config = T5Config(
        vocab_size=len(tokenizer), d_model=32, d_kv=8, d_ff=64, num_layers=2, num_decoder_layers=2, num_heads=4,
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.sep_token_id,
        decoder_start_token_id=tokenizer.pad_token_id, dropout_rate=0.0,  # deterministic: the torchrun test compares weights
    )  # fmt: skip
    folder = tmp_path_factory.mktemp("tiny-t5")
    T5ForConditionalGeneration(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_passages_are_encoded_separately_then_fused(tiny_t5: Path) -> None:
    import torch
    from transformers import AutoTokenizer

    from lampbox.engine.generation.fid_model import (
        encode_fused,
        load_seq2seq,
        pad_passages,
        passage_ids,
    )

    model = load_seq2seq(str(tiny_t5)).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_t5)
    passages = passage_ids(tokenizer, ["fix the parser in git", "docs: typo"], 64)
    ids, mask = pad_passages([passages], tokenizer.pad_token_id)
    with torch.no_grad():
        fused, fused_mask = encode_fused(model, ids, mask)
        alone = model.get_encoder()(input_ids=torch.tensor([passages[1]])).last_hidden_state
    width = ids.shape[2]
    assert fused.last_hidden_state.shape == (1, 2 * width, 32) and fused_mask.shape == (1, 2 * width)
    # the second passage's slice is that passage encoded on its own (no attention across passages)
    second = fused.last_hidden_state[0, width : width + len(passages[1])]
    assert torch.allclose(second, alone[0], atol=1e-5)


def test_fid_trains_and_runs_as_a_method(commits_store, tiny_t5: Path, home: Path) -> None:  # type: ignore[no-untyped-def]
    from lampbox.engine.generation.base import GenerationParams
    from lampbox.engine.training.trainer import TrainConfig
    from lampbox.errors import LampboxError
    from lampbox.lab.pipeline import run
    from lampbox.lab.specs import RunSpec
    from lampbox.lab.training import TrainSpec, train_model

    config = TrainConfig(max_steps=3, eval_every=3, batch_size=2, precision="fp32", lr=1e-3, lora=None, eval_new_tokens=6)
    spec = TrainSpec(task="commit_area", scheme="user", method="fid", retriever="bm25", k=2, model=str(tiny_t5),
                     limit=8, dev_limit=4, config=config)  # fmt: skip
    artifact, result = train_model(spec, commits_store, "tiny-fid")
    assert artifact is not None and artifact.kind == "fid" and result.steps == 3
    assert (home / "models" / "tiny-fid" / "model" / "config.json").is_file()
    record = run(
        RunSpec("commit_area", "user", "dev", retriever="bm25", k=2, method="fid", backend="fid", model="tiny-fid",
                params=GenerationParams(max_new_tokens=6), limit=4),
        commits_store,
    )  # fmt: skip
    prediction = record.predictions[0]
    assert prediction.prompt is not None and prediction.prompt.count("\n\n") == 1  # two passages
    assert len(prediction.item_keys) == 2
    assert record.metrics == pytest.approx(dict(artifact.metrics), abs=1e-9)  # what its dev evaluation saw
    # --decode labels: each answer is the label whose tokens (and end token) the decoder finds
    # most likely given the fused passages, as computed label by label here
    labelled = run(
        RunSpec("commit_area", "user", "dev", retriever="bm25", k=2, method="fid", backend="fid", model="tiny-fid",
                params=GenerationParams(max_new_tokens=6), limit=4, decode="labels"),
        commits_store,
    )  # fmt: skip
    task = commits_store.task("commit_area")
    check_label_scores(home / "models" / "tiny-fid" / "model", labelled.predictions[0], task.labels)
    assert {p.output for p in labelled.predictions} <= set(task.labels)
    with pytest.raises(LampboxError, match="backend that takes passages"):
        run(RunSpec("commit_area", "user", "dev", retriever="bm25", k=2, method="fid", backend="llamacpp", limit=2), commits_store)
    causal = TrainSpec(task="commit_area", scheme="user", method="fid", model="smollm2-135m-instruct", config=config)
    with pytest.raises(LampboxError, match="GGUF|not an encoder-decoder"):
        train_model(causal, commits_store, "not-fid")


def test_fid_under_torchrun_matches_one_process(commits_store_path: Path, tiny_t5: Path, tmp_path: Path) -> None:
    """DDP with gloo on CPU: 2 processes x batch 2 train the FiD model 1 process x batch 4
    trains (same examples per step, same seed), within float noise: the encoder (run outside
    DDP's forward, passage by passage) and the decoder are both all-reduced."""
    import os
    import shutil
    import subprocess
    import sys

    from safetensors.torch import load_file

    db = tmp_path / "store.duckdb"
    shutil.copy(commits_store_path, db)
    env = {**os.environ, "LAMPBOX_HOME": str(tmp_path / "home"), "OMP_NUM_THREADS": "1"}
    common = [
        "-m", "lampbox", "train", "fid", "--task", "commit_area", "--model", str(tiny_t5), "--k", "2",
        "--limit", "16", "--dev-limit", "0", "--max-steps", "3", "--random-order", "--precision", "fp32",
        "--lr", "1e-2", "--db", str(db), "--json",
    ]  # fmt: skip
    one = subprocess.run([sys.executable, *common, "--batch-size", "4", "--name", "one"], env=env, capture_output=True, text=True, timeout=600)
    assert one.returncode == 0, one.stderr[-2000:]
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2"]
    two = subprocess.run([*launcher, *common, "--batch-size", "2", "--name", "two"], env=env, capture_output=True, text=True, timeout=600)
    assert two.returncode == 0, two.stderr[-2000:]
    models = tmp_path / "home" / "models"
    first, second = (load_file(models / name / "model" / "model.safetensors") for name in ("one", "two"))
    base = load_file(tiny_t5 / "model.safetensors")
    assert first.keys() == second.keys()
    assert max(float((first[k] - base[k]).abs().max()) for k in first if k in base) > 1e-3  # it trained
    assert max(float((first[k] - second[k]).abs().max()) for k in first) < 1e-5


def test_the_offline_base_decodes_what_it_was_taught(home: Path, git_commits: Path, tmp_path: Path) -> None:
    """minilm-bert2bert's tokenizer round-trips: every commit_area label (hyphens included) and
    a commit subject come back as written (lowercased: the model is uncased), from the base
    folder and from a copy saved the way a trained FiD model is saved. BERT's own
    pre-tokenizer gave "git - gui" for "git-gui"."""
    import json

    from transformers import AutoTokenizer

    from lampbox.engine.generation.fid_model import fid_target_ids, offline_base_folder
    from lampbox.engine.retrieval.dense import packaged_model_path

    labels = json.loads((git_commits / "commit_area" / "task.json").read_text())["labels"]
    texts = [*labels, "t/t1234: don't use 'test -f' in merge-recursive.c (gitk, git-svn)"]
    base = AutoTokenizer.from_pretrained(offline_base_folder())
    base.save_pretrained(tmp_path / "trained")
    for tokenizer in (base, AutoTokenizer.from_pretrained(tmp_path / "trained")):
        for text in texts:
            assert tokenizer.decode(fid_target_ids(tokenizer, text, 64), skip_special_tokens=True) == text.lower()
    bert = AutoTokenizer.from_pretrained(packaged_model_path())
    assert bert.decode(fid_target_ids(bert, "git-gui", 64), skip_special_tokens=True) == "git - gui"  # why


def check_label_scores(folder: Path, prediction, labels) -> None:  # type: ignore[no-untyped-def]
    """The prediction's recorded label log-likelihoods equal one forward pass per label."""
    import torch
    from transformers import AutoTokenizer

    from lampbox.engine.generation.fid_model import (
        encode_fused,
        fid_target_ids,
        load_seq2seq,
        pad_passages,
        passage_ids,
    )

    model = load_seq2seq(str(folder)).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    passages = passage_ids(tokenizer, (prediction.prompt or "").split("\n\n"), 512)
    ids, mask = pad_passages([passages], tokenizer.pad_token_id)
    recorded = prediction.kept["label_logliks"]
    for label in labels:
        target = torch.tensor([fid_target_ids(tokenizer, label, 64)])
        with torch.no_grad():
            encoded, fused = encode_fused(model, ids, mask)
            logits = model(encoder_outputs=encoded, attention_mask=fused, labels=target).logits
        expected = float(torch.log_softmax(logits, -1)[0].gather(-1, target[0].unsqueeze(-1)).sum())
        assert recorded[label] == pytest.approx(expected, abs=1e-3)
    assert prediction.output == max(labels, key=lambda label: recorded[label])
