"""The one run pipeline that the bench and the TUI both call.

run(spec, store) -> RunRecord: select questions, rank their profiles (stored rankings reused),
build IPA prompts with the generating model's tokenizer, generate what the generation cache
lacks (batch by batch, cached as it goes, so a killed run resumes where it stopped), score
every question with the official metrics, and store predictions, per-user scores and the
official-format predictions file. A finished run is served from the store.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lampbox.engine.generation.base import GenerationParams, Generator
from lampbox.engine.tasks import TaskSpec
from lampbox.engine.types import ProfileItem, Question
from lampbox.errors import LampboxError

METHODS = ("ipa", "retrieval-only")
POSTPROCESSORS = ("first-line", "strip-quotes")
DEFAULT_MAX_LENGTH = 256
DEFAULT_MODEL = "smollm2-135m-instruct"
DEFAULT_BACKEND = "llamacpp"

ProgressCallback = Callable[["RunProgress"], None]
CancelCheck = Callable[[], bool]


class RunCancelled(LampboxError):
    """should_cancel() returned True; the work done so far is kept for a resume."""


@dataclass(frozen=True)
class RunSpec:
    """Everything that defines a run's results (frozen, hashable; its hash keys the run)."""

    task: str
    scheme: str
    split: str
    retriever: str = "none"
    k: int = 0
    method: str = "ipa"  # ipa | retrieval-only
    backend: str = DEFAULT_BACKEND
    model: str = DEFAULT_MODEL
    params: GenerationParams = field(default_factory=GenerationParams)
    max_length: int = DEFAULT_MAX_LENGTH
    postprocess: tuple[str, ...] = ()
    retriever_options: tuple[tuple[str, Any], ...] = ()
    model_options: tuple[tuple[str, Any], ...] = ()  # e.g. (("chat", False),); never threads
    limit: int | None = None
    users: int | None = None

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise LampboxError(f"unknown method {self.method!r} (known: {', '.join(METHODS)})")
        unknown = [name for name in self.postprocess if name not in POSTPROCESSORS]
        if unknown:
            raise LampboxError(f"unknown post-processing {', '.join(unknown)} (known: {', '.join(POSTPROCESSORS)})")
        if self.k < 0:
            raise LampboxError("k cannot be negative")

    @property
    def uses_model(self) -> bool:
        return self.method == "ipa"

    @property
    def personalized(self) -> bool:
        return self.retriever != "none" and self.k > 0

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["params"] = self.params.to_json()
        data["postprocess"] = list(self.postprocess)
        data["retriever_options"] = dict(self.retriever_options)
        data["model_options"] = dict(self.model_options)
        if not self.uses_model:  # a model-free baseline does not depend on these
            for name in ("backend", "model", "params", "max_length", "model_options", "postprocess"):
                data.pop(name)
        return data

    @property
    def label(self) -> str:
        """A short human name, e.g. 'bm25 k=4 llamacpp:smollm2-135m-instruct'."""
        if self.method == "retrieval-only":
            return f"{self.retriever} k={self.k} retrieval-only"
        retrieval = "no personalization" if not self.personalized else f"{self.retriever} k={self.k}"
        extras = "".join(f" {name}={value}" for name, value in self.retriever_options)
        model_extras = "".join(f" {name}={value}" for name, value in self.model_options)
        return f"{retrieval}{extras} {self.backend}:{Path(self.model).name}{model_extras}"


def model_fingerprint(spec: RunSpec) -> str:
    """What identifies the model's weights without loading them (file or folder hash, or the name)."""
    if not spec.uses_model or spec.backend == "openai":
        return spec.model
    from lampbox.engine.generation.common import file_sha256, folder_sha256
    from lampbox.models import resolve_model

    resolved = resolve_model(spec.model)
    if resolved.is_hub_id:
        return resolved.location
    path = resolved.path
    return file_sha256(path) if path.is_file() else folder_sha256(path)


def run_key(spec: RunSpec) -> str:
    data = {"spec": spec.to_json(), "model": model_fingerprint(spec), "version": 1}
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:24]


@dataclass(frozen=True)
class RunProgress:
    """A progress report: phase is 'rank', 'prompt', 'generate' or 'score'."""

    spec: RunSpec
    phase: str
    done: int
    total: int


