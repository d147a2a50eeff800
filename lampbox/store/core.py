"""The Store: the only code that talks to DuckDB.

One DuckDB file holds tasks, users, questions, profile items and golds (and, as the method
stack grows, rankings, embeddings, runs, predictions and per-user scores: each added by a
migration). Use one cursor per thread (`Store.cursor()`).
"""

from __future__ import annotations

import atexit
import json
import os
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb

from lampbox.engine.tasks import BUILTIN_TASKS, TaskSpec, builtin_task
from lampbox.engine.types import ProfileItem, Question
from lampbox.errors import InputFileError, LampboxError, UnknownNameError
from lampbox.paths import default_db_path
from lampbox.store.migrations import migrate, pending_migrations


@dataclass(frozen=True)
class DatasetSummary:
    """One (task, scheme, split) as `lampbox data list` shows it."""

    task: str
    scheme: str
    split: str
    users: int
    questions: int
    golds: int
    mean_profile_size: float
    distinct_items: int

    def to_json(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "scheme": self.scheme,
            "split": self.split,
            "users": self.users,
            "questions": self.questions,
            "golds": self.golds,
            "mean_profile_size": round(self.mean_profile_size, 2),
            "distinct_items": self.distinct_items,
        }


# Every DuckDB database file has these bytes at offset 8 (after a checksum).
DUCKDB_MAGIC = b"DUCK"
DUCKDB_MAGIC_OFFSET = 8


def check_duckdb_file(path: Path) -> None:
    """Refuse an existing file that is not a DuckDB database. DuckDB opens some other files
    (a .json, a .csv) as an empty in-memory database, so everything written would be lost."""
    try:
        with path.open("rb") as stream:
            header = stream.read(DUCKDB_MAGIC_OFFSET + len(DUCKDB_MAGIC))
    except IsADirectoryError:
        raise InputFileError(path, "is a folder, not a lampbox store") from None
    except OSError as error:
        raise InputFileError(path, f"cannot read the store ({error.strerror})") from None
    if header[DUCKDB_MAGIC_OFFSET:] == DUCKDB_MAGIC:
        return
    what = "is an empty file, not a DuckDB database" if not header else "is not a DuckDB database"
    raise InputFileError(path, f"{what}; refusing to use it as the store (name a new file or an existing store)")


BACKUP_HELP = "see 'Backup and restore' in docs/store.md"
# Words of DuckDB's errors about a damaged file (a bad checksum, a truncated file).
_DAMAGED = ("corrupt", "checksum", "could not read enough bytes", "truncated", "invalid block", "serialization")


def is_lock_error(message: str) -> bool:
    """Whether a DuckDB IOException says another process holds the file's lock."""
    lowered = message.lower()
    return "conflicting lock" in lowered or "could not set lock" in lowered


def store_error(path: Path, error: BaseException, what: str = "cannot open the store") -> LampboxError:
    """One line for a DuckDB error on the store file: a damaged file names itself and says
    where backup and restore are explained."""
    text = " ".join(str(error).split())[:300]
    if any(word in text.lower() for word in _DAMAGED) or isinstance(error, duckdb.SerializationException):
        return LampboxError(f"{path}: the store file is damaged ({text}); restore a copy or start anew: {BACKUP_HELP}")
    return LampboxError(f"{path}: {what} ({text})")


LOCK_WAIT_S = 10.0  # how long opening waits for another process's lock before saying who has it


def lock_wait_s(default: float = LOCK_WAIT_S) -> float:
    """How long opening waits for another process's lock: $LAMPBOX_LOCK_WAIT seconds, else
    `default` (10 s for a command; the TUI waits longer, showing who it waits for)."""
    value = os.environ.get("LAMPBOX_LOCK_WAIT", "").strip()
    try:
        return max(0.0, float(value)) if value else default
    except ValueError:
        raise LampboxError(f"LAMPBOX_LOCK_WAIT={value!r}: expected a number of seconds") from None


class StoreBusy(LampboxError):
    """Another process held the store's lock for longer than this one would wait."""


