"""RSPG on the lab floor: a stored bench as the selector's pool, and selection as a run
composed of stored runs.

`bench_pool` reads every configuration of a finished bench (model runs and the model-free
retrieval-only rows alike) into candidates per question; `train_selector` trains the engine's
SelectorObjective on a train-split bench (dev: a dev-split bench over the same pool) and saves
it as a model folder of kind "selector"; `apply_selector` scores a bench's candidates, keeps
each question's chosen answer and stores the result as a run of kind "rspg".
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from lampbox.engine import scoring
from lampbox.engine.fingerprint import task_fingerprint
from lampbox.engine.rspg.pool import (
    MODES,
    CandidateAnswer,
    QuestionCandidates,
    check_pool,
    success_rate,
)
from lampbox.engine.rspg.selector import (
    LoadedSelector,
    PadCandidates,
    SelectorObjective,
    encode_questions,
    encoder_source,
    load_selector,
    probabilities,
)
from lampbox.engine.stats import paired_randomization_test
from lampbox.engine.tasks import TaskSpec
from lampbox.engine.training.trainer import TrainConfig, TrainProgress, TrainResult
from lampbox.engine.types import (
    Candidate,
    CandidateProbability,
    Prediction,
    SelectorProbabilities,
    UserScore,
)
from lampbox.errors import LampboxError
from lampbox.lab import ranks
from lampbox.lab.registry import install_folder
from lampbox.lab.training import check_name, check_unfinished, start_work
from lampbox.model_folders import check_model_name, hold_name, work_path
from lampbox.store import runs as run_store
from lampbox.store.artifacts import Artifact, get_artifact, save_artifact
from lampbox.store.core import Store
from lampbox.store.selection import save_selector_probabilities

SELECTOR_KIND = "selector"  # the artifacts' kind of a trained selector
RSPG_RUN_KIND = "rspg"  # the runs' kind of a selection (a composition of a bench's runs)


@dataclass(frozen=True)
class PoolRun:
    """One configuration of the pool: its stored run and what it is."""

    run_key: str
    label: str
    role: str  # baseline | retrieval | retrieval-only
    candidate: Candidate
    uses_model: bool
    predictions: tuple[Prediction, ...]
    user_scores: dict[str, UserScore]
    spec: dict[str, Any] = field(default_factory=dict)  # the run's spec as stored


@dataclass(frozen=True)
class BenchPool:
    """A stored bench as a pool: its configurations and the candidates per question."""

    bench_key: str
    task: TaskSpec
    scheme: str
    split: str
    runs: tuple[PoolRun, ...]
    questions: tuple[QuestionCandidates, ...]

    @property
    def configurations(self) -> list[str]:
        return [run.label for run in self.runs]


def find_bench(store: Store, bench: str) -> str:
    """The full key of a stored bench from its key or a unique prefix of it."""
    keys = [key for key, _, _ in run_store.list_benches(store) if key.startswith(bench)]
    if not keys:
        raise LampboxError(f"no stored bench {bench!r} (`lampbox bench` prints the keys)")
    if len(keys) > 1:
        raise LampboxError(f"bench {bench!r} is ambiguous: {', '.join(k[:12] for k in keys)}")
    return keys[0]


def _candidate(spec: dict[str, Any]) -> Candidate:
    return Candidate.from_spec(spec)


def bench_pool(store: Store, bench: str) -> BenchPool:
    """Every configuration of a finished bench with its per-question prompt, output and main
    metric; one clear error when a run is unfinished or the runs do not cover the same questions."""
    key = find_bench(store, bench)
    spec = next(s for k, s, _ in run_store.list_benches(store) if k == key)
    task = store.task(str(spec["task"]))
    listed = run_store.bench_runs(store, key)
    if len(listed) < run_store.bench_size(store, key) or any(run.status != "finished" for run, _ in listed):
        raise LampboxError(f"bench {key[:12]} is not finished: run the same `lampbox bench` command to complete it")
    runs = []
    for stored, role in listed:
        predictions = tuple(run_store.run_predictions(store, stored.run_key))
        runs.append(PoolRun(
            stored.run_key, stored.label, role, _candidate(dict(stored.spec)), "model" in stored.spec, predictions,
            run_store.user_scores(store, stored.run_key), dict(stored.spec),
        ))  # fmt: skip
    return pool_of(f"bench {key[:12]}", key, task, str(spec["scheme"]), str(spec["split"]), runs)


def pool_of(where: str, key: str, task: TaskSpec, scheme: str, split: str, runs: Sequence[PoolRun]) -> BenchPool:
    """The pool of these runs (`where` names them in errors): candidates per question, one clear
    error when the runs do not answer the same questions or a question has no gold."""
    reference = [p.question_id for p in runs[0].predictions] if runs else []
    for run in runs[1:]:
        if [p.question_id for p in run.predictions] != reference:
            raise LampboxError(
                f"{where}: {run.label} does not answer the same questions as {runs[0].label}; "
                "a pool needs every configuration on the same questions"
            )
    baseline = next((run for run in runs if run.role == "baseline"), None)
    unpersonalized = {p.question_id: p.prompt or "" for p in baseline.predictions} if baseline else {}
    questions = []
    for index, question_id in enumerate(reference):
        answers = []
        for run in runs:
            prediction = run.predictions[index]
            if prediction.main_score is None:
                raise LampboxError(f"{where}: question {question_id} has no gold to score the pool against")
            prompt = prediction.prompt if prediction.prompt is not None else unpersonalized.get(question_id, "")
            answers.append(CandidateAnswer(run.label, prompt, prediction.output, float(prediction.main_score)))
        questions.append(QuestionCandidates(question_id, runs[0].predictions[index].user_id, tuple(answers)))
    check_pool(questions)
    return BenchPool(key, task, scheme, split, tuple(runs), tuple(questions))


# -- training ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class RSPGSpec:
    """A selector's training job (its JSON is stored with the selector)."""

    task: str
    train_bench: str  # full bench keys once resolved (resolve_benches)
    dev_bench: str | None = None
    mode: str = "post"
    encoder: str = "all-MiniLM-L6-v2"
    temperature: float = 1.0
    max_length: int = 256
    config: TrainConfig = field(default_factory=lambda: TrainConfig(
        epochs=20, lr=1e-5, batch_size=8, lora=None, group_by_length=False, warmup_ratio=0.05,
    ))  # fmt: skip

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise LampboxError(f"--mode must be pre or post, not {self.mode!r}")
        if not self.temperature > 0:
            raise LampboxError(f"--temperature must be greater than 0 (got {self.temperature})")
        if self.max_length < 8:
            raise LampboxError(f"--max-length must be at least 8 tokens (got {self.max_length})")
        config = self.config
        if config.batch_size < 1 or config.grad_accum < 1 or not config.lr > 0 or not config.epochs > 0:
            raise LampboxError("batch size and gradient accumulation at least 1; lr and epochs greater than 0")
        if config.max_steps is not None and config.max_steps < 1:
            raise LampboxError("--max-steps must be at least 1")

    @property
    def label(self) -> str:
        return f"RSPG-{self.mode.capitalize()}"

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["config"] = self.config.to_json()
        return data


