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


# -- threads per generation from the idle cores (the TUI) ---------------------------------------

TICKS = 100  # per core per second


def stat_text(*cores: tuple[int, int], extra: str = "") -> str:
    """/proc/stat with one `cpuN` line per (busy, idle) tick count (busy split over user and
    system, idle over idle and iowait), after the machine's `cpu` total line."""
    total_busy, total_idle = sum(c[0] for c in cores), sum(c[1] for c in cores)
    lines = [f"cpu  {total_busy} 0 0 {total_idle} 0 0 0 0 0 0"]
    for index, (busy, idle) in enumerate(cores):
        lines.append(f"cpu{index} {busy - busy // 3} 0 {busy // 3} {idle - idle // 4} {idle // 4} 0 0 0 0 0")
    return "\n".join(lines + ["intr 12345 0 0", "ctxt 999", extra])


def samples(after_cores: list[tuple[int, int]], own_ticks: float = 0.0) -> tuple[machine.CpuSample, machine.CpuSample]:
    """Two samples one second apart: all counters start at 1000 busy / 1000 idle per core; the
    cores' ticks in that second are `after_cores`; this process used `own_ticks` of them."""
    usable = set(range(len(after_cores)))
    start = [(1000, 1000)] * len(after_cores)
    before = machine.parse_cpu_sample(stat_text(*start), usable, 50.0)
    after = machine.parse_cpu_sample(
        stat_text(*[(1000 + busy, 1000 + idle) for busy, idle in after_cores]), usable, 50.0 + own_ticks
    )
    assert before is not None and after is not None
    return before, after


def test_an_idle_machine_gives_every_usable_core() -> None:
    assert machine.threads_from_samples(*samples([(0, TICKS)] * 2)).describe() == "2 threads (cores idle)"
    assert machine.threads_from_samples(*samples([(3, 97)] * 4)).threads == 4  # a little noise


def test_one_core_busy_with_another_process_gives_the_rest() -> None:
    choice = machine.threads_from_samples(*samples([(TICKS, 0), (2, 98)]))
    assert choice.describe() == "1 thread (another process is busy)"
    # The busy core's work spread over both cores (the scheduler moves it) counts the same.
    assert machine.threads_from_samples(*samples([(50, 50), (50, 50)])).threads == 1
    assert machine.threads_from_samples(*samples([(TICKS, 0)] + [(0, TICKS)] * 3)).threads == 3
    every = machine.threads_from_samples(*samples([(TICKS, 0)] * 4))
    assert every.threads == 1 and every.reason == "4 of 4 cores busy elsewhere"


def test_our_own_work_is_not_counted_as_other() -> None:
    """The TUI's own threads (building prompts, a model loading) do not make it think the
    machine is busy: only what other processes did counts."""
    own_busy = samples([(TICKS, 0), (40, 60)], own_ticks=140)
    assert machine.other_busy_cores(*own_busy) == 0.0
    assert machine.threads_from_samples(*own_busy).threads == 2
    # Without subtracting our own time, the same counters would say both cores are taken.
    mixed = samples([(TICKS, 0), (TICKS, 0)], own_ticks=TICKS)
    assert machine.other_busy_cores(*mixed) == pytest.approx(1.0)
    assert machine.threads_from_samples(*mixed).threads == 1


def test_models_generating_at_once_share_the_idle_cores() -> None:
    choice = machine.threads_from_samples(*samples([(0, TICKS)] * 4), sharers=2)
    assert choice.threads == 2 and "2 models share them" in choice.reason
    assert machine.threads_from_samples(*samples([(0, TICKS)] * 2), sharers=3).threads == 1


def test_only_the_usable_cores_are_read() -> None:
    """A container's or taskset's cores: other cores' work does not count, nor their idle."""
    text_before = stat_text((1000, 1000), (1000, 1000), (1000, 1000))
    text_after = stat_text((1000 + TICKS, 1000), (1000, 1000 + TICKS), (1000 + TICKS, 1000))
    before = machine.parse_cpu_sample(text_before, {1}, 0.0)
    after = machine.parse_cpu_sample(text_after, {1}, 0.0)
    assert before is not None and after is not None and after.cores == 1
    assert machine.threads_from_samples(before, after).describe() == "1 thread (cores idle)"
    assert machine.parse_cpu_sample(text_after, {7}, 0.0) is None


