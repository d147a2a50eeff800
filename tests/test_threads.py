"""Thread defaults that survive a shared machine (issue 12, found 6): llama.cpp and torch take
their thread count from the cores this process may use (its CPU affinity), the TUI leaves one
to its render loop, and $LAMPBOX_THREADS or --threads override it."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from lampbox.engine import machine
from lampbox.engine.machine import default_threads, usable_cores
from lampbox.errors import LampboxError

REPO = Path(__file__).resolve().parent.parent


def with_cores(monkeypatch: pytest.MonkeyPatch, cores: int) -> None:
    monkeypatch.setattr(machine.os, "sched_getaffinity", lambda pid: set(range(cores)))
    monkeypatch.delenv("LAMPBOX_THREADS", raising=False)


def test_usable_cores_are_the_affinity_not_the_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    with_cores(monkeypatch, 3)
    monkeypatch.setattr(machine.os, "cpu_count", lambda: 64)
    assert usable_cores() == 3


@pytest.mark.parametrize(
    ("cores", "reserve", "expected"),
    [(1, 0, 1), (1, 1, 1), (2, 0, 1), (2, 1, 1), (4, 0, 4), (4, 1, 3), (16, 1, 15)],
)
def test_default_threads(monkeypatch: pytest.MonkeyPatch, cores: int, reserve: int, expected: int) -> None:
    with_cores(monkeypatch, cores)
    assert default_threads(reserve=reserve) == expected


def test_training_keeps_every_usable_core(monkeypatch: pytest.MonkeyPatch) -> None:
    for cores in (1, 2, 4):
        with_cores(monkeypatch, cores)
        assert default_threads(spare_on_small=False) == cores


def test_lampbox_threads_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    with_cores(monkeypatch, 2)
    monkeypatch.setenv("LAMPBOX_THREADS", "3")
    assert default_threads() == 3 and default_threads(reserve=1) == 3
    for bad in ("0", "two", "-1"):
        monkeypatch.setenv("LAMPBOX_THREADS", bad)
        with pytest.raises(LampboxError, match="LAMPBOX_THREADS"):
            default_threads()


def test_the_tui_leaves_a_core_to_its_render_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    from lampbox.tui.generation import new_pool

    with_cores(monkeypatch, 4)
    monkeypatch.setattr(machine.os, "cpu_count", lambda: 64)
    options = new_pool()._backend_options
    assert options["llamacpp"]["threads"] == 3 and options["hf"]["threads"] == 3


LOAD_ON_ONE_CORE = """
import os
os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
os.environ.pop("LAMPBOX_THREADS", None)
from lampbox.engine.generation import load_generator
generator = load_generator("llamacpp", "smollm2-135m-instruct")
print(os.cpu_count(), generator._llama.n_threads)
generator.close()
"""


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs CPU affinity (Linux)")
def test_llamacpp_runs_on_the_cores_it_may_use(tmp_path: Path) -> None:
    """Pinned to one core (taskset, a container's cpuset) llama.cpp starts one thread, not one
    per core of the machine."""
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(LOAD_ON_ONE_CORE)],
        capture_output=True, text=True, timeout=600, cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO), "LAMPBOX_HOME": str(tmp_path)},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    machine_cores, threads = map(int, result.stdout.split())
    assert threads == 1, (machine_cores, threads)


def test_hf_sets_torch_threads_from_the_usable_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    """The hf backend no longer leaves torch at one thread per core of the machine."""
    torch = pytest.importorskip("torch")
    from lampbox.engine.generation import hf

    with_cores(monkeypatch, 2)
    before, restore = torch.get_num_threads(), torch.set_num_threads
    calls: list[int] = []
    monkeypatch.setattr(torch, "set_num_threads", calls.append)

    class Stop(Exception):
        pass

    def stop(*args: object, **kwargs: object) -> None:
        raise Stop

    monkeypatch.setattr(hf, "_local_folder", stop)  # the first step after the threads are set
    try:
        with pytest.raises(Stop):
            hf.HFGenerator("smollm2-135m-instruct", device="cpu", dtype="float32")
    finally:
        restore(before)
    assert calls == [1]