@dataclass
class RunRecord:
    """A run's results: official metrics, predictions, per-user scores."""

    run_key: str
    spec: RunSpec
    metrics: dict[str, float]
    predictions: list[Any]  # StoredPrediction
    user_scores: dict[str, tuple[int, float, dict[str, float], float | None]]
    predictions_path: str | None
    from_store: bool = False
    generated: int = 0  # outputs generated in this call
    cached: int = 0  # outputs served from the generation cache
    seconds: float = 0.0

    @property
    def label(self) -> str:
        return self.spec.label


class GeneratorPool:
    """Loaded generators shared across runs in one process (a model is loaded once).

    `backend_options` gives per-backend loading options that do not change outputs (threads
    for llamacpp, base_url for openai, ...); a RunSpec's model_options come on top.
    """

    def __init__(self, backend_options: Mapping[str, Mapping[str, Any]] | None = None) -> None:
        self._backend_options = {name: dict(options) for name, options in (backend_options or {}).items()}
        self._loaded: dict[tuple[str, str, tuple[tuple[str, Any], ...]], Generator] = {}
        self._lock = threading.Lock()

    def get(self, backend: str, model: str, options: tuple[tuple[str, Any], ...] = ()) -> Generator:
        from lampbox.engine.generation.registry import load_generator

        key = (backend, model, options)
        with self._lock:
            if key not in self._loaded:
                merged = {**self._backend_options.get(backend, {}), **dict(options)}
                self._loaded[key] = load_generator(backend, model, **merged)
            return self._loaded[key]

    def close(self) -> None:
        with self._lock:
            for generator in self._loaded.values():
                generator.close()
            self._loaded.clear()


# -- the steps ---------------------------------------------------------------------------------


def select_questions(store: Any, spec: RunSpec) -> list[Question]:
    """The spec's questions in file order: the first `users` users, then the first `limit`."""
    user_ids = None
    if spec.users is not None:
        rows = store.cursor().execute(
            "SELECT user_id FROM questions WHERE task = ? AND scheme = ? AND split = ? "
            "GROUP BY user_id ORDER BY min(position) LIMIT ?",
            [spec.task, spec.scheme, spec.split, spec.users],
        ).fetchall()
        user_ids = [row[0] for row in rows]
    questions = store.questions(spec.task, spec.scheme, spec.split, limit=spec.limit, user_ids=user_ids)
    if not questions:
        raise LampboxError(f"no {spec.task} {spec.scheme} {spec.split} questions to run in {store.path}")
    return questions


def retrieved_items(question: Question, ranking: Any, k: int) -> list[ProfileItem]:
    """The top-k profile items of a ranking, best first (none for k = 0 or the `none` retriever)."""
    if ranking is None or k <= 0:
        return []
    if ranking.context_limit is not None:
        k = min(k, ranking.context_limit)
    by_key = {item.key: item for item in question.profile}
    return [by_key[key] for key in ranking.item_keys[:k] if key in by_key]


def retrieval_only_output(task: TaskSpec, items: Sequence[ProfileItem]) -> str:
    """A model-free baseline from the user's history alone.

    Generation: the top item's target field. Classification: the majority label of the items
    (ties go to the label ranked first). Rating: the mean score of the items.
    """
    field_name = task.target_field
    if not items or field_name is None:
        return ""
    values = [item.get(field_name).strip() for item in items]
    if task.kind == "generation":
        return values[0]
    if task.kind == "classification":
        counts = Counter(value for value in values if value)
        if not counts:
            return ""
        best = max(counts.values())
        return next(value for value in values if counts.get(value) == best)
    numbers = []
    for value in values:
        try:
            numbers.append(float(value))
        except ValueError:
            continue
    return f"{sum(numbers) / len(numbers):.4g}" if numbers else ""


def postprocess(text: str, steps: Sequence[str]) -> str:
    """Raw output stripped, then the run's recorded post-processing steps."""
    result = text.strip()
    for step in steps:
        if step == "first-line":
            result = next((line.strip() for line in result.splitlines() if line.strip()), "")
        elif step == "strip-quotes":
            while len(result) >= 2 and result[0] == result[-1] and result[0] in "\"'`":
                result = result[1:-1].strip()
    return result


