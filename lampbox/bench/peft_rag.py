"""The PEFT-vs-RAG analysis of a stored bench ("Comparing RAG and PEFT", Salemi & Zamani 2024):
the gain of retrieval (RAG), of each user's adapter (PEFT: OPPU) and of both over no
personalization, overall and by the users' history size.

Four rows of the bench play the roles, found from their runs: `both` (method oppu with
retrieval), `peft` (method oppu without), `rag` (a model method with retrieval) and `none` (a
model method without); where several rows fit `rag` or `none`, the one on the OPPU rows' model
(the set, or its task adapter by its own name: the paper's non-personalized model is the task
model) comes first, then table order. `--row ROLE=LABEL` names a row instead. Users are those scored in every role row,
bucketed by profile size at quantile edges (`paper.history_buckets`); per bucket, each role's
mean per-user main score, and each gain as the difference from `none` (signed: > 0 is better,
for MAE too) and relative to `none` in percent.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from lampbox.bench.paper import find_row, history_buckets, load_bench
from lampbox.engine.tasks import TaskSpec
from lampbox.engine.types import UserScore
from lampbox.errors import LampboxError
from lampbox.lab.specs import RunRecord
from lampbox.store.core import Store

ROLES = ("none", "rag", "peft", "both")
GAINS = ("rag", "peft", "both")
ROLE_NAMES = {"none": "no personalization", "rag": "RAG", "peft": "PEFT (OPPU)", "both": "PEFT + RAG"}


@dataclass(frozen=True)
class Bucket:
    """One history-size bucket (or all users): each row's (here: role's) mean per-user main
    score and each other row's gain over the reference row (here: `none`; absolute, signed so
    that > 0 is better; relative, a fraction). The TUI's per-user gains screen buckets a
    configuration against its reference with the same function (`bucket_by_history`)."""

    label: str
    users: int
    means: dict[str, float]  # row -> mean per-user main score
    gains: dict[str, float]  # row -> mean score minus the reference's, signed
    relative: dict[str, float | None]  # row -> gain / |reference's mean| (None: that mean is 0)

    def to_json(self) -> dict[str, Any]:
        return {"history": self.label, "users": self.users, "means": self.means, "gains": self.gains, "relative_gains": self.relative}


@dataclass(frozen=True)
class PeftRagAnalysis:
    bench_key: str
    task: TaskSpec
    rows: dict[str, str]  # role -> the bench row's label (roles without a row are absent)
    overall: Bucket
    buckets: list[Bucket]
    left_out: list[str]

    @property
    def title(self) -> str:
        return f"PEFT vs RAG: {self.task.name} (bench {self.bench_key[:8]}, {self.overall.users} users)"

    @property
    def caption(self) -> str:
        main = self.task.main_metric
        rows = "; ".join(f"{ROLE_NAMES[role]}: {label}" for role, label in self.rows.items())
        return (
            f"{self.title}. Mean per-user {main} of each row and its gain over no personalization "
            f"(> 0 is better; relative in %), users bucketed by profile size (quantiles). Rows: {rows}."
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "bench_key": self.bench_key, "task": self.task.name, "main_metric": self.task.main_metric,
            "rows": self.rows, "caption": self.caption, "overall": self.overall.to_json(),
            "buckets": [bucket.to_json() for bucket in self.buckets], "left_out": self.left_out,
        }  # fmt: skip


def parse_row_choices(choices: Sequence[str]) -> dict[str, str]:
    """`--row ROLE=LABEL` values as {role: label}."""
    chosen: dict[str, str] = {}
    for text in choices:
        role, equals, label = text.partition("=")
        if not equals or role not in ROLES or not label:
            raise LampboxError(f"--row {text!r}: give ROLE=LABEL with ROLE one of {', '.join(ROLES)}")
        if role in chosen:
            raise LampboxError(f"--row {role} is given twice")
        chosen[role] = label
    return chosen


def role_of_run(record: RunRecord) -> str | None:
    """The role a run can play, from its spec (None: a model-free row)."""
    spec = record.spec
    if not spec.uses_model:
        return None
    if spec.method_impl.needs_adapters:  # each user's adapter: oppu
        return "both" if spec.personalized else "peft"
    return "rag" if spec.personalized else "none"


def pick_rows(records: Sequence[tuple[RunRecord, str]], chosen: Mapping[str, str], key: str, left_out: list[str]) -> dict[str, RunRecord]:
    """Each role's row: the one named by `chosen`, else found from the runs (module docstring)."""
    picked = {role: find_row(records, label, key, left_out, what=f"--row {role}") for role, label in chosen.items()}
    candidates: dict[str, list[RunRecord]] = {role: [] for role in ROLES}
    for record, _ in records:
        role = role_of_run(record)
        if role is not None:
            candidates[role].append(record)
    adapter_models = {r.spec.model for role in ("peft", "both") for r in ([picked[role]] if role in picked else candidates[role])}
    adapter_models |= {task for model in list(adapter_models) if (task := _task_adapter_of(model))}  # named as itself
    for role in ROLES:
        if role in picked or not candidates[role]:
            continue
        ranked = sorted(candidates[role], key=lambda record: record.spec.model not in adapter_models)  # stable
        picked[role] = ranked[0]
    if "none" not in picked:
        raise LampboxError(f"bench {key[:12]} has no finished row without personalization to compare with; name one with --row none=LABEL")
    if not any(role in picked for role in GAINS):
        raise LampboxError(f"bench {key[:12]} has no RAG, PEFT (method oppu) or PEFT + RAG row; name one with --row rag=LABEL")
    return {role: picked[role] for role in ROLES if role in picked}


