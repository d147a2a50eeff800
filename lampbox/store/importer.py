"""Importing LaMP-format files into the store, all or nothing.

Every file is read and validated before the store is touched; then one transaction replaces
the splits whose files changed (a split whose files hash the same as last time is skipped,
so re-importing changes nothing). A failure, Ctrl-C or a kill leaves the store as it was.
A custom task's definition (task.json) is part of its identity: a changed one is refused
unless the caller asks to replace it, and then every file is checked against it again.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lampbox.engine.fingerprint import file_sha256, task_fingerprint
from lampbox.engine.tasks import BUILTIN_TASKS, SETS, TaskSpec, detect_task, load_task_json
from lampbox.errors import InputFileError, LampboxError
from lampbox.lampfiles import read_json, validate_outputs, validate_questions
from lampbox.store.core import Store

_QUESTIONS_RE = re.compile(r"^(?:(?P<split>[A-Za-z0-9]+)_)?questions\.json(?:\.gz)?$")


@dataclass(frozen=True)
class SplitFiles:
    """The files of one split: questions, and outputs (golds) when they are public."""

    split: str
    questions: Path
    outputs: Path | None


@dataclass
class SplitReport:
    split: str
    status: str  # "imported" | "unchanged"
    questions: int
    golds: int
    new_items: int = 0


@dataclass
class ImportReport:
    task: str
    scheme: str
    splits: list[SplitReport] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    task_status: str = "unchanged"  # a custom task's definition: "new" | "unchanged" | "replaced"
    task_changes: list[str] = field(default_factory=list)  # the task.json keys that changed


def find_split_files(path: Path) -> list[SplitFiles]:
    """The LaMP files under a folder (official layout or flat), or one questions file."""
    if path.is_file():
        candidates = [path]
    elif path.is_dir():
        candidates = sorted(
            candidate
            for pattern in ("*questions.json", "*questions.json.gz")
            for candidate in path.rglob(pattern)
            if len(candidate.relative_to(path).parts) <= 3
        )
    else:
        raise InputFileError(path, "no such file or folder")
    found: dict[str, SplitFiles] = {}
    for questions in candidates:
        match = _QUESTIONS_RE.match(questions.name)
        if not match:
            raise InputFileError(questions, "not named like a LaMP questions file ({split}_questions.json)")
        split = match.group("split") or questions.parent.name
        if split not in SETS:
            raise InputFileError(questions, f"cannot tell the split (train, dev or test) from {questions.name!r}")
        if split in found:
            raise InputFileError(questions, f"a second {split} questions file (first: {found[split].questions})")
        outputs_name = questions.name.replace("questions", "outputs")
        outputs = questions.with_name(outputs_name)
        if not outputs.exists():
            alternative = questions.with_name(outputs_name[:-3] if outputs_name.endswith(".gz") else outputs_name + ".gz")
            outputs = alternative
        found[split] = SplitFiles(split, questions, outputs if outputs.exists() else None)
    if not found:
        raise InputFileError(path, "no LaMP questions files here (expected {train,dev,test}_questions.json)")
    return [found[split] for split in SETS if split in found]


def resolve_task(path: Path, task_name: str | None, store: Store) -> tuple[TaskSpec, str | None]:
    """The task for an import: task.json in the folder, --task, or detected from the files."""
    folder = path if path.is_dir() else path.parent
    declaration = folder / "task.json"
    if declaration.exists():
        spec = load_task_json(declaration)
        if task_name is not None and task_name != spec.name:
            raise InputFileError(declaration, f"declares task {spec.name!r}, but --task {task_name} was given")
        return spec, str(declaration.resolve())
    if task_name is not None:
        return store.task(task_name), None
    return _detect_from_files(find_split_files(path)), None


def _detect_from_files(files: list[SplitFiles]) -> TaskSpec:
    first = files[0].questions
    data = read_json(first)
    if isinstance(data, list) and data and isinstance(data[0], dict) and isinstance(data[0].get("input"), str):
        spec = detect_task(data[0]["input"])
        if spec is not None:
            return spec
    raise InputFileError(first, "cannot tell which LaMP task this is; name it with --task (or add a task.json)")


@dataclass
class _ParsedSplit:
    files: SplitFiles
    questions: list[dict[str, Any]]
    golds: dict[str, str] | None
    questions_sha: str
    outputs_sha: str | None


def import_path(
    store: Store,
    path: str | Path,
    task_name: str | None = None,
    scheme: str | None = None,
    sets: list[str] | None = None,
    allow_empty_profiles: bool = False,
    on_progress: Callable[[str], None] | None = None,
    replace_task: bool = False,
) -> ImportReport:
    """Import a folder (or one questions file) of LaMP-format data into the store.

    A custom task whose task.json differs from the stored definition is refused unless
    `replace_task`: its definition is part of its identity (runs are keyed by it)."""
    path = Path(path)
    spec, source = resolve_task(path, task_name, store)
    files = find_split_files(path)
    if sets is not None:
        files = [split_files for split_files in files if split_files.split in sets]
        if not files:
            raise InputFileError(path, f"no {', '.join(sets)} questions files here")
    if scheme is None:
        parts = {part.lower() for part in path.resolve().parts}
        scheme = "time" if "time" in parts else spec.default_split
    return import_files(store, spec, scheme, files, source, allow_empty_profiles, on_progress, replace_task)


def import_files(
    store: Store,
    spec: TaskSpec,
    scheme: str,
    files: list[SplitFiles],
    source: str | None = None,
    allow_empty_profiles: bool = False,
    on_progress: Callable[[str], None] | None = None,
    replace_task: bool = False,
) -> ImportReport:
    """Validate every file, then import them in one transaction."""
    report = ImportReport(spec.name, scheme)
    if spec.custom:
        _check_task_definition(store, spec, source, replace_task, report)
    task_changed = report.task_status != "unchanged"
    parsed: list[_ParsedSplit] = []
    for split_files in files:
        hashes = _file_hashes(split_files)
        unchanged = _stored_hashes(store, spec.name, scheme, split_files.split) == hashes
        if unchanged and not task_changed:
            report.splits.append(_unchanged_report(store, spec.name, scheme, split_files.split))
            continue
        if on_progress:
            on_progress(f"reading {split_files.questions.name}")
        split = _parse_split(spec, split_files, hashes, allow_empty_profiles, report.warnings)
        if unchanged:  # read only to check the files against the new definition
            report.splits.append(_unchanged_report(store, spec.name, scheme, split_files.split))
        else:
            parsed.append(split)
    if not parsed and not task_changed:
        return report
    _check_splits_disjoint(parsed)
    if report.task_status == "replaced":
        _check_stored_golds(store, spec, source, {(scheme, split.files.split) for split in parsed})
    with store.transaction() as cursor:
        if spec.custom:
            store.save_task(spec, source, cursor)
        elif spec.name not in BUILTIN_TASKS:
            raise LampboxError(f"unknown task {spec.name}")
        replaced = False
        for split in parsed:
            if on_progress:
                on_progress(f"storing {spec.name} {scheme} {split.files.split}")
            split_report = _store_split(cursor, spec, scheme, split)
            replaced = replaced or split_report.status == "imported"
            report.splits.append(split_report)
        if replaced:
            _collect_garbage(cursor, spec.name, scheme)
    return report


def _check_task_definition(
    store: Store, spec: TaskSpec, source: str | None, replace_task: bool, report: ImportReport
) -> None:
    """Compare a custom task with its stored definition; a changed one needs `replace_task`."""
    stored = store.stored_task(spec.name)
    if stored is None:
        report.task_status = "new"
        return
    if task_fingerprint(stored) == task_fingerprint(spec):
        return
    old, new = stored.to_json(), spec.to_json()
    changes = [key for key in new if old.get(key) != new.get(key)]
    if not replace_task:
        where = source or spec.name
        raise InputFileError(
            where,
            f"task {spec.name} differs from its stored definition (changed: {', '.join(changes)}); "
            "import with --replace-task to replace it (runs made under the old definition keep their results, apart)",
        )
    report.task_status = "replaced"
    report.task_changes = changes


def _check_stored_golds(store: Store, spec: TaskSpec, source: str | None, replaced: set[tuple[str, str]]) -> None:
    """Golds already stored (in splits this import does not replace) must fit new labels."""
    if spec.kind != "classification":
        return
    rows = store.cursor().execute(
        "SELECT DISTINCT scheme, split, gold FROM questions WHERE task = ? AND gold IS NOT NULL", [spec.name]
    ).fetchall()
    kept: dict[tuple[str, str], list[str]] = {}
    for scheme, split, gold in rows:
        if (scheme, split) not in replaced:
            kept.setdefault((scheme, split), []).append(gold)
    for (scheme, split), golds in sorted(kept.items()):
        problem = golds_outside_labels(spec, golds)
        if problem:
            raise InputFileError(source or spec.name, f"the new definition does not fit the stored {scheme} {split} golds: {problem}")


def _file_hashes(files: SplitFiles) -> tuple[str, str | None]:
    def digest(path: Path) -> str:  # data files change in place: hashed afresh every import
        return file_sha256(path, cached=False)

    return digest(files.questions), (None if files.outputs is None else digest(files.outputs))


def _stored_hashes(store: Store, task: str, scheme: str, split: str) -> tuple[str, str | None] | None:
    row = store.cursor().execute(
        "SELECT questions_sha256, outputs_sha256 FROM imports WHERE task = ? AND scheme = ? AND split = ?",
        [task, scheme, split],
    ).fetchone()
    return None if row is None else (row[0], row[1])


def _unchanged_report(store: Store, task: str, scheme: str, split: str) -> SplitReport:
    row = store.cursor().execute(
        "SELECT n_questions, n_golds FROM imports WHERE task = ? AND scheme = ? AND split = ?", [task, scheme, split]
    ).fetchone()
    return SplitReport(split, "unchanged", int(row[0]), int(row[1]))


def _parse_split(
    spec: TaskSpec, files: SplitFiles, hashes: tuple[str, str | None], allow_empty: bool, warnings: list[str]
) -> _ParsedSplit:
    questions = validate_questions(read_json(files.questions), files.questions, allow_empty)
    _check_inputs_fit_task(spec, files.questions, questions, warnings)
    _check_profile_documents(spec, files.questions, questions)
    golds = None
    if files.outputs is not None:
        file_task, golds = validate_outputs(read_json(files.outputs), files.outputs)
        if file_task is not None and file_task != spec.file_task:
            raise InputFileError(files.outputs, f"is an outputs file for {file_task}, not {spec.file_task}")
        question_ids = {question["id"] for question in questions}
        _check_same_ids(files.outputs, set(golds), question_ids, files.questions)
        problem = golds_outside_labels(spec, golds.values())
        if problem:
            raise InputFileError(files.outputs, problem)
    return _ParsedSplit(files, questions, golds, hashes[0], hashes[1])


def _check_profile_documents(spec: TaskSpec, path: Path, questions: list[dict[str, Any]]) -> None:
    """Every profile item has at least one of the task's document fields (else it is an empty
    document: retrieval and prompts would see nothing of it)."""
    document = spec.document
    for question in questions:
        for item in question["profile"]:
            if not any(item.get(name) is not None for name in document):
                raise InputFileError(
                    path,
                    f"question {question['id']!r}: profile item {item['id']!r} has none of "
                    f"{spec.name}'s document fields ({', '.join(document)})",
                )


def golds_outside_labels(spec: TaskSpec, golds: Iterable[str]) -> str | None:
    """A classification task's golds must be its labels (compared stripped, as eval does)."""
    if spec.kind != "classification":
        return None
    labels = set(spec.labels)
    outside = [gold for gold in golds if gold.strip() not in labels]
    if not outside:
        return None
    distinct = list(dict.fromkeys(gold.strip() for gold in outside))
    shown = ", ".join(repr(gold) for gold in distinct[:3]) + (f" and {len(distinct) - 3} more" if len(distinct) > 3 else "")
    return f"{len(outside)} gold(s) are not {spec.name} labels: {shown}"


