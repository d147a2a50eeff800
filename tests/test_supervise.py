"""The watching parent of the TUI and the bench (lampbox/supervise.py): a child's native crash is
said in words, its exit status passes through, and `kill -9` of the command stops the child."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the parent watches on Linux")


def watched(body: str, tmp_path: Path, **popen: object) -> subprocess.Popen[str]:
    code = (
        "import os, signal, sys, time\n"
        "from lampbox.supervise import supervise\n"
        "from lampbox.crashnote import note_running, forget_running\n"
        "supervise('the test work')\n" + body
    )
    (tmp_path / "tmp").mkdir(exist_ok=True)
    env = {**os.environ, "PYTHONPATH": str(REPO), "LAMPBOX_HOME": str(tmp_path / "home"), "TMPDIR": str(tmp_path / "tmp")}
    env.pop("LAMPBOX_SUPERVISE", None)
    return subprocess.Popen([sys.executable, "-c", code], text=True, env=env, **popen)  # type: ignore[call-overload]


def test_a_child_killed_by_a_signal_is_named_with_what_it_ran(tmp_path: Path) -> None:
    body = (
        "note_running('a', 'the llamacpp backend: tiny (tiny.gguf), llama.cpp CPU variant sapphirerapids')\n"
        "note_running('b', 'the hf backend: other')\n"
        "forget_running('b')\n"
        "os.kill(os.getpid(), signal.SIGSEGV)\n"
    )
    process = watched(body, tmp_path, stderr=subprocess.PIPE)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 128 + signal.SIGSEGV
    lines = stderr.splitlines()
    assert lines[0] == "lampbox: the test work died from SIGSEGV (Segmentation fault) while it ran native code in:"
    assert lines[1] == "  - the llamacpp backend: tiny (tiny.gguf), llama.cpp CPU variant sapphirerapids"
    assert "the hf backend" not in stderr  # closed before the crash
    assert "LAMPBOX_LLAMA_CPU_VARIANT" in stderr
    stack = Path(stderr.split("the Python stack at the crash: ")[1].split()[0])
    assert stack.parent == tmp_path / "home" / "crashes"
    assert "Fatal Python error: Segmentation fault" in stack.read_text()
    assert not list((tmp_path / "tmp").iterdir())  # the parent's notes folder is gone


def test_exit_codes_and_output_pass_through(tmp_path: Path) -> None:
    process = watched("print('hello from the child', flush=True)\nsys.exit(3)\n", tmp_path,
                      stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 3 and stdout == "hello from the child\n" and stderr == ""


def test_kill_9_of_the_command_stops_the_child_and_sigterm_reaches_it(tmp_path: Path) -> None:
    pid_file = tmp_path / "child.pid"
    body = f"open({str(pid_file)!r}, 'w').write(str(os.getpid()))\ntime.sleep(120)\n"
    process = watched(body, tmp_path)
    child = wait_for_pid(pid_file)
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=30)
    assert wait_until_gone(child), "the child outlived its killed parent"

    pid_file.unlink()
    process = watched(body, tmp_path, stderr=subprocess.PIPE)
    child = wait_for_pid(pid_file)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 128 + signal.SIGTERM and "died from SIGTERM" in stderr
    assert wait_until_gone(child)


def wait_for_pid(path: Path) -> int:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if path.exists() and path.read_text():
            return int(path.read_text())
        time.sleep(0.05)
    raise AssertionError("the child never started")


def wait_until_gone(pid: int) -> bool:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
        except OSError:
            return True
        if state == "Z":  # a zombie waiting for its reaper is dead
            return True
        time.sleep(0.05)
    return False