def generation_cache_key(identity: Mapping[str, Any], params: GenerationParams, prompt: str) -> str:
    data = json.dumps({"model": identity, "params": params.to_json(), "prompt": prompt}, sort_keys=True)
    return hashlib.sha256(data.encode("utf-8")).hexdigest()


def prompt_builder(task: TaskSpec, generator: Generator, spec: RunSpec) -> Any:
    """The IPA prompt builder for a run: the official budget, capped by the model's context."""
    from lampbox.engine.prompting import PromptBuilder

    chat_margin = 64  # room for the chat template's own tokens
    return PromptBuilder(
        task,
        generator.tokenizer,
        max_length=spec.max_length,
        context_size=generator.context_size,
        reserve_new_tokens=spec.params.max_new_tokens + chat_margin,
    )


def run(
    spec: RunSpec,
    store: Any,
    *,
    generators: GeneratorPool | None = None,
    predictions_dir: Path | None = None,
    on_progress: ProgressCallback | None = None,
    should_cancel: CancelCheck | None = None,
    batch_size: int = 8,
    recompute: bool = False,
) -> RunRecord:
    """Run one configuration end to end (or serve it from the store when it is finished)."""
    from lampbox.engine.generation.common import GenerationCancelled
    from lampbox.store import runs as run_store

    started = time.perf_counter()
    key = run_key(spec)
    if not recompute and run_store.run_status(store, key) == "finished":
        record = load_run(store, key, spec)
        record.seconds = time.perf_counter() - started
        return record
    task = store.task(spec.task)
    questions = select_questions(store, spec)
    run_store.start_run(store, key, spec.label, spec.to_json(), len(questions))
    try:
        record = _execute(spec, key, task, questions, store, generators, predictions_dir, on_progress, should_cancel, batch_size)
    except (RunCancelled, GenerationCancelled, KeyboardInterrupt) as error:
        run_store.fail_run(store, key, "cancelled", str(error) or "interrupted")
        raise
    except Exception as error:
        run_store.fail_run(store, key, "failed", str(error))
        raise
    record.seconds = time.perf_counter() - started
    return record


def _execute(
    spec: RunSpec,
    key: str,
    task: TaskSpec,
    questions: list[Question],
    store: Any,
    generators: GeneratorPool | None,
    predictions_dir: Path | None,
    on_progress: ProgressCallback | None,
    should_cancel: CancelCheck | None,
    batch_size: int,
) -> RunRecord:
    from lampbox.store import runs as run_store

    def report(phase: str, done: int, total: int) -> None:
        if on_progress:
            on_progress(RunProgress(spec, phase, done, total))

    def check_cancel() -> None:
        if should_cancel and should_cancel():
            raise RunCancelled(f"run {spec.label} cancelled")

    rankings = rank(spec, task, questions, store, report, should_cancel)
    selected = [retrieved_items(question, rankings.get(question.id), spec.k) for question in questions]
    prompts: list[Any] = [None] * len(questions)
    generated = cached = 0
    if spec.method == "retrieval-only":
        raw_outputs = [retrieval_only_output(task, items) for items in selected]
    else:
        pool = generators or GeneratorPool()
        generator = pool.get(spec.backend, spec.model, spec.model_options)
        builder = prompt_builder(task, generator, spec)
        prompts = []
        for index, (question, items) in enumerate(zip(questions, selected, strict=True)):
            prompts.append(builder.build(question.input, items))
            if index % 64 == 0:
                check_cancel()
                report("prompt", index, len(questions))
        identity = generator.identity()
        keys = [generation_cache_key(identity, spec.params, prompt.text) for prompt in prompts]
        outputs = run_store.cached_generations(store, keys)
        cached = sum(1 for cache_key in keys if cache_key in outputs)
        prompt_of = dict(zip(keys, prompts, strict=True))
        # Questions waiting per distinct uncached prompt: each prompt is generated once.
        waiting = Counter(cache_key for cache_key in keys if cache_key not in outputs)
        # Longest prompts first, so each batch holds prompts of similar length (batched
        # backends pad every prompt to the longest of its batch). fp32 outputs do not depend on
        # it; int8 ones depend on their batch (docs/backends.md).
        todo = sorted(waiting, key=lambda cache_key: -prompt_of[cache_key].token_count)
        done = len(questions) - sum(waiting.values())
        report("generate", done, len(questions))
        for start in range(0, len(todo), batch_size):
            check_cancel()
            batch = todo[start : start + batch_size]
            texts = generator.generate([prompt_of[cache_key].text for cache_key in batch], spec.params, should_cancel=should_cancel)
            fresh = dict(zip(batch, texts, strict=True))
            run_store.cache_generations(store, generator.name, spec.backend, fresh)
            outputs.update(fresh)
            generated += len(batch)
            done += sum(waiting[cache_key] for cache_key in batch)
            report("generate", done, len(questions))
        raw_outputs = [outputs[cache_key] for cache_key in keys]
    return _finish(spec, key, task, questions, prompts, selected, raw_outputs, store, predictions_dir, report, generated, cached)


