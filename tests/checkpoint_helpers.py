"""Kill a training command once it has written a complete checkpoint (the resume tests)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path


def kill_at_first_checkpoint(command: list[str], env: dict[str, str], checkpoints: Path, timeout: float = 300) -> list[int]:
    """Run `command` in its own session, kill -9 it (and its children) as soon as a complete
    checkpoint is in `checkpoints`, and return the complete checkpoints' steps, sorted."""
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.time() + timeout
    while time.time() < deadline and not list(checkpoints.glob("checkpoint-*/lampbox-complete")):
        assert process.poll() is None, process.communicate()[1].decode()[-2000:]
        time.sleep(0.1)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    return sorted(int(p.parent.name.split("-")[1]) for p in checkpoints.glob("checkpoint-*/lampbox-complete"))