class Store:
    """A lampbox store: one DuckDB file, migrated to the current schema on open.

    DuckDB lets one process open the file for writing, or any number for reading, not both. A
    store made with `hold_lock=False` (the bench, the TUI) gives the file back whenever its
    caller says it will compute for a while (`idle()`), and reopens it on next use; opening
    waits up to `wait_s` for another process's lock, then names that process (docs/store.md).
    Threads that share one store mark their use with `using()`, so that one thread's `idle()`
    never closes the file under another's query.
    """

    def __init__(
        self,
        path: str | Path | None = None,
        read_only: bool = False,
        *,
        hold_lock: bool = True,
        wait_s: float | None = None,
        purpose: str = "lampbox",
        upgradable: bool = False,
        on_wait: Callable[[str | None], None] | None = None,
    ) -> None:
        self.path = Path(path) if path is not None else default_db_path()
        self.read_only = read_only
        self.hold_lock = hold_lock
        self.wait_s = lock_wait_s() if wait_s is None else wait_s
        self.purpose = purpose  # who is writing, as a busy message names it: "bench 3f2a..."
        self.upgradable = upgradable  # read-only until the first write (see writable())
        if self.path.exists():
            check_duckdb_file(self.path)
        if not read_only:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        elif not self.path.exists():
            raise LampboxError(f"{self.path}: no lampbox store here")
        self._local = threading.local()
        self._open_lock = threading.RLock()
        self._epoch = 0  # bumped by every reconnect: older thread cursors are stale
        self._users: dict[int, int] = {}  # thread id -> depth of its `using()` blocks
        self._users_lock = threading.Lock()
        self._idle_wanted = False  # idle() was asked while another thread used the store
        self.last_used = time.monotonic()  # when the last `using()` block ended
        # Told who holds the lock while opening waits for it ("bench 3f2a1b0c (pid 4242)"),
        # then None once in: the TUI shows it in its status line.
        self.on_wait = on_wait
        self._closed = False
        self._connection: duckdb.DuckDBPyConnection | None = None
        self._connect()
        if not read_only:
            migrate(self._connection)  # type: ignore[arg-type]

    @classmethod
    def for_reading(
        cls, path: str | Path | None = None, wait_s: float | None = None, upgradable: bool = False
    ) -> Store:
        """A store opened read-only, so that readers run side by side and beside a bench
        between its writes; a new path is created, and a pending migration is applied first
        (the one time a reader needs the write lock). An `upgradable` store takes the write
        lock if its caller writes after all (`rank` when a ranking is not stored yet)."""
        target = Path(path) if path is not None else default_db_path()
        if not target.exists():
            return cls(target, wait_s=wait_s)
        store = cls(target, read_only=True, wait_s=wait_s, upgradable=upgradable)
        if not pending_migrations(store.connection):
            return store
        store.close()
        cls(target, wait_s=wait_s).close()
        return cls(target, read_only=True, wait_s=wait_s, upgradable=upgradable)

    # -- connections -------------------------------------------------------------------------

    def _connect(self) -> duckdb.DuckDBPyConnection:
        """Open the file, waiting with a growing backoff while another process holds it."""
        deadline = time.monotonic() + self.wait_s
        pause = 0.02
        holder = None  # who held the lock, once told to on_wait
        try:
            while True:
                try:
                    connection = duckdb.connect(str(self.path), read_only=self.read_only)
                    break
                except duckdb.IOException as error:
                    if not is_lock_error(str(error)):  # "Corrupt ... in block ..." is not a lock
                        raise store_error(self.path, error) from None
                    if time.monotonic() + pause > deadline:
                        raise StoreBusy(busy_message(self.path, str(error), self.wait_s)) from None
                    if self.on_wait is not None and holder is None:
                        holder = lock_holder(self.path, str(error))
                        self.on_wait(holder)
                    time.sleep(pause)
                    pause = min(pause * 2, 0.5)
                    if self._closed:  # closed by another thread (the TUI quitting) meanwhile
                        raise LampboxError(f"{self.path}: the store was closed") from None
                except duckdb.Error as error:
                    raise store_error(self.path, error, "not a lampbox store") from None
        finally:
            if holder is not None and self.on_wait is not None:
                self.on_wait(None)
        self._connection = connection
        self._epoch += 1
        if not self.read_only:
            write_holder(self.path, self.purpose)
        return connection

    @property
    def connection(self) -> duckdb.DuckDBPyConnection:
        """The connection of the thread that opened the store (reopened after `idle()`)."""
        with self._open_lock:
            if self._connection is None:
                if self._closed:
                    raise LampboxError(f"{self.path}: the store is closed")
                self._connect()
            return self._connection  # type: ignore[return-value]

    def cursor(self) -> duckdb.DuckDBPyConnection:
        """This thread's own cursor (DuckDB connections must not be shared across threads)."""
        if threading.current_thread() is threading.main_thread():
            return self.connection
        connection = self.connection
        cursor = getattr(self._local, "cursor", None)
        if cursor is None or getattr(self._local, "epoch", None) != self._epoch:
            cursor = connection.cursor()
            self._local.cursor, self._local.epoch = cursor, self._epoch
        return cursor

    def idle(self) -> None:
        """The caller will compute without the store for a while: a store that does not hold
        its lock closes the file, so other processes can read it (or write) until next use.
        While another thread is inside `using()`, the file closes when the last one leaves."""
        if self.hold_lock:
            return
        with self._open_lock:
            if self._used_by_others():
                self._idle_wanted = True
            else:
                self._disconnect()

    @contextmanager
    def using(self) -> Iterator[None]:
        """Around one thread's queries on a store that several threads share (the TUI's
        workers): `idle()` from another thread leaves the file open until the block ends."""
        me = threading.get_ident()
        with self._users_lock:
            self._users[me] = self._users.get(me, 0) + 1
        try:
            yield
        finally:
            with self._users_lock:
                depth = self._users.pop(me) - 1
                if depth:
                    self._users[me] = depth
                self.last_used = time.monotonic()
                closing = self._idle_wanted and not self._users
            if closing:
                self.idle()

    def _used_by_others(self) -> bool:
        me = threading.get_ident()
        with self._users_lock:
            return any(thread != me for thread in self._users)

    def release_if_unused(self, unused_for_s: float = 0.0) -> bool:
        """Close the file of a store that does not hold its lock when no thread has used it
        for `unused_for_s`; never waits (the TUI's main thread calls it on a timer). True when
        the file is closed afterwards."""
        if self.hold_lock:
            return self._connection is None
        if not self._open_lock.acquire(blocking=False):
            return False  # a thread is opening the file (maybe waiting for a lock)
        try:
            with self._users_lock:
                if self._users or time.monotonic() - self.last_used < unused_for_s:
                    return self._connection is None
            self._disconnect()
            return True
        finally:
            self._open_lock.release()

    @property
    def is_open(self) -> bool:
        """Whether this process has the file open now."""
        return self._connection is not None

    def _disconnect(self) -> None:
        with self._open_lock:
            self._idle_wanted = False
            if self._connection is None:
                return
            self._connection.close()
            self._connection = None
            if not self.read_only:
                remove_holder(self.path)

    def writable(self) -> None:
        """Before a write: an upgradable read-only store reopens the file for writing."""
        with self._open_lock:
            if self.read_only and self.upgradable:
                self._disconnect()
                self.read_only = False
                self._connect()

    @contextmanager
    def transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """All or nothing: commit at the end, roll back on any error (or interrupt)."""
        self.writable()
        cursor = self.cursor()
        cursor.execute("BEGIN TRANSACTION")
        try:
            yield cursor
        except BaseException:
            cursor.execute("ROLLBACK")
            raise
        cursor.execute("COMMIT")

    def close(self) -> None:
        self._closed = True
        self._disconnect()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- tasks -------------------------------------------------------------------------------

    def task(self, name: str) -> TaskSpec:
        """A built-in task, or a custom one declared in this store."""
        if name in BUILTIN_TASKS:
            return BUILTIN_TASKS[name]
        stored = self.stored_task(name)
        if stored is not None:
            return stored
        try:
            return builtin_task(name)
        except UnknownNameError:
            raise UnknownNameError("task", name, self.task_names()) from None

    def stored_task(self, name: str) -> TaskSpec | None:
        """The definition of a custom task as stored (None if this store has none by that name)."""
        row = self.cursor().execute("SELECT spec FROM tasks WHERE name = ?", [name]).fetchone()
        return None if row is None else TaskSpec.from_stored(json.loads(row[0]))

    def task_names(self) -> list[str]:
        stored = [row[0] for row in self.cursor().execute("SELECT name FROM tasks").fetchall()]
        return sorted(set(BUILTIN_TASKS) | set(stored))

    def save_task(self, spec: TaskSpec, source: str | None = None, cursor: duckdb.DuckDBPyConnection | None = None) -> None:
        cursor = cursor or self.cursor()
        cursor.execute("DELETE FROM tasks WHERE name = ?", [spec.name])
        cursor.execute(
            "INSERT INTO tasks (name, spec, custom, source) VALUES (?, ?, ?, ?)",
            [spec.name, json.dumps(spec.to_json()), spec.custom, source],
        )

    # -- what is stored ----------------------------------------------------------------------

    def datasets(self) -> list[DatasetSummary]:
        rows = self.cursor().execute(
            """
            SELECT q.task, q.scheme, q.split,
                   count(DISTINCT q.user_id), count(*), count(q.gold), avg(q.profile_size),
                   (SELECT count(DISTINCT qi.item_key) FROM question_items qi
                     JOIN questions q2 USING (task, scheme, question_id)
                    WHERE q2.task = q.task AND q2.scheme = q.scheme AND q2.split = q.split)
              FROM questions q
             GROUP BY q.task, q.scheme, q.split
            """
        ).fetchall()
        split_order = {"train": 0, "dev": 1, "test": 2}
        summaries = [
            DatasetSummary(task, scheme, split, users, questions, golds, float(mean or 0.0), items)
            for task, scheme, split, users, questions, golds, mean, items in rows
        ]
        return sorted(summaries, key=lambda s: (s.task, s.scheme, split_order.get(s.split, 9), s.split))

    def schemes(self, task: str, split: str | None = None) -> list[str]:
        """The split schemes (user, time, demo) stored for a task (holding `split`, if given)."""
        sql = "SELECT DISTINCT scheme FROM questions WHERE task = ?"
        params: list[Any] = [task]
        if split is not None:
            sql += " AND split = ?"
            params.append(split)
        order = {"user": 0, "time": 1, "demo": 2}
        return sorted((row[0] for row in self.cursor().execute(sql, params).fetchall()), key=lambda s: (order.get(s, 9), s))

    def resolve_scheme(self, task: str, split: str, scheme: str | None = None) -> str:
        """The scheme to use for (task, split): the one asked for, or the only/first stored."""
        stored = self.schemes(task, split)
        if scheme is not None:
            if scheme not in stored:
                have = ", ".join(stored) or "none"
                raise LampboxError(
                    f"no {task} {split} questions with the {scheme} split in {self.path} (stored: {have}); "
                    f"import them with `lampbox data import` or `lampbox data fetch {task}`"
                )
            return scheme
        if not stored:
            raise LampboxError(
                f"no {task} {split} questions in {self.path}; get them with `lampbox data fetch {task}`, "
                "`lampbox data import PATH`, or try the demo data: `lampbox data demo`"
            )
        return stored[0]

    def count_questions(self, task: str, scheme: str, split: str, user_ids: Sequence[str] | None = None) -> int:
        """The questions of one split (of `user_ids` only, when given)."""
        sql = "SELECT count(*) FROM questions WHERE task = ? AND scheme = ? AND split = ?"
        params: list[Any] = [task, scheme, split]
        if user_ids is not None:
            sql += " AND user_id IN (SELECT unnest(?))"
            params.append(list(user_ids))
        row = self.cursor().execute(sql, params).fetchone()
        return int(row[0]) if row else 0

    # -- reading questions and profiles ------------------------------------------------------

    def questions(
        self,
        task: str,
        scheme: str,
        split: str,
        limit: int | None = None,
        user_ids: Sequence[str] | None = None,
        question_ids: Sequence[str] | None = None,
        with_profiles: bool = True,
        skip: int = 0,
    ) -> list[Question]:
        """Questions of one split in file order, with their profiles (in profile order): the
        first `skip` left out, then the first `limit` of the rest."""
        sql = "SELECT question_id, user_id, input, gold FROM questions WHERE task = ? AND scheme = ? AND split = ?"
        params: list[Any] = [task, scheme, split]
        if user_ids is not None:
            sql += " AND user_id IN (SELECT unnest(?))"
            params.append(list(user_ids))
        if question_ids is not None:
            sql += " AND question_id IN (SELECT unnest(?))"
            params.append(list(question_ids))
        sql += " ORDER BY position"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        if skip:
            sql += f" OFFSET {int(skip)}"
        rows = self.cursor().execute(sql, params).fetchall()
        profiles = self._profiles(task, scheme, [row[0] for row in rows]) if with_profiles else {}
        return [
            Question(task, scheme, split, qid, user_id, text, gold, tuple(profiles.get(qid, ())))
            for qid, user_id, text, gold in rows
        ]

    def _profiles(self, task: str, scheme: str, question_ids: list[str]) -> dict[str, list[ProfileItem]]:
        if not question_ids:
            return {}
        rows = self.cursor().execute(
            """
            SELECT qi.question_id, p.item_key, p.item_id, p.fields, p.date
              FROM question_items qi
              JOIN profile_items p ON p.task = qi.task AND p.item_key = qi.item_key
             WHERE qi.task = ? AND qi.scheme = ? AND qi.question_id IN (SELECT unnest(?))
             ORDER BY qi.question_id, qi.position
            """,
            [task, scheme, question_ids],
        ).fetchall()
        profiles: dict[str, list[ProfileItem]] = {}
        decoded: dict[str, ProfileItem] = {}
        for qid, key, item_id, fields, date in rows:
            item = decoded.get(key)
            if item is None:
                item = decoded[key] = ProfileItem(key, item_id, json.loads(fields), date)
            profiles.setdefault(qid, []).append(item)
        return profiles

    def first_users(
        self, task: str, scheme: str, split: str, count: int | None = None, *, min_profile: int | None = None
    ) -> list[str]:
        """The first `count` users of a split (None: all), in file order; with `min_profile`,
        only users whose every question has at least that many profile items (a user's
        history is the smallest profile among their questions)."""
        sql = "SELECT user_id FROM questions WHERE task = ? AND scheme = ? AND split = ? GROUP BY user_id"
        params: list[Any] = [task, scheme, split]
        if min_profile is not None:
            sql += " HAVING min(profile_size) >= ?"
            params.append(min_profile)
        sql += " ORDER BY min(position)"
        if count is not None:
            sql += " LIMIT ?"
            params.append(count)
        return [row[0] for row in self.cursor().execute(sql, params).fetchall()]