def _task_adapter_of(model: str) -> str | None:
    """The task adapter an OPPU set stands on (None: not a set, or not found here)."""
    from lampbox.model_folders import read_info, stands_on
    from lampbox.models import trained_model_folder

    folder = trained_model_folder(model)
    if folder is None:
        return None
    try:
        return stands_on(read_info(folder))
    except LampboxError:  # an unreadable record: no set to find its task adapter in
        return None


def common_users(user_scores: Mapping[str, Mapping[str, UserScore]]) -> list[str]:
    """The users with a main score in every row of `user_scores` (row -> user -> score), sorted."""
    scored = [{user for user, score in scores.items() if score.main_score is not None} for scores in user_scores.values()]
    return sorted(set.intersection(*scored)) if scored else []


def _bucket(label: str, users: Sequence[str], user_scores: Mapping[str, Mapping[str, UserScore]], reference: str, sign: float) -> Bucket:
    means = {row: sum(float(scores[user].main_score or 0.0) for user in users) / len(users) for row, scores in user_scores.items()}
    base = means[reference]
    gains = {row: sign * (mean - base) for row, mean in means.items() if row != reference}
    relative = {row: (gain / abs(base) if base else None) for row, gain in gains.items()}
    return Bucket(label, len(users), means, gains, relative)


def bucket_by_history(
    user_scores: Mapping[str, Mapping[str, UserScore]], users: Sequence[str], reference: str, higher_is_better: bool, buckets: int = 4
) -> tuple[Bucket, list[Bucket]]:
    """`users` (scored in every row) over all ("all") and bucketed by their profile size in the
    `reference` row (`paper.history_buckets`, empty buckets left out): each row's mean per-user
    main score and each other row's gain over `reference` (> 0 is better, for MAE too)."""
    sign = 1.0 if higher_is_better else -1.0
    sizes = {user: float(user_scores[reference][user].profile_size) for user in users}
    labels, bucket_of = history_buckets(sizes, buckets)
    by_bucket = [[user for user in users if bucket_of[user] == index] for index in range(len(labels))]
    overall = _bucket("all", users, user_scores, reference, sign)
    return overall, [_bucket(label, members, user_scores, reference, sign) for label, members in zip(labels, by_bucket, strict=True) if members]


