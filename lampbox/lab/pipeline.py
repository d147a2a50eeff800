"""The one run pipeline that the bench and the TUI both call.

run(spec, store) -> RunRecord, flowing down once and back up once: the store gives the
questions; the engine ranks them (stored rankings reused through the store's caches), the
run's method produces outputs (generations cached batch by batch, so a killed run resumes
where it stopped) and scores them with the official metrics; the store keeps predictions,
per-user scores and the run; the official-format predictions file is written. A finished run
is served from the store.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from pathlib import Path

from lampbox.engine import scoring
from lampbox.engine.fingerprint import task_fingerprint
from lampbox.engine.generation.base import Generator
from lampbox.engine.generation.common import GenerationCancelled
from lampbox.engine.generation.labels import DEFAULT_DECODING, check_decoding, check_label_scoring
from lampbox.engine.generation.pool import GeneratorPool
from lampbox.engine.methods import MethodInput, MethodJob, selected_items
from lampbox.engine.prompting import Prompt
from lampbox.engine.retrieval import create_retriever
from lampbox.engine.retrieval.base import RetrievalCancelled
from lampbox.engine.tasks import TaskSpec
from lampbox.engine.types import Prediction, ProfileItem, Question, Ranking
from lampbox.engine.whatif import WhatIf
from lampbox.errors import LampboxError
from lampbox.lab.ranking import rank_stored
from lampbox.lab.specs import (
    ProgressCallback,
    RunProgress,
    RunRecord,
    RunSpec,
    run_key,
    spec_from_json,
)
from lampbox.lampfiles import write_outputs
from lampbox.store import runs as run_store
from lampbox.store.caches import StoreGenerationCache
from lampbox.store.core import Store

CancelCheck = Callable[[], bool]
PROGRESS_EVERY_S = 1.0  # how often a run's progress is written to the store, at most


class RunCancelled(LampboxError):
    """should_cancel() returned True; the work done so far is kept for a resume."""


def select_questions(store: Store, spec: RunSpec) -> list[Question]:
    """The spec's questions in file order: the users with at least `min_profile` profile
    items, the first `users` of them, their questions after the first `skip`, then the first
    `limit` of those."""
    user_ids = _selected_users(store, spec)
    questions = store.questions(spec.task, spec.scheme, spec.split, limit=spec.limit, user_ids=user_ids, skip=spec.skip)
    if not questions:
        check_skip(store, spec, user_ids)
        raise LampboxError(f"no {spec.task} {spec.scheme} {spec.split} questions to run in {store.path}")
    return questions


def _selected_users(store: Store, spec: RunSpec) -> list[str] | None:
    """The users --users and --min-profile keep, in file order (None: every user)."""
    if spec.users is None and spec.min_profile is None:
        return None
    user_ids = store.first_users(spec.task, spec.scheme, spec.split, spec.users, min_profile=spec.min_profile)
    if not user_ids and spec.min_profile is not None and store.count_questions(spec.task, spec.scheme, spec.split):
        raise LampboxError(
            f"no user of {spec.task} {spec.scheme} {spec.split} has {spec.min_profile} or more profile items "
            "in every question (--min-profile)"
        )
    return user_ids


def check_skip(store: Store, spec: RunSpec, user_ids: list[str] | None = None) -> None:
    """One clear line when `skip` leaves none of the spec's questions (`user_ids`: the users
    already selected, else those of --users and --min-profile)."""
    if not spec.skip:
        return
    if user_ids is None:
        user_ids = _selected_users(store, spec)
    count = store.count_questions(spec.task, spec.scheme, spec.split, user_ids)
    if spec.skip < count or not count:
        return
    scope = []
    if spec.min_profile is not None:
        scope.append(f"users with >= {spec.min_profile} profile items")
    if spec.users is not None:
        scope.append(f"the first {spec.users} users")
    of = f" ({' of '.join(reversed(scope))})" if scope else ""
    raise LampboxError(
        f"--skip {spec.skip} leaves no question: {spec.task} {spec.scheme} {spec.split} has {count} questions{of}"
    )


def rank(
    spec: RunSpec,
    task: TaskSpec,
    questions: Sequence[Question],
    store: Store | None,
    report: Callable[[str, int, int], None] | None = None,
    should_cancel: CancelCheck | None = None,
    keep_rankings: bool = True,
) -> dict[str, Ranking]:
    """Rankings by question id for a personalized spec (stored ones reused); {} otherwise."""
    if not spec.personalized:
        return {}
    retriever = create_retriever(spec.retriever, **dict(spec.retriever_options))
    try:
        rankings = rank_stored(
            store,
            task,
            questions,
            retriever,
            on_progress=(lambda done, total: report("rank", done, total)) if report else None,
            should_cancel=should_cancel,
            keep_rankings=keep_rankings,
        )
    except RetrievalCancelled as error:
        raise RunCancelled(str(error)) from None
    return {ranking.question_id: ranking for ranking in rankings}


def run(
    spec: RunSpec,
    store: Store,
    *,
    generators: GeneratorPool | None = None,
    predictions_dir: Path | None = None,
    on_progress: ProgressCallback | None = None,
    should_cancel: CancelCheck | None = None,
    batch_size: int = 8,
    recompute: bool = False,
) -> RunRecord:
    """Run one configuration end to end (or serve it from the store when it is finished)."""
    if spec.method_impl.selects:  # RSPG: composed from its selector's pool
        from lampbox.lab.selection import run_selection

        return run_selection(
            spec, store, generators=generators, predictions_dir=predictions_dir, on_progress=on_progress,
            should_cancel=should_cancel, batch_size=batch_size, recompute=recompute,
        )  # fmt: skip
    started = time.perf_counter()
    task = store.task(spec.task)
    check_run_decoding(spec, task)
    key = run_key(spec, task)
    if not recompute and run_store.run_status(store, key) == "finished":
        record = load_run(store, key, spec)
        record.seconds = time.perf_counter() - started
        return record
    task_hash = task_fingerprint(task)
    questions = select_questions(store, spec)
    run_store.start_run(store, key, spec.label, spec.to_json(), len(questions), task_hash)
    store.idle()  # a store that does not hold its lock gives the file back between writes
    recorded = {"phase": "", "at": 0.0}

    def report(phase: str, done: int, total: int) -> None:
        if on_progress:
            on_progress(RunProgress(spec, phase, done, total))
        now = time.monotonic()
        if phase != recorded["phase"] or done == total or now - float(recorded["at"]) >= PROGRESS_EVERY_S:
            run_store.record_progress(store, key, phase, done)  # for a TUI watching from elsewhere
            recorded.update(phase=phase, at=now)
        store.idle()  # also after each batch's cache save, which leaves the file open for this

    try:
        rankings = rank(spec, task, questions, store, report, should_cancel)
        selected = [selected_items(q, rankings.get(q.id), spec.k) for q in questions]
        pool = generators or GeneratorPool()
        job = MethodJob(
            task=task,
            questions=questions,
            selected=selected,
            params=spec.params,
            max_length=spec.max_length,
            generator=lambda: pool.get(spec.backend, spec.model, spec.model_options),
            cache=StoreGenerationCache(store, idle_after_save=False),  # report() idles after each batch
            batch_size=batch_size,
            report=report,
            should_cancel=should_cancel,
            decode=spec.decode,
        )
        result = spec.method_impl.produce(job)
        predictions = scoring.predictions(
            task, questions, result.inputs, selected, result.raw_outputs, spec.postprocess, result.records
        )
        report("score", len(questions), len(questions))
        metrics = scoring.run_metrics(task, predictions)
        users = scoring.user_scores(task, questions, predictions)
        path = write_predictions_file(spec, key, task, predictions, predictions_dir)
        run_store.finish_run(store, key, metrics, predictions, users, path)
        store.idle()
    except (RunCancelled, GenerationCancelled, KeyboardInterrupt) as error:
        run_store.fail_run(store, key, "cancelled", str(error) or "interrupted")
        raise
    except Exception as error:
        run_store.fail_run(store, key, "failed", str(error))
        raise
    return RunRecord(
        key,
        spec,
        metrics,
        predictions,
        {score.user_id: score for score in users},
        path,
        task_hash=task_hash,
        generated=result.generated,
        cached=result.cached,
        seconds=time.perf_counter() - started,
    )


def check_run_decoding(spec: RunSpec, task: TaskSpec) -> None:
    """Before any work: label decoding needs a task with labels and a backend that scores them."""
    if spec.decode == DEFAULT_DECODING:
        return
    from lampbox.engine.generation.registry import backend_class

    check_decoding(spec.decode, task)
    check_label_scoring(backend_class(spec.backend))


def write_predictions_file(
    spec: RunSpec, key: str, task: TaskSpec, predictions: Sequence[Prediction], predictions_dir: Path | None
) -> str | None:
    """The run's official-format predictions file in `predictions_dir` (None: not written)."""
    if predictions_dir is None:
        return None
    target = Path(predictions_dir) / f"{_slug(spec.label)}-{key[:8]}.json"
    decode = spec.decode if spec.uses_model else None
    write_outputs(target, task.file_task, {p.question_id: p.output for p in predictions}, decode)
    return str(target)