_HOLDING: set[Path] = set()


def holder_path(path: Path) -> Path:
    """Beside the store, while a lampbox process has it open for writing: who that is."""
    return path.with_name(path.name + ".writer")


def write_holder(path: Path, purpose: str) -> None:
    with suppress(OSError):
        staged = holder_path(path).with_name(f"{holder_path(path).name}.{os.getpid()}.tmp")
        staged.write_text(json.dumps({"pid": os.getpid(), "purpose": purpose}))
        staged.replace(holder_path(path))
        if path not in _HOLDING:  # a store left open at exit leaves no note behind
            _HOLDING.add(path)
            atexit.register(remove_holder, path)


def remove_holder(path: Path) -> None:
    with suppress(OSError, ValueError):
        if json.loads(holder_path(path).read_text()).get("pid") == os.getpid():
            holder_path(path).unlink()


def lock_holder(path: Path, error: str) -> str:
    """Who holds the store's lock: 'bench 3f2a1b0c (pid 4242)' when it is a lampbox process
    that said what it does; DuckDB's own words (program and pid) otherwise."""
    match = re.search(r"held in (.*?) \(PID (\d+)\)", error)
    pid = int(match.group(2)) if match else None
    who = f"{match.group(1)} (pid {pid})" if match else "another process"
    with suppress(OSError, ValueError, AttributeError):
        holder = json.loads(holder_path(path).read_text())
        if holder.get("pid") == pid:
            who = f"{holder['purpose']} (pid {pid})"
    return who


def busy_message(path: Path, error: str, waited_s: float) -> str:
    """'busy: bench 3f2a is writing', naming the lock holder (`lock_holder`)."""
    who = lock_holder(path, error)
    return (
        f"{path}: busy: {who} is writing to the store; waited {waited_s:g} s. "
        "Try again when it finishes (readers get in between a bench's writes)."
    )


def open_store(path: str | Path | None = None, read_only: bool = False) -> Store:
    return Store(path, read_only=read_only)