def resolve_benches(spec: RSPGSpec, store: Store) -> RSPGSpec:
    """The spec with its benches' full keys (prefixes accepted on the command line)."""
    dev = find_bench(store, spec.dev_bench) if spec.dev_bench else None
    return replace(spec, train_bench=find_bench(store, spec.train_bench), dev_bench=dev)


def training_pools(spec: RSPGSpec, store: Store) -> tuple[BenchPool, BenchPool | None]:
    """The train and dev pools, with one clear error for each bad pairing."""
    train_pool = bench_pool(store, spec.train_bench)
    if train_pool.task.name != spec.task:
        raise LampboxError(f"bench {train_pool.bench_key[:12]} is a {train_pool.task.name} bench, not {spec.task}")
    if train_pool.split in ("dev", "test"):
        raise LampboxError(
            f"the train bench {train_pool.bench_key[:12]} is on the {train_pool.split} split; "
            "train the selector on a train-split bench (the dev bench evaluates it)"
        )
    dev_pool = None
    if spec.dev_bench:
        dev_pool = bench_pool(store, spec.dev_bench)
        if dev_pool.task.name != spec.task:
            raise LampboxError(f"the dev bench {dev_pool.bench_key[:12]} is a {dev_pool.task.name} bench, not {spec.task}")
        if dev_pool.configurations != train_pool.configurations:
            raise LampboxError(
                f"the dev bench {dev_pool.bench_key[:12]} has another pool than the train bench: "
                f"{_pool_difference(train_pool.configurations, dev_pool.configurations)}"
            )
    return train_pool, dev_pool


