"""`--decode labels`: a classification answer chosen by the model's log-likelihood of each label.

Fast tests use the dummy backend (it scores labels by how often the prompt quotes them) on the
stand-in commit_area data; the slow ones check the hf backend's scores against a hand-computed
log-likelihood on a tiny random Llama, and the llamacpp backend's on the packaged SmolLM2 GGUF.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from lampbox.engine.generation import GenerationParams, GenerationRequest, load_generator
from lampbox.engine.generation.labels import choose_label, label_cache_key
from lampbox.engine.generation.registry import backend_class
from lampbox.engine.tasks import builtin_task, load_task_json
from lampbox.errors import LampboxError
from lampbox.lab.pipeline import run
from lampbox.lab.specs import RunSpec, run_key, spec_from_json
from lampbox.store import runs as run_store

LABELS = ["git-gui", "gitweb", "doc", "merge-recursive", "tests"]
PROMPT = "Which area does this commit relate to? areas: [git-gui, gitweb, doc, merge-recursive, tests] commit: Fix a typo in the git-log documentation."


def dummy_spec(**changes: object) -> RunSpec:
    values: dict[str, object] = {
        "task": "commit_area", "scheme": "user", "split": "dev", "retriever": "bm25", "k": 4,
        "backend": "dummy", "model": "first-words", "params": GenerationParams(max_new_tokens=8), "limit": 12,
    }  # fmt: skip
    values.update(changes)
    return RunSpec(**values)  # type: ignore[arg-type]


def test_the_most_likely_label_answers_and_ties_go_to_the_first() -> None:
    assert choose_label(LABELS, [-3.0, -1.5, -2.0, -9.0, -1.5]) == "gitweb"
    assert choose_label(["a", "b"], [-1.0, -1.0]) == "a"


def test_decode_is_part_of_the_run_key_and_the_default_keeps_old_keys(git_commits: Path) -> None:
    default = dummy_spec()
    labels = dummy_spec(decode="labels")
    assert "decode" not in default.to_json()
    # the key this spec (on the built-in LaMP_2) had before decodings existed (commit f756a82)
    builtin = dummy_spec(task="LaMP_2")
    assert run_key(builtin, builtin_task("LaMP_2")) == "cf69c812b0d6c9011e8db6a0"
    task = load_task_json(git_commits / "commit_area" / "task.json")
    assert run_key(labels, task) != run_key(default, task)
    assert spec_from_json(labels.to_json()) == labels
    assert labels.label.endswith("decode=labels") and "decode" not in default.label
    with pytest.raises(LampboxError, match="unknown decoding 'beam'"):
        dummy_spec(decode="beam")
    with pytest.raises(LampboxError, match="uses no model"):
        dummy_spec(method="retrieval-only", decode="labels")


def test_label_scores_are_cached_apart_from_generations() -> None:
    identity = {"backend": "dummy"}
    request = GenerationRequest(PROMPT)
    assert label_cache_key(identity, LABELS, request) != label_cache_key(identity, LABELS[:-1], request)
    from lampbox.engine.generation.cached import generation_cache_key

    assert label_cache_key(identity, LABELS, request) != generation_cache_key(identity, GenerationParams(), request)


def test_a_labels_run_answers_labels_and_records_its_decoding(commits_store, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    task = commits_store.task("commit_area")
    generated = run(dummy_spec(), commits_store, predictions_dir=tmp_path)
    decoded = run(dummy_spec(decode="labels"), commits_store, predictions_dir=tmp_path)
    assert decoded.run_key != generated.run_key
    # The dummy's raw generation (the prompt's first words) is never a label; label decoding always is.
    assert not any(p.output in task.labels for p in generated.predictions)
    assert all(p.output in task.labels for p in decoded.predictions)
    assert decoded.metrics["accuracy"] > generated.metrics["accuracy"] == 0.0
    for prediction in decoded.predictions:
        logliks = prediction.kept["label_logliks"]
        assert list(logliks) == list(task.labels)
        assert prediction.output == max(task.labels, key=lambda label: logliks[label])
        assert prediction.kept["decode"] == "labels"
        assert prediction.prompt and prediction.kept["items"]  # the prompt builder's record stays
    # the official predictions files say which decoding made them
    assert json.loads(Path(decoded.predictions_path or "").read_text())["decode"] == "labels"
    assert json.loads(Path(generated.predictions_path or "").read_text())["decode"] == "generate"
    # stored with the run, and served from the store the second time
    stored = run_store.run_predictions(commits_store, decoded.run_key)
    assert [p.kept["label_logliks"] for p in stored] == [p.kept["label_logliks"] for p in decoded.predictions]
    again = run(dummy_spec(decode="labels"), commits_store)
    assert again.from_store and again.metrics == decoded.metrics


def test_labels_need_a_task_with_labels_and_a_backend_that_scores_them(commits_store) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(LampboxError, match="commit_subject is a generation task without labels"):
        run(dummy_spec(task="commit_subject", decode="labels"), commits_store)
    with pytest.raises(LampboxError, match="the openai backend cannot score labels"):
        run(dummy_spec(backend="openai", model="some-model", decode="labels"), commits_store)
    assert run_store.list_runs(commits_store) == []  # refused before anything started
    assert all(backend_class(name).supports_label_scoring for name in ("hf", "llamacpp", "fid"))


def test_bench_decode_labels_in_the_table_and_one_line_errors(commits_store_path: Path, tmp_path: Path) -> None:
    import shutil

    from lampbox.cli import cli

    db = tmp_path / "commits.duckdb"
    shutil.copy(commits_store_path, db)
    common = ["bench", "--task", "commit_area", "--retrievers", "none,bm25", "--k", "1", "--limit", "6",
              "--backend", "dummy", "--model", "first-words", "--db", str(db), "--out", str(tmp_path / "out")]  # fmt: skip
    runner = CliRunner()
    result = runner.invoke(cli, [*common, "--decode", "labels", "--json"])
    assert result.exit_code == 0, result.output
    rows = {row["label"]: row for row in json.loads(result.stdout)["rows"]}
    assert "bm25 k=1 dummy:first-words decode=labels" in rows
    assert rows["bm25 k=1 dummy:first-words decode=labels"]["spec"]["decode"] == "labels"
    assert "decode" not in rows["bm25 k=1 retrieval-only"]["spec"]

    for args, message in (
        (["--decode", "labels", "--backend", "openai"], "the openai backend cannot score labels"),
        (["--decode", "labels", "--task", "commit_subject"], "commit_subject is a generation task without labels"),
    ):
        failed = runner.invoke(cli, [*common, *args])
        assert failed.exit_code != 0
        assert message in failed.output and len(failed.output.strip().splitlines()) == 1, failed.output


# -- real backends ---------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("chat", [True, False])
def test_hf_label_scores_are_the_hand_computed_log_likelihoods(tiny_lm: Path, chat: bool) -> None:
    import torch

    generator = load_generator("hf", str(tiny_lm), chat=chat)
    prompts = [PROMPT, "Name the area: tests"]
    scores = generator.score_labels(prompts, LABELS)
    for prompt, row in zip(prompts, scores, strict=True):
        context = generator._prompt_ids(prompt)  # exactly what generation feeds the model
        expected = []
        for label in LABELS:
            # chat: the label right after the opened assistant turn; plain: after one space
            tokens = generator.tokenizer.encode(label if chat else " " + label)
            with torch.inference_mode():
                logits = generator.model(torch.tensor([context + tokens])).logits[0].float()
            log_probs = torch.log_softmax(logits, dim=-1)
            expected.append(sum(float(log_probs[len(context) - 1 + i, token]) for i, token in enumerate(tokens)))
        assert row == pytest.approx(expected, abs=1e-4)
        assert choose_label(LABELS, row) == LABELS[max(range(len(LABELS)), key=expected.__getitem__)]
    generator.close()


@pytest.mark.slow
def test_llamacpp_label_scores_are_the_step_by_step_log_likelihoods(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import numpy as np

    from lampbox.engine.generation.llamacpp import _log_softmax

    monkeypatch.setenv("LAMPBOX_HOME", str(tmp_path))
    generator = load_generator("llamacpp", "smollm2-135m-instruct", threads=1)
    row = generator.score_labels([PROMPT], LABELS)[0]
    llama = generator._llama
    tokens = generator.prompt_tokens(PROMPT)
    expected = []
    for label in LABELS:  # one token at a time, each next-token distribution read after it
        llama.reset()
        llama.eval(tokens)
        total = 0.0
        for token in generator.tokenizer.encode(label):
            logits = np.ctypeslib.as_array(llama._ctx.get_logits_ith(-1), shape=(llama.n_vocab(),))
            total += float(_log_softmax(logits)[token])
            llama.eval([token])
        expected.append(total)
    assert row == pytest.approx(expected, abs=1e-2)  # batched vs one-token kernels of a quantized model
    assert choose_label(LABELS, row) == LABELS[int(np.argmax(expected))]
    # the scored prompt is the one a generation starts from, and generation still works after scoring
    assert generator.generate([PROMPT], GenerationParams(max_new_tokens=2))[0]
    assert list(llama._input_ids[: len(tokens)]) == tokens
    assert generator.score_labels([PROMPT], LABELS)[0] == row  # nothing left over from before
    generator.close()
