"""A stored bench as the paper's table: every configuration's metrics with bootstrap intervals,
the relative change and paired-test p against a reference row, Holm-adjusted across rows.

The comparison is the bench's own (`runner.compare`: the same relative change and paired
randomization test as `lampbox bench` and the TUI print); this module adds the intervals, the
Holm correction, the best value per metric and the per-user gains the figures draw. The
formats (md, LaTeX, csv, json) are in `formats.py`, the figures in `figures.py`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lampbox.bench.plan import stored_plan
from lampbox.bench.runner import compare
from lampbox.engine.bootstrap import (
    BOOTSTRAP_RESAMPLES,
    BOOTSTRAP_SEED,
    CONFIDENCE,
    Interval,
    metric_intervals,
)
from lampbox.engine.stats import holm_adjust
from lampbox.engine.tasks import TaskSpec
from lampbox.errors import LampboxError
from lampbox.lab.pipeline import load_run
from lampbox.lab.specs import RunRecord
from lampbox.store import runs as run_store
from lampbox.store.core import Store

PAIRED_TEST = "two-sided paired randomization test on per-question scores (10,000 resamples, seed 0)"


@dataclass(frozen=True)
class ReportRow:
    """One configuration's line: its metrics with intervals and its comparison."""

    label: str
    role: str
    run_key: str
    n_questions: int  # scored
    metrics: dict[str, Interval]
    best: frozenset[str]  # the metrics on which this row is best (bold)
    reference: str | None  # the label of the row it is compared with (None: not compared)
    relative_change: float | None  # of the main metric
    p_value: float | None
    p_holm: float | None
    is_reference: bool = False  # another row is compared with this one

    def to_json(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "role": self.role,
            "run_key": self.run_key,
            "n_questions": self.n_questions,
            "metrics": {
                name: {"value": value.value, "ci_low": value.low, "ci_high": value.high, "best": name in self.best}
                for name, value in self.metrics.items()
            },
            "reference": self.reference,
            "relative_change": self.relative_change,
            "p_value": self.p_value,
            "p_holm": self.p_holm,
            "is_reference": self.is_reference,
        }


@dataclass(frozen=True)
class UserGain:
    """One user's gain of a configuration over its reference row (> 0: better, for every metric)."""

    user_id: str
    profile_size: float
    gain: float


@dataclass
class BenchReport:
    bench_key: str
    task: TaskSpec
    scheme: str
    split: str
    model: str
    rows: list[ReportRow]
    user_gains: dict[str, list[UserGain]]  # by row label, rows with a reference only
    left_out: list[str] = field(default_factory=list)  # configurations not finished
    plan: str | None = None  # a plan bench's source (its file, or --config)
    resamples: int = BOOTSTRAP_RESAMPLES
    seed: int = BOOTSTRAP_SEED
    confidence: float = CONFIDENCE

    @property
    def references(self) -> list[str]:
        """The reference rows used, in table order."""
        return list(dict.fromkeys(row.reference for row in self.rows if row.reference is not None))

    @property
    def title(self) -> str:
        about = f"model {self.model}" if self.model else f"plan {Path(self.plan).name if self.plan else ''}".strip()
        return f"{self.task.name} {self.scheme}/{self.split} (bench {self.bench_key[:8]}, {about})"

    @property
    def caption(self) -> str:
        main = self.task.main_metric
        direction = "higher" if self.task.higher_is_better() else "lower"
        references = self.references
        if len(references) == 1:
            against = f"the reference row ({references[0]})"
        elif references:
            against = "each row's no-personalization row on the same backend"
        else:
            against = "no reference row (none finished)"
        compared = sum(1 for row in self.rows if row.p_value is not None)
        percent = round(self.confidence * 100)
        text = (
            f"{self.title}. Each metric: value on all questions with a {percent}% percentile bootstrap "
            f"confidence interval ({self.resamples:,} resamples of the questions, seed {self.seed}). "
            f"Change: relative change of {main} ({direction} is better) against {against}; "
            f"p: {PAIRED_TEST}; p (Holm): Holm-adjusted across the {compared} compared rows. "
            "Bold: the best value of each metric."
        )
        if self.left_out:
            text += f" Not finished, left out: {', '.join(self.left_out)}."
        return text

    def to_json(self) -> dict[str, Any]:
        return {
            "bench_key": self.bench_key,
            "task": self.task.name,
            "scheme": self.scheme,
            "split": self.split,
            "model": self.model,
            "main_metric": self.task.main_metric,
            "metrics": list(self.task.metrics),
            "higher_is_better": {metric: self.task.higher_is_better(metric) for metric in self.task.metrics},
            "caption": self.caption,
            "bootstrap": {"method": "percentile, questions resampled", "resamples": self.resamples, "seed": self.seed, "confidence": self.confidence},
            "significance_test": PAIRED_TEST,
            "multiple_comparisons": "Holm",
            "rows": [row.to_json() for row in self.rows],
            "left_out": self.left_out,
        }