def _pool_difference(wanted: list[str], found: list[str]) -> str:
    missing = [label for label in wanted if label not in found]
    extra = [label for label in found if label not in wanted]
    parts = ([f"missing {', '.join(missing)}"] if missing else []) + ([f"extra {', '.join(extra)}"] if extra else [])
    return "; ".join(parts) or "the same configurations in another order"


def train_selector(
    spec: RSPGSpec,
    store: Store | None,
    name: str,
    *,
    overwrite: bool = False,
    on_progress: Callable[[TrainProgress], None] | None = None,
) -> tuple[Artifact | None, TrainResult]:
    """Train a selector on a stored train bench, save it as models/NAME (kind "selector") and
    register it. The same command resumes a killed job from its checkpoints. Under torchrun
    rank 0 (the one given the store) reads the benches and hands every rank the encoded
    questions; all train it together (DDP), rank 0 saves and registers it, the other ranks
    (store None) return None."""
    from transformers import AutoTokenizer

    from lampbox.engine.fingerprint import model_fingerprint
    from lampbox.engine.training.trainer import train

    check_model_name(name)
    ranks.join()
    main = store is not None
    if store is not None:
        spec = resolve_benches(spec, store)
    with hold_name(name, f"train {name}") if main else contextlib.nullcontext():
        source = encoder_source(spec.encoder)
        try:
            tokenizer = AutoTokenizer.from_pretrained(source)
        except (OSError, ValueError) as error:
            raise LampboxError(f"could not load the encoder {spec.encoder!r}: {error}") from None
        work = work_path(name, "training")
        prepared = None
        if store is not None:
            target = check_name(name, overwrite, store)
            prepared = _selector_rows(spec, store, tokenizer)
            check_unfinished(work, spec.to_json(), name, overwrite)
            start_work(work, spec.to_json())
            store.purpose = f"train {name}"
            store.idle()
        spec, train_rows, dev_rows, settings, higher = ranks.share(prepared)
        objective = SelectorObjective(
            source, tokenizer, train_rows, dev_rows, temperature=spec.temperature, higher_is_better=higher, settings=settings
        )  # fmt: skip
        model, result = train(objective, spec.config, work, on_progress=on_progress)
        if store is None:
            return None, result
        is_hub = not Path(source).exists()
        info = {
            "name": name, "kind": SELECTOR_KIND, "method": f"rspg-{spec.mode}", "task": spec.task, "base": spec.encoder,
            "base_fingerprint": model_fingerprint(source, is_hub_id=is_hub), "spec": spec.to_json(),
            "history": result.history, "metrics": result.kept_metrics(),
            "result": {"best_metric": result.best_metric, "best_step": result.best_step, "steps": result.steps},
        }  # fmt: skip
        artifact = _save_folder(name, target, info, lambda folder: objective.save(model, folder))
        save_artifact(store, artifact)
        store.idle()
        shutil.rmtree(work, ignore_errors=True)
        return artifact, result


def _selector_rows(spec: RSPGSpec, store: Store, tokenizer: Any) -> tuple[RSPGSpec, list[Any], list[Any], dict[str, Any], bool]:
    """What every rank trains on: the spec, the encoded train and dev questions, the
    selector's settings and whether the task's metric is better higher."""
    train_pool, dev_pool = training_pools(spec, store)
    higher = train_pool.task.higher_is_better()
    train_rows = encode_questions(tokenizer, train_pool.questions, spec.mode, spec.max_length, higher)
    dev_rows = encode_questions(tokenizer, dev_pool.questions, spec.mode, spec.max_length, higher) if dev_pool else []
    settings = {
        "mode": spec.mode, "label": spec.label, "max_length": spec.max_length, "task": spec.task,
        "configurations": train_pool.configurations, "pool": [run.spec for run in train_pool.runs],
    }  # fmt: skip
    return spec, train_rows, dev_rows, settings, higher


