"""The runs views' reads: benches, a bench's comparison, per-user gains (also by history size)
and failure cases, and the saved what-ifs (listed apart: never benchmark data).

Benches and runs come from the store (lampbox.store.runs, written by the pipeline); the
comparison with the baseline is the bench's own (`lampbox.bench.runner.compare`: relative
change and paired p-value), so the TUI and `lampbox bench` print the same numbers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from lampbox.engine.types import Prediction, ProfileItem, Question
from lampbox.errors import LampboxError
from lampbox.lab.whatif import SavedWhatIf
from lampbox.store import browse
from lampbox.store.browse import UserGain
from lampbox.store.core import Store

if TYPE_CHECKING:
    from lampbox.bench.peft_rag import Bucket
    from lampbox.bench.runner import BenchRow


@dataclass(frozen=True)
class BenchSummary:
    """One bench in the store: its dataset, its configurations, how many finished and how
    many are running (a bench in another process, seen between its writes)."""

    bench_key: str
    task: str
    scheme: str
    split: str
    runs: int
    finished: int
    created: Any
    running: int = 0
    started: int | None = None  # configurations started (None: all of them)
    status: str | None = None  # running | finished | failed | cancelled (None: not recorded)
    error: str | None = None  # what stopped a failed or cancelled bench

    @property
    def in_progress(self) -> bool:
        """A run is running, or a configuration has yet to start (between two runs of a
        running bench nothing is running for a moment); never once the bench has ended."""
        if self.status not in (None, "running"):
            return False
        return self.running > 0 or (self.started is not None and self.started < self.runs)

    @property
    def label(self) -> str:
        return f"{self.task} · {self.scheme} · {self.split}"

    @property
    def state_text(self) -> str:
        """' · running', ' · failed' or ' · cancelled' as the bench list shows it ('' when done)."""
        if self.in_progress:
            return " · running"
        return f" · {self.status}" if self.status in ("failed", "cancelled") else ""


@dataclass(frozen=True)
class ConfigurationRow:
    """One configuration of a bench, compared with its no-personalization baseline."""

    run_key: str
    label: str
    role: str
    status: str
    metrics: dict[str, float]
    n_questions: int
    task: str
    scheme: str
    split: str
    baseline_key: str | None
    relative_change: float | None  # of the main metric, signed as computed (raw)
    p_value: float | None
    progress: tuple[str, int] | None = None  # a running run's (phase, questions done)
    bench_key: str | None = None  # the bench it was listed in

    @property
    def progress_text(self) -> str:
        """'generate 6/16' for a running run (what its bench last wrote), else ''."""
        if self.status != "running":
            return ""
        if self.progress is None:
            return f"starting 0/{self.n_questions}"
        phase, done = self.progress
        return f"{phase} {done}/{self.n_questions}"


@dataclass(frozen=True)
class FailureCase:
    """One question of a user in a run beside the baseline's answer to it."""

    question: Question
    prediction: Prediction
    baseline: Prediction | None
    gain: float | None  # per-question main score vs the baseline; < 0: the run did worse
    retrieved: tuple[ProfileItem, ...]  # the items that went into the run's prompt


def list_whatifs(store: Store) -> list[SavedWhatIf]:
    """The what-ifs saved from the generation screen (runs of kind 'whatif'), newest first."""
    from lampbox.lab.whatif import list_whatifs as saved

    return saved(store)


def list_benches(store: Store) -> list[BenchSummary]:
    """Every bench in the store, newest first, with its run counts."""
    from lampbox.store import runs as run_store

    summaries = []
    for key, spec, created in run_store.list_benches(store):
        runs = run_store.bench_runs(store, key)
        finished = sum(1 for run, _ in runs if run.status == "finished")
        running = sum(1 for run, _ in runs if run.status == "running")
        size = max(run_store.bench_size(store, key), len(runs))  # started or not
        dataset = (spec["task"], spec["scheme"], spec["split"])
        status, error = run_store.bench_status(store, key)
        summaries.append(
            BenchSummary(key, *dataset, size, finished, created, running, started=len(runs), status=status, error=error)
        )
    return summaries


def compare_bench(
    store: Store, bench_key: str, known: Sequence[ConfigurationRow] = ()
) -> list[ConfigurationRow]:
    """A bench's started configurations in its order, finished ones compared with their
    reference row (a plan's, else their no-personalization baseline), running ones with their
    progress; a plan's rows keep its labels. `known`: the rows of an earlier read; while no
    other run has finished since, their comparison is reused (a running bench is re-read
    every second, and comparing loads every prediction)."""
    from lampbox.bench.plan import stored_plan
    from lampbox.bench.runner import compare
    from lampbox.lab.pipeline import load_run
    from lampbox.store import runs as run_store

    record_json = next((spec for key, spec, _ in run_store.list_benches(store) if key == bench_key), {})
    plan = stored_plan(record_json)
    runs = run_store.bench_runs(store, bench_key)
    finished = {run.run_key for run, _ in runs if run.status == "finished"}
    reused = {row.run_key: row for row in known if row.status == "finished"}
    compared: dict[str, BenchRow] = {}
    baseline_keys: dict[str, str] = {}
    if finished != set(reused):
        reused = {}
        task = store.task(runs[0][0].spec["task"])
        records = []
        for run, role in runs:
            if run.run_key in finished:
                record = load_run(store, run.run_key)
                record.name = plan.labels.get(run.run_key)
                records.append((record, role))
        reference = next((r for r, _ in records if r.run_key == plan.reference), None)
        bench_rows = compare(task, records, reference, by_role=plan.reference is None)
        compared = {row.record.run_key: row for row in bench_rows}
        baseline_keys = {
            record.label: record.run_key
            for record, role in records
            if (role == "baseline" if reference is None else record is reference)
        }
    rows = []
    for run, role in runs:
        if run.run_key in reused:
            rows.append(reused[run.run_key])
            continue
        bench_row = compared.get(run.run_key)
        baseline_key = None
        if bench_row is not None and bench_row.baseline_label is not None:
            baseline_key = baseline_keys.get(bench_row.baseline_label)
        rows.append(
            ConfigurationRow(
                run.run_key,
                plan.labels.get(run.run_key, run.label),
                role,
                run.status,
                dict(run.metrics),
                run.n_questions,
                run.spec["task"],
                run.spec["scheme"],
                run.spec["split"],
                baseline_key,
                None if bench_row is None else bench_row.relative_change,
                None if bench_row is None else bench_row.p_value,
                run_store.run_progress(store, run.run_key) if run.status == "running" else None,
                bench_key,
            )
        )
    return rows


