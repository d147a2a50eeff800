"""The full, typed data behind each table of the TUI (what `E` exports).

A table shows cut, formatted cells and, for the users list, one page; these functions give
every row with real column names and typed values (numbers, None where there is none, lists
of ids). Each returns a TableExport (a default file name and a `build` run in the export's
worker thread, so nothing is computed unless `E` is pressed); the screens hand it, with the
values they showed, to their tables (`LampboxTable.set_export`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from lampbox.engine.tasks import TaskSpec
from lampbox.engine.types import ItemFeedback, ProfileItem, Question
from lampbox.lab.pipeline import PreparedPrompt
from lampbox.store import browse
from lampbox.store.browse import Dataset, QuestionRow, UserGain, UserSort
from lampbox.store.core import Store
from lampbox.tui.export import TableData, TableExport, file_stem
from lampbox.tui.rankings import ShownRanking
from lampbox.tui.runs import BenchSummary, ConfigurationRow, FailureCase, HistoryGains


def _dataset(dataset: Dataset) -> tuple[str, str, str]:
    return (dataset.task, dataset.scheme, dataset.split)


def users(
    store: Store, dataset: Dataset, search: str, sort: UserSort, descending: bool
) -> TableExport:
    """Every user of the list (all pages), in its search and order."""

    def build() -> TableData:
        total = browse.count_users(store, dataset, search)
        page = browse.user_page(store, dataset, search, sort, descending, 0, max(total, 1))
        rows = [(row.user_id, row.questions, row.profile_items) for row in page.rows]
        return TableData(("user_id", "questions", "profile_items"), rows)

    search_part = f"search-{search}" if search else ""
    return TableExport(file_stem("users", *_dataset(dataset), search_part), build)


def questions(
    dataset: Dataset, user_id: str, rows: Sequence[QuestionRow], task: TaskSpec
) -> TableExport:
    """A user's questions: the question's own text beside the whole input."""

    def build() -> TableData:
        columns = ("question_id", "user_id", "question", "input", "gold", "profile_size")
        data = [
            (row.question_id, row.user_id, task.question_text(row.input), row.input, row.gold,
             row.profile_size)
            for row in rows
        ]  # fmt: skip
        return TableData(columns, data)

    return TableExport(file_stem("questions", *_dataset(dataset), user_id), build)


def _field_names(items: Sequence[ProfileItem], fields: Sequence[str]) -> list[str]:
    """The task's profile fields first, then any other field an item has."""
    names = [name for name in fields if name not in ("id", "date")]
    for item in items:
        names.extend(
            name for name in item.fields if name not in names and name not in ("id", "date")
        )
    return names


def profile(
    dataset: Dataset, user_id: str, items: Sequence[ProfileItem], fields: Sequence[str]
) -> TableExport:
    """A user's profile items, in the order shown, with every field."""

    def build() -> TableData:
        names = _field_names(items, fields)
        rows = [
            (item.key, item.id, item.date, *(item.fields.get(name) for name in names))
            for item in items
        ]
        return TableData(("item_key", "item_id", "date", *names), rows)

    return TableExport(file_stem("profile", *_dataset(dataset), user_id), build)


def question_profile(question: Question, fields: Sequence[str]) -> TableExport:
    """A question's profile, in profile order."""

    def build() -> TableData:
        names = _field_names(question.profile, fields)
        rows = [
            (position, item.key, item.id, item.date, *(item.fields.get(name) for name in names))
            for position, item in enumerate(question.profile, start=1)
        ]
        return TableData(("position", "item_key", "item_id", "date", *names), rows)

    return TableExport(file_stem("question-profile", question.task, question.id), build)


def ranking(
    question: Question,
    shown: ShownRanking,
    shared: Mapping[str, int],
    fields: Sequence[str],
    feedback: ItemFeedback | None = None,
) -> TableExport:
    """One retriever's top k for a question; with ROPG feedback, each item's utility."""

    def build() -> TableData:
        names = _field_names([ranked.item for ranked in shown.items], fields)
        extra = ("utility",) if feedback is not None else ()
        rows = []
        for rank, ranked in enumerate(shown.items, start=1):
            item = ranked.item
            utility = (feedback.utility(item.key),) if feedback is not None else ()
            rows.append(
                (rank, item.key, item.id, ranked.score, shared.get(item.key, 1), *utility,
                 item.date, *(item.fields.get(name) for name in names))
            )  # fmt: skip
        columns = ("rank", "item_key", "item_id", "score", "in_rankings", *extra, "date", *names)
        return TableData(columns, rows)

    k = f"k{len(shown.items)}"
    return TableExport(file_stem("ranking", question.task, question.id, shown.retriever, k), build)


