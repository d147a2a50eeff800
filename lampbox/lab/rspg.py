"""RSPG on the lab floor: a stored bench as the selector's pool, and selection as a run
composed of stored runs.

`bench_pool` reads every configuration of a finished bench (model runs and the model-free
retrieval-only rows alike) into candidates per question; `train_selector` trains the engine's
SelectorObjective on a train-split bench (dev: a dev-split bench over the same pool) and saves
it as a model folder of kind "selector"; `apply_selector` scores a bench's candidates, keeps
each question's chosen answer and stores the result as a run of kind "rspg".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lampbox.engine.rspg.pool import CandidateAnswer, QuestionCandidates, check_pool
from lampbox.engine.tasks import TaskSpec
from lampbox.engine.types import Candidate, Prediction, UserScore
from lampbox.errors import LampboxError
from lampbox.store import runs as run_store
from lampbox.store.core import Store


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
    return Candidate.of(
        str(spec.get("retriever", "none")), int(spec.get("k", 0)), str(spec.get("method", "ipa")),
        str(spec.get("backend", "")), str(spec.get("model", "")),
    )  # fmt: skip


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
        uses_model = "model" in stored.spec
        runs.append(PoolRun(
            stored.run_key, stored.label, role, _candidate(dict(stored.spec)), uses_model, predictions,
            run_store.user_scores(store, stored.run_key),
        ))  # fmt: skip
    reference = [p.question_id for p in runs[0].predictions] if runs else []
    for run in runs[1:]:
        if [p.question_id for p in run.predictions] != reference:
            raise LampboxError(
                f"bench {key[:12]}: {run.label} does not answer the same questions as {runs[0].label}; "
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
                raise LampboxError(f"bench {key[:12]}: question {question_id} has no gold to score the pool against")
            prompt = prediction.prompt if prediction.prompt is not None else unpersonalized.get(question_id, "")
            answers.append(CandidateAnswer(run.label, prompt, prediction.output, float(prediction.main_score)))
        questions.append(QuestionCandidates(question_id, runs[0].predictions[index].user_id, tuple(answers)))
    check_pool(questions)
    return BenchPool(key, task, str(spec["scheme"]), str(spec["split"]), tuple(runs), tuple(questions))
