"""Percentile bootstrap confidence intervals of a task's metrics, resampling questions.

Every resample draws n questions with replacement from the n scored ones and recomputes the
task's official metrics from their per-question scores (the same definitions as
`metrics.aggregate`: means, RMSE as the root of the mean squared error, macro F1 from the
label indices). The interval is the (alpha/2, 1 - alpha/2) percentile of the resampled
values. The generator is seeded, so a report is reproducible, and configurations with the
same number of questions are resampled with the same draws.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from lampbox.engine.metrics import QUESTION_KEYS, macro_f1_rows
from lampbox.engine.tasks import TaskSpec

BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 0
CONFIDENCE = 0.95


@dataclass(frozen=True)
class Interval:
    """A metric's value on all questions and its bootstrap confidence interval."""

    value: float
    low: float
    high: float


def resample_indices(n: int, resamples: int, seed: int) -> Iterator[np.ndarray]:
    """Question indices of each resample, in chunks of rows (at most ~2M indices at a time)."""
    rng = np.random.default_rng(seed)
    chunk = max(1, min(resamples, 2_000_000 // max(1, n)))
    done = 0
    while done < resamples:
        size = min(chunk, resamples - done)
        yield rng.integers(0, n, size=(size, n))
        done += size


def score_columns(spec: TaskSpec, per_question: Sequence[Mapping[str, float]]) -> dict[str, np.ndarray]:
    """The per-question scores the task's metrics need, one array per score key."""
    return {
        key: np.asarray([scores[key] for scores in per_question], dtype=np.float64)
        for key in QUESTION_KEYS[spec.kind]
    }


def resampled_metrics(spec: TaskSpec, columns: Mapping[str, np.ndarray], indices: np.ndarray) -> dict[str, np.ndarray]:
    """The task's metrics on each row of `indices` (rows of question positions), as
    `metrics.aggregate` computes them on one set of questions."""
    if spec.kind == "classification":
        values = {
            "accuracy": columns["accuracy"][indices].mean(axis=1),
            "f1": macro_f1_rows(
                columns["predicted_label"].astype(np.int64)[indices],
                columns["gold_label"].astype(np.int64)[indices],
                len(spec.labels),
            ),
        }
    elif spec.kind == "rating":
        values = {
            "mae": columns["abs_error"][indices].mean(axis=1),
            "rmse": np.sqrt(columns["squared_error"][indices].mean(axis=1)),
        }
    else:
        values = {metric: columns[metric][indices].mean(axis=1) for metric in ("rouge-1", "rouge-L")}
    return {metric: values[metric] for metric in spec.metrics}


def metric_intervals(
    spec: TaskSpec,
    per_question: Sequence[Mapping[str, float]],
    values: Mapping[str, float],
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
    confidence: float = CONFIDENCE,
) -> dict[str, Interval]:
    """Each metric's value (as given: the run's official metrics) with its percentile interval."""
    if not per_question:
        return {}
    columns = score_columns(spec, per_question)
    samples: dict[str, list[np.ndarray]] = {metric: [] for metric in spec.metrics}
    for indices in resample_indices(len(per_question), resamples, seed):
        for metric, resampled in resampled_metrics(spec, columns, indices).items():
            samples[metric].append(resampled)
    tail = (1.0 - confidence) / 2 * 100
    intervals = {}
    for metric, parts in samples.items():
        if metric not in values:
            continue
        low, high = np.percentile(np.concatenate(parts), [tail, 100 - tail])
        intervals[metric] = Interval(float(values[metric]), float(low), float(high))
    return intervals