def configurations(
    bench: BenchSummary, rows: Sequence[ConfigurationRow], metrics: Sequence[str]
) -> TableExport:
    """A bench's configurations with their metrics, change against the baseline and p-value."""

    def build() -> TableData:
        columns = (
            "run_key", "label", "role", "status", "questions", *metrics,
            "relative_change", "p_value", "baseline_key",
        )  # fmt: skip
        data = [
            (
                row.run_key,
                row.label,
                row.role,
                row.status,
                row.n_questions,
                *(row.metrics.get(name) for name in metrics),
                row.relative_change,
                row.p_value,
                row.baseline_key,
            )  # fmt: skip
            for row in rows
        ]
        return TableData(columns, data)

    name = file_stem("runs", bench.task, bench.scheme, bench.split, bench.bench_key[:8])
    return TableExport(name, build)


def user_gains(row: ConfigurationRow, gains: Sequence[UserGain]) -> TableExport:
    """A run's users: baseline score, this run's score and the gain, in the order shown."""

    def build() -> TableData:
        columns = ("user_id", "questions", "profile_size", "baseline_score", "score", "gain")
        data = [
            (g.user_id, g.questions, g.profile_size, g.baseline_score, g.score, g.gain)
            for g in gains
        ]
        return TableData(columns, data)

    return TableExport(file_stem("user-gains", row.task, row.label, row.run_key[:8]), build)


def history_gains(row: ConfigurationRow, history: HistoryGains) -> TableExport:
    """Gains by the users' history size, each bucket then all users: a run against its
    baseline, or on an OPPU bench each role's mean and gain over none (the peft-vs-rag report's
    csv columns, `{role}_score` for its `{role}_{metric}`)."""

    def build() -> TableData:
        shown = [*history.buckets, *([history.overall] if history.overall else [])]
        columns: tuple[str, ...]
        data: list[tuple[Any, ...]]
        if not history.roles:
            columns = ("history", "users", "baseline_score", "score", "gain", "relative_gain")
            data = [
                (b.label, b.users, b.means["baseline"], b.means["run"], b.gains["run"])
                + (b.relative["run"],)
                for b in shown
            ]
            return TableData(columns, data)
        roles, gains = list(history.roles), history.gain_keys
        columns = (
            "history", "users", *(f"{role}_score" for role in roles), *(f"{role}_gain" for role in gains),
            *(f"{role}_relative_gain" for role in gains),
        )  # fmt: skip
        data = [
            (b.label, b.users, *(b.means[role] for role in roles), *(b.gains[role] for role in gains))
            + tuple(b.relative[role] for role in gains)
            for b in shown
        ]
        return TableData(columns, data)

    name = "peft-vs-rag" if history.roles else "history-gains"
    return TableExport(file_stem(name, row.task, row.label, row.run_key[:8]), build)


def failure_cases(
    row: ConfigurationRow, user_id: str, cases: Sequence[FailureCase], task: TaskSpec
) -> TableExport:
    """A user's questions in a run beside the baseline: outputs, scores, items and prompt."""

    def build() -> TableData:
        columns = (
            "question_id", "question", "gold", "output", "score", "baseline_output",
            "baseline_score", "gain", "retrieved_item_ids", "prompt",
        )  # fmt: skip
        data: list[tuple[Any, ...]] = []
        for case in cases:
            baseline = case.baseline
            data.append(
                (
                    case.question.id,
                    task.question_text(case.question.input),
                    case.question.gold,
                    case.prediction.output,
                    case.prediction.main_score,
                    baseline.output if baseline is not None else None,
                    baseline.main_score if baseline is not None else None,
                    case.gain,
                    [item.id for item in case.retrieved],
                    case.prediction.prompt,
                )  # fmt: skip
            )
        return TableData(columns, data)

    name = file_stem("cases", row.task, row.label, row.run_key[:8], user_id)
    return TableExport(name, build)


def prompt_items(label: str, prepared: PreparedPrompt) -> TableExport:
    """The items that went into a prompt, in prompt order, with their kept and total tokens."""

    def build() -> TableData:
        by_key = {item.key: item for item in prepared.items}
        data = []
        for rank, kept in enumerate(prepared.prompt.items, start=1):
            item = by_key.get(kept.key)
            text = " ".join(str(v) for v in item.fields.values()) if item is not None else None
            item_id = item.id if item is not None else None
            data.append((rank, kept.key, item_id, kept.kept_tokens, kept.total_tokens, text))
        columns = ("rank", "item_key", "item_id", "kept_tokens", "total_tokens", "text")
        return TableData(columns, data)

    return TableExport(file_stem("prompt-items", label), build)
