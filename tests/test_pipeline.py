"""The run pipeline: retrieval-only baselines, IPA with the real packaged model, storing and reuse."""

from __future__ import annotations

import dataclasses
import itertools
import json
from pathlib import Path

import pytest

from lampbox.engine.generation.base import GenerationParams, as_request
from lampbox.engine.generation.pool import GeneratorPool
from lampbox.engine.methods import retrieval_only_output
from lampbox.engine.metrics import evaluate
from lampbox.engine.scoring import postprocess
from lampbox.engine.tasks import BUILTIN_TASKS
from lampbox.engine.types import ProfileItem
from lampbox.lab.pipeline import load_run, run
from lampbox.lab.specs import RunSpec, run_key
from lampbox.lampfiles import read_json, validate_outputs
from lampbox.store import Store
from lampbox.store import runs as run_store


def items(field: str, *values: str) -> list[ProfileItem]:
    return [ProfileItem(f"k{index}", f"i{index}", {field: value}) for index, value in enumerate(values)]


def test_retrieval_only_outputs_per_task_kind() -> None:
    assert retrieval_only_output(BUILTIN_TASKS["LaMP_4"], items("title", "first", "second")) == "first"
    assert retrieval_only_output(BUILTIN_TASKS["LaMP_2"], items("tag", "comedy", "action", "action")) == "action"
    # a tie goes to the label ranked first
    assert retrieval_only_output(BUILTIN_TASKS["LaMP_2"], items("tag", "comedy", "action")) == "comedy"
    assert retrieval_only_output(BUILTIN_TASKS["LaMP_3"], items("score", "4", "5", "x")) == "4.5"
    assert retrieval_only_output(BUILTIN_TASKS["LaMP_1"], items("title", "t")) == ""  # no target field
    assert retrieval_only_output(BUILTIN_TASKS["LaMP_4"], []) == ""


def test_postprocessing_is_explicit() -> None:
    raw = '  \n"fix the parser"\nBecause the old one broke.\n'
    assert postprocess(raw, ()) == '"fix the parser"\nBecause the old one broke.'
    assert postprocess(raw, ("first-line",)) == '"fix the parser"'
    assert postprocess(raw, ("first-line", "strip-quotes")) == "fix the parser"
    with pytest.raises(Exception, match="unknown post-processing"):
        RunSpec("LaMP_7", "user", "dev", postprocess=("shout",))


@pytest.mark.parametrize("field", ["limit", "users"])
@pytest.mark.parametrize("value", [0, -1])
def test_limit_and_users_are_at_least_one(field: str, value: int) -> None:
    from lampbox.errors import LampboxError

    with pytest.raises(LampboxError, match=f"{field} must be at least 1"):
        RunSpec("LaMP_7", "user", "dev", **{field: value})


def test_run_keys_follow_the_spec(git_commits: Path) -> None:
    from lampbox.engine.tasks import load_task_json

    task = load_task_json(git_commits / "commit_subject" / "task.json")
    base = RunSpec("commit_subject", "user", "dev", retriever="bm25", k=1, method="retrieval-only")
    assert run_key(base, task) == run_key(RunSpec("commit_subject", "user", "dev", retriever="bm25", k=1, method="retrieval-only"), task)
    assert run_key(base, task) != run_key(RunSpec("commit_subject", "user", "dev", retriever="bm25", k=2, method="retrieval-only"), task)
    # model settings do not change a model-free baseline
    assert run_key(base, task) == run_key(RunSpec("commit_subject", "user", "dev", retriever="bm25", k=1, method="retrieval-only", max_length=512), task)
    # a custom task's definition does
    edited = dataclasses.replace(task, ipa_item_template='"{title}" was the subject of "{text}" ')
    assert run_key(base, edited) != run_key(base, task)


def test_retrieval_only_run_is_stored_scored_and_written(commits_store: Store, tmp_path: Path, git_commits: Path) -> None:
    spec = RunSpec("commit_subject", "user", "dev", retriever="recency", k=1, method="retrieval-only")
    record = run(spec, commits_store, predictions_dir=tmp_path)
    assert len(record.predictions) == 570 and not record.from_store
    # the official-format file scores the same with the official metrics
    task_name, preds = validate_outputs(read_json(record.predictions_path), record.predictions_path)
    _, golds = validate_outputs(read_json(git_commits / "commit_subject" / "dev_outputs.json"), "golds")
    assert task_name == "commit_subject"
    official = evaluate(commits_store.task("commit_subject"), golds, preds)
    assert official == pytest.approx(record.metrics)
    # recency copies the newest earlier subject: each prediction is the title of a profile item
    question = commits_store.questions("commit_subject", "user", "dev", limit=1)[0]
    newest = max(question.profile, key=lambda item: item.date or "")
    assert record.predictions[0].output == newest.get("title")
    assert record.predictions[0].item_ids == (newest.id,)
    # per-user aggregates cover every user once
    assert len(record.user_scores) == 190
    assert sum(score.n_questions for score in record.user_scores.values()) == 570
    again = run(spec, commits_store, predictions_dir=tmp_path)
    assert again.from_store and again.metrics == record.metrics
    assert [p.output for p in again.predictions] == [p.output for p in record.predictions]


@pytest.fixture(scope="module")
def pool() -> GeneratorPool:
    generators = GeneratorPool({"llamacpp": {"threads": 2}})
    yield generators
    generators.close()


