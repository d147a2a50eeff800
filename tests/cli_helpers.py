"""Running the lampbox CLI as a user does, in a process of its own (shared by the CLI tests)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from click.testing import Result

# A small bench on the demo data (dummy backend): conftest's `dummy_bench` runs it once.
DUMMY_BENCH = ["--task", "LaMP_7", "--backend", "dummy", "--retrievers", "none,bm25,recency", "--k", "1", "--limit", "8"]


def lampbox(*args: str, env: dict[str, str] | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    """`python -m lampbox ARGS`; with `check`, a non-zero exit fails the test with its stderr."""
    result = subprocess.run([sys.executable, "-m", "lampbox", *args], capture_output=True, text=True, env=env)
    if check:
        assert result.returncode == 0, result.stderr
    return result


def one_line_error(result: Result) -> str:
    """A failed CliRunner command's message: one line, no traceback."""
    assert result.exit_code != 0, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    lines = [line for line in result.output.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    return lines[0]


def fake_model(home: Path, name: str, kind: str = "lora", **info: object) -> Path:
    """A model folder as `lampbox train` writes it (weights replaced by a small file)."""
    folder = home / "models" / name
    weights = folder / ("model" if kind in ("full", "fid") else "adapter")
    weights.mkdir(parents=True)
    (weights / "weights.bin").write_bytes(b"\0" * 16)
    record = {"name": name, "kind": kind, "method": "ipa", "task": "commit_subject", "base": "smollm2-135m-instruct",
              "base_fingerprint": "fp", "spec": {"task": "commit_subject"}, "history": [{"step": 1, "loss": 2.0}],
              "metrics": {"rouge-1": 0.5}, **info}  # fmt: skip
    (folder / "lampbox-model.json").write_text(json.dumps(record))
    return folder