def _save_folder(name: str, target: Path, info: dict[str, Any], write: Callable[[Path], None]) -> Artifact:
    """Write models/NAME atomically (staged, its lampbox-model.json last, then one rename)."""
    return install_folder(name, target, info, write, "the selector")


# -- selection as a composed run ---------------------------------------------------------------


@dataclass(frozen=True)
class Comparison:
    """The selection against one other system on the same questions."""

    label: str
    metric: float | None
    relative_change: float | None  # the selection's main metric vs this one's
    p_value: float | None


@dataclass
class SelectionResult:
    """A selector applied to a bench: the composed run and how it compares."""

    run_key: str
    label: str
    selector: str
    mode: str
    pool: BenchPool
    metrics: dict[str, float]
    chosen: list[int]
    probabilities: list[list[float]]
    success_rate: float
    oracle: dict[str, float]
    baseline: Comparison | None
    best_single: Comparison
    singles: list[tuple[str, dict[str, float]]]
    generations: dict[str, int]
    selector_seconds: float = 0.0  # the selector's inference (encoding and scoring the candidates)

    def to_json(self) -> dict[str, Any]:
        main = self.pool.task.main_metric
        picks = [0] * len(self.pool.runs)
        for index in self.chosen:
            picks[index] += 1
        return {
            "run_key": self.run_key, "label": self.label, "selector": self.selector, "mode": self.mode,
            "bench_key": self.pool.bench_key, "split": self.pool.split, "questions": len(self.chosen),
            "main_metric": main, "metrics": self.metrics, "success_rate": self.success_rate, "oracle": self.oracle,
            "vs_no_personalization": asdict(self.baseline) if self.baseline else None,
            "vs_best_single": asdict(self.best_single),
            "configurations": [
                {"label": label, "metrics": metrics, "picked": picks[i]} for i, (label, metrics) in enumerate(self.singles)
            ],
            "generations": self.generations, "selector_seconds": round(self.selector_seconds, 4),
            "significance_test": "two-sided paired randomization (sign-flip) test on per-question scores, 10,000 resamples, seed 0",
        }  # fmt: skip


def selection_key(content_hash: str, bench_key: str) -> str:
    data = {"kind": RSPG_RUN_KIND, "selector": content_hash, "bench": bench_key}
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:24]


def _load(store: Store, name: str) -> tuple[Artifact, LoadedSelector]:
    artifact = get_artifact(store, name)
    if artifact is None:
        raise LampboxError(f"no trained selector named {name!r} (see `lampbox models list`)")
    if artifact.kind != SELECTOR_KIND:
        raise LampboxError(f"{name!r} is a {artifact.kind} model, not an RSPG selector")
    return artifact, load_selector(Path(artifact.path))