def peft_vs_rag(store: Store, key_or_prefix: str, chosen: Mapping[str, str] | None = None, buckets: int = 4) -> PeftRagAnalysis:
    """The analysis of a stored bench (module docstring)."""
    if buckets < 1:
        raise LampboxError(f"--buckets must be at least 1 (got {buckets})")
    key, spec, records, left_out = load_bench(store, key_or_prefix)
    rows = pick_rows(records, chosen or {}, key, left_out)
    return _analyse(key, store.task(spec["task"]), rows, left_out, buckets)


def oppu_bench_analysis(store: Store, bench_key: str, buckets: int = 4) -> PeftRagAnalysis | None:
    """`peft_vs_rag` of a bench whose rows fill all four roles by themselves (an OPPU bench: no
    personalization, RAG, PEFT and PEFT + RAG rows), the rows found as the report finds them
    without `--row`; None for any other bench (the TUI's per-user gains screen then buckets one
    row against its reference instead)."""
    key, spec, records, left_out = load_bench(store, bench_key)
    if not set(ROLES) <= {role_of_run(record) for record, _ in records}:
        return None
    return _analyse(key, store.task(spec["task"]), pick_rows(records, {}, key, left_out), left_out, buckets)


def _analyse(key: str, task: TaskSpec, rows: Mapping[str, RunRecord], left_out: list[str], buckets: int) -> PeftRagAnalysis:
    user_scores = {role: record.user_scores for role, record in rows.items()}
    users = common_users(user_scores)
    if not users:
        raise LampboxError(f"bench {key[:12]}: no user is scored in every row of the analysis ({'; '.join(r.label for r in rows.values())})")
    overall, by_bucket = bucket_by_history(user_scores, users, "none", task.higher_is_better(), buckets)
    return PeftRagAnalysis(key, task, {role: record.label for role, record in rows.items()}, overall, by_bucket, left_out)


# -- the table -----------------------------------------------------------------------------------


def _cells(analysis: PeftRagAnalysis, bucket: Bucket) -> list[str]:
    cells = [bucket.label, str(bucket.users), f"{bucket.means['none']:.4f}"]
    for role in GAINS:
        if role not in analysis.rows:
            continue
        relative = bucket.relative[role]
        cells.append(f"{bucket.gains[role]:+.4f}" + ("" if relative is None else f" ({relative * 100:+.1f}%)"))
    return cells


def render_analysis(analysis: PeftRagAnalysis, fmt: str) -> str:
    """The analysis as md (title, table, caption), csv (raw numbers) or json."""
    import json

    if fmt == "json":
        return json.dumps(analysis.to_json(), indent=2) + "\n"
    main = analysis.task.main_metric
    gains = [role for role in GAINS if role in analysis.rows]
    if fmt == "csv":
        import csv
        import io

        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["history", "users", *(f"{role}_{main}" for role in ROLES if role in analysis.rows), *(f"{role}_gain" for role in gains), *(f"{role}_relative_gain" for role in gains)])
        for bucket in [*analysis.buckets, analysis.overall]:
            writer.writerow(
                [bucket.label, bucket.users, *(f"{bucket.means[role]:.6f}" for role in ROLES if role in analysis.rows),
                 *(f"{bucket.gains[role]:.6f}" for role in gains),
                 *("" if bucket.relative[role] is None else f"{bucket.relative[role]:.6f}" for role in gains)]
            )  # fmt: skip
        return out.getvalue()
    if fmt != "md":
        raise LampboxError(f"--analysis peft-vs-rag writes md, csv or json, not {fmt}")
    header = ["history (profile items)", "users", f"none {main}", *(f"{ROLE_NAMES[role]} gain" for role in gains)]
    lines = [f"**{analysis.title}**", "", "| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
    for bucket in analysis.buckets:
        lines.append("| " + " | ".join(_cells(analysis, bucket)) + " |")
    lines.append("| " + " | ".join(f"**{cell}**" for cell in _cells(analysis, analysis.overall)) + " |")
    return "\n".join([*lines, "", analysis.caption, ""])
