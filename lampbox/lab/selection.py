"""RSPG as a run: the `rspg-pre:NAME` and `rspg-post:NAME` configurations of a bench.

A selection's RunSpec names its method (rspg-pre or rspg-post) and its trained selector; its
pool is the selector's (the configurations of the bench it was trained on, saved in its
selector.json), on the selection's own questions (task, split, limit, users, min_profile, skip). Post runs every
pool configuration through the run pipeline (finished ones come from the store, generations
from the cache) and keeps the answer the selector scores highest. Pre builds every
configuration's prompt (rankings are stored, nothing is generated), lets the selector choose
from the prompts, and generates only the chosen configuration's answer for each question. The
result is a stored run of kind "rspg" whose predictions carry the selector's probabilities
(`kept["rspg"]`), so a selection served from the store is compared again without scoring.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

from lampbox.engine import scoring
from lampbox.engine.fingerprint import folder_sha256, task_fingerprint
from lampbox.engine.generation.common import GenerationCancelled
from lampbox.engine.generation.pool import GeneratorPool
from lampbox.engine.methods import MethodInput, MethodJob, selected_items
from lampbox.engine.rspg.pool import CandidateAnswer, QuestionCandidates
from lampbox.engine.rspg.selector import (
    SELECTOR_FILE,
    PadCandidates,
    encode_questions,
    load_selector,
    probabilities,
)
from lampbox.engine.tasks import TaskSpec
from lampbox.engine.types import (
    Candidate,
    CandidateProbability,
    Prediction,
    Question,
    SelectorProbabilities,
)
from lampbox.errors import LampboxError
from lampbox.lab.pipeline import (
    CancelCheck,
    RunCancelled,
    load_run,
    rank,
    run,
    select_questions,
    write_predictions_file,
)
from lampbox.lab.rspg import (
    RSPG_RUN_KIND,
    SELECTOR_KIND,
    BenchPool,
    PoolRun,
    SelectionResult,
    compare_selection,
    pool_of,
)
from lampbox.lab.specs import (
    ProgressCallback,
    RunProgress,
    RunRecord,
    RunSpec,
    run_key,
    spec_from_json,
)
from lampbox.store import runs as run_store
from lampbox.store.caches import StoreGenerationCache
from lampbox.store.core import Store
from lampbox.store.selection import save_selector_probabilities

KEPT = "rspg"  # the key of a selection's record in each of its predictions' `kept`


def selector_settings(spec: RunSpec) -> tuple[Path, dict[str, Any]]:
    """The selector folder of an rspg spec and its selector.json; one clear line when NAME is
    not a trained selector, was trained for the other mode or another task, or has no pool."""
    from lampbox.model_folders import read_info
    from lampbox.models import trained_model_folder

    name = spec.selector
    folder = trained_model_folder(name)
    if folder is None:
        raise LampboxError(f"{spec.label}: no trained selector named {name!r} (see `lampbox models list`; `lampbox train rspg ... --name {name}`)")
    kind = read_info(folder).get("kind")
    if kind != SELECTOR_KIND:
        raise LampboxError(f"{spec.label}: {name!r} is a {kind} model, not an RSPG selector")
    try:
        settings = json.loads((folder / SELECTOR_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise LampboxError(f"{spec.label}: {folder} is not a saved RSPG selector ({error})") from None
    mode = spec.method_impl.mode  # type: ignore[attr-defined]
    if settings.get("mode") != mode:
        raise LampboxError(f"{spec.label}: {name!r} is an RSPG-{str(settings.get('mode')).capitalize()} selector: use rspg-{settings.get('mode')}:{name}")
    if settings.get("task", spec.task) != spec.task:
        raise LampboxError(f"{spec.label}: selector {name!r} was trained on {settings['task']}, not {spec.task}")
    if not settings.get("pool"):
        raise LampboxError(f"{spec.label}: selector {name!r} does not record its pool's configurations (trained by an older lampbox): train it again")
    return folder, settings


def selection_pool(spec: RunSpec) -> list[tuple[str, RunSpec]]:
    """The selector's pool as (label, RunSpec) on the selection's questions."""
    _, settings = selector_settings(spec)
    here = {"task": spec.task, "scheme": spec.scheme, "split": spec.split, "limit": spec.limit, "users": spec.users,
            "min_profile": spec.min_profile, "skip": spec.skip}  # fmt: skip
    return [
        (str(label), spec_from_json({**data, **here}))
        for label, data in zip(settings["configurations"], settings["pool"], strict=True)
    ]


def selection_key_data(spec: RunSpec, task: TaskSpec) -> dict[str, Any]:
    """What a selection's run key adds to its spec: the selector's content and its pool's run
    keys (a retrained selector or a changed pool model makes another run)."""
    folder, _ = selector_settings(spec)
    return {"selector": folder_sha256(folder), "pool": [run_key(pool_spec, task) for _, pool_spec in selection_pool(spec)]}


def run_selection(
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
    """An rspg-pre or rspg-post configuration as a stored run (served from the store when it
    is finished); `record.selection` holds its comparison (SelectionResult) when the pool's
    runs are in the store."""
    started = time.perf_counter()
    task = store.task(spec.task)
    key = run_key(spec, task)
    pool_specs = selection_pool(spec)
    if not recompute and run_store.run_status(store, key) == "finished":
        record = load_run(store, key, spec)
        record.seconds = time.perf_counter() - started
        record.selection = stored_selection(store, record, pool_specs)
        return record
    folder, _ = selector_settings(spec)
    questions = select_questions(store, spec)
    task_hash = task_fingerprint(task)
    pool_keys = [run_key(pool_spec, task) for _, pool_spec in pool_specs]
    stored_spec = {
        **spec.to_json(), "pool": pool_keys, "configurations": [label for label, _ in pool_specs],
        "pool_specs": [pool_spec.to_json() for _, pool_spec in pool_specs],
    }  # fmt: skip
    run_store.start_run(store, key, spec.label, stored_spec, len(questions), task_hash, kind=RSPG_RUN_KIND)
    store.idle()
    pool = generators or GeneratorPool()

    def report(phase: str, done: int, total: int) -> None:
        if on_progress:
            on_progress(RunProgress(spec, phase, done, total))

    try:
        selector = load_selector(folder)
        live = _post if spec.method == "rspg-post" else _pre
        picked, chosen, probs, generated, cached, seconds, records = live(
            spec, store, task, questions, pool_specs, selector, pool, predictions_dir, report, on_progress, should_cancel, batch_size
        )  # fmt: skip
        picked = [
            replace(p, kept={**p.kept, KEPT: {"chosen": pool_specs[i][0], "probabilities": row}})
            for p, i, row in zip(picked, chosen, probs, strict=True)
        ]
        metrics = scoring.run_metrics(task, picked)
        users = scoring.user_scores(task, questions, picked)
        path = write_predictions_file(spec, key, task, picked, predictions_dir)
        run_store.finish_run(store, key, metrics, picked, users, path)
        save_selector_probabilities(store, task.name, spec.scheme, [
            SelectorProbabilities(p.question_id, key, spec.label, tuple(
                CandidateProbability(_candidate(pool_spec), probability) for (_, pool_spec), probability in zip(pool_specs, row, strict=True)
            ))
            for p, row in zip(picked, probs, strict=True)
        ])  # fmt: skip
        store.idle()
    except (RunCancelled, GenerationCancelled, KeyboardInterrupt) as error:
        run_store.fail_run(store, key, "cancelled", str(error) or "interrupted")
        raise
    except Exception as error:
        run_store.fail_run(store, key, "failed", str(error))
        raise
    record = RunRecord(
        key, spec, metrics, picked, {score.user_id: score for score in users}, path, task_hash=task_hash,
        generated=generated, cached=cached, seconds=time.perf_counter() - started,
    )  # fmt: skip
    pool_runs = records if records is not None else _stored_pool(store, pool_specs, pool_keys)
    record.selection = _summary(task, record, pool_specs, pool_runs, chosen, probs, seconds)
    return record


Live = tuple[list[Prediction], list[int], list[list[float]], int, int, float, "list[RunRecord] | None"]


def _post(
    spec: RunSpec, store: Store, task: TaskSpec, questions: Sequence[Question], pool_specs: Sequence[tuple[str, RunSpec]],
    selector: Any, generators: GeneratorPool, predictions_dir: Path | None, report: Callable[[str, int, int], None],
    on_progress: ProgressCallback | None, should_cancel: CancelCheck | None, batch_size: int,
) -> Live:  # fmt: skip
    """Every pool configuration answers (a run each, resumable), then the selector keeps one."""
    records = []
    for label, pool_spec in pool_specs:
        record = run(
            pool_spec, store, generators=generators, predictions_dir=predictions_dir, on_progress=on_progress,
            should_cancel=should_cancel, batch_size=batch_size,
        )  # fmt: skip
        record.name = label
        records.append(record)
    pool = _pool_from_records(spec, task, pool_specs, records)
    report("select", 0, len(questions))
    probs, seconds = _score(selector, pool.questions, task)
    chosen = [_argmax(row) for row in probs]
    report("select", len(questions), len(questions))
    picked = [records[index].predictions[q] for q, index in enumerate(chosen)]
    return picked, chosen, probs, sum(r.generated for r in records), sum(r.cached for r in records), seconds, records


def _pre(
    spec: RunSpec, store: Store, task: TaskSpec, questions: Sequence[Question], pool_specs: Sequence[tuple[str, RunSpec]],
    selector: Any, generators: GeneratorPool, predictions_dir: Path | None, report: Callable[[str, int, int], None],
    on_progress: ProgressCallback | None, should_cancel: CancelCheck | None, batch_size: int,
) -> Live:  # fmt: skip
    """Every pool configuration's prompt (no generation), the selector's choice from the
    prompts, then one generation per question: the chosen configuration's."""
    selected: list[list[list[Any]]] = []  # per configuration, per question: its items
    prompts: list[list[str | None]] = []  # per configuration, per question (None: model-free)
    for index, (_, pool_spec) in enumerate(pool_specs):
        rankings = rank(pool_spec, task, questions, store, report, should_cancel)
        items = [selected_items(q, rankings.get(q.id), pool_spec.k) for q in questions]
        selected.append(items)
        if not pool_spec.uses_model:
            prompts.append([None] * len(questions))
            continue
        generator = generators.get(pool_spec.backend, pool_spec.model, pool_spec.model_options)
        prepare = pool_spec.method_impl.preparer(task, generator, pool_spec.params, pool_spec.max_length)
        built: list[MethodInput] = []
        for number, (question, question_items) in enumerate(zip(questions, items, strict=True)):
            if should_cancel and number % 64 == 0 and should_cancel():
                raise RunCancelled("cancelled while building the pool's prompts")
            built.append(prepare(question, question_items))
        prompts.append([entry.prompt.text for entry in built])
        report("prompt", index + 1, len(pool_specs))
    # a model-free candidate has no prompt of its own: the unpersonalized one stands in (as in training)
    baseline = next((i for i, (_, s) in enumerate(pool_specs) if s.uses_model and not s.personalized), None)
    unpersonalized = prompts[baseline] if baseline is not None else [""] * len(questions)

    def prompt(c: int, q: int) -> str:
        return prompts[c][q] if prompts[c][q] is not None else unpersonalized[q] or ""  # type: ignore[return-value]

    candidates = [
        QuestionCandidates(question.id, question.user_id, tuple(
            CandidateAnswer(label, prompt(c, q), "", 0.0) for c, (label, _) in enumerate(pool_specs)
        ))
        for q, question in enumerate(questions)
    ]  # fmt: skip
    report("select", 0, len(questions))
    probs, seconds = _score(selector, candidates, task)
    chosen = [_argmax(row) for row in probs]
    report("select", len(questions), len(questions))
    picked: list[Prediction | None] = [None] * len(questions)
    generated = cached = 0
    for index, (_, pool_spec) in enumerate(pool_specs):
        mine = [q for q, c in enumerate(chosen) if c == index]
        if not mine:
            continue
        group = [questions[q] for q in mine]
        group_items = [selected[index][q] for q in mine]
        job = MethodJob(
            task=task, questions=group, selected=group_items, params=pool_spec.params, max_length=pool_spec.max_length,
            generator=partial(generators.get, pool_spec.backend, pool_spec.model, pool_spec.model_options),
            cache=StoreGenerationCache(store), batch_size=batch_size, report=report, should_cancel=should_cancel,
            decode=pool_spec.decode,
        )  # fmt: skip
        result = pool_spec.method_impl.produce(job)
        generated, cached = generated + result.generated, cached + result.cached
        answers = scoring.predictions(task, group, result.inputs, group_items, result.raw_outputs, pool_spec.postprocess, result.records)
        for q, prediction in zip(mine, answers, strict=True):
            picked[q] = prediction
    report("score", len(questions), len(questions))
    return [p for p in picked if p is not None], chosen, probs, generated, cached, seconds, None


