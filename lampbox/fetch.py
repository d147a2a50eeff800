"""Downloading the official LaMP files and importing them (`lampbox data fetch`).

Files are streamed into a `.part` file beside their final place in the download cache (the
official folder layout under `cache_dir("downloads")`), resumed with an HTTP Range request
after a dropped connection, validated as LaMP JSON, and only then renamed into place: a file
under its final name is always complete and valid, so a later fetch reuses it. Every file of
the fetch is downloaded and validated before the store is touched; the import is one
transaction. Only the standard library talks HTTP.
"""

from __future__ import annotations

import http.client
import os
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from lampbox import __version__
from lampbox.engine.tasks import SETS, SPLIT_SCHEMES, TaskSpec
from lampbox.errors import InputFileError, LampboxError
from lampbox.lampfiles import read_json, validate_outputs, validate_questions
from lampbox.store.importer import ImportReport, SplitFiles, import_files

DEFAULT_BASE_URL = "https://ciir.cs.umass.edu/downloads/LaMP"
BASE_URL_ENV = "LAMPBOX_LAMP_URL"
DEFAULT_SETS = ("train", "dev")
CHUNK_BYTES = 1 << 16


class DownloadProgress(Protocol):
    """What a downloader reports: one file at a time, bytes as they arrive."""

    def start_file(self, label: str, total: int | None, completed: int) -> None: ...

    def advance(self, n_bytes: int) -> None: ...

    def restart(self, total: int | None) -> None: ...

    def finish_file(self) -> None: ...


class SilentProgress:
    """A DownloadProgress that shows nothing (library use, tests)."""

    def start_file(self, label: str, total: int | None, completed: int) -> None:
        pass

    def advance(self, n_bytes: int) -> None:
        pass

    def restart(self, total: int | None) -> None:
        pass

    def finish_file(self) -> None:
        pass


@dataclass(frozen=True)
class RemoteFile:
    """One official file: where it lives on the server and in the download cache."""

    split: str  # train, dev or test
    kind: str  # questions or outputs
    relative_path: str  # e.g. time/LaMP_7/dev/dev_questions.json

    def url(self, base_url: str) -> str:
        return f"{base_url.rstrip('/')}/{self.relative_path}"


@dataclass
class FetchReport:
    """What a fetch did: files downloaded or reused, and the import."""

    task: str
    scheme: str
    downloaded: list[Path] = field(default_factory=list)
    reused: list[Path] = field(default_factory=list)
    imported: ImportReport | None = None


class _RetryableError(Exception):
    """A transient failure (dropped connection, timeout, 5xx): worth another try."""


class _Unreachable(_RetryableError):
    """The server could not be contacted at all (refused, no route, DNS)."""


def base_url(override: str | None = None) -> str:
    """The LaMP download root: --base-url, else LAMPBOX_LAMP_URL, else the official site."""
    return (override or os.environ.get(BASE_URL_ENV) or DEFAULT_BASE_URL).rstrip("/")


def task_folder(spec: TaskSpec, scheme: str) -> str:
    """The task's folder under the download root; a clear error if it cannot be downloaded."""
    if scheme not in SPLIT_SCHEMES:
        raise LampboxError(f"unknown split {scheme!r}; use one of {', '.join(SPLIT_SCHEMES)}")
    if spec.custom:
        raise LampboxError(
            f"{spec.name} is a custom task and cannot be downloaded; "
            f"import its files with `lampbox data import PATH`"
        )
    if spec.name == "LaMP_6":
        raise LampboxError(
            "LaMP_6 is not public (it is built from the licensed Avocado email corpus); "
            "build it with `lampbox data build-lamp6 --avocado-dir DIR --questions PATH`"
        )
    folder = spec.url_path if scheme == "user" else spec.time_url_path
    if folder is None:
        raise LampboxError(
            f"{spec.name} ({scheme} split) is not served by the LaMP site; "
            f"import a copy with `lampbox data import PATH --task {spec.name}`"
        )
    return folder


