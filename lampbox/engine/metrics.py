"""The official LaMP metrics (eval/evaluation.py of the LaMP repository), as pure functions.

Scoring happens in two steps so that per-question results can be stored and re-aggregated
over any subset (a user, a retriever's picks): `question_scores` / `Scorer.score` give one
question's scores, `aggregate` turns a list of them into the task's official metrics, and
`evaluate` does both for whole golds/predictions mappings. See docs/metrics.md.

Per-question keys, by task kind:
- classification: "accuracy" (0 or 1), "predicted_label" and "gold_label" (label indices,
  -1 for text that is not a label; macro F1 needs them);
- rating: "abs_error" and "squared_error";
- generation: "rouge-1" and "rouge-L" (F-measures).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from lampbox.engine.tasks import TaskSpec
from lampbox.errors import LampboxError

if TYPE_CHECKING:
    import numpy as np

ProgressCallback = Callable[[int, int], None]

# lampbox's metric names -> the keys the official eval_task / eval_all write.
OFFICIAL_NAMES: dict[str, str] = {
    "accuracy": "accuracy",
    "f1": "f1",
    "mae": "MAE",
    "rmse": "RMSE",
    "rouge-1": "rouge-1",
    "rouge-L": "rouge-L",
}
QUESTION_KEYS: dict[str, tuple[str, ...]] = {
    "classification": ("accuracy", "predicted_label", "gold_label"),
    "rating": ("abs_error", "squared_error"),
    "generation": ("rouge-1", "rouge-L"),
}
_LOWER_IS_BETTER = frozenset({"mae", "rmse", "MAE", "RMSE", "abs_error", "squared_error"})
_ROUGE_TYPES = {"rouge-1": "rouge1", "rouge-L": "rougeL"}
_PROGRESS_EVERY = 256


def higher_is_better(metric: str) -> bool:
    """Whether a larger value of this metric (or per-question score) is better."""
    return metric not in _LOWER_IS_BETTER


def official_name(metric: str) -> str:
    """The key the official LaMP scripts use for a lampbox metric name (mae -> MAE)."""
    return OFFICIAL_NAMES.get(metric, metric)


def official_result(metrics: Mapping[str, float]) -> dict[str, float]:
    """Metrics keyed as the official eval_task output file keys them."""
    return {official_name(name): float(value) for name, value in metrics.items()}


def question_key(spec: TaskSpec) -> str:
    """The per-question score that stands for the task's main metric (for tables, sorting)."""
    if spec.kind == "classification":
        return "accuracy"
    if spec.kind == "rating":
        return "abs_error"
    return spec.main_metric


# -- one question -----------------------------------------------------------------------------


def parse_gold_rating(gold: str) -> float:
    """A LaMP_3 gold as a number (the official script crashes on anything else)."""
    try:
        value = float(str(gold).strip())
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise LampboxError(f"gold rating {gold!r} is not a number")
    return value


def parse_rating(prediction: str, gold: float) -> float:
    """float(prediction); if that fails, whichever of 1 and 5 is farther from the gold.

    On a tie (gold 3) the official code picks 5. Non-finite values ('nan', 'inf') count as
    unparsable: the official script would crash on them.
    """
    try:
        value = float(str(prediction).strip())
    except ValueError:
        value = math.nan
    if math.isfinite(value):
        return value
    return 1.0 if abs(1 - gold) > abs(5 - gold) else 5.0


@lru_cache(maxsize=1)
def _rouge_scorer() -> Any:
    """One shared rouge-score scorer: default tokenizer, no stemmer (as the official eval)."""
    from rouge_score import rouge_scorer  # lazy: it pulls in nltk (about a second)

    return rouge_scorer.RougeScorer(["rouge1", "rougeL"], use_stemmer=False)


