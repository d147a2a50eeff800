"""The headless benchmark: a plan of RunSpecs run through the run pipeline, then a table.

Each configuration is an ordinary pipeline run (so the TUI sees the same runs); the bench
adds the plan (a list of configurations, or the grid flags' retrievers x k x backends expanded
to one), progress over the whole plan, the comparison against a reference row with a paired
test, and a record of the bench in the store.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lampbox.bench.plan import BASELINE, RETRIEVAL, RETRIEVAL_ONLY, SELECTION, Configuration, Plan
from lampbox.engine.defaults import (
    DEFAULT_BACKEND,
    DEFAULT_KS,
    DEFAULT_MAX_LENGTH,
    DEFAULT_RETRIEVERS,
    default_model,
)
from lampbox.engine.generation.base import GenerationParams
from lampbox.engine.generation.common import GenerationCancelled
from lampbox.engine.generation.labels import DEFAULT_DECODING
from lampbox.engine.generation.pool import GeneratorPool
from lampbox.engine.stats import paired_randomization_test
from lampbox.engine.tasks import TaskSpec
from lampbox.lab.pipeline import RunCancelled, check_run_decoding, check_skip, run
from lampbox.lab.specs import RunProgress, RunRecord, RunSpec, run_key
from lampbox.store import runs as run_store
from lampbox.store.core import Store

Options = tuple[tuple[str, Any], ...]


@dataclass(frozen=True)
class BenchSpec:
    """A grid: retrievers x k x backends on one task split, plus model-free baselines."""

    task: str
    scheme: str
    split: str
    retrievers: tuple[str, ...] = DEFAULT_RETRIEVERS
    ks: tuple[int, ...] = DEFAULT_KS
    backends: tuple[str, ...] = (DEFAULT_BACKEND,)
    method: str = "ipa"  # the model runs' method (a registered one: ipa, fid, ...)
    model: str = field(default_factory=default_model)
    params: GenerationParams = field(default_factory=GenerationParams)
    max_length: int = DEFAULT_MAX_LENGTH
    postprocess: tuple[str, ...] = ()
    limit: int | None = None
    users: int | None = None
    min_profile: int | None = None  # only users with at least this many profile items
    skip: int = 0  # leave out the first N questions (before `limit`)
    baselines: bool = True
    decode: str = DEFAULT_DECODING  # the model runs' decoding: generate, or labels (classification)
    # RSPG rows after the grid's: "rspg-pre:NAME" or "rspg-post:NAME" (NAME a trained selector)
    selectors: tuple[str, ...] = ()
    # Per backend, its options that change outputs (e.g. hf: dtype, quantize), as sorted
    # (backend, ((name, value), ...)) pairs; they become the runs' model_options.
    backend_options: tuple[tuple[str, Options], ...] = ()

    def plan(self, task: TaskSpec) -> Plan:
        """The grid as a plan: its runs in grid order, compared as the grid always was, with
        the grid's record and key (the same flags keep finding the same bench and runs)."""
        configurations = tuple(Configuration(spec, role) for spec, role in build_grid(self, task))
        return Plan(
            self.task, self.scheme, self.split, configurations, self.limit, self.users, grid=self.to_json(),
            min_profile=self.min_profile, skip=self.skip,
        )  # fmt: skip

    def options_for(self, backend: str) -> Options:
        return dict(self.backend_options).get(backend, ())

    def to_json(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "scheme": self.scheme,
            "split": self.split,
            "retrievers": list(self.retrievers),
            "ks": list(self.ks),
            "backends": list(self.backends),
            **({"method": self.method} if self.method != "ipa" else {}),
            **({"decode": self.decode} if self.decode != DEFAULT_DECODING else {}),
            "model": self.model,
            "params": self.params.to_json(),
            "max_length": self.max_length,
            "postprocess": list(self.postprocess),
            "limit": self.limit,
            "users": self.users,
            **({"min_profile": self.min_profile} if self.min_profile is not None else {}),
            **({"skip": self.skip} if self.skip else {}),
            "baselines": self.baselines,
            **({"selectors": list(self.selectors)} if self.selectors else {}),
            **(
                {"backend_options": {name: dict(options) for name, options in self.backend_options}}
                if self.backend_options
                else {}
            ),
        }