def plan_files(spec: TaskSpec, scheme: str, sets: list[str]) -> list[RemoteFile]:
    """The official files for these sets (test: questions only, its golds are not public)."""
    folder = task_folder(spec, scheme)
    unknown = [name for name in sets if name not in SETS]
    if unknown:
        raise LampboxError(f"unknown set(s) {', '.join(unknown)}; use {', '.join(SETS)}")
    files = []
    for split in SETS:
        if split not in sets:
            continue
        kinds = ("questions",) if split == "test" else ("questions", "outputs")
        for kind in kinds:
            files.append(RemoteFile(split, kind, f"{folder}/{split}/{split}_{kind}.json"))
    return files


def download_task_files(
    spec: TaskSpec,
    scheme: str,
    sets: list[str] | None = None,
    base: str | None = None,
    cache: Path | None = None,
    progress: DownloadProgress | None = None,
    attempts: int = 4,
    backoff_s: float = 0.5,
    report: FetchReport | None = None,
) -> list[SplitFiles]:
    """Download (or reuse from the cache) and validate every file of a fetch."""
    from lampbox.paths import cache_dir

    root = base_url(base)
    cache = cache if cache is not None else cache_dir("downloads")
    progress = progress or SilentProgress()
    report = report or FetchReport(spec.name, scheme)
    remote_files = plan_files(spec, scheme, list(sets or DEFAULT_SETS))
    local: dict[tuple[str, str], Path] = {}
    for remote in remote_files:
        destination = cache.joinpath(*remote.relative_path.split("/"))
        if destination.is_file():
            report.reused.append(destination)
        else:
            download_file(
                remote.url(root),
                destination,
                progress,
                attempts=attempts,
                backoff_s=backoff_s,
                validate=_validator(remote.kind),
                server=root,
            )
            report.downloaded.append(destination)
        local[(remote.split, remote.kind)] = destination
    splits = sorted({remote.split for remote in remote_files}, key=SETS.index)
    return [
        SplitFiles(split, local[(split, "questions")], local.get((split, "outputs")))
        for split in splits
    ]


def fetch_task(
    spec: TaskSpec,
    scheme: str,
    open_store: Callable[[], Any],
    sets: list[str] | None = None,
    base: str | None = None,
    progress: DownloadProgress | None = None,
    on_message: Callable[[str], None] | None = None,
    attempts: int = 4,
    backoff_s: float = 0.5,
) -> FetchReport:
    """Download a task's official files, then import them all in one transaction.

    The store is opened (by `open_store`) only once every file is downloaded and valid, so a
    failed fetch leaves it untouched.
    """
    report = FetchReport(spec.name, scheme)
    files = download_task_files(
        spec,
        scheme,
        sets,
        base,
        progress=progress,
        attempts=attempts,
        backoff_s=backoff_s,
        report=report,
    )
    store = open_store()
    report.imported = import_files(store, spec, scheme, files, on_progress=on_message)
    return report


def _validator(kind: str) -> Callable[[Path], None]:
    def validate(path: Path) -> None:
        data = read_json(path)
        if kind == "questions":
            validate_questions(data, path, allow_empty_profiles=True)
        else:
            validate_outputs(data, path)

    return validate


def download_file(
    url: str,
    destination: Path,
    progress: DownloadProgress | None = None,
    attempts: int = 4,
    backoff_s: float = 0.5,
    validate: Callable[[Path], None] | None = None,
    server: str | None = None,
    timeout_s: float = 60.0,
) -> Path:
    """Stream `url` to `destination` through `destination.part`, resuming after failures.

    The file appears under its final name only once it is complete (and valid, when a
    validator is given); on any failure nothing is left there.
    """
    progress = progress or SilentProgress()
    destination.parent.mkdir(parents=True, exist_ok=True)
    part = destination.with_name(destination.name + ".part")
    last_error: _RetryableError | None = None
    for attempt in range(attempts):
        if attempt:
            time.sleep(backoff_s * 2 ** (attempt - 1))
        try:
            _download_once(url, part, progress, timeout_s)
            break
        except _RetryableError as error:
            last_error = error
    else:
        assert last_error is not None
        if isinstance(last_error, _Unreachable):
            raise LampboxError(
                f"cannot reach the LaMP server {server or url} ({last_error}; tried {attempts} times). "
                "Without network access, import a copy with `lampbox data import PATH`, "
                "or try the demo data: `lampbox data demo`"
            ) from None
        raise LampboxError(
            f"download of {url} failed after {attempts} tries: {last_error} "
            f"(the partial file {part} is kept; run the fetch again to resume)"
        ) from None
    if validate is not None:
        try:
            validate(part)
        except InputFileError as error:
            rejected = destination.with_name(destination.name + ".invalid")
            os.replace(part, rejected)
            # Named by the kept copy; the cache holds nothing under the final name.
            raise InputFileError(rejected, f"downloaded from {url}: {error.problem}") from None
    os.replace(part, destination)
    return destination


