"""`lampbox bench` end to end: the table, stored results, kill and resume, bad input."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from cli_helpers import lampbox
from click.testing import CliRunner

from lampbox.cli import cli
from lampbox.store import Store
from lampbox.store import runs as run_store

BENCH = [
    "bench", "--task", "LaMP_7", "--retrievers", "none,bm25", "--k", "1", "--limit", "5",
    "--max-new-tokens", "8", "--batch-size", "1", "--threads", "2", "--backend", "llamacpp",
]  # fmt: skip


def rows_by_label(output: str) -> dict[str, dict]:
    return {row["label"]: row for row in json.loads(output)["rows"]}


@pytest.mark.slow
def test_bench_runs_prints_and_resumes_after_a_kill(demo_db: Path, tmp_path: Path) -> None:
    env = {**os.environ, "LAMPBOX_HOME": str(tmp_path / "home")}
    args = [*BENCH, "--db", str(demo_db), "--out", str(tmp_path / "preds"), "--json"]
    process = subprocess.Popen([sys.executable, "-m", "lampbox", *args], stderr=subprocess.PIPE, text=True, env=env)
    assert process.stderr is not None
    seen = []
    for line in process.stderr:
        seen.append(line)
        if ": generate 2/5" in line and line.startswith("[2/3]"):  # the bm25 run, partly generated
            os.kill(process.pid, signal.SIGKILL)
            break
    process.wait()
    assert process.returncode == -signal.SIGKILL, "".join(seen)
    with Store(demo_db) as store:
        statuses = sorted(run.status for run in run_store.list_runs(store))
        assert statuses == ["finished", "running"]

    resumed = lampbox(*args, env=env)
    rows = rows_by_label(resumed.stdout)
    assert len(rows) == 3
    baseline = rows["no personalization llamacpp:smollm2-135m-instruct"]
    personalized = rows["bm25 k=1 llamacpp:smollm2-135m-instruct"]
    assert baseline["from_store"] is True  # finished before the kill
    assert personalized["cached"] == 2 and personalized["generated"] == 3  # resumed, not redone
    assert personalized["p_value"] is not None and personalized["relative_change"] is not None
    assert rows["bm25 k=1 retrieval-only"]["role"] == "retrieval-only"
    preds = json.loads(Path(personalized["predictions_path"]).read_text())
    assert preds["task"] == "LaMP_7" and len(preds["golds"]) == 5

    # the same bench on a fresh store, uninterrupted, gives identical results
    clean_db = tmp_path / "clean.duckdb"
    lampbox("data", "demo", "--db", str(clean_db))
    clean_args = [*BENCH, "--db", str(clean_db), "--out", str(tmp_path / "clean"), "--json"]
    clean = rows_by_label(lampbox(*clean_args, env={**env, "LAMPBOX_HOME": str(tmp_path / "home2")}).stdout)
    for label, row in rows.items():
        assert clean[label]["metrics"] == row["metrics"], label
        assert clean[label]["run_key"] == row["run_key"]

    # an identical re-run is served from the store, and the table is printed
    again = lampbox(*[a for a in args if a != "--json"], env=env)
    assert "no personalization" in again.stdout and "bm25 k=1 retrieval-only" in again.stdout
    assert again.stdout.count("stored") >= 3


def watched_child(parent: int) -> int:
    """The pid of the child that does a watched command's work (lampbox/supervise.py)."""
    (child,) = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
    return int(child)