def build_grid(bench: BenchSpec, task: TaskSpec) -> list[tuple[RunSpec, str]]:
    """The runs of a bench with their roles: baseline (no personalization), retrieval, retrieval-only."""
    common: dict[str, Any] = {
        "task": bench.task, "scheme": bench.scheme, "split": bench.split, "limit": bench.limit, "users": bench.users,
        "min_profile": bench.min_profile, "skip": bench.skip,
    }  # fmt: skip
    model: dict[str, Any] = {
        "method": bench.method, "model": bench.model, "params": bench.params, "max_length": bench.max_length,
        "postprocess": bench.postprocess, "decode": bench.decode,
    }  # fmt: skip
    grid: list[tuple[RunSpec, str]] = []
    # k = 0 retrieves nothing: it is the no-personalization row, which every backend has once.
    # Repeated names and ks make no second row.
    personalized = _unique(name for name in bench.retrievers if name != "none")
    retrieval_ks = _unique(k for k in bench.ks if k > 0)
    for backend in _unique(bench.backends):
        options = bench.options_for(backend)
        grid.append((RunSpec(retriever="none", k=0, backend=backend, model_options=options, **common, **model), BASELINE))
        for retriever in personalized:
            for k in retrieval_ks:
                grid.append((RunSpec(retriever=retriever, k=k, backend=backend, model_options=options, **common, **model), RETRIEVAL))
    if bench.baselines and task.target_field is not None and retrieval_ks:
        # Generation copies the top item (k does not matter beyond 1); labels and ratings vote over k.
        ks = [1] if task.kind == "generation" else retrieval_ks
        for retriever in personalized:
            for k in ks:
                grid.append((RunSpec(retriever=retriever, k=k, method="retrieval-only", **common), RETRIEVAL_ONLY))
    for name in _unique(bench.selectors):
        method, selector = selection_name(name)
        grid.append((RunSpec(method=method, selector=selector, **common), SELECTION))
    return grid


def selection_name(name: str) -> tuple[str, str]:
    """'rspg-pre:NAME' or 'rspg-post:NAME' as (method, selector); one clear line otherwise."""
    from lampbox.errors import LampboxError

    method, colon, selector = name.partition(":")
    if method not in ("rspg-pre", "rspg-post") or not colon or not selector:
        raise LampboxError(f"--selectors takes rspg-pre:NAME or rspg-post:NAME (NAME a selector from `lampbox train rspg`), not {name!r}")
    return method, selector


def _unique(values: Iterable[Any]) -> list[Any]:
    """The values in order, each once."""
    return list(dict.fromkeys(values))


@dataclass
class BenchRow:
    """One configuration's line in the results table."""

    record: RunRecord
    role: str
    baseline_label: str | None
    relative_change: float | None  # of the main metric vs the baseline
    p_value: float | None

    def to_json(self) -> dict[str, Any]:
        return {
            "label": self.record.label,
            "role": self.role,
            "run_key": self.record.run_key,
            "spec": self.record.spec.to_json(),
            "metrics": self.record.metrics,
            "baseline": self.baseline_label,
            "relative_change": self.relative_change,
            "p_value": self.p_value,
            "predictions_path": self.record.predictions_path,
            "from_store": self.record.from_store,
            "generated": self.record.generated,
            "cached": self.record.cached,
            "seconds": round(self.record.seconds, 3),
            **({"selection": self.record.selection.to_json()} if self.record.selection is not None else {}),
        }


@dataclass
class BenchResult:
    bench_key: str
    plan: Plan
    task: TaskSpec
    rows: list[BenchRow]
    record: dict[str, Any]  # the bench's record in the store

    def to_json(self) -> dict[str, Any]:
        return {
            "bench_key": self.bench_key,
            "spec": self.record,
            "main_metric": self.task.main_metric,
            "significance_test": "two-sided paired randomization (sign-flip) test on per-question scores, 10,000 resamples, seed 0",
            "rows": [row.to_json() for row in self.rows],
        }


def bench_key(grid: Sequence[tuple[RunSpec, str]], task: TaskSpec) -> str:
    """A grid's key (what `Plan.key` gives for the grid's plan)."""
    keys = [(run_key(spec, task), role) for spec, role in grid]
    return hashlib.sha256(json.dumps(keys).encode()).hexdigest()[:24]