def apply_selector(store: Store, name: str, bench: str) -> SelectionResult:
    """Score every candidate of a stored bench with selector NAME, keep each question's most
    probable one and store the result as a run of kind "rspg" (its predictions are the chosen
    runs' predictions, its per-user scores recomputed from them) with the selector's
    probabilities per question (the TUI shows them beside each configuration's output)."""
    artifact, selector = _load(store, name)
    pool = bench_pool(store, bench)
    task = pool.task
    if task.name != artifact.task:
        raise LampboxError(f"selector {name!r} was trained on {artifact.task}, the bench is {task.name}")
    if pool.configurations != selector.configurations:
        raise LampboxError(
            f"bench {pool.bench_key[:12]} has another pool than selector {name!r} was trained on: "
            f"{_pool_difference(selector.configurations, pool.configurations)}"
        )
    higher = task.higher_is_better()
    started = time.perf_counter()
    rows = encode_questions(selector.tokenizer, pool.questions, selector.mode, int(selector.settings["max_length"]), higher)
    collate = PadCandidates(int(selector.tokenizer.pad_token_id or 0))
    probs = probabilities(selector.model, rows, collate, float(selector.settings.get("temperature", 1.0)))
    seconds = time.perf_counter() - started
    chosen = [max(range(len(p)), key=lambda index, p=p: (p[index], -index)) for p in probs]
    picked = [pool.runs[index].predictions[q] for q, index in enumerate(chosen)]
    metrics = scoring.run_metrics(task, picked)
    key = selection_key(artifact.content_hash, pool.bench_key)
    label = f"{selector.settings.get('label', 'RSPG')} {name}"
    spec = {
        "task": task.name, "scheme": pool.scheme, "split": pool.split, "kind": RSPG_RUN_KIND, "selector": name,
        "method": f"rspg-{selector.mode}",
        "selector_hash": artifact.content_hash, "mode": selector.mode, "bench": pool.bench_key,
        "pool": [run.run_key for run in pool.runs], "configurations": pool.configurations,
    }  # fmt: skip
    run_store.start_run(store, key, label, spec, len(picked), task_fingerprint(task), kind=RSPG_RUN_KIND)
    run_store.finish_run(store, key, metrics, picked, _user_scores(task, pool, picked), None)
    save_selector_probabilities(store, task.name, pool.scheme, [
        SelectorProbabilities(question.question_id, key, label, tuple(
            CandidateProbability(run.candidate, p) for run, p in zip(pool.runs, question_probs, strict=True)
        ))
        for question, question_probs in zip(pool.questions, probs, strict=True)
    ])  # fmt: skip
    store.idle()
    return compare_selection(key, label, name, selector.mode, pool, metrics, picked, chosen, probs, selector_seconds=seconds)


def _user_scores(task: TaskSpec, pool: BenchPool, picked: Sequence[Prediction]) -> list[UserScore]:
    """Each user's metrics over the chosen answers (profile sizes as the pool's runs have them)."""
    by_user: dict[str, list[Prediction]] = {}
    for prediction in picked:
        by_user.setdefault(prediction.user_id, []).append(prediction)
    sizes = pool.runs[0].user_scores
    found = []
    for user, predictions in by_user.items():
        metrics = scoring.run_metrics(task, predictions)
        size = sizes[user].profile_size if user in sizes else 0.0
        found.append(UserScore(user, len(predictions), size, metrics, metrics.get(task.main_metric)))
    return found


def compare_selection(
    key: str, label: str, name: str, mode: str, pool: BenchPool, metrics: dict[str, float],
    picked: Sequence[Prediction], chosen: list[int], probs: list[list[float]], *, new: int = 0,
    selector_seconds: float = 0.0,
) -> SelectionResult:  # fmt: skip
    """The selection against no personalization and the best single configuration of its pool
    (paired tests), beside the oracle, the success rate and the generations it needs."""
    task = pool.task
    main = task.main_metric
    higher = task.higher_is_better()
    selected_scores = [float(p.main_score or 0.0) for p in picked]
    singles = [(run.label, scoring.run_metrics(task, list(run.predictions))) for run in pool.runs]

    def against(index: int) -> Comparison:
        run = pool.runs[index]
        other = [float(p.main_score or 0.0) for p in run.predictions]
        value, base = metrics.get(main), singles[index][1].get(main)
        change = None if value is None or not base else (value - base) / abs(base)
        return Comparison(run.label, base, change, paired_randomization_test(selected_scores, other).p_value)

    baseline = next((i for i, run in enumerate(pool.runs) if run.role == "baseline"), None)
    direction = 1.0 if higher else -1.0
    best = max(range(len(singles)), key=lambda i: (direction * singles[i][1].get(main, float("-inf") * direction), -i))
    oracle_index = [min(q.best(higher)) for q in pool.questions]
    oracle = scoring.run_metrics(task, [pool.runs[i].predictions[q] for q, i in enumerate(oracle_index)])
    model_runs = sum(run.uses_model for run in pool.runs)
    generations = {
        "post": model_runs * len(chosen),  # every model configuration answers every question
        "pre": sum(pool.runs[i].uses_model for i in chosen),  # only the chosen one, when it uses a model
        "new": new,  # generated by this call (apply: none, it composes stored runs)
    }
    return SelectionResult(
        key, label, name, mode, pool, metrics, chosen, probs, success_rate(pool.questions, chosen, higher), oracle,
        against(baseline) if baseline is not None else None, against(best), singles, generations, selector_seconds,
    )  # fmt: skip