@pytest.mark.slow
def test_ipa_run_with_the_packaged_model_is_cached_and_resumable(
    commits_store: Store, tmp_path: Path, pool: GeneratorPool
) -> None:
    spec = RunSpec(
        "commit_subject", "user", "dev", retriever="bm25", k=2, limit=3, params=GenerationParams(max_new_tokens=6)
    )
    first = run(spec, commits_store, generators=pool, predictions_dir=tmp_path)
    assert first.generated == 3 and first.cached == 0
    prediction = first.predictions[0]
    assert prediction.prompt and prediction.prompt.endswith(commits_store.questions("commit_subject", "user", "dev", limit=1)[0].input[-40:])
    assert len(prediction.item_keys) == 2 and prediction.prompt_tokens <= 256
    assert prediction.raw_output.strip() == prediction.output and prediction.output
    assert set(prediction.scores) == {"rouge-1", "rouge-L"}
    # finished: served from the store without generating
    stored = run(spec, commits_store, generators=pool)
    assert stored.from_store and stored.generated == 0
    # recomputed: every generation comes from the cache, with identical outputs
    again = run(spec, commits_store, generators=pool, recompute=True)
    assert again.generated == 0 and again.cached == 3
    assert [p.output for p in again.predictions] == [p.output for p in first.predictions]
    loaded = load_run(commits_store, first.run_key)
    assert loaded.spec == spec and json.dumps(loaded.metrics) == json.dumps(first.metrics)


def test_a_failed_run_is_marked_and_leaves_no_predictions(commits_store: Store, tmp_path: Path) -> None:
    spec = RunSpec(
        "commit_subject", "user", "dev", limit=2, backend="openai", model="smollm2", model_options=(("base_url", "http://127.0.0.1:9/v1"), ("timeout", 2.0))
    )
    with pytest.raises(Exception, match=r"127\.0\.0\.1:9"):
        run(spec, commits_store, predictions_dir=tmp_path / "out")
    key = run_key(spec, commits_store.task("commit_subject"))
    stored = run_store.get_run(commits_store, key)
    assert stored is not None and stored.status == "failed" and stored.error
    assert run_store.run_predictions(commits_store, key) == []
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_uncached_prompts_are_generated_longest_first(
    commits_store: Store, pool: GeneratorPool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Batched backends pad to the longest prompt of a batch: the pipeline sends similar lengths
    together, longest first, and still returns each question its own output."""
    spec = RunSpec(
        "commit_subject", "user", "dev", retriever="bm25", k=3, limit=7, params=GenerationParams(max_new_tokens=3)
    )
    generator = pool.get(spec.backend, spec.model, spec.model_options)
    original = generator.generate
    calls: list[list[str]] = []

    def recording(prompts, params, **kwargs):  # type: ignore[no-untyped-def]
        calls.append([as_request(request).prompt for request in prompts])
        return original(prompts, params, **kwargs)

    monkeypatch.setattr(generator, "generate", recording)
    result = run(spec, commits_store, generators=pool, batch_size=2)
    tokens = {p.prompt: p.prompt_tokens for p in result.predictions}
    sent = [tokens[prompt] for batch in calls for prompt in batch]
    assert len(sent) == len(tokens) >= 5 and all(len(batch) <= 2 for batch in calls)
    assert sent == sorted(sent, reverse=True) and len(set(sent)) > 1
    for prediction in result.predictions:  # each output is its own prompt's (generated alone)
        assert prediction.raw_output == original([prediction.prompt], spec.params)[0]


def test_a_bench_s_store_is_closed_while_it_generates_and_opened_once_per_batch(
    commits_store_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Readers get in during every batch's generation (the file is closed then), and each batch's
    outputs and progress line are written in one opening of the file, not one each (issue 22)."""
    import shutil

    from lampbox.lab import pipeline
    from lampbox.store import core

    path = tmp_path / "bench.duckdb"
    shutil.copy(commits_store_path, path)
    store = Store(path, hold_lock=False)
    spec = RunSpec("commit_subject", "user", "dev", retriever="bm25", k=2, limit=9, backend="dummy", model="dummy")
    pool = GeneratorPool()
    generator = pool.get(spec.backend, spec.model, spec.model_options)
    original = generator.generate
    connects: list[int] = []
    seen: list[tuple[bool, int]] = []  # per batch: the file open?, connects so far

    def recording(prompts, params, **kwargs):  # type: ignore[no-untyped-def]
        seen.append((store.is_open, len(connects)))
        return original(prompts, params, **kwargs)

    monkeypatch.setattr(generator, "generate", recording)
    connect = core.Store._connect
    monkeypatch.setattr(core.Store, "_connect", lambda self: connects.append(1) or connect(self))
    monkeypatch.setattr(pipeline, "PROGRESS_EVERY_S", 0.0)  # progress after every batch, as on a real model
    try:
        result = run(spec, store, generators=pool, batch_size=2)
        progress = run_store.get_run(store, result.run_key)
    finally:
        store.close()
    assert result.generated == 9 and [is_open for is_open, _ in seen] == [False] * 5
    between = [later - earlier for (_, earlier), (_, later) in itertools.pairwise(seen)]
    assert between == [1, 1, 1, 1], between  # a batch's outputs and its progress: one opening
    assert progress is not None and progress.status == "finished"