def run_bench(
    bench: BenchSpec | Plan,
    store: Store,
    *,
    generators: GeneratorPool | None = None,
    predictions_dir: Path | None = None,
    on_progress: Callable[[RunProgress, int, int], None] | None = None,
    should_cancel: Callable[[], bool] | None = None,
    batch_size: int = 8,
) -> BenchResult:
    """Run every configuration (finished ones come from the store) and compare each with its
    reference row (the plan's, or for a grid each backend's no-personalization row).

    on_progress(progress, index, count) reports the current configuration's progress.
    """
    task = store.task(bench.task)
    plan = bench if isinstance(bench, Plan) else bench.plan(task)
    count = len(plan.configurations)
    for configuration in plan.configurations:
        check_run_decoding(configuration.spec, task)  # one clear error before anything runs
    if plan.configurations:  # the rows share their questions: a --skip past them, before anything is stored
        check_skip(store, plan.configurations[0].spec)
    run_keys = [run_key(configuration.spec, task) for configuration in plan.configurations]
    key = plan.key(run_keys)
    record_json = plan.to_json(run_keys)
    store.purpose = f"bench {key[:8]}"  # what a reader's busy message names
    roles = [configuration.role for configuration in plan.configurations]
    run_store.save_bench(store, key, record_json, list(zip(run_keys, roles, strict=True)))
    store.idle()
    pool = generators or GeneratorPool()
    records: list[tuple[RunRecord, str]] = []
    try:
        for index, configuration in enumerate(plan.configurations):
            record = run(
                configuration.spec,
                store,
                generators=pool,
                predictions_dir=predictions_dir,
                on_progress=(lambda progress, i=index: on_progress(progress, i, count)) if on_progress else None,
                should_cancel=should_cancel,
                batch_size=batch_size,
            )
            record.name = configuration.label
            records.append((record, configuration.role))
    except BaseException as error:
        # A bench that stops is recorded as stopped, so no reader waits for its other runs.
        cancelled = isinstance(error, (RunCancelled, GenerationCancelled, KeyboardInterrupt))
        with suppress(Exception):
            run_store.end_bench(store, key, "cancelled" if cancelled else "failed", str(error) or type(error).__name__)
            store.idle()
        raise
    run_store.end_bench(store, key, "finished")
    store.idle()
    reference = None if plan.reference is None else records[plan.reference][0]
    return BenchResult(key, plan, task, compare(task, records, reference), record_json)


def compare(
    task: TaskSpec,
    records: Sequence[tuple[RunRecord, str]],
    reference: RunRecord | None = None,
    by_role: bool = True,
) -> list[BenchRow]:
    """Rows with the relative change of the main metric and a paired test vs no personalization
    (each backend's own baseline row; the first one for retrieval-only rows). With `reference`,
    every other row is compared with that run instead; with neither (by_role off: a plan whose
    reference row has not finished), no row is compared."""
    baselines = {record.spec.backend: record for record, role in records if role == "baseline"}
    first_baseline = next(iter(baselines.values()), None)
    main = task.main_metric
    rows = []
    for record, role in records:
        if reference is not None:
            baseline = None if record.run_key == reference.run_key else reference
        elif not by_role:
            baseline = None
        else:
            # model-free rows and selections (whose pool spans backends) against the first baseline
            baseline = baselines.get(record.spec.backend) if role not in (RETRIEVAL_ONLY, SELECTION) else first_baseline
            baseline = None if role == "baseline" else baseline
        if baseline is None:
            rows.append(BenchRow(record, role, None, None, None))
            continue
        rows.append(
            BenchRow(
                record,
                role,
                baseline.label,
                _relative_change(record.metrics.get(main), baseline.metrics.get(main)),
                paired_p_value(record, baseline),
            )
        )
    return rows


def _relative_change(value: float | None, base: float | None) -> float | None:
    if value is None or base is None or base == 0:
        return None
    return (value - base) / abs(base)


def paired_p_value(record: RunRecord, baseline: RunRecord) -> float | None:
    """The paired randomization test's p on the main per-question scores both runs have."""
    base_scores = {p.question_id: p.main_score for p in baseline.predictions}
    pairs = [
        (p.main_score, base_scores[p.question_id])
        for p in record.predictions
        if p.main_score is not None and base_scores.get(p.question_id) is not None
    ]
    if not pairs:
        return None
    treated, base = zip(*pairs, strict=True)
    return paired_randomization_test(treated, base).p_value

