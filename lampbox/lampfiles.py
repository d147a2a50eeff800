"""Reading and validating files in the official LaMP formats (plain .json or .json.gz).

Every problem becomes an InputFileError naming the file and the problem in one line.
"""

from __future__ import annotations

import gzip
import json
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lampbox.errors import InputFileError


def read_json(path: str | Path) -> Any:
    """Parse a JSON (or gzip-compressed JSON) file, with clear errors."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise InputFileError(path, "no such file") from None
    except IsADirectoryError:
        raise InputFileError(path, "is a folder, not a file") from None
    except OSError as error:
        raise InputFileError(path, f"cannot read: {error.strerror}") from None
    return parse_json_bytes(raw, path)


def parse_json_bytes(raw: bytes, where: str | Path) -> Any:
    """Parse JSON bytes (gzip-compressed or not); errors name `where` (a file or archive member)."""
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as error:
            raise InputFileError(where, f"corrupt gzip data ({error})") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise InputFileError(where, f"not UTF-8 text (invalid byte 0x{raw[error.start]:02x} at offset {error.start})") from None
    if text.startswith("\ufeff"):
        text = text[1:]
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise InputFileError(where, json_error_problem(error)) from None


def json_error_problem(error: json.JSONDecodeError) -> str:
    """'malformed JSON: <what> at line L, column C' (some of json's messages end in "at" already:
    "Unterminated string starting at")."""
    what = error.msg.removesuffix(" at")
    return f"malformed JSON: {what} at line {error.lineno}, column {error.colno}"


def _as_id(value: Any, path: Path, what: str) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise InputFileError(path, f"{what} has no usable id (got {value!r})")
    return str(value)


def validate_questions(data: Any, path: str | Path, allow_empty_profiles: bool = False) -> list[dict[str, Any]]:
    """Check a questions file: a list of {id, input, profile: [{id, ...}], user_id?}.

    Returns the questions with ids normalised to strings.
    """
    path = Path(path)
    if not isinstance(data, list):
        raise InputFileError(path, "a questions file must be a JSON array of questions")
    if not data:
        raise InputFileError(path, "the questions file is empty")
    seen: set[str] = set()
    questions: list[dict[str, Any]] = []
    for index, question in enumerate(data):
        if not isinstance(question, Mapping):
            raise InputFileError(path, f"question #{index} is not an object")
        if "id" not in question:
            raise InputFileError(path, f"question #{index} has no id")
        qid = _as_id(question["id"], path, f"question #{index}")
        if qid in seen:
            raise InputFileError(path, f"question id {qid!r} appears twice")
        seen.add(qid)
        text = question.get("input")
        if not isinstance(text, str):
            raise InputFileError(path, f"question {qid!r} has no input text")
        if "profile" not in question:
            raise InputFileError(path, f"question {qid!r} has no profile (is this an outputs file?)")
        profile = question["profile"]
        if not isinstance(profile, list):
            raise InputFileError(path, f"question {qid!r}: profile must be a list of items")
        if not profile and not allow_empty_profiles:
            raise InputFileError(path, f"question {qid!r} has an empty profile (use --allow-empty-profiles to import it anyway)")
        items = []
        for position, item in enumerate(profile):
            if not isinstance(item, Mapping):
                raise InputFileError(path, f"question {qid!r}: profile item #{position} is not an object")
            if "id" not in item:
                raise InputFileError(path, f"question {qid!r}: profile item #{position} has no id")
            items.append({**item, "id": _as_id(item["id"], path, f"question {qid!r} profile item #{position}")})
        user = question.get("user_id")
        questions.append(
            {
                "id": qid,
                "input": text,
                "profile": items,
                "user_id": None if user is None else str(user),
            }
        )
    return questions


def validate_outputs(data: Any, path: str | Path) -> tuple[str | None, dict[str, str]]:
    """Check an outputs (golds or predictions) file: {"task": ..., "golds": [{id, output}]}.

    Returns (task, {id: output}).
    """
    path = Path(path)
    if isinstance(data, list):
        if data and isinstance(data[0], Mapping) and "profile" in data[0]:
            raise InputFileError(path, "this is a questions file, not an outputs file")
        raise InputFileError(path, 'an outputs file must be an object {"task": ..., "golds": [...]}')
    if not isinstance(data, Mapping):
        raise InputFileError(path, 'an outputs file must be an object {"task": ..., "golds": [...]}')
    golds = data.get("golds")
    if not isinstance(golds, list):
        raise InputFileError(path, 'has no "golds" list')
    task = data.get("task")
    outputs: dict[str, str] = {}
    for index, gold in enumerate(golds):
        if not isinstance(gold, Mapping) or "id" not in gold:
            raise InputFileError(path, f"entry #{index} of golds has no id")
        gid = _as_id(gold["id"], path, f"entry #{index} of golds")
        if gid in outputs:
            raise InputFileError(path, f"id {gid!r} appears twice")
        output = gold.get("output")
        if output is None:
            raise InputFileError(path, f"id {gid!r} has no output text")
        if isinstance(output, bool) or not isinstance(output, (str, int, float)):
            kind = {bool: "a boolean", list: "a list", dict: "an object"}.get(type(output), type(output).__name__)
            shown = json.dumps(output, ensure_ascii=False)
            shown = shown if len(shown) <= 40 else shown[:37] + "..."
            raise InputFileError(path, f"id {gid!r}: output is {kind} ({shown}), not a string")
        outputs[gid] = str(output)
    return (None if task is None else str(task)), outputs


def write_outputs(path: str | Path, task: str, outputs: Mapping[str, str], decode: str | None = None) -> None:
    """Write an outputs file in the official format, atomically; `decode` (how a model's
    predictions were decoded) is one more key, which the official evaluation ignores."""
    golds = [{"id": qid, "output": text} for qid, text in outputs.items()]
    write_json_atomic(path, {"task": task, **({"decode": decode} if decode else {}), "golds": golds})


def write_json_atomic(path: str | Path, data: Any, indent: int | None = None) -> None:
    """Write JSON to a temporary file beside `path`, then rename it into place."""
    import os
    import tempfile

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            json.dump(data, stream, ensure_ascii=False, indent=indent)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    """Write bytes to a temporary file beside `path`, then rename it into place (a reader
    never sees a half-written file; on an error the old file, if any, stays)."""
    import os
    import tempfile

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)  # mkstemp's 0600 would make a shared report private
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