def resolve_bench(store: Store, key_or_prefix: str) -> str:
    """A bench key from the key or a unique prefix of it."""
    keys = [key for key, _, _ in run_store.list_benches(store)]
    if key_or_prefix in keys:
        return key_or_prefix
    matches = [key for key in keys if key_or_prefix and key.startswith(key_or_prefix)]
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise LampboxError(f"bench {key_or_prefix!r} is ambiguous: {', '.join(m[:12] for m in matches)}; give more of its key")
    raise LampboxError(
        f"no bench {key_or_prefix!r} in {store.path} ({len(keys)} stored; `lampbox bench` prints the key)"
    )


def load_bench(store: Store, key_or_prefix: str) -> tuple[str, dict[str, Any], list[tuple[RunRecord, str]], list[str]]:
    """A stored bench's key, record, finished runs with their roles (rows named as the plan
    names them) and the configurations left out (not finished); an error when none finished."""
    key = resolve_bench(store, key_or_prefix)
    spec = next(spec for bench, spec, _ in run_store.list_benches(store) if bench == key)
    plan = stored_plan(spec)
    runs = run_store.bench_runs(store, key)
    left_out = [f"{plan.labels.get(run.run_key, run.label)} ({run.status})" for run, _ in runs if run.status != "finished"]
    missing = run_store.bench_size(store, key) - len(runs)
    if missing > 0:
        left_out.append(f"{missing} not started")
    records = []
    for run, role in runs:
        if run.status == "finished":
            record = load_run(store, run.run_key)
            record.name = plan.labels.get(run.run_key)
            records.append((record, role))
    if not records:
        raise LampboxError(f"bench {key[:12]} has no finished configuration yet")
    return key, dict(spec), records, left_out


def build_report(store: Store, key_or_prefix: str, reference: str | None = None) -> BenchReport:
    """The report of a stored bench; `reference`: a row's label (or unique label prefix) that
    every other row is compared with (default: a plan's reference row, else the bench's
    no-personalization rows). A plan's rows keep the plan's labels."""
    key, spec, records, left_out = load_bench(store, key_or_prefix)
    plan = stored_plan(spec)
    task = store.task(spec["task"])
    reference_record: RunRecord | None
    if reference is not None:
        reference_record = find_row(records, reference, key, left_out)
    else:  # the plan's reference row, when it has finished (else no row is compared)
        reference_record = next((r for r, _ in records if r.run_key == plan.reference), None)
    compared = compare(task, records, reference_record, by_role=plan.reference is None)
    tested = [index for index, row in enumerate(compared) if row.p_value is not None]
    holm = dict(zip(tested, holm_adjust([compared[i].p_value for i in tested]), strict=True))  # type: ignore[misc]
    intervals = [_intervals(task, record) for record, _ in records]
    best = best_rows(task, intervals)
    by_label = {record.label: record for record, _ in records}
    reference_labels = {row.baseline_label for row in compared}
    rows = []
    gains: dict[str, list[UserGain]] = {}
    for index, bench_row in enumerate(compared):
        record = bench_row.record
        rows.append(
            ReportRow(
                record.label, bench_row.role, record.run_key, _scored(record), intervals[index],
                frozenset(metric for metric, rows_best in best.items() if index in rows_best),
                bench_row.baseline_label, bench_row.relative_change, bench_row.p_value, holm.get(index),
                record.label in reference_labels,
            )
        )  # fmt: skip
        if bench_row.baseline_label is not None:
            gains[record.label] = user_gains(task, record, by_label[bench_row.baseline_label])
    model = str(spec.get("model", ""))
    return BenchReport(key, task, spec["scheme"], spec["split"], model, rows, gains, left_out, spec.get("plan"))