@pytest.mark.slow
@pytest.mark.parametrize("crash", [signal.SIGILL, signal.SIGSEGV])
def test_a_native_crash_is_reported_and_the_bench_resumes(demo_db: Path, tmp_path: Path, crash: int) -> None:
    """A backend's native code crashing (SIGILL as the AMX variant did, or SIGSEGV) ends the
    bench with a message naming the signal, the backend and llama.cpp's CPU variant, and the
    same command then resumes without redoing what was stored."""
    env = {**os.environ, "LAMPBOX_HOME": str(tmp_path / "home")}
    args = [*BENCH, "--db", str(demo_db), "--out", str(tmp_path / "preds"), "--json"]
    process = subprocess.Popen([sys.executable, "-m", "lampbox", *args], stderr=subprocess.PIPE, text=True, env=env)
    assert process.stderr is not None
    seen = []
    for line in process.stderr:
        seen.append(line)
        if ": generate 2/5" in line and line.startswith("[2/3]"):
            os.kill(watched_child(process.pid), crash)  # as if llama.cpp faulted inside the child
            break
    seen += process.stderr.readlines()
    process.wait()
    text = "".join(seen)
    name = signal.Signals(crash).name
    assert process.returncode == 128 + crash, text
    assert f"lampbox: the bench died from {name}" in text
    assert "the llamacpp backend: smollm2-135m-instruct" in text and "llama.cpp CPU variant" in text
    assert "LAMPBOX_LLAMA_CPU_VARIANT" in text and "Traceback" not in text
    assert "the same command resumes where it stopped" in text
    stack = Path(text.split("the Python stack at the crash: ")[1].split()[0])
    assert stack.is_relative_to(tmp_path / "home") and "Fatal Python error" in stack.read_text()

    rows = rows_by_label(lampbox(*args, env=env).stdout)
    assert rows["no personalization llamacpp:smollm2-135m-instruct"]["from_store"] is True
    personalized = rows["bm25 k=1 llamacpp:smollm2-135m-instruct"]
    assert personalized["cached"] == 2 and personalized["generated"] == 3  # resumed, not redone


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_unreachable_server_fails_clearly_and_marks_the_run(demo_db: Path, tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{closed_port()}/v1"
    result = lampbox(
        "bench", "--task", "LaMP_7", "--retrievers", "none", "--backend", "openai", "--base-url", url,
        "--no-baselines", "--limit", "2", "--db", str(demo_db), "--out", str(tmp_path / "out"), check=False,
    )  # fmt: skip
    assert result.returncode != 0
    assert url.removesuffix("/v1") in result.stderr.strip().splitlines()[-1]
    with Store(demo_db) as store:
        runs = run_store.list_runs(store)
        assert [run.status for run in runs] == ["failed"]
        assert run_store.run_predictions(store, runs[0].run_key) == []
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        (["--backend", "vllm"], "unknown backend 'vllm'"),
        (["--retrievers", "bm52"], "Did you mean bm25"),
        (["--k", "one"], "--k takes"),
        (["--model", "no-such-model"], "unknown model"),
        (["--backend", "llamacpp", "--dtype", "bfloat16"], "--dtype bfloat16 applies to the hf backend"),
        (["--backend", "llamacpp", "--quantize", "int8"], "--quantize int8 applies to the hf backend"),
        (["--limit", "-1"], "-1 is not in the range x>=1"),
        (["--users", "0"], "0 is not in the range x>=1"),
        (["--batch-size", "0"], "0 is not in the range x>=1"),
    ],
)
def test_bad_options_are_one_clear_line(demo_db: Path, args: list[str], problem: str) -> None:
    result = CliRunner().invoke(cli, ["bench", "--task", "LaMP_7", "--limit", "1", "--db", str(demo_db), *args])
    assert result.exit_code != 0 and isinstance(result.exception, (SystemExit, type(None))), result.exception
    assert problem in result.stderr.strip().splitlines()[-1]


def test_predictions_folder_under_a_file_is_one_clear_line(demo_db: Path, tmp_path: Path) -> None:
    a_file = tmp_path / "preds.json"
    a_file.write_text("{}")
    out = a_file / "runs"
    result = lampbox(
        "bench", "--task", "LaMP_7", "--retrievers", "none", "--backend", "dummy", "--limit", "1",
        "--db", str(demo_db), "--out", str(out), check=False,
    )  # fmt: skip
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert f"{out}: cannot write here: {a_file} is a file" in result.stderr.strip().splitlines()[-1]


def table_rows(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("│")]


