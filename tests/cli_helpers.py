"""Running the lampbox CLI as a user does, in a process of its own (shared by the CLI tests)."""

from __future__ import annotations

import subprocess
import sys


def lampbox(*args: str, env: dict[str, str] | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    """`python -m lampbox ARGS`; with `check`, a non-zero exit fails the test with its stderr."""
    result = subprocess.run([sys.executable, "-m", "lampbox", *args], capture_output=True, text=True, env=env)
    if check:
        assert result.returncode == 0, result.stderr
    return result