def rank(
    spec: RunSpec,
    task: TaskSpec,
    questions: Sequence[Question],
    store: Any,
    report: Callable[[str, int, int], None] | None = None,
    should_cancel: CancelCheck | None = None,
) -> dict[str, Any]:
    """Rankings by question id for a personalized spec (stored ones reused); {} otherwise."""
    if not spec.personalized:
        return {}
    from lampbox.engine.retrieval import create_retriever
    from lampbox.engine.retrieval.base import RetrievalCancelled
    from lampbox.engine.retrieval.service import rank_questions

    retriever = create_retriever(spec.retriever, **dict(spec.retriever_options))
    try:
        rankings = rank_questions(
            store,
            task,
            questions,
            retriever,
            on_progress=(lambda done, total: report("rank", done, total)) if report else None,
            should_cancel=should_cancel,
        )
    except RetrievalCancelled as error:
        raise RunCancelled(str(error)) from None
    return {ranking.question_id: ranking for ranking in rankings}


def _finish(
    spec: RunSpec,
    key: str,
    task: TaskSpec,
    questions: list[Question],
    prompts: list[Any],
    selected: list[list[ProfileItem]],
    raw_outputs: list[str],
    store: Any,
    predictions_dir: Path | None,
    report: Callable[[str, int, int], None],
    generated: int,
    cached: int,
) -> RunRecord:
    from lampbox.engine.metrics import Scorer, aggregate, question_key
    from lampbox.lampfiles import write_outputs
    from lampbox.store import runs as run_store

    scorer = Scorer(task)
    per_question_key = question_key(task)
    predictions = []
    for index, question in enumerate(questions):
        output = postprocess(raw_outputs[index], spec.postprocess)
        scores = scorer.score(output, question.gold) if question.gold is not None else {}
        prompt = prompts[index]
        predictions.append(
            run_store.StoredPrediction(
                question_id=question.id,
                user_id=question.user_id,
                prompt=None if prompt is None else prompt.text,
                item_keys=tuple(item.key for item in selected[index]) if prompt is None else prompt.item_keys,
                item_ids=_item_ids(selected[index], None if prompt is None else prompt.item_keys),
                kept={} if prompt is None else {k: v for k, v in prompt.to_json().items() if k != "text"},
                prompt_tokens=None if prompt is None else prompt.token_count,
                raw_output=raw_outputs[index],
                output=output,
                gold=question.gold,
                scores=scores,
                main_score=scores.get(per_question_key),
            )
        )
    report("score", len(questions), len(questions))
    scored = [prediction.scores for prediction in predictions if prediction.gold is not None]
    metrics = aggregate(task, scored) if scored and len(scored) == len(predictions) else {}
    users = _user_scores(task, questions, predictions)
    path = None
    if predictions_dir is not None:
        target = Path(predictions_dir) / f"{_slug(spec.label)}-{key[:8]}.json"
        write_outputs(target, task.file_task, {p.question_id: p.output for p in predictions})
        path = str(target)
    run_store.finish_run(store, key, metrics, predictions, users, path)
    return RunRecord(
        key, spec, metrics, predictions, {u[0]: u[1:] for u in users}, path, generated=generated, cached=cached
    )