def higher_is_better(store: Store, task_name: str) -> bool:
    """Whether a larger main metric is better for the task (False for LaMP_3's MAE)."""
    return store.task(task_name).higher_is_better()


def user_gains(store: Store, row: ConfigurationRow) -> list[UserGain]:
    """The run's users, biggest losses against the baseline first."""
    if row.baseline_key is None:
        raise LampboxError(f"{row.label} has no baseline to compare with")
    return browse.user_gains(
        store, row.run_key, row.baseline_key, higher_is_better(store, row.task)
    )


HISTORY_BUCKETS = 4  # as `lampbox report --analysis peft-vs-rag` (its --buckets default)


@dataclass(frozen=True)
class HistoryGains:
    """Users over all and by history size, bucketed as `lampbox report --analysis peft-vs-rag`
    does (`peft_rag.bucket_by_history`). On an OPPU bench (`roles` set): that report's analysis
    of the bench, each bucket's means keyed by role (none, rag, peft, both) and its gains by
    rag, peft and both. Otherwise: one run against its baseline, the users scored in both, each
    bucket's means keyed "baseline" and "run", its gain and relative gain "run"."""

    overall: Bucket | None  # None: no user is scored in both runs
    buckets: list[Bucket]
    roles: dict[str, str] = field(default_factory=dict)  # role -> the bench row's label, in peft_rag.ROLES order

    @property
    def gain_keys(self) -> list[str]:
        """The keys of each bucket's gains, in the order shown (every role but none)."""
        return [role for role in self.roles if role != "none"] if self.roles else ["run"]


def history_gains(
    store: Store, row: ConfigurationRow, buckets: int = HISTORY_BUCKETS
) -> HistoryGains:
    """On an OPPU bench, the bench's PEFT-vs-RAG analysis (`peft_rag.oppu_bench_analysis`: the
    report's numbers, whichever row was chosen); otherwise the run's per-user scores against
    the baseline's, by the users' history size (their mean profile size in the baseline run,
    as the peft-vs-rag report takes it from `none`)."""
    from lampbox.bench.peft_rag import bucket_by_history, common_users, oppu_bench_analysis
    from lampbox.store import runs as run_store

    if row.baseline_key is None:
        raise LampboxError(f"{row.label} has no baseline to compare with")
    if row.bench_key is not None:
        analysis = oppu_bench_analysis(store, row.bench_key, buckets)
        if analysis is not None:
            return HistoryGains(analysis.overall, analysis.buckets, analysis.rows)
    user_scores = {
        "baseline": run_store.user_scores(store, row.baseline_key),
        "run": run_store.user_scores(store, row.run_key),
    }
    users = common_users(user_scores)
    if not users:
        return HistoryGains(None, [])
    overall, by_bucket = bucket_by_history(
        user_scores, users, "baseline", higher_is_better(store, row.task), buckets
    )
    return HistoryGains(overall, by_bucket)


def failure_cases(
    store: Store, row: ConfigurationRow, user_id: str, only_worse: bool = True
) -> list[FailureCase]:
    """A user's questions where the run scored worse than the baseline (all with only_worse off)."""
    from lampbox.engine.metrics import higher_is_better as metric_higher_is_better
    from lampbox.engine.metrics import question_key
    from lampbox.store import runs as run_store

    if row.baseline_key is None:
        raise LampboxError(f"{row.label} has no baseline to compare with")
    task = store.task(row.task)
    gains = browse.user_question_gains(
        store,
        row.run_key,
        row.baseline_key,
        user_id,
        metric_higher_is_better(question_key(task)),
        only_worse,
    )
    if not gains:
        return []
    ids = [question_id for question_id, _ in gains]
    predictions = {p.question_id: p for p in run_store.run_predictions(store, row.run_key, ids)}
    baselines = {p.question_id: p for p in run_store.run_predictions(store, row.baseline_key, ids)}
    questions = {
        q.id: q for q in store.questions(row.task, row.scheme, row.split, question_ids=ids)
    }
    cases = []
    for question_id, gain in gains:
        question, prediction = questions.get(question_id), predictions.get(question_id)
        if question is None or prediction is None:
            continue
        by_key = {item.key: item for item in question.profile}
        retrieved = tuple(by_key[key] for key in prediction.item_keys if key in by_key)
        cases.append(FailureCase(question, prediction, baselines.get(question_id), gain, retrieved))
    return cases
