"""Building LaMP_6 (email subject generation) from a licensed copy of the Avocado corpus.

The LaMP authors publish only ids: in their LaMP_6 questions files a question's `input` and
each profile item's `text` name an Avocado email file (one file per email, RFC 822 headers,
a blank line, then the body), stored in one zip archive per custodian under
`avocado-1.0.2/data/text/`. This module reads those archives in place (nothing is extracted
to disk), swaps every id for the email's body and subject, and writes LaMP-format files:
the question input becomes "Generate a subject for the following email: {body}", the gold is
the subject, and each profile item gets `title` (subject) and `text` (body).
"""

from __future__ import annotations

import email
import email.errors
import email.header
import email.policy
import email.utils
import re
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from email.message import Message
from pathlib import Path, PurePosixPath
from typing import Any

from lampbox.engine.tasks import BUILTIN_TASKS, SETS
from lampbox.errors import InputFileError, LampboxError
from lampbox.lampfiles import read_json, validate_questions, write_json_atomic
from lampbox.store.importer import SplitFiles, find_split_files

INPUT_PREFIX = "Generate a subject for the following email: "
_DRIVE_RE = re.compile(r"^[A-Za-z]:")


@dataclass(frozen=True)
class Email:
    """One Avocado email: its subject, its body and (when the header parses) its date."""

    subject: str
    body: str
    date: str | None


def find_archives(avocado_dir: Path) -> list[Path]:
    """The per-custodian zip archives: DIR may be the corpus root or its data/text folder."""
    if not avocado_dir.is_dir():
        raise InputFileError(avocado_dir, "no such folder")
    for folder in (
        avocado_dir / "data" / "text",
        avocado_dir / "avocado-1.0.2" / "data" / "text",
        avocado_dir,
    ):
        archives = sorted(folder.glob("*.zip"))
        if archives:
            return archives
    raise InputFileError(
        avocado_dir, "no .zip archives here (expected avocado-1.0.2/data/text/*.zip)"
    )


def check_member_name(archive: Path, name: str) -> None:
    """Refuse a member whose path would land outside the folder it is extracted into."""
    normalized = name.replace("\\", "/")
    parts = PurePosixPath(normalized).parts
    if normalized.startswith("/") or _DRIVE_RE.match(normalized) or ".." in parts:
        raise InputFileError(
            archive,
            f"member {name!r} would escape the extraction folder (absolute path or '..'); refusing this archive",
        )


def parse_email(raw: bytes) -> Email:
    """Subject, plain-text body and date of one email file (headers, blank line, body)."""
    message = email.message_from_bytes(raw, policy=email.policy.compat32)
    subject = _header_text(message.get("Subject"))
    body = _plain_body(message)
    date = None
    if message.get("Date"):
        try:
            date = email.utils.parsedate_to_datetime(str(message["Date"])).date().isoformat()
        except (TypeError, ValueError, IndexError):
            date = None
    return Email(subject=" ".join(subject.split()), body=body.strip(), date=date)


def _header_text(value: Any) -> str:
    if value is None:
        return ""
    try:
        return str(email.header.make_header(email.header.decode_header(str(value))))
    except (UnicodeDecodeError, LookupError, email.errors.HeaderParseError):
        return str(value)


def _plain_body(message: Message) -> str:
    """The first text/plain part (the whole body of a single-part email), decoded."""
    plain_parts = [part for part in message.walk() if not part.is_multipart()]
    part = next((p for p in plain_parts if p.get_content_type() == "text/plain"), None)
    if part is None:  # no plain text: fall back to any text part (e.g. HTML), as it is
        part = next((p for p in plain_parts if p.get_content_maintype() == "text"), None)
    if part is None:
        return ""
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes):
        text = part.get_payload()
        return text if isinstance(text, str) else ""
    charset = part.get_content_charset() or "utf-8"
    try:
        return payload.decode(charset)
    except (LookupError, UnicodeDecodeError):
        return payload.decode("latin-1")