def _check_same_ids(path: Path, found: set[str], expected: set[str], other: Path) -> None:
    if found == expected:
        return
    missing = sorted(expected - found)
    extra = sorted(found - expected)
    parts = []
    if missing:
        parts.append(f"{len(missing)} id(s) of {other.name} missing (first: {missing[0]!r})")
    if extra:
        parts.append(f"{len(extra)} id(s) not in {other.name} (first: {extra[0]!r})")
    raise InputFileError(path, "ids do not match the questions: " + "; ".join(parts))


def _check_inputs_fit_task(spec: TaskSpec, path: Path, questions: list[dict[str, Any]], warnings: list[str]) -> None:
    first = questions[0]["input"]
    if spec.custom:
        if spec.input_prefix and not first.startswith(spec.input_prefix):
            warnings.append(f"{path}: inputs do not start with {spec.name}'s input_prefix")
        return
    detected = detect_task(first)
    if detected is not None and detected.name != spec.name:
        raise InputFileError(path, f"holds {detected.name} questions, not {spec.name}")
    if detected is None:
        warnings.append(f"{path}: inputs do not start like {spec.name} inputs ({spec.input_prefix!r})")


def _check_splits_disjoint(parsed: list[_ParsedSplit]) -> None:
    owner: dict[str, str] = {}
    for split in parsed:
        for question in split.questions:
            previous = owner.setdefault(question["id"], split.files.split)
            if previous != split.files.split:
                raise InputFileError(
                    split.files.questions, f"question id {question['id']!r} is also in the {previous} split"
                )


