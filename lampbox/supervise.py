"""A parent that watches the TUI or the bench for a native crash (docs/backends.md, "When native
code crashes").

A crash in a backend's native code (SIGILL, SIGSEGV, ...) ends the process before Python can say
anything; in the TUI it also leaves the terminal in the app's screen. So the CLI forks before it
opens the TUI or runs a bench: the child does the work, the parent only waits. When the child
dies from a signal, the parent puts the terminal back, says which signal and which backend (and
llama.cpp CPU variant) was running, from the notes the child wrote (lampbox.crashnote), points
to the Python stack faulthandler wrote, and exits 128 + the signal's number. The parent ignores
Ctrl+C (the child gets it from the terminal and handles it), passes SIGTERM and SIGHUP on, and
the child is killed when the parent is (PR_SET_PDEATHSIG), so `kill -9` of the command stops both.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import sys
import tempfile
from pathlib import Path

from lampbox.crashnote import NOTE_ENV, read_notes

SUPERVISE_ENV = "LAMPBOX_SUPERVISE"  # "0" runs without the watching parent
# What the TUI's terminal needs back after its process died inside the app's screen: leave the
# alternate screen, show the cursor, stop mouse reports and bracketed paste.
TERMINAL_RESET = "\x1b[?1049l\x1b[?25h\x1b[?1000l\x1b[?1002l\x1b[?1003l\x1b[?1006l\x1b[?1015l\x1b[?2004l"


def supervision_wanted() -> bool:
    return os.environ.get(SUPERVISE_ENV, "1") != "0" and hasattr(os, "fork") and sys.platform.startswith("linux")


def supervise(what: str, terminal: bool = False, hint: str | None = None) -> None:
    """Fork; return in the child (which then does the work); in the parent, wait for the child and
    exit with its status. `what` names the work in the crash message ("the TUI", "the bench"),
    `hint` ends it; `terminal`: restore the terminal if the child dies (the TUI)."""
    folder = Path(tempfile.mkdtemp(prefix="lampbox-watch-"))
    note, stack = folder / "running", folder / "stack"
    os.environ[NOTE_ENV] = str(note)
    saved_tty = _tty_attributes() if terminal else None
    sys.stdout.flush()
    sys.stderr.flush()
    child = os.fork()
    if child == 0:
        _become_child(stack)
        return
    try:
        status = _wait(child)
        if os.WIFSIGNALED(status):
            number = os.WTERMSIG(status)
            if saved_tty is not None:
                _restore_terminal(saved_tty)
            sys.stderr.write(crash_message(what, number, read_notes(note), _keep_stack(stack), hint) + "\n")
            sys.stderr.flush()
            code = 128 + number
        else:
            code = os.WEXITSTATUS(status)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    os._exit(code)


def crash_message(what: str, number: int, running: list[str], stack: Path | None, hint: str | None = None) -> str:
    try:
        name = signal.Signals(number).name
        meaning = signal.strsignal(number) or name
    except ValueError:
        name, meaning = f"signal {number}", f"signal {number}"
    lines = [f"lampbox: {what} died from {name} ({meaning})"]
    if running:
        lines[0] += " while it ran native code in:"
        lines += [f"  - {text}" for text in running]
    else:
        lines[0] += "; no model backend was loaded"
    if any("llama.cpp CPU variant" in text for text in running):
        lines.append(
            "  another llama.cpp CPU variant may avoid it: set LAMPBOX_LLAMA_CPU_VARIANT "
            "(docs/backends.md, \"CPU variants and AMX\")"
        )
    if stack is not None:
        lines.append(f"  the Python stack at the crash: {stack}")
    if hint:
        lines.append(f"  {hint}")
    return "\n".join(lines)


def _become_child(stack: Path) -> None:
    import ctypes
    import faulthandler

    try:  # die with the parent: `kill -9` of the command must stop the work too
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    # the parent may already be gone (killed between fork and prctl)
    if os.getppid() == 1:
        os._exit(1)
    handle = open(stack, "w")  # noqa: SIM115 (open for the whole life of the process)
    faulthandler.enable(file=handle, all_threads=True)


def _wait(child: int) -> int:
    """Wait for the child, ignoring Ctrl+C (the terminal sends it to the child too) and passing
    SIGTERM and SIGHUP on."""

    def forward(number: int, _frame: object) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, number)

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGHUP, forward)
    while True:
        try:
            _, status = os.waitpid(child, 0)
            return status
        except InterruptedError:
            continue


def _keep_stack(stack: Path) -> Path | None:
    """Copy faulthandler's stack out of the temporary folder, if it wrote one."""
    try:
        if stack.stat().st_size == 0:
            return None
        from lampbox.paths import data_home

        folder = data_home() / "crashes"
        folder.mkdir(parents=True, exist_ok=True)
        import time

        kept = folder / f"crash-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.txt"
        shutil.copyfile(stack, kept)
        return kept
    except OSError:
        return None


def _tty_attributes() -> list | None:
    try:
        import termios

        return termios.tcgetattr(sys.stdin.fileno())
    except (ImportError, OSError, ValueError, AttributeError):
        return None


def _restore_terminal(saved: list) -> None:
    import termios

    with contextlib.suppress(OSError, ValueError):
        termios.tcsetattr(sys.stdin.fileno(), termios.TCSADRAIN, saved)
    if sys.stdout.isatty():
        sys.stdout.write(TERMINAL_RESET)
        sys.stdout.flush()