def _score(selector: Any, questions: Sequence[QuestionCandidates], task: TaskSpec) -> tuple[list[list[float]], float]:
    """The selector's probabilities per question, and the seconds its inference took."""
    started = time.perf_counter()
    rows = encode_questions(selector.tokenizer, questions, selector.mode, int(selector.settings["max_length"]), task.higher_is_better())
    collate = PadCandidates(int(selector.tokenizer.pad_token_id or 0))
    probs = probabilities(selector.model, rows, collate, float(selector.settings.get("temperature", 1.0)))
    return probs, time.perf_counter() - started


def _argmax(row: Sequence[float]) -> int:
    """The most probable candidate (the first on a tie)."""
    return max(range(len(row)), key=lambda index: (row[index], -index))


def _candidate(spec: RunSpec) -> Candidate:
    return Candidate.from_spec(spec.to_json())


def _pool_run(label: str, spec: RunSpec, record: RunRecord) -> PoolRun:
    role = "retrieval-only" if not spec.uses_model else ("retrieval" if spec.personalized else "baseline")
    return PoolRun(
        record.run_key, label, role, _candidate(spec), spec.uses_model, tuple(record.predictions), record.user_scores, spec.to_json()
    )  # fmt: skip


def _pool_from_records(spec: RunSpec, task: TaskSpec, pool_specs: Sequence[tuple[str, RunSpec]], records: Sequence[RunRecord]) -> BenchPool:
    runs = [_pool_run(label, pool_spec, record) for (label, pool_spec), record in zip(pool_specs, records, strict=True)]
    return pool_of(f"{spec.label}'s pool", "", task, spec.scheme, spec.split, runs)