def _slug(text: str) -> str:
    return "".join(char if char.isalnum() or char in "-_.=" else "-" for char in text).strip("-")


SERVED_KINDS = ("run", "rspg")  # benchmark runs, and RSPG selections (composed of runs)
SPEC_FIELDS = {field.name for field in fields(RunSpec)}


def load_run(store: Store, key: str, spec: RunSpec | None = None) -> RunRecord:
    """A stored run as a RunRecord (no recomputation)."""
    stored = run_store.get_run(store, key)
    if stored is None:
        raise LampboxError(f"no run {key} in {store.path}")
    if stored.kind not in SERVED_KINDS:
        what = "a saved what-if" if stored.kind == "whatif" else f"a stored {stored.kind} run"
        raise LampboxError(f"run {key} is {what} ({stored.label}), not a benchmark run")
    if spec is None:  # an RSPG selection's record also names its pool (and, from `rspg apply`, its bench)
        spec = spec_from_json({name: value for name, value in stored.spec.items() if name in SPEC_FIELDS})
    return RunRecord(
        key,
        spec,
        dict(stored.metrics),
        run_store.run_predictions(store, key),
        run_store.user_scores(store, key),
        stored.predictions_path,
        from_store=True,
        task_hash=stored.task_hash,
    )


# -- one question at a time (the TUI's live view) ----------------------------------------------