class Scorer:
    """Scores (prediction, gold) pairs of one task; reuse one for a batch."""

    def __init__(self, spec: TaskSpec) -> None:
        self.spec = spec
        self._label_positions: dict[str, int] = {}
        for position, label in enumerate(spec.labels):
            self._label_positions.setdefault(label, position)
        self._rouge = _rouge_scorer() if spec.kind == "generation" else None

    def label(self, text: str) -> int:
        return self._label_positions.get(str(text).strip(), -1)

    def score(self, prediction: str, gold: str) -> dict[str, float]:
        """One question's scores (keys: QUESTION_KEYS[spec.kind])."""
        kind = self.spec.kind
        if kind == "classification":
            predicted, expected = self.label(prediction), self.label(gold)
            # As the official accuracy_score on label indices: two non-labels count as equal.
            return {
                "accuracy": float(predicted == expected),
                "predicted_label": float(predicted),
                "gold_label": float(expected),
            }
        if kind == "rating":
            gold_value = parse_gold_rating(gold)
            error = abs(parse_rating(prediction, gold_value) - gold_value)
            return {"abs_error": error, "squared_error": error * error}
        scores = self._rouge.score(str(gold).strip(), str(prediction).strip())  # type: ignore[union-attr]
        return {
            name: float(scores[rouge_type].fmeasure) for name, rouge_type in _ROUGE_TYPES.items()
        }

    def score_all(
        self, pairs: Iterable[tuple[str, str]], on_progress: ProgressCallback | None = None
    ) -> list[dict[str, float]]:
        """Scores of many (prediction, gold) pairs, in order; on_progress(done, total)."""
        pairs = list(pairs)
        results: list[dict[str, float]] = []
        for done, (prediction, gold) in enumerate(pairs, start=1):
            results.append(self.score(prediction, gold))
            if on_progress is not None and (done % _PROGRESS_EVERY == 0 or done == len(pairs)):
                on_progress(done, len(pairs))
        return results


def question_scores(spec: TaskSpec, prediction: str, gold: str) -> dict[str, float]:
    """One question's scores; for many questions use a Scorer (or score_questions)."""
    return Scorer(spec).score(prediction, gold)


# -- many questions ---------------------------------------------------------------------------


def macro_f1(predicted: Sequence[int], gold: Sequence[int], n_labels: int) -> float:
    """Macro F1 over labels 0..n_labels-1, as sklearn's f1_score(labels=range(n), average="macro").

    -1 (not a label) is never a class: a -1 prediction is a miss for the gold's label, a -1
    gold a false positive for the predicted label. A label nobody predicted nor needed has
    F1 0 and still counts in the mean (sklearn's zero_division default).
    """
    import numpy as np

    rows = macro_f1_rows(np.asarray([predicted], dtype=np.int64), np.asarray([gold], dtype=np.int64), n_labels)
    return float(rows[0])


def macro_f1_rows(predicted: np.ndarray, gold: np.ndarray, n_labels: int) -> np.ndarray:
    """macro_f1 of each row of two (rows, questions) label-index arrays (bootstrap resamples)."""
    import numpy as np

    rows = predicted.shape[0]
    predicted_counts = _row_label_counts(predicted, n_labels)
    gold_counts = _row_label_counts(gold, n_labels)
    hits = _row_label_counts(np.where(predicted == gold, gold, -1), n_labels)
    denominator = (predicted_counts + gold_counts).astype(np.float64)
    per_label = np.divide(2.0 * hits, denominator, out=np.zeros((rows, n_labels)), where=denominator > 0)
    return per_label.mean(axis=1)


def _row_label_counts(indices: np.ndarray, n_labels: int) -> np.ndarray:
    """How often each real label (0..n_labels-1) occurs in each row."""
    import numpy as np

    rows = indices.shape[0]
    real = (indices >= 0) & (indices < n_labels)
    offsets = (np.arange(rows)[:, None] * n_labels + indices)[real]
    return np.bincount(offsets, minlength=rows * n_labels).reshape(rows, n_labels)


