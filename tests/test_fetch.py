"""`lampbox data fetch` against a real HTTP server on 127.0.0.1 serving the official layout."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from click.testing import CliRunner

from lampbox.cli import cli
from lampbox.errors import LampboxError
from lampbox.fetch import download_file

PREFIX = "Paraphrase the following tweet without any explanation before or after it: "


def lamp7_split(split: str, n_questions: int, first_id: int) -> tuple[bytes, bytes]:
    """Small synthetic LaMP_7 questions and outputs files (compact JSON, like the originals)."""
    questions, golds = [], []
    for number in range(first_id, first_id + n_questions):
        profile = [
            {
                "text": f"user {number} tweet {item} about trains and tea number {item * 7}",
                "id": f"{number}{item:02d}",
            }
            for item in range(12)
        ]
        questions.append(
            {"id": str(number), "input": f"{PREFIX}some words from {number}", "profile": profile}
        )
        golds.append({"id": str(number), "output": f"the gold tweet of {number}"})
    return (
        json.dumps(questions).encode(),
        json.dumps({"task": "LaMP_7", "golds": golds}).encode(),
    )


def official_files(folder: str = "LaMP_7") -> dict[str, bytes]:
    files = {}
    for split, count, first in (("train", 3, 100), ("dev", 2, 200), ("test", 2, 300)):
        questions, outputs = lamp7_split(split, count, first)
        files[f"/{folder}/{split}/{split}_questions.json"] = questions
        if split != "test":
            files[f"/{folder}/{split}/{split}_outputs.json"] = outputs
    return files


class LampServer:
    """A static file server with Range support, a request log and injectable faults."""

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = files
        self.requests: list[tuple[str, str | None]] = []  # (path, Range header)
        self.drop_first: set[str] = set()  # paths whose first GET is cut half-way
        self.ignore_range = False
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                path = self.path.removeprefix("/base")
                range_header = self.headers.get("Range")
                server.requests.append((path, range_header))
                body = server.files.get(path)
                if body is None:
                    self.send_error(404)
                    return
                start = 0
                if range_header and not server.ignore_range:
                    start = int(range_header.removeprefix("bytes=").split("-")[0])
                if path in server.drop_first:
                    # Announce the whole file, send half of it, then hang up.
                    server.drop_first.discard(path)
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.connection.shutdown(socket.SHUT_RDWR)
                    self.close_connection = True
                    return
                if start:
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(body) - start))
                self.end_headers()
                self.wfile.write(body[start:])

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/base"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)  # a quick shutdown

    def gets(self, suffix: str) -> list[str | None]:
        """The Range headers of every GET whose path ends with `suffix`."""
        return [range_header for path, range_header in self.requests if path.endswith(suffix)]


@pytest.fixture(autouse=True)
def lampbox_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    monkeypatch.setenv("LAMPBOX_HOME", str(home))
    monkeypatch.delenv("LAMPBOX_LAMP_URL", raising=False)
    monkeypatch.delenv("LAMPBOX_DB", raising=False)
    return home


@pytest.fixture
def server() -> Iterator[LampServer]:
    lamp_server = LampServer({**official_files("LaMP_7"), **official_files("time/LaMP_7")})
    lamp_server.thread.start()
    yield lamp_server
    lamp_server.httpd.shutdown()
    lamp_server.httpd.server_close()


def downloads(home: Path) -> Path:
    return home / "cache" / "downloads"


def run_cli(*args: str):  # noqa: ANN201 - click's Result
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def stored(db: Path) -> list[dict]:
    if not db.exists():
        return []
    result = run_cli("data", "list", "--db", str(db), "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_fetch_downloads_validates_and_imports(
    server: LampServer, tmp_path: Path, lampbox_home: Path
) -> None:
    db = tmp_path / "store.duckdb"
    result = run_cli("data", "fetch", "LaMP_7", "--base-url", server.base_url, "--db", str(db))
    assert result.exit_code == 0, result.stderr
    assert "LaMP_7 user train: imported (3 questions, 3 golds" in result.stdout
    assert "LaMP_7 user dev: imported (2 questions, 2 golds" in result.stdout

    listed = {(row["scheme"], row["split"]): row for row in stored(db)}
    assert set(listed) == {("user", "train"), ("user", "dev")}
    assert listed[("user", "train")]["questions"] == 3
    assert listed[("user", "dev")]["mean_profile_size"] == 12
    for path, body in official_files("LaMP_7").items():
        if "/test/" in path:
            continue
        assert (downloads(lampbox_home) / path.lstrip("/")).read_bytes() == body
    assert not list(downloads(lampbox_home).rglob("*.part"))
    assert not server.gets("test_questions.json")  # test is fetched only when asked


def test_fetch_time_split_with_test_questions_and_env_base_url(
    server: LampServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LAMPBOX_LAMP_URL", server.base_url)
    db = tmp_path / "store.duckdb"
    result = run_cli(
        "data", "fetch", "LaMP_7", "--split", "time", "--sets", "dev,test", "--db", str(db)
    )
    assert result.exit_code == 0, result.stderr
    listed = {(row["scheme"], row["split"]): row for row in stored(db)}
    assert set(listed) == {("time", "dev"), ("time", "test")}
    assert listed[("time", "test")]["golds"] == 0
    assert server.gets("/time/LaMP_7/test/test_questions.json") == [None]
    assert not server.gets("test_outputs.json")


def test_missing_file_names_the_url_and_leaves_the_store_alone(
    server: LampServer, tmp_path: Path, lampbox_home: Path
) -> None:
    del server.files["/LaMP_7/dev/dev_outputs.json"]
    db = tmp_path / "store.duckdb"
    result = run_cli("data", "fetch", "LaMP_7", "--base-url", server.base_url, "--db", str(db))
    assert result.exit_code != 0
    assert f"{server.base_url}/LaMP_7/dev/dev_outputs.json" in result.stderr
    assert "404" in result.stderr
    assert stored(db) == []
    assert not (downloads(lampbox_home) / "LaMP_7" / "dev" / "dev_outputs.json").exists()


def test_dropped_connection_is_resumed_with_range(
    server: LampServer, tmp_path: Path, lampbox_home: Path
) -> None:
    target = "/LaMP_7/train/train_questions.json"
    body = server.files[target]
    server.drop_first.add(target)
    db = tmp_path / "store.duckdb"
    result = run_cli("data", "fetch", "LaMP_7", "--base-url", server.base_url, "--db", str(db))
    assert result.exit_code == 0, result.stderr
    # First try: no Range; it is cut after half the bytes; the retry asks for the rest.
    assert server.gets(target) == [None, f"bytes={len(body) // 2}-"]
    assert (downloads(lampbox_home) / target.lstrip("/")).read_bytes() == body
    assert {row["split"]: row["questions"] for row in stored(db)} == {"train": 3, "dev": 2}


def test_server_ignoring_range_restarts_cleanly(server: LampServer, tmp_path: Path) -> None:
    target = "/LaMP_7/dev/dev_questions.json"
    body = server.files[target]
    destination = tmp_path / "dev_questions.json"
    destination.with_name("dev_questions.json.part").write_bytes(b"stale bytes from another file")
    server.ignore_range = True
    download_file(f"{server.base_url}{target}", destination, attempts=2, backoff_s=0.01)
    assert server.gets(target) == ["bytes=29-"]
    assert destination.read_bytes() == body
    assert not destination.with_name("dev_questions.json.part").exists()


def test_connection_that_keeps_dropping_fails_without_a_final_file(
    server: LampServer, tmp_path: Path
) -> None:
    target = "/LaMP_7/dev/dev_questions.json"
    server.ignore_range = True  # every retry starts over...
    destination = tmp_path / "dev_questions.json"

    class AlwaysDrop(set):
        def discard(self, item: object) -> None:  # ...and is cut again
            pass

    server.drop_first = AlwaysDrop({target})
    with pytest.raises(LampboxError, match="failed after 3 tries"):
        download_file(f"{server.base_url}{target}", destination, attempts=3, backoff_s=0.01)
    assert not destination.exists()
    assert destination.with_name("dev_questions.json.part").exists()  # kept for a later resume
    assert len(server.gets(target)) == 3


def test_malformed_json_names_the_file_and_changes_nothing(
    server: LampServer, tmp_path: Path, lampbox_home: Path
) -> None:
    db = tmp_path / "store.duckdb"
    assert (
        run_cli(
            "data",
            "fetch",
            "LaMP_7",
            "--split",
            "time",
            "--base-url",
            server.base_url,
            "--db",
            str(db),
        ).exit_code
        == 0
    )
    before = stored(db)
    server.files["/LaMP_7/dev/dev_questions.json"] = b'[{"id": "200", "input": "Paraphrase'
    result = run_cli("data", "fetch", "LaMP_7", "--base-url", server.base_url, "--db", str(db))
    assert result.exit_code != 0
    assert "dev_questions.json" in result.stderr
    assert "malformed JSON" in result.stderr
    assert stored(db) == before
    final = downloads(lampbox_home) / "LaMP_7" / "dev" / "dev_questions.json"
    assert not final.exists()
    assert final.with_name("dev_questions.json.invalid").exists()

    # Once the server is fixed, a new fetch downloads the file again and imports everything.
    server.files["/LaMP_7/dev/dev_questions.json"] = official_files()[
        "/LaMP_7/dev/dev_questions.json"
    ]
    result = run_cli("data", "fetch", "LaMP_7", "--base-url", server.base_url, "--db", str(db))
    assert result.exit_code == 0, result.stderr
    assert {(row["scheme"], row["split"]) for row in stored(db)} == {
        ("time", "train"), ("time", "dev"), ("user", "train"), ("user", "dev"),
    }  # fmt: skip


def test_second_fetch_is_served_from_the_cache(server: LampServer, tmp_path: Path) -> None:
    db = tmp_path / "store.duckdb"
    first = run_cli("data", "fetch", "LaMP_7", "--base-url", server.base_url, "--db", str(db))
    assert first.exit_code == 0, first.stderr
    assert len(server.requests) == 4
    second = run_cli(
        "data",
        "fetch",
        "LaMP_7",
        "--base-url",
        server.base_url,
        "--db",
        str(tmp_path / "other.duckdb"),
    )
    assert second.exit_code == 0, second.stderr
    assert len(server.requests) == 4  # no second GET of any complete file
    assert "LaMP_7 user train: imported (3 questions" in second.stdout
    again = run_cli("data", "fetch", "LaMP_7", "--base-url", server.base_url, "--db", str(db))
    assert "LaMP_7 user train: unchanged" in again.stdout
    assert len(server.requests) == 4


def test_unreachable_server_says_so_and_points_to_offline_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lampbox import fetch

    waits: list[float] = []
    monkeypatch.setattr(fetch.time, "sleep", waits.append)
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    db = tmp_path / "store.duckdb"
    result = run_cli(
        "data", "fetch", "LaMP_7", "--base-url", f"http://127.0.0.1:{port}/LaMP", "--db", str(db)
    )
    assert result.exit_code != 0
    assert waits == [0.5, 1.0, 2.0]  # four tries, the back-off doubling between them
    message = result.stderr
    assert "cannot reach the LaMP server" in message
    assert "lampbox data import PATH" in message
    assert "lampbox data demo" in message
    assert not db.exists()


@pytest.mark.parametrize(
    ("task", "hint"),
    [
        ("LaMP_6", "lampbox data build-lamp6"),
        ("LaMP_2N", "lampbox data import PATH --task LaMP_2N"),
    ],
)
def test_tasks_that_cannot_be_downloaded_point_elsewhere(
    task: str, hint: str, tmp_path: Path
) -> None:
    result = run_cli("data", "fetch", task, "--db", str(tmp_path / "store.duckdb"))
    assert result.exit_code != 0
    assert hint in result.stderr


def test_custom_task_cannot_be_downloaded(commits_store_path: Path) -> None:
    result = run_cli("data", "fetch", "commit_subject", "--db", str(commits_store_path))
    assert result.exit_code != 0
    assert "custom task" in result.stderr
    assert "lampbox data import PATH" in result.stderr
