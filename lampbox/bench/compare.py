"""Two stored runs on the same questions, question by question: the paired test, wins, ties and
losses, and the questions where the two disagree (`lampbox compare RUN RUN`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lampbox.engine.metrics import higher_is_better, question_key
from lampbox.engine.stats import paired_randomization_test
from lampbox.engine.tasks import TaskSpec
from lampbox.errors import LampboxError
from lampbox.lab.pipeline import load_run
from lampbox.lab.specs import RunRecord
from lampbox.store import runs as run_store
from lampbox.store.core import Store

_TIE = 1e-12


@dataclass(frozen=True)
class QuestionFlip:
    """A question one run answered better than the other; `difference` is signed so that > 0
    means run A did better (for errors too)."""

    question_id: str
    user_id: str
    score_a: float
    score_b: float
    difference: float
    output_a: str
    output_b: str
    gold: str | None


@dataclass
class RunComparison:
    task: TaskSpec
    a: RunRecord
    b: RunRecord
    score: str  # the per-question score compared (accuracy, abs_error, rouge-1, ...)
    n: int
    mean_difference: float  # of the score, A minus B (raw sign)
    p_value: float
    wins: int  # questions A did better on
    ties: int
    losses: int
    flips: list[QuestionFlip]  # wins and losses, biggest difference first

    def to_json(self) -> dict[str, Any]:
        return {
            "task": self.task.name,
            "a": {"run_key": self.a.run_key, "label": self.a.label, "metrics": self.a.metrics},
            "b": {"run_key": self.b.run_key, "label": self.b.label, "metrics": self.b.metrics},
            "score": self.score,
            "higher_is_better": higher_is_better(self.score),
            "n_questions": self.n,
            "mean_difference": self.mean_difference,
            "p_value": self.p_value,
            "significance_test": "two-sided paired randomization test on per-question scores (10,000 resamples, seed 0)",
            "wins": self.wins,
            "ties": self.ties,
            "losses": self.losses,
            "flips": [flip.__dict__ for flip in self.flips],
        }


def resolve_run(store: Store, key_or_prefix: str) -> str:
    """A finished run's key from the key or a unique prefix of it."""
    runs = run_store.list_runs(store, kind=None)
    matches = [run for run in runs if run.run_key == key_or_prefix] or [
        run for run in runs if key_or_prefix and run.run_key.startswith(key_or_prefix)
    ]
    if not matches:
        raise LampboxError(f"no run {key_or_prefix!r} in {store.path} (`lampbox bench --json` lists run keys)")
    if len(matches) > 1:
        raise LampboxError(f"run {key_or_prefix!r} is ambiguous: {', '.join(run.run_key[:12] for run in matches)}; give more of its key")
    run = matches[0]
    if run.status != "finished":
        raise LampboxError(f"run {run.run_key[:12]} ({run.label}) is not finished: {run.status}")
    return run.run_key


def compare_runs(store: Store, first: str, second: str) -> RunComparison:
    """Load two runs (keys or unique prefixes) and compare them on their common questions,
    which must be all of both runs' questions."""
    a = load_run(store, resolve_run(store, first))
    b = load_run(store, resolve_run(store, second))
    if a.spec.task != b.spec.task:
        raise LampboxError(f"the runs are on different tasks: {a.spec.task} and {b.spec.task}")
    return paired_comparison(store.task(a.spec.task), a, b)


def paired_comparison(task: TaskSpec, a: RunRecord, b: RunRecord) -> RunComparison:
    """The comparison of two loaded runs of `task` (an error when their questions differ)."""
    by_id_a = {p.question_id: p for p in a.predictions}
    by_id_b = {p.question_id: p for p in b.predictions}
    only_a = sorted(set(by_id_a) - set(by_id_b))
    only_b = sorted(set(by_id_b) - set(by_id_a))
    if only_a or only_b:
        examples = "; ".join(
            f"{len(ids)} only in {name} (e.g. {ids[0]})" for name, ids in (("A", only_a), ("B", only_b)) if ids
        )
        raise LampboxError(f"the runs are on different questions: {examples}; compare runs of the same split and limit")
    score = question_key(task)
    sign = 1.0 if higher_is_better(score) else -1.0
    pairs = [
        (prediction, by_id_b[prediction.question_id])
        for prediction in a.predictions
        if prediction.main_score is not None and by_id_b[prediction.question_id].main_score is not None
    ]
    if not pairs:
        raise LampboxError("the runs have no scored question in common (no golds?)")
    test = paired_randomization_test([pa.main_score for pa, _ in pairs], [pb.main_score for _, pb in pairs])  # type: ignore[misc]
    flips = []
    for pa, pb in pairs:
        difference = sign * (float(pa.main_score) - float(pb.main_score))  # type: ignore[arg-type]
        if abs(difference) > _TIE:
            flips.append(
                QuestionFlip(pa.question_id, pa.user_id, float(pa.main_score), float(pb.main_score), difference, pa.output, pb.output, pa.gold)  # type: ignore[arg-type]
            )
    wins = sum(1 for flip in flips if flip.difference > 0)
    flips.sort(key=lambda flip: (-abs(flip.difference), flip.question_id))
    return RunComparison(
        task, a, b, score, len(pairs), test.mean_difference, test.p_value, wins, len(pairs) - len(flips), len(flips) - wins, flips
    )