def test_read_cpu_sample_reads_proc_stat(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    stat = tmp_path / "stat"
    stat.write_text(stat_text((300, 700), (500, 500)))
    monkeypatch.setattr(machine.os, "sched_getaffinity", lambda pid: {0, 1})
    sample = machine.read_cpu_sample(stat)
    assert sample is not None
    assert (sample.busy, sample.total, sample.cores) == (800.0, 2000.0, 2) and sample.own > 0
    assert machine.read_cpu_sample(tmp_path / "missing") is None


def fake_readings(monkeypatch: pytest.MonkeyPatch, after: machine.CpuSample | None) -> None:
    monkeypatch.setattr(machine, "read_cpu_sample", lambda stat_path=machine.PROC_STAT: after)


def test_idle_threads_measures_from_the_first_sample(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LAMPBOX_THREADS", raising=False)
    before, after = samples([(0, TICKS)] * 3)
    fake_readings(monkeypatch, after)
    assert machine.idle_threads(before) == machine.ThreadChoice(3, "cores idle")
    before, after = samples([(TICKS, 0)] + [(0, TICKS)] * 2)
    fake_readings(monkeypatch, after)
    assert machine.idle_threads(before).threads == 2


def test_the_sampler_starts_from_a_background_sample_old_enough(monkeypatch: pytest.MonkeyPatch) -> None:
    """A generation measures from the newest background sample at least SAMPLE_INTERVAL_S old
    (so it waits for no second sample), never from one too recent or too old."""
    import dataclasses

    clock = {"now": 100.0}
    monkeypatch.setattr("time.monotonic", lambda: clock["now"])
    base, _ = samples([(0, TICKS)] * 2)
    reads: list[float] = []

    def read(stat_path: Path = machine.PROC_STAT) -> machine.CpuSample:
        reads.append(clock["now"])
        return dataclasses.replace(base, at=clock["now"])

    monkeypatch.setattr(machine, "read_cpu_sample", read)
    sampler = machine.CpuSampler()
    for at in (96.0, 99.5, 99.75, 99.98):  # ticks: too old, right, right and newer, too recent
        clock["now"] = at
        sampler.tick()
    clock["now"] = 100.0
    assert sampler.start().at == 99.75  # the newest at least 0.08 s old
    clock["now"] = 104.0  # every sample older than MAX_AGE_S: a fresh one is read
    assert sampler.start().at == 104.0 and reads[-1] == 104.0
    assert machine.CpuSampler().start().at == 104.0  # no background sample yet: a fresh one


def test_lampbox_threads_wins_over_the_measurement(monkeypatch: pytest.MonkeyPatch) -> None:
    before, after = samples([(TICKS, 0), (TICKS, 0)])  # both cores busy elsewhere
    fake_readings(monkeypatch, after)
    monkeypatch.setenv("LAMPBOX_THREADS", "2")
    assert machine.idle_threads(before) == machine.ThreadChoice(2, "$LAMPBOX_THREADS")


def test_without_proc_stat_the_conservative_default(monkeypatch: pytest.MonkeyPatch) -> None:
    with_cores(monkeypatch, 2)
    fake_readings(monkeypatch, None)
    choice = machine.idle_threads(None)
    assert choice.threads == default_threads(reserve=1) == 1
    assert choice.reason == "CPU load unknown: the default"


@pytest.mark.slow
def test_llamacpp_changes_threads_per_call_without_reloading(tmp_path: Path) -> None:
    """set_threads reaches both llama.cpp contexts (the Llama's own and the batch decoder's)
    before they decode, on the loaded model; the outputs do not change."""
    import llama_cpp

    from lampbox.engine.generation import load_generator
    from lampbox.engine.generation.base import GenerationParams

    generator = load_generator("llamacpp", "smollm2-135m-instruct", threads=1)
    try:
        llama = generator._llama
        params = GenerationParams(max_new_tokens=4)
        prompts = ["Say hi", "Name a fruit"]
        one_thread = generator.generate(prompts, params)
        assert llama_cpp.llama_n_threads(generator._batch_decoder._context.ctx) == 1
        assert generator.set_threads(2) is True
        assert generator.generate(prompts, params) == one_thread
        assert generator._llama is llama  # not reloaded
        batch_context = generator._batch_decoder._context.ctx
        assert llama_cpp.llama_n_threads(batch_context) == llama_cpp.llama_n_threads_batch(batch_context) == 2
        assert generator.generate(prompts[:1], params) == one_thread[:1]  # the Llama's own context
        assert llama_cpp.llama_n_threads(llama.ctx) == llama_cpp.llama_n_threads_batch(llama.ctx) == 2
        with pytest.raises(LampboxError, match="at least 1"):
            generator.set_threads(0)
    finally:
        generator.close()


def test_hf_sets_torch_threads_per_call_on_the_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    torch = pytest.importorskip("torch")
    from lampbox.engine.generation import hf

    calls: list[int] = []
    monkeypatch.setattr(torch, "set_num_threads", calls.append)
    generator = object.__new__(hf.HFGenerator)  # no weights: set_threads only needs the device
    generator.device = "cpu"
    assert generator.set_threads(2) is True and calls == [2]
    generator.device = "cuda"
    assert generator.set_threads(3) is False and calls == [2]