def read_emails(
    archives: list[Path],
    wanted: set[str],
    on_archive: Callable[[int, int, str], None] | None = None,
) -> dict[str, Email]:
    """The wanted emails (matched by file name, with or without extension) from the archives."""
    found: dict[str, Email] = {}
    for index, archive in enumerate(archives):
        if on_archive:
            on_archive(index, len(archives), archive.name)
        try:
            with zipfile.ZipFile(archive) as zipped:
                for member in zipped.infolist():
                    check_member_name(archive, member.filename)
                    if member.is_dir():
                        continue
                    file_name = PurePosixPath(member.filename.replace("\\", "/")).name
                    key = file_name if file_name in wanted else file_name.rsplit(".", 1)[0]
                    if key in wanted and key not in found:
                        found[key] = parse_email(zipped.read(member))
        except zipfile.BadZipFile as error:
            raise InputFileError(archive, f"not a readable zip archive ({error})") from None
    if on_archive:
        on_archive(len(archives), len(archives), "")
    return found


def read_id_files(question_paths: list[Path]) -> dict[str, tuple[Path, list[dict[str, Any]]]]:
    """The LaMP_6 id files by split ({split}_questions.json files, or folders of them)."""
    by_split: dict[str, tuple[Path, list[dict[str, Any]]]] = {}
    for given in question_paths:
        for split_files in find_split_files(given):
            if split_files.split in by_split:
                raise InputFileError(
                    split_files.questions,
                    f"a second {split_files.split} questions file (first: {by_split[split_files.split][0]})",
                )
            questions = validate_questions(
                read_json(split_files.questions), split_files.questions, allow_empty_profiles=True
            )
            for question in questions:
                if not all(isinstance(item.get("text"), str) for item in question["profile"]):
                    raise InputFileError(
                        split_files.questions,
                        f"question {question['id']!r}: every profile item needs a 'text' email id",
                    )
            by_split[split_files.split] = (split_files.questions, questions)
    return {split: by_split[split] for split in SETS if split in by_split}


def build_lamp6(
    avocado_dir: Path,
    question_paths: list[Path],
    out_dir: Path,
    on_archive: Callable[[int, int, str], None] | None = None,
) -> list[SplitFiles]:
    """Write LaMP_6 {split}_questions.json (and outputs, except for test) into `out_dir`."""
    id_files = read_id_files(question_paths)
    wanted: set[str] = set()
    for _, questions in id_files.values():
        for question in questions:
            wanted.add(question["input"])
            wanted.update(item["text"] for item in question["profile"])
    emails = read_emails(find_archives(avocado_dir), wanted, on_archive)
    missing = sorted(wanted - set(emails))
    if missing:
        raise LampboxError(
            f"{len(missing)} of {len(wanted)} email ids named by the questions are not in the Avocado archives "
            f"under {avocado_dir} (first: {missing[0]!r}); is this the complete avocado-1.0.2/data/text folder?"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[SplitFiles] = []
    for split, (_, questions) in id_files.items():
        built_questions, golds = [], []
        for question in questions:
            target = emails[question["input"]]
            built: dict[str, Any] = {
                "id": question["id"],
                "input": INPUT_PREFIX + target.body,
                "profile": [
                    _profile_item(item, emails[item["text"]]) for item in question["profile"]
                ],
            }
            if question["user_id"] is not None:
                built["user_id"] = question["user_id"]
            built_questions.append(built)
            golds.append({"id": question["id"], "output": target.subject})
        questions_path = out_dir / f"{split}_questions.json"
        write_json_atomic(questions_path, built_questions)
        outputs_path = None
        if split != "test":  # as in the official release, test golds are not written
            outputs_path = out_dir / f"{split}_outputs.json"
            write_json_atomic(outputs_path, {"task": "LaMP_6", "golds": golds})
        written.append(SplitFiles(split, questions_path, outputs_path))
    return written


def _profile_item(item: dict[str, Any], message: Email) -> dict[str, Any]:
    built = {**item, "title": message.subject, "text": message.body}
    if not built.get("date") and message.date:
        built["date"] = message.date
    return built


def import_lamp6(store: Any, files: list[SplitFiles], scheme: str) -> Any:
    """Import built LaMP_6 files (one transaction)."""
    from lampbox.store.importer import import_files

    return import_files(store, BUILTIN_TASKS["LaMP_6"], scheme, files, allow_empty_profiles=True)