def find_row(records: Sequence[tuple[RunRecord, str]], label: str, key: str, left_out: list[str], what: str = "reference") -> RunRecord:
    """The finished row called `label` (exactly, else the one whose label starts with it)."""
    labels = [record.label for record, _ in records]
    exact = [record for record, _ in records if record.label == label]
    matches = exact or [record for record, _ in records if record.label.startswith(label)]
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise LampboxError(f"{what} {label!r} matches {len(matches)} rows of bench {key[:12]}: {'; '.join(r.label for r in matches)}")
    unfinished = [text for text in left_out if text.startswith(label)]
    if unfinished:
        raise LampboxError(f"{what} {label!r} is not finished in bench {key[:12]}: {unfinished[0]}")
    raise LampboxError(f"no row {label!r} in bench {key[:12]}; its rows: {'; '.join(labels)}")


def _scored(record: RunRecord) -> int:
    """Questions with a score (a question without a gold has none)."""
    return sum(1 for prediction in record.predictions if prediction.main_score is not None)


def _intervals(task: TaskSpec, record: RunRecord) -> dict[str, Interval]:
    scored = [prediction.scores for prediction in record.predictions if prediction.main_score is not None]
    return metric_intervals(task, scored, record.metrics)


def best_rows(task: TaskSpec, intervals: Sequence[dict[str, Interval]]) -> dict[str, set[int]]:
    """For each metric, the rows holding its best value (ties all count)."""
    best: dict[str, set[int]] = {}
    for metric in task.metrics:
        values = {index: row[metric].value for index, row in enumerate(intervals) if metric in row}
        if not values:
            continue
        top = max(values.values()) if task.higher_is_better(metric) else min(values.values())
        best[metric] = {index for index, value in values.items() if abs(value - top) <= 1e-12}
    return best


def user_gains(task: TaskSpec, record: RunRecord, reference: RunRecord) -> list[UserGain]:
    """Each user's main score in `record` minus theirs in `reference`, signed so that > 0 is
    better (flipped for MAE/RMSE), with the user's mean profile size; users in both only."""
    sign = 1.0 if task.higher_is_better() else -1.0
    gains = []
    for user_id, score in record.user_scores.items():
        base = reference.user_scores.get(user_id)
        if base is None or score.main_score is None or base.main_score is None:
            continue
        gains.append(UserGain(user_id, float(score.profile_size), sign * (score.main_score - base.main_score)))
    return gains


@dataclass(frozen=True)
class HistoryBuckets:
    """Users bucketed by profile size (quantile edges over every compared user): each bucket's
    label and user count, and each compared row's mean per-user gain in it (None: no user)."""

    labels: list[str]
    users: list[int]
    mean_gain: dict[str, list[float | None]]


def gain_by_history(report: BenchReport, buckets: int = 4) -> HistoryBuckets:
    """Per-user gains vs the reference grouped by the users' history (profile) size."""

    sizes = {gain.user_id: gain.profile_size for gains in report.user_gains.values() for gain in gains}
    if not sizes:
        return HistoryBuckets([], [], {})
    labels, bucket_of = history_buckets(sizes, buckets)
    count = len(labels)
    users = [sum(1 for b in bucket_of.values() if b == index) for index in range(count)]
    mean_gain: dict[str, list[float | None]] = {}
    for label, gains in report.user_gains.items():
        sums = [0.0] * count
        counts = [0] * count
        for gain in gains:
            bucket = bucket_of[gain.user_id]
            sums[bucket] += gain.gain
            counts[bucket] += 1
        mean_gain[label] = [sums[i] / counts[i] if counts[i] else None for i in range(count)]
    return HistoryBuckets(labels, users, mean_gain)


def history_buckets(sizes: Mapping[str, float], buckets: int = 4) -> tuple[list[str], dict[str, int]]:
    """Users bucketed by profile size at quantile edges (fewer buckets where edges coincide):
    each bucket's label ('3-12') and each user's bucket index."""
    import numpy as np

    ordered = sorted(sizes.items())
    values = np.asarray([size for _, size in ordered], dtype=float)
    edges = np.unique(np.quantile(values, np.linspace(0, 1, buckets + 1)))
    if edges.size == 1:
        edges = np.asarray([edges[0], edges[0]])
    bucket_of = {user: int(np.clip(np.searchsorted(edges[1:-1], size, side="right"), 0, edges.size - 2)) for user, size in ordered}
    return [f"{edges[i]:.0f}-{edges[i + 1]:.0f}" for i in range(edges.size - 1)], bucket_of
