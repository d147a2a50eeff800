"""Fusion-in-Decoder on a tiny random T5 (with the packaged MiniLM's BERT tokenizer): passages
encoded separately and fused, training, and inference through the run pipeline."""

from __future__ import annotations

from pathlib import Path

import pytest


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


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
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


def forward_label_scores(folder: Path, passage_texts: list[str], labels: list[str], max_length: int = 512) -> list[float]:
    """Each label's log-likelihood given the fused passages, one plain forward pass per label."""
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
    ids, mask = pad_passages([passage_ids(tokenizer, passage_texts, max_length)], tokenizer.pad_token_id)
    scores = []
    for label in labels:
        target = torch.tensor([fid_target_ids(tokenizer, label, 64)])
        with torch.no_grad():
            encoded, fused = encode_fused(model, ids, mask)
            logits = model(encoder_outputs=encoded, attention_mask=fused, labels=target).logits
        scores.append(float(torch.log_softmax(logits, -1)[0].gather(-1, target[0].unsqueeze(-1)).sum()))
    return scores


def check_label_scores(folder: Path, prediction, labels) -> None:  # type: ignore[no-untyped-def]
    """The prediction's recorded label log-likelihoods equal one forward pass per label."""
    recorded = prediction.kept["label_logliks"]
    expected = forward_label_scores(folder, (prediction.prompt or "").split("\n\n"), list(labels))
    assert [recorded[label] for label in labels] == pytest.approx(expected, abs=1e-3)
    assert prediction.output == max(labels, key=lambda label: recorded[label])


def test_the_fid_backend_batches_cuts_at_stops_and_scores_labels_as_a_forward_pass(tiny_t5: Path) -> None:
    from lampbox.engine.fingerprint import folder_sha256
    from lampbox.engine.generation.base import GenerationParams, GenerationRequest
    from lampbox.engine.generation.common import GenerationCancelled
    from lampbox.engine.generation.fid import FiDGenerator, locate
    from lampbox.errors import LampboxError

    generator = FiDGenerator(str(tiny_t5), batch_size=2)
    requests = [GenerationRequest("q", passages=("fix the parser in git", "docs: typo")), "a bare prompt",
                GenerationRequest("q", passages=("gitk: colours",))]  # fmt: skip
    params = GenerationParams(max_new_tokens=5)
    seen: list[int] = []
    outputs = generator.generate(requests, params, on_output=lambda index, _: seen.append(index))
    assert seen == [0, 1, 2] and outputs == [generator.generate([r], params)[0] for r in requests]
    word = next(text for text in outputs if text.strip()).split()[0]
    cut = generator.generate(requests, GenerationParams(max_new_tokens=5, stop=(word,)))
    assert cut == [text[: text.index(word)] if word in text else text for text in outputs]
    with pytest.raises(GenerationCancelled, match="after 2 of 3"):
        generator.generate(requests, params, should_cancel=iter([False, True]).__next__)
    with pytest.raises(LampboxError, match="decodes greedily"):
        generator.generate(requests, GenerationParams(temperature=0.5))
    with pytest.raises(LampboxError, match="does not score continuations"):
        generator.score(["q"], ["a"])
    labels = ["doc", "gitk", "tests"]
    scored = generator.score_labels(requests[:1], labels)[0]
    assert scored == pytest.approx(forward_label_scores(tiny_t5, ["fix the parser in git", "docs: typo"], labels), abs=1e-3)
    identity = generator.identity()
    assert identity["folder_sha256"] == folder_sha256(tiny_t5) and identity["passage_length"] == generator.passage_length
    with pytest.raises(LampboxError, match="is a GGUF model, not an encoder-decoder"):
        locate("smollm2-135m-instruct")


def tiny_objective(tiny_t5: Path, commits_store, count: int = 6):  # type: ignore[no-untyped-def]
    """A FiDObjective over `count` training examples of three passages each (lengths differ)."""
    from transformers import AutoTokenizer

    from lampbox.engine.training.fid import (
        FiDDevExample,
        FiDExample,
        FiDObjective,
        fid_target_ids,
        passage_ids,
    )

    tokenizer = AutoTokenizer.from_pretrained(tiny_t5)
    labels = ["doc", "gitk", "tests"]
    train, dev = [], []
    for index in range(count):
        texts = [f"commit {index} touches the {labels[index % 3]} code", "docs: typo" * (index % 2 + 1), f"fix {index}"]
        passages = passage_ids(tokenizer, texts, 64)
        train.append(FiDExample(f"q{index}", passages, fid_target_ids(tokenizer, labels[index % 3], 8)))
        dev.append(FiDDevExample(f"d{index}", passages, labels[index % 3]))
    return FiDObjective(str(tiny_t5), tokenizer, commits_store.task("commit_area"), train, dev[:2])