def _stored_pool(store: Store, pool_specs: Sequence[tuple[str, RunSpec]], keys: Sequence[str]) -> list[RunRecord] | None:
    """The pool's runs when every one is finished in the store (None otherwise: Pre did not
    need them)."""
    if any(run_store.run_status(store, key) != "finished" for key in keys):
        return None
    return [load_run(store, key, pool_spec) for key, (_, pool_spec) in zip(keys, pool_specs, strict=True)]


def _summary(
    task: TaskSpec, record: RunRecord, pool_specs: Sequence[tuple[str, RunSpec]], pool_runs: Sequence[RunRecord] | None,
    chosen: list[int], probs: list[list[float]], seconds: float,
) -> SelectionResult | None:  # fmt: skip
    """The selection's comparison with its pool (None when the pool's runs are not stored)."""
    if pool_runs is None:
        return None
    spec = record.spec
    pool = _pool_from_records(spec, task, pool_specs, pool_runs)
    return compare_selection(
        record.run_key, spec.label, spec.selector, spec.method_impl.mode, pool, record.metrics,  # type: ignore[attr-defined]
        record.predictions, chosen, probs, new=record.generated, selector_seconds=seconds,
    )  # fmt: skip


def stored_selection(store: Store, record: RunRecord, pool_specs: Sequence[tuple[str, RunSpec]] | None = None) -> SelectionResult | None:
    """The comparison of a stored selection, from the choices its predictions keep."""
    pool_specs = pool_specs if pool_specs is not None else selection_pool(record.spec)
    task = store.task(record.spec.task)
    keys = [run_key(pool_spec, task) for _, pool_spec in pool_specs]
    labels = [label for label, _ in pool_specs]
    kept = [p.kept.get(KEPT) or {} for p in record.predictions]
    if any(entry.get("chosen") not in labels for entry in kept):
        return None
    chosen = [labels.index(entry["chosen"]) for entry in kept]
    probs = [list(entry.get("probabilities", [])) for entry in kept]
    return _summary(task, record, pool_specs, _stored_pool(store, pool_specs, keys), chosen, probs, 0.0)