def _item_ids(items: Sequence[ProfileItem], keys: Sequence[str] | None) -> tuple[str, ...]:
    by_key = {item.key: item.id for item in items}
    order = keys if keys is not None else [item.key for item in items]
    return tuple(by_key[key] for key in order if key in by_key)


def _user_scores(
    task: TaskSpec, questions: Sequence[Question], predictions: Sequence[Any]
) -> list[tuple[str, int, float, dict[str, float], float | None]]:
    from lampbox.engine.metrics import aggregate

    by_user: dict[str, list[int]] = {}
    for index, question in enumerate(questions):
        by_user.setdefault(question.user_id, []).append(index)
    rows = []
    for user, indices in by_user.items():
        scored = [predictions[index].scores for index in indices if predictions[index].gold is not None]
        metrics = aggregate(task, scored) if len(scored) == len(indices) else {}
        profile = sum(len(questions[index].profile) for index in indices) / len(indices)
        rows.append((user, len(indices), profile, metrics, metrics.get(task.main_metric)))
    return rows


def _slug(text: str) -> str:
    return "".join(char if char.isalnum() or char in "-_.=" else "-" for char in text).strip("-")


def load_run(store: Any, key: str, spec: RunSpec | None = None) -> RunRecord:
    """A stored run as a RunRecord (no recomputation)."""
    from lampbox.store import runs as run_store

    stored = run_store.get_run(store, key)
    if stored is None:
        raise LampboxError(f"no run {key} in {store.path}")
    if spec is None:
        spec = spec_from_json(stored.spec)
    return RunRecord(
        key,
        spec,
        dict(stored.metrics),
        run_store.run_predictions(store, key),
        run_store.user_scores(store, key),
        stored.predictions_path,
        from_store=True,
    )


def spec_from_json(data: Mapping[str, Any]) -> RunSpec:
    """Rebuild a RunSpec from its stored JSON."""
    values = dict(data)
    if "params" in values:
        params = dict(values["params"])
        params["stop"] = tuple(params.get("stop", ()))
        values["params"] = GenerationParams(**params)
    values["postprocess"] = tuple(values.get("postprocess", ()))
    values["retriever_options"] = tuple(sorted(dict(values.get("retriever_options", {})).items()))
    values["model_options"] = tuple(sorted(dict(values.get("model_options", {})).items()))
    return RunSpec(**values)



# -- one question at a time (the TUI's live view) ----------------------------------------------


@dataclass(frozen=True)
class PreparedPrompt:
    """A question's prompt for one configuration, with the items that went in and its cache key."""

    spec: RunSpec
    prompt: Any  # lampbox.engine.prompting.Prompt
    items: tuple[ProfileItem, ...]
    cache_key: str


def prepare_question(
    spec: RunSpec, question: Question, store: Any, generators: GeneratorPool
) -> PreparedPrompt:
    """Rank (stored rankings reused), select top-k and build the prompt, as a run would."""
    task = store.task(spec.task)
    rankings = rank(spec, task, [question], store)
    items = retrieved_items(question, rankings.get(question.id), spec.k)
    generator = generators.get(spec.backend, spec.model, spec.model_options)
    prompt = prompt_builder(task, generator, spec).build(question.input, items)
    key = generation_cache_key(generator.identity(), spec.params, prompt.text)
    return PreparedPrompt(spec, prompt, tuple(items), key)


def cached_output(store: Any, prepared: PreparedPrompt) -> str | None:
    """The cached generation for a prepared prompt, if any run made it before."""
    from lampbox.store import runs as run_store

    return run_store.cached_generations(store, [prepared.cache_key]).get(prepared.cache_key)


def remember_output(store: Any, prepared: PreparedPrompt, generator: Generator, output: str) -> None:
    """Cache a generation made outside a run (e.g. streamed in the TUI) for later runs."""
    from lampbox.store import runs as run_store

    run_store.cache_generations(store, generator.name, prepared.spec.backend, {prepared.cache_key: output})


def score_output(task: TaskSpec, output: str, gold: str | None, steps: Sequence[str] = ()) -> dict[str, float]:
    """Per-question scores of one output against the gold (empty when the gold is unknown)."""
    from lampbox.engine.metrics import Scorer

    if gold is None:
        return {}
    return Scorer(task).score(postprocess(output, steps), gold)