def aggregate(spec: TaskSpec, per_question: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """The task's official metrics (spec.metrics, in order) from per-question scores."""
    if not per_question:
        raise LampboxError(f"{spec.name}: no questions to score")
    needed = QUESTION_KEYS[spec.kind]
    for scores in per_question:
        missing = [key for key in needed if key not in scores]
        if missing:
            raise LampboxError(
                f"{spec.name}: per-question scores lack {', '.join(missing)} "
                f"(were they computed for another task?)"
            )
    count = len(per_question)

    def mean(key: str) -> float:
        return math.fsum(scores[key] for scores in per_question) / count

    if spec.kind == "classification":
        values = {
            "accuracy": mean("accuracy"),
            "f1": macro_f1(
                [int(scores["predicted_label"]) for scores in per_question],
                [int(scores["gold_label"]) for scores in per_question],
                len(spec.labels),
            ),
        }
    elif spec.kind == "rating":
        values = {"mae": mean("abs_error"), "rmse": math.sqrt(mean("squared_error"))}
    else:
        values = {"rouge-1": mean("rouge-1"), "rouge-L": mean("rouge-L")}
    return {metric: values[metric] for metric in spec.metrics}


def id_mismatch(golds: Mapping[str, str], preds: Mapping[str, str]) -> str | None:
    """Why the prediction ids do not match the gold ids (None when they match exactly)."""
    missing = sorted(set(golds) - set(preds))
    extra = sorted(set(preds) - set(golds))
    if not missing and not extra:
        return None
    parts = []
    if missing:
        parts.append(
            f"{_count(len(missing), 'gold id')} without a prediction (e.g. {missing[0]!r})"
        )
    if extra:
        parts.append(f"{_count(len(extra), 'prediction id')} not in the golds (e.g. {extra[0]!r})")
    return f"ids do not match the golds: {'; '.join(parts)}"


def gold_problem(spec: TaskSpec, golds: Mapping[str, str]) -> str | None:
    """Why these golds cannot be golds of this task (None when they can).

    Classification golds must be labels (else the official script silently counts two
    non-labels as a match); rating golds must be numbers (else it crashes).
    """
    if spec.kind == "classification":
        outside = [gold for gold in golds.values() if str(gold).strip() not in spec.labels]
        if outside:
            return (
                f"{len(outside)} of {len(golds)} gold outputs are not {spec.name} labels "
                f"(e.g. {str(outside[0]).strip()!r}){_fitting_tasks_hint(spec, golds)}"
            )
    elif spec.kind == "rating":
        for gold in golds.values():
            try:
                parse_gold_rating(gold)
            except LampboxError as error:
                return str(error)
    return None


def _fitting_tasks_hint(spec: TaskSpec, golds: Mapping[str, str]) -> str:
    from lampbox.engine.tasks import BUILTIN_TASKS

    fitting = [
        other.name
        for other in BUILTIN_TASKS.values()
        if other.name != spec.name
        and other.kind == "classification"
        and all(str(gold).strip() in other.labels for gold in golds.values())
    ]
    return f"; they fit {' or '.join(fitting)}" if fitting else ""


def score_questions(
    spec: TaskSpec,
    golds: Mapping[str, str],
    preds: Mapping[str, str],
    on_progress: ProgressCallback | None = None,
) -> dict[str, dict[str, float]]:
    """Per-question scores by id (in gold order), after checking ids and golds."""
    for problem in (id_mismatch(golds, preds), gold_problem(spec, golds)):
        if problem:
            raise LampboxError(f"{spec.name}: {problem}")
    ids = list(golds)
    scores = Scorer(spec).score_all(((preds[qid], golds[qid]) for qid in ids), on_progress)
    return dict(zip(ids, scores, strict=True))


def evaluate(
    spec: TaskSpec,
    golds: Mapping[str, str],
    preds: Mapping[str, str],
    on_progress: ProgressCallback | None = None,
) -> dict[str, float]:
    """The official metrics of predictions against golds (both keyed by question id)."""
    return aggregate(spec, list(score_questions(spec, golds, preds, on_progress).values()))


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"