@dataclass(frozen=True)
class PreparedPrompt:
    """A question's input for one configuration, with the items that went in and its cache key
    (for a what-if: the edit, and a cache key of its own)."""

    spec: RunSpec
    input: MethodInput
    items: tuple[ProfileItem, ...]
    cache_key: str
    edit: WhatIf | None = None
    question: Question | None = None  # the question as prepared (edited, for a what-if)

    @property
    def prompt(self) -> Prompt:
        return self.input.prompt

    @property
    def is_whatif(self) -> bool:
        return self.edit is not None and not self.edit.is_empty


def prepare_question(
    spec: RunSpec,
    question: Question,
    store: Store,
    generators: GeneratorPool,
    edit: WhatIf | None = None,
) -> PreparedPrompt:
    """Rank (stored rankings reused), select top-k and build the input, as a run would.

    With a what-if `edit`: the edited question (its input replaced) is ranked without the
    stored rankings (its query is not the stored question's), the items are the edit's
    selection (pinned first, excluded skipped, within the same k and token budget) and the
    cache key is the edit's own, so it never reads or writes the unedited question's entry."""
    from lampbox.engine.generation.cached import generation_cache_key

    if edit is not None and edit.is_empty:
        edit = None
    task = store.task(spec.task)
    asked = question if edit is None else edit.question(question)
    keep = edit is None or not edit.changes_input
    rankings = rank(spec, task, [asked], store, keep_rankings=keep)
    ranking = rankings.get(asked.id)
    if edit is None:
        items = selected_items(asked, ranking, spec.k)
    else:
        items = edit.select(asked, ranking, spec.k)
    generator = generators.get(spec.backend, spec.model, spec.model_options)
    prepare = spec.method_impl.preparer(task, generator, spec.params, spec.max_length)
    entry = prepare(asked, items)
    key = generation_cache_key(generator.identity(), spec.params, entry.request)
    if edit is not None:
        key = edit.cache_key(key, question.id)
    return PreparedPrompt(spec, entry, tuple(items), key, edit, asked)


def cached_output(store: Store, prepared: PreparedPrompt) -> str | None:
    """The cached generation for a prepared prompt, if any run made it before."""
    return StoreGenerationCache(store).load([prepared.cache_key]).get(prepared.cache_key)


def remember_output(store: Store, prepared: PreparedPrompt, generator: Generator, output: str) -> None:
    """Cache a generation made outside a run (e.g. streamed in the TUI) for later runs."""
    StoreGenerationCache(store).save(generator.name, prepared.spec.backend, {prepared.cache_key: output})