def _download_once(url: str, part: Path, progress: DownloadProgress, timeout_s: float) -> None:
    """One attempt: continue `part` from its current size (or restart if Range is ignored)."""
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": f"lampbox/{__version__}"})
    if have:
        request.add_header("Range", f"bytes={have}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout_s)
    except urllib.error.HTTPError as error:
        error.close()
        if error.code == 416 and have:
            part.unlink()  # our partial file does not fit the server's file: start again
            raise _RetryableError(f"HTTP 416 for a resumed download of {url}") from None
        if error.code == 404:
            raise LampboxError(f"not found on the server (HTTP 404): {url}") from None
        if error.code >= 500 or error.code in (408, 429):
            raise _RetryableError(f"HTTP {error.code} {error.reason}") from None
        raise LampboxError(f"the server refused {url}: HTTP {error.code} {error.reason}") from None
    except urllib.error.URLError as error:
        reason = error.reason
        if isinstance(reason, (TimeoutError, socket.timeout)):
            raise _RetryableError(f"timed out connecting to {url}") from None
        if isinstance(reason, (ConnectionResetError, ConnectionAbortedError, BrokenPipeError)):
            raise _RetryableError(f"connection lost ({type(reason).__name__})") from None
        raise _Unreachable(str(getattr(reason, "strerror", None) or reason)) from None
    except (TimeoutError, ConnectionError, http.client.HTTPException) as error:
        raise _RetryableError(f"{type(error).__name__}: {error}") from None

    with response:
        length_header = response.headers.get("Content-Length")
        length = int(length_header) if length_header and length_header.isdigit() else None
        if have and response.status == 206:
            start = _content_range_start(response.headers.get("Content-Range"))
            if start != have:
                part.unlink()
                raise _RetryableError(f"the server resumed at byte {start}, not {have}")
            mode = "ab"
        else:
            have, mode = 0, "wb"  # the server ignored Range (or there was nothing to resume)
        total = None if length is None else have + length
        if mode == "wb":
            progress.restart(total)
        progress.start_file("/".join(part.parts[-3:]).removesuffix(".part"), total, have)
        received = have
        with part.open(mode) as stream:
            try:
                while True:
                    chunk = response.read(CHUNK_BYTES)
                    if not chunk:
                        break
                    stream.write(chunk)
                    received += len(chunk)
                    progress.advance(len(chunk))
            except (TimeoutError, ConnectionError, http.client.HTTPException) as error:
                raise _RetryableError(
                    f"connection lost after {received} bytes ({type(error).__name__})"
                ) from None
        if total is not None and received < total:
            raise _RetryableError(f"connection closed after {received} of {total} bytes")
        progress.finish_file()


def _content_range_start(header: str | None) -> int | None:
    """The first byte of a `Content-Range: bytes START-END/TOTAL` header."""
    if not header or not header.startswith("bytes "):
        return None
    try:
        return int(header[6:].split("-", 1)[0])
    except ValueError:
        return None


class RichDownloadProgress:
    """A rich progress bar on stderr: one row per file, bytes, speed and time left."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=Console(stderr=True),
        )
        self._task_id: Any = None

    def __enter__(self) -> RichDownloadProgress:
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()

    def start_file(self, label: str, total: int | None, completed: int) -> None:
        if self._task_id is None:
            self._task_id = self._progress.add_task(label, total=total, completed=completed)
        else:
            self._progress.update(
                self._task_id, description=label, total=total, completed=completed
            )

    def advance(self, n_bytes: int) -> None:
        if self._task_id is not None:
            self._progress.advance(self._task_id, n_bytes)

    def restart(self, total: int | None) -> None:
        if self._task_id is not None:
            self._progress.reset(self._task_id, total=total)

    def finish_file(self) -> None:
        self._task_id = None
