"""Past-tense messages that workers post to the screens (workers never touch widgets)."""

from __future__ import annotations

from dataclasses import dataclass, field

from textual.message import Message

from lampbox.engine.tasks import TaskSpec
from lampbox.engine.types import PoolAnswer, ProfileItem, Question, SelectorProbabilities
from lampbox.lab.pipeline import PreparedPrompt
from lampbox.lab.whatif import SavedWhatIf
from lampbox.store.browse import Dataset, QuestionRow, UserGain, UserPage, UserRow
from lampbox.store.core import Store
from lampbox.tui.generation import ModelOption
from lampbox.tui.rankings import ShownRanking
from lampbox.tui.runs import BenchSummary, ConfigurationRow, FailureCase, HistoryGains
from lampbox.tui.userlist import UserList


@dataclass
class DatasetsLoaded(Message):
    """The store's datasets were listed."""

    datasets: list[Dataset]


@dataclass
class UsersPageLoaded(Message):
    """A page of users was read for the given search and sort."""

    dataset: Dataset
    page: UserPage
    search: str
    sort: str
    descending: bool


@dataclass
class UserLoaded(Message):
    """A user's counts, questions and profile were read (`users`: the list, its page updated)."""

    users: UserList
    user: UserRow
    index: int
    questions: list[QuestionRow]
    profile_items: list[ProfileItem]
    profile_fields: tuple[str, ...]
    task: TaskSpec


@dataclass
class ProfileItemsLoaded(Message):
    """A user's profile was re-read with a new search or sort."""

    user_id: str
    profile_items: list[ProfileItem]


@dataclass
class QuestionLoaded(Message):
    """A question and its profile were read."""

    question: Question
    document_fields: tuple[str, ...]
    task: TaskSpec


@dataclass
class RankingsComputed(Message):
    """Every chosen retriever ranked the question's profile."""

    question_id: str
    k: int
    rankings: list[ShownRanking]


@dataclass
class DataImported(Message):
    """Data was imported into the store (from the empty-store screen)."""

    summary: str


@dataclass
class WorkFailed(Message):
    """A worker failed; `what` names the step, `error` is one line for the user."""

    what: str
    error: str


@dataclass
class GenerationPrepared(Message):
    """A pane's prompt was built; `cached` holds the output when the cache already had it."""

    session: int
    pane: int
    prepared: PreparedPrompt
    cached: str | None


@dataclass
class ThreadsChosen(Message):
    """The threads one model's panes generate on, chosen just before they start."""

    session: int
    model_label: str
    threads: str  # e.g. "2 threads (cores idle)"


@dataclass
class TextGenerated(Message):
    """The model produced the next piece(s) of a pane's output (`pieces` of them, joined)."""

    session: int
    pane: int
    piece: str
    pieces: int = 1


@dataclass
class OutputScored(Message):
    """A pane's output is complete and was scored against the gold."""

    session: int
    pane: int
    output: str
    scores: dict[str, float]
    seconds: float


@dataclass
class OriginalScored(Message):
    """For a what-if: the unedited question's output in a pane is known (cached or generated)
    and was scored against the gold."""

    session: int
    pane: int
    output: str
    scores: dict[str, float]


@dataclass
class WhatIfSaved(Message):
    """A what-if's panes were saved as runs of kind 'whatif'."""

    run_keys: list[str]


@dataclass
class PanesFailed(Message):
    """Generating some panes failed (the panes of one model: the others carry on)."""

    session: int
    panes: list[int]
    error: str


@dataclass
class BenchesLoaded(Message):
    """The benches in the store were listed, and the saved what-ifs (`quiet`: a poll, shown
    without a loading state)."""

    benches: list[BenchSummary]
    whatifs: list[SavedWhatIf] = field(default_factory=list)
    quiet: bool = False


@dataclass
class BenchCompared(Message):
    """A bench's configurations were compared with their baselines."""

    bench_key: str
    rows: list[ConfigurationRow]


@dataclass
class UserGainsLoaded(Message):
    """A run's per-user gains over its baseline were read."""

    run_key: str
    gains: list[UserGain]


@dataclass
class HistoryGainsLoaded(Message):
    """A run's per-user gains over its baseline were bucketed by the users' history size."""

    run_key: str
    history: HistoryGains


@dataclass
class FailuresLoaded(Message):
    """A user's questions where the run did worse than its baseline (or all, when asked)."""

    user_id: str
    only_worse: bool
    cases: list[FailureCase]


@dataclass
class StoreWaiting(Message):
    """A query waits for another process's lock on the store (`holder`: who, e.g. 'bench
    3f2a1b0c (pid 4242)'), or got in (None)."""

    holder: str | None


@dataclass
class StoreOpened(Message):
    """The store, busy when the app started, was opened (or could not be: `error`)."""

    store: Store | None
    error: str | None


@dataclass
class ChoicesListed(Message):
    """The models and retrievers a generation pane can choose were listed."""

    index: int
    title: str
    adding: bool
    models: list[ModelOption]
    retrievers: list[str]


@dataclass
class TableExported(Message):
    """A table's full data was written to `path`."""

    path: str
    file_format: str
    rows: int
    columns: int


@dataclass
class ExportFailed(Message):
    """Writing a table (or a prompt) to `path` failed; nothing was left there."""

    path: str
    error: str


@dataclass
class SelectorLoaded(Message):
    """An RSPG selector's probabilities for a question were read (None: none stored)."""

    question_id: str
    selector: SelectorProbabilities | None
    answers: tuple[PoolAnswer, ...] = ()  # its candidates' stored answers and scores, pool order