def _item_key(user_id: str, item: dict[str, Any]) -> str:
    canonical = json.dumps([user_id, item], sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.blake2b(canonical.encode("utf-8"), digest_size=10).hexdigest()


def _store_split(cursor: Any, spec: TaskSpec, scheme: str, split: _ParsedSplit) -> SplitReport:
    task, name = spec.name, split.files.split
    n_golds = len(split.golds or {})
    question_ids = [question["id"] for question in split.questions]
    clash = cursor.execute(
        "SELECT question_id, split FROM questions WHERE task = ? AND scheme = ? AND split <> ? "
        "AND question_id IN (SELECT unnest(?)) LIMIT 1",
        [task, scheme, name, question_ids],
    ).fetchone()
    if clash is not None:
        raise InputFileError(
            split.files.questions, f"question id {clash[0]!r} is already stored in the {clash[1]} split of {task} ({scheme})"
        )
    cursor.execute(
        "DELETE FROM question_items WHERE task = ? AND scheme = ? AND question_id IN "
        "(SELECT question_id FROM questions WHERE task = ? AND scheme = ? AND split = ?)",
        [task, scheme, task, scheme, name],
    )
    cursor.execute("DELETE FROM questions WHERE task = ? AND scheme = ? AND split = ?", [task, scheme, name])

    q_users: list[str] = []
    q_inputs: list[str] = []
    q_golds: list[str | None] = []
    q_sizes: list[int] = []
    item_keys: list[str] = []
    item_users: list[str] = []
    item_ids: list[str] = []
    item_dates: list[str | None] = []
    item_fields: list[str] = []
    link_questions: list[str] = []
    link_positions: list[int] = []
    link_keys: list[str] = []
    known: dict[tuple[str, str], list[tuple[dict[str, Any], str]]] = {}
    new_keys: set[str] = set()
    golds = split.golds or {}
    for question in split.questions:
        qid = question["id"]
        user_id = question["user_id"] if question["user_id"] is not None else qid
        q_users.append(user_id)
        q_inputs.append(question["input"])
        q_golds.append(golds.get(qid))
        q_sizes.append(len(question["profile"]))
        for position, item in enumerate(question["profile"]):
            versions = known.setdefault((user_id, item["id"]), [])
            key = next((version_key for version, version_key in versions if version == item), None)
            if key is None:
                key = _item_key(user_id, item)
                versions.append((item, key))
                if key not in new_keys:
                    new_keys.add(key)
                    date = item.get("date")
                    item_keys.append(key)
                    item_users.append(user_id)
                    item_ids.append(item["id"])
                    item_dates.append(None if date is None else str(date))
                    item_fields.append(
                        json.dumps({k: v for k, v in item.items() if k not in ("id", "date")}, ensure_ascii=False)
                    )
            link_questions.append(qid)
            link_positions.append(position)
            link_keys.append(key)

    cursor.execute(
        """
        INSERT INTO questions (task, scheme, split, question_id, user_id, input, gold, position, profile_size)
        SELECT ?, ?, ?, unnest(?), unnest(?), unnest(?), unnest(?::VARCHAR[]), unnest(?), unnest(?)
        """,
        [task, scheme, name, question_ids, q_users, q_inputs, q_golds, list(range(len(question_ids))), q_sizes],
    )
    before = cursor.execute("SELECT count(*) FROM profile_items WHERE task = ?", [task]).fetchone()[0]
    cursor.execute(
        """
        INSERT INTO profile_items (task, item_key, user_id, item_id, date, fields)
        SELECT ?, n.item_key, n.user_id, n.item_id, n.date, n.fields
          FROM (SELECT unnest(?) AS item_key, unnest(?) AS user_id, unnest(?) AS item_id,
                       unnest(?::VARCHAR[]) AS date, unnest(?) AS fields) n
         WHERE n.item_key NOT IN (SELECT item_key FROM profile_items WHERE task = ?)
        """,
        [task, item_keys, item_users, item_ids, item_dates, item_fields, task],
    )
    after = cursor.execute("SELECT count(*) FROM profile_items WHERE task = ?", [task]).fetchone()[0]
    cursor.execute(
        """
        INSERT INTO question_items (task, scheme, question_id, position, item_key)
        SELECT ?, ?, unnest(?), unnest(?), unnest(?)
        """,
        [task, scheme, link_questions, link_positions, link_keys],
    )
    cursor.execute(
        """
        INSERT INTO users (task, scheme, user_id)
        SELECT DISTINCT ?, ?, u.user_id FROM (SELECT unnest(?) AS user_id) u
         WHERE u.user_id NOT IN (SELECT user_id FROM users WHERE task = ? AND scheme = ?)
        """,
        [task, scheme, q_users, task, scheme],
    )
    cursor.execute("DELETE FROM imports WHERE task = ? AND scheme = ? AND split = ?", [task, scheme, name])
    cursor.execute(
        """
        INSERT INTO imports (task, scheme, split, questions_path, questions_sha256, outputs_path,
                             outputs_sha256, n_questions, n_golds)
        VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
        """,
        [
            task, scheme, name, str(split.files.questions.resolve()), split.questions_sha,
            None if split.files.outputs is None else str(split.files.outputs.resolve()),
            split.outputs_sha, len(question_ids), n_golds,
        ],  # fmt: skip
    )
    return SplitReport(name, "imported", len(question_ids), n_golds, after - before)


def _collect_garbage(cursor: Any, task: str, scheme: str) -> None:
    """Drop items and users that no stored question refers to any more."""
    cursor.execute(
        """
        DELETE FROM profile_items WHERE task = ? AND item_key NOT IN
            (SELECT DISTINCT item_key FROM question_items WHERE task = ?)
        """,
        [task, task],
    )
    cursor.execute(
        """
        DELETE FROM users WHERE task = ? AND scheme = ? AND user_id NOT IN
            (SELECT DISTINCT user_id FROM questions WHERE task = ? AND scheme = ?)
        """,
        [task, scheme, task, scheme],
    )