@pytest.mark.slow
def test_k_zero_is_the_no_personalization_row_once(demo_db: Path, tmp_path: Path) -> None:
    bench = ["bench", "--task", "LaMP_7", "--backend", "dummy", "--limit", "3", "--db", str(demo_db), "--out", str(tmp_path)]
    result = lampbox(*bench, "--retrievers", "bm25", "--k", "0")
    rows = table_rows(result.stdout)
    assert len(rows) == 1 and "no personalization" in rows[0], result.stdout
    # repeated retrievers, ks and backends make no second row either
    result = lampbox(*bench, "--retrievers", "none,bm25,bm25", "--k", "0,1,1", "--backend", "dummy,dummy")
    rows = table_rows(result.stdout)
    assert len(rows) == len(set(rows)) == 3, result.stdout
    labels = [row.split("│")[1].strip() for row in rows]
    assert labels == ["no personalization dummy:smollm2-135m-instruct", "bm25 k=1 dummy:smollm2-135m-instruct", "bm25 k=1 retrieval-only"]


def test_grid_has_no_k_zero_retrieval_and_votes_over_positive_ks() -> None:
    from lampbox.bench.runner import BenchSpec, build_grid
    from lampbox.engine.tasks import BUILTIN_TASKS

    bench = BenchSpec("LaMP_2", "user", "dev", retrievers=("bm25",), ks=(0, 2, 0, 2), backends=("dummy",))
    grid = [(spec.retriever, spec.k, spec.method, role) for spec, role in build_grid(bench, BUILTIN_TASKS["LaMP_2"])]
    assert grid == [
        ("none", 0, "ipa", "baseline"), ("bm25", 2, "ipa", "retrieval"), ("bm25", 2, "retrieval-only", "retrieval-only"),
    ]  # fmt: skip
    only_zero = BenchSpec("LaMP_2", "user", "dev", retrievers=("bm25",), ks=(0,), backends=("dummy",))
    assert [role for _, role in build_grid(only_zero, BUILTIN_TASKS["LaMP_2"])] == ["baseline"]


def test_missing_data_offline_points_to_import_and_demo(home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lampbox import fetch

    monkeypatch.setenv("LAMPBOX_LAMP_URL", f"http://127.0.0.1:{closed_port()}/LaMP")
    monkeypatch.setattr(fetch.time, "sleep", lambda seconds: None)  # the retries' back-off
    result = CliRunner().invoke(cli, ["bench", "--task", "LaMP_4", "--db", str(tmp_path / "empty.duckdb")])
    assert result.exit_code != 0
    last = result.stderr.strip().splitlines()[-1]
    assert "lampbox data import" in last and "lampbox data demo" in last


@pytest.mark.slow
def test_backend_auto_picks_and_says_the_fastest_path(demo_db: Path) -> None:
    """No --backend: the choice for this machine is printed in one line and recorded as the
    run's backend (on a CPU: hf, batched; float32 without AMX)."""
    from lampbox.engine.generation.auto import choose_backend

    expected = choose_backend("ipa", "gguf", True)
    result = lampbox("bench", "--task", "LaMP_7", "--limit", "2", "--retrievers", "none", "--no-baselines",
                     "--max-new-tokens", "4", "--db", str(demo_db), "--json")  # fmt: skip
    assert expected.line() in result.stderr.splitlines()
    (row,) = json.loads(result.stdout)["rows"]
    dtype = f" dtype={expected.dtype}" if expected.backend == "hf" and expected.dtype != "float32" else ""
    assert row["label"] == f"no personalization {expected.backend}:smollm2-135m-instruct{dtype}"
    with Store(demo_db, read_only=True) as store:
        (stored,) = run_store.list_runs(store)
    assert stored.spec["backend"] == expected.backend  # the choice is recorded, dtype included


def test_batch_size_reaches_the_hf_and_llamacpp_loaders(demo_db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--batch-size is a loading option of both batched backends (hf used to keep its own 8)."""
    from lampbox.engine.generation import pool as pool_module

    seen: list[dict] = []
    original = pool_module.GeneratorPool.__init__

    def spy(self, backend_options=None, *args, **kwargs):  # type: ignore[no-untyped-def]
        seen.append(dict(backend_options or {}))
        original(self, backend_options, *args, **kwargs)

    monkeypatch.setattr(pool_module.GeneratorPool, "__init__", spy)
    result = CliRunner().invoke(cli, ["bench", "--task", "LaMP_7", "--retrievers", "none", "--no-baselines", "--limit", "2",
                                      "--backend", "dummy", "--batch-size", "16", "--db", str(demo_db)])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert seen and seen[0]["hf"]["batch_size"] == 16 and seen[0]["llamacpp"]["batch_size"] == 16