def test_cross_attention_lr_gets_its_own_parameter_groups(tiny_t5: Path, commits_store, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """--cross-attention-lr: the decoder's cross-attention trains at its own rate (both of
    Trainer's weight-decay groups split), every other parameter at --lr; the scheduler scales
    both alike."""
    from transformers import TrainerCallback

    from lampbox.engine.generation.fid_model import new_parameter_names
    from lampbox.engine.training.trainer import TrainConfig, train

    seen: list[list[tuple[float, float, set[int]]]] = []

    class Groups(TrainerCallback):
        def on_step_end(self, args, state, control, optimizer=None, **kwargs):  # type: ignore[no-untyped-def]
            seen.append([(g["lr"], g["weight_decay"], {id(p) for p in g["params"]}) for g in optimizer.param_groups])

    objective = tiny_objective(tiny_t5, commits_store)
    config = TrainConfig(max_steps=2, batch_size=2, precision="fp32", lr=1e-4, cross_attention_lr=1e-2, warmup_ratio=0.0,
                         lora=None, checkpoints=False)  # fmt: skip
    model, _ = train(objective, config, tmp_path / "work", callbacks=[Groups()])
    names = {id(p): name for name, p in model.named_parameters()}
    fresh = set(new_parameter_names(model))
    assert fresh and all("EncDecAttention" in name for name in fresh)  # a T5: its cross-attention
    for groups in seen:
        base = [lr for lr, _, ids in groups if not {names[i] for i in ids} & fresh]
        cross = [lr for lr, _, ids in groups if {names[i] for i in ids} <= fresh]
        assert len(base) + len(cross) == len(groups) and base and cross  # no group mixes them
        assert all(lr == pytest.approx(100 * base[0]) for lr in cross) and len(set(base)) == 1
    grouped = {names[i] for _, _, ids in seen[0] for i in ids}
    assert {n for n in grouped if n in fresh} == fresh and grouped == {n for n, p in model.named_parameters() if p.requires_grad}
    decays = {wd for _, wd, ids in seen[0] if {names[i] for i in ids} <= fresh}
    assert decays == {config.weight_decay}  # T5's attention has no biases or norms: all decayed


def test_a_frozen_encoder_is_encoded_once_and_only_the_decoder_trains(tiny_t5: Path, commits_store, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import torch

    from lampbox.engine.generation.fid_model import encode_fused, load_seq2seq, pad_passages
    from lampbox.engine.training.fid import FrozenEncoderOutputs, fid_loss
    from lampbox.engine.training.trainer import TrainConfig, train

    objective = tiny_objective(tiny_t5, commits_store)
    base = load_seq2seq(str(tiny_t5)).eval()
    batch = [objective.train_examples[i].passages for i in (0, 1, 3)]
    kept = FrozenEncoderOutputs()
    encoded, mask = kept.fused(base, "train", [0, 1, 3], batch, 0)
    expected, expected_mask = encode_fused(base, *pad_passages(batch, 0))
    assert torch.equal(mask, expected_mask)
    real = mask.bool()
    assert torch.allclose(encoded.last_hidden_state[real], expected.last_hidden_state[real], atol=1e-5)
    dataset = objective.train_dataset()
    inputs = objective.collator(base, None)([dataset[i] for i in (0, 1, 3)])
    assert inputs["example_index"].tolist() == [0, 1, 3]
    with torch.no_grad():
        assert float(fid_loss(base, inputs, encoded=(encoded, mask))) == pytest.approx(float(fid_loss(base, inputs)), abs=1e-5)
    assert len(kept.kept) == 3
    kept.fused(base, "train", [3, 0], [batch[2], batch[0]], 0)
    assert len(kept.kept) == 3  # served from what was kept

    config = TrainConfig(max_steps=3, batch_size=2, precision="fp32", lr=1e-2, freeze_encoder=True, lora=None,
                         eval_every=3, eval_new_tokens=4, checkpoints=False)  # fmt: skip
    model, result = train(objective, config, tmp_path / "work")
    before = dict(base.named_parameters())
    changed = {name for name, p in model.named_parameters() if not torch.equal(p, before[name])}
    assert changed and all(name.startswith(("decoder.", "lm_head.")) for name in changed)
    assert not any(p.requires_grad for p in model.get_encoder().parameters())
    assert any("eval_accuracy" in entry for entry in result.history)  # dev decoded from kept outputs
    assert {key[0] for key in objective.frozen_outputs.kept} == {"train", "dev"}


def test_passage_dependence_tells_a_model_that_reads_its_passages(tiny_t5: Path) -> None:
    """A model whose decoder leans on its cross-attention (a random tiny T5 with that output
    scaled up) changes its output with its passages; with it zeroed the decoder cannot see the
    encoder, and no output changes."""
    import torch
    from transformers import AutoTokenizer

    from lampbox.engine.generation.fid_model import load_seq2seq, passage_dependence, passage_ids

    tokenizer = AutoTokenizer.from_pretrained(tiny_t5)
    model = load_seq2seq(str(tiny_t5)).eval()
    texts = ["fix the parser", "gitk: colours", "doc: typo in the manual", "tests: flaky t1234", "refs: packed refs",
             "grep: -P works", "diff: word mode", "config: includes"]  # fmt: skip
    own = [passage_ids(tokenizer, [text, "git-gui"], 32) for text in texts]
    other = [passage_ids(tokenizer, [text, texts[(i + 3) % len(texts)]], 32) for i, text in enumerate(texts)]

    def scale_cross_attention(factor: float) -> None:
        with torch.no_grad():
            for name, parameter in model.named_parameters():
                if "EncDecAttention.o." in name:
                    parameter.mul_(factor)

    scale_cross_attention(50.0)
    changed = passage_dependence(model, tokenizer, own, other, new_tokens=6, batch_size=3)
    assert len(changed) == len(texts) and sum(changed) >= len(texts) // 2
    assert not any(passage_dependence(model, tokenizer, own, own, new_tokens=6))  # the same passages
    scale_cross_attention(0.0)
    assert not any(passage_dependence(model, tokenizer, own, other, new_tokens=6))
    with pytest.raises(ValueError, match="same questions"):
        passage_dependence(model, tokenizer, own, other[:3], new_tokens=6)


def test_fid_settings_are_checked_and_stored_only_when_set() -> None:
    from lampbox.engine.training.trainer import TrainConfig
    from lampbox.errors import LampboxError
    from lampbox.lab.training import TrainSpec

    assert not {"cross_attention_lr", "freeze_encoder"} & set(TrainConfig().to_json())  # older specs unchanged
    assert TrainConfig(cross_attention_lr=1e-3, freeze_encoder=True).to_json()["cross_attention_lr"] == 1e-3
    with pytest.raises(LampboxError, match="--cross-attention-lr must be greater than 0"):
        TrainSpec(task="commit_area", scheme="user", method="fid", config=TrainConfig(lora=None, cross_attention_lr=0.0))
    with pytest.raises(LampboxError, match="FiD settings"):
        TrainSpec(task="commit_area", scheme="user", method="ipa", config=TrainConfig(freeze_encoder=True))


def test_offline_base_names_and_cross_attention_copied_from_self_attention() -> None:
    import torch
    from transformers import BertConfig, EncoderDecoderConfig, EncoderDecoderModel

    from lampbox.engine.generation.fid_model import (
        copy_self_attention_to_cross_attention,
        offline_base_settings,
    )
    from lampbox.errors import LampboxError

    assert offline_base_settings("minilm-bert2bert") == (6, False)
    assert offline_base_settings("minilm-bert2bert-d2") == (2, False)
    assert offline_base_settings("minilm-bert2bert-d2-sa") == (2, True)
    assert offline_base_settings("minilm-bert2bert-sa") == (6, True)
    assert offline_base_settings("minilm-bert2bert-x") is None and offline_base_settings("t5-small") is None
    with pytest.raises(LampboxError, match="1 to 6 layers"):
        offline_base_settings("minilm-bert2bert-d7")
    small = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32)
    torch.manual_seed(0)
    model = EncoderDecoderModel(EncoderDecoderConfig.from_encoder_decoder_configs(small, small))
    layer = model.decoder.bert.encoder.layer[1]
    assert not torch.equal(layer.crossattention.self.key.weight, layer.attention.self.key.weight)
    copy_self_attention_to_cross_attention(model)
    for decoder_layer in model.decoder.bert.encoder.layer:
        pairs = zip(decoder_layer.crossattention.parameters(), decoder_layer.attention.parameters(), strict=True)
        assert all(torch.equal(a, b) and a.data_ptr() != b.data_ptr() for a, b in pairs)  # copies, not ties


def test_swapped_passages_pair_each_input_with_another_questions_items(commits_store, tiny_t5: Path) -> None:  # type: ignore[no-untyped-def]
    from transformers import AutoTokenizer

    from lampbox.engine.training.trainer import TrainConfig
    from lampbox.lab.training import TrainSpec, fid_swapped_passages, prepare_fid_data

    spec = TrainSpec(task="commit_area", scheme="user", method="fid", retriever="bm25", k=2, model=str(tiny_t5),
                     limit=2, dev_limit=6, config=TrainConfig(lora=None))  # fmt: skip
    questions, own, other = fid_swapped_passages(spec, commits_store, "dev", 6)
    assert [e.passages for e in prepare_fid_data(spec, commits_store).dev] == own  # what training's dev sees
    tokenizer = AutoTokenizer.from_pretrained(tiny_t5)
    task = commits_store.task("commit_area")

    def texts(passages):  # type: ignore[no-untyped-def]  # decoded without spaces (BERT's decoding adds some)
        return ["".join(tokenizer.decode(p, skip_special_tokens=True).split()) for p in passages]

    for index, question in enumerate(questions):
        partner = (index + 3) % 6
        query = "".join(question.input.split(task.query_after)[-1].lower().split())[:30]
        assert all(query in text for text in texts(other[index]))  # the question's own input
        items = [text.split("whicharea")[0] for text in texts(other[index])]
        assert items == [text.split("whicharea")[0] for text in texts(own[partner])]  # the partner's items
    assert other != own
