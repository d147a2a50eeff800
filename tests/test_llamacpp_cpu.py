"""llama.cpp's CPU variant: which one runs here and why, the override, the canary, and the
regression test that decodes with the chosen variant in a child process (issue 22: the AMX
variant of llama-cpp-python 0.3.36 died with SIGILL in the default model's first batch)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from lampbox.engine.generation.llamacpp_cpu import (
    VARIANT_ENV,
    CpuVariant,
    choose_variant,
    known_fault,
    run_canary,
    signal_name,
)
from lampbox.errors import LampboxError

REPO = Path(__file__).resolve().parents[1]


def variants(**scores: int) -> list[CpuVariant]:
    found = [CpuVariant(name, Path(f"libggml-cpu-{name}.so"), score) for name, score in scores.items()]
    return sorted(found, key=lambda variant: -variant.score)


def test_the_best_scoring_variant_is_chosen() -> None:
    choice = choose_variant(variants(haswell=10, icelake=30, x64=1, zen4=0), "0.3.36")
    assert choice.chosen.name == "icelake" and not choice.skipped and not choice.forced
    assert choice.line() == "llama.cpp CPU variant: icelake (best for this CPU)"


def test_the_amx_variant_of_a_known_faulty_release_is_skipped_with_one_line() -> None:
    asked = []
    choice = choose_variant(variants(sapphirerapids=90, cooperlake=60, haswell=10), "0.3.36", None, asked.append)
    assert choice.chosen.name == "cooperlake"
    assert [variant.name for variant, _ in choice.skipped] == ["sapphirerapids"]
    line = choice.line()
    assert "\n" not in line and "skipped sapphirerapids" in line and "SIGILL" in line
    assert f"{VARIANT_ENV}=sapphirerapids" in line  # how to use it anyway
    assert asked == []  # no canary for a release known to fault
    assert known_fault("sapphirerapids", "0.3.20") and known_fault("cooperlake", "0.3.36") is None


def test_on_a_newer_release_the_amx_variant_runs_only_when_its_canary_passed() -> None:
    scores = variants(sapphirerapids=90, cooperlake=60)
    assert known_fault("sapphirerapids", "0.3.37") is None
    passed = choose_variant(scores, "0.3.37", None, lambda variant: None)
    assert passed.chosen.name == "sapphirerapids" and not passed.skipped
    failed = choose_variant(scores, "0.4.0", None, lambda variant: "its canary decode died from SIGILL")
    assert failed.chosen.name == "cooperlake"
    assert "its canary decode died from SIGILL" in failed.line()


def test_the_override_forces_a_variant_and_refuses_what_cannot_run() -> None:
    scores = variants(sapphirerapids=90, cooperlake=60, zen4=0)
    forced = choose_variant(scores, "0.3.36", "sapphirerapids")
    assert forced.chosen.name == "sapphirerapids" and forced.forced
    assert f"forced by {VARIANT_ENV}" in forced.line()
    with pytest.raises(LampboxError, match="no such llama.cpp CPU variant.*cooperlake"):
        choose_variant(scores, "0.3.36", "pentium")
    with pytest.raises(LampboxError, match="lacks instructions.*runs: sapphirerapids, cooperlake"):
        choose_variant(scores, "0.3.36", "zen4")


def test_the_canary_reports_the_signal_a_child_died_from() -> None:
    code = "import os, signal; os.kill(os.getpid(), signal.SIGILL)"
    assert run_canary("x64", code=code) == "its canary decode died from SIGILL"
    assert run_canary("x64", code="raise SystemExit('no model here')") == "its canary decode failed (no model here)"
    assert run_canary("x64", code="pass") is None
    assert signal_name(-signal.SIGSEGV) == "SIGSEGV" and signal_name(0) is None


def test_a_canary_verdict_is_cached_per_variant_file_and_a_hung_canary_is_named(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lampbox.engine.generation import llamacpp_cpu

    runs: list[str] = []
    monkeypatch.setattr(llamacpp_cpu, "run_canary", lambda name: runs.append(name) or "its canary decode died from SIGILL")
    library = tmp_path / "libggml-cpu-sapphirerapids.so"
    library.write_bytes(b"variant")
    variant = CpuVariant("sapphirerapids", library, 90)
    verdict = llamacpp_cpu.cached_canary_verdict("0.4.0")
    assert verdict(variant) == verdict(variant) == "its canary decode died from SIGILL"
    assert runs == ["sapphirerapids"]  # run once, then read back
    assert llamacpp_cpu.cached_canary_verdict("0.4.0")(variant) and runs == ["sapphirerapids"]  # a new process too
    llamacpp_cpu.cached_canary_verdict("0.4.1")(variant)  # another release: its own canary
    stat = library.stat()
    os.utime(library, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # the variant file replaced
    verdict(variant)
    assert runs == ["sapphirerapids"] * 3
    with pytest.raises(LampboxError, match="no CPU variant that runs on this CPU: sapphirerapids: its canary decode died"):
        choose_variant([variant], "0.4.0", None, verdict)
    assert run_canary("x64", code="import time; time.sleep(30)", timeout=0.5) == "its canary decode did not finish in 0 s"


def child(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=600,
        env={**os.environ, "PYTHONPATH": str(REPO), **env},
    )  # fmt: skip


CHOICE = (
    "from lampbox.engine.generation.llamacpp import cpu_variant_choice\n"
    "choice = cpu_variant_choice()\n"
    "print(choice.line() if choice else 'no CPU variants', flush=True)\n"
)


@pytest.mark.slow
def test_the_default_model_decodes_batched_and_streamed_on_this_cpu_without_dying() -> None:
    """The regression test of issue 22: the chosen variant decodes the prompts that crashed the
    AMX variant, batched and streamed, on 1 and 2 threads, in a child process."""
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed")
    env = {key: value for key, value in os.environ.items() if key != VARIANT_ENV}
    done = subprocess.run(
        [sys.executable, "-c", CHOICE + "from lampbox.engine.generation.llamacpp_cpu import canary_main\ncanary_main()\n"],
        capture_output=True, text=True, timeout=600, env={**env, "PYTHONPATH": str(REPO)},
    )  # fmt: skip
    chosen = (done.stdout.strip().splitlines() or ["the variant was not chosen yet"])[0]
    died = signal_name(done.returncode)
    assert died is None, f"llama.cpp died from {died} on this CPU ({chosen}): {done.stderr[-2000:]}"
    assert done.returncode == 0, done.stderr[-2000:]


def test_this_cpu_never_loads_a_variant_known_to_fault_here() -> None:
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed")
    from lampbox.engine.generation.llamacpp import cpu_backend_folders

    if not any(any(folder.glob("libggml-cpu-*.so")) for folder in cpu_backend_folders()):
        pytest.skip("llama-cpp-python was built without GGML_BACKEND_DL (not by scripts/setup.sh)")
    env = {key: value for key, value in os.environ.items() if key != VARIANT_ENV}
    done = subprocess.run(
        [sys.executable, "-c", CHOICE + "import llama_cpp\n"
         "from lampbox.engine.generation.llamacpp_cpu import known_fault\n"
         "print(known_fault(choice.chosen.name, llama_cpp.__version__))\n"],
        capture_output=True, text=True, timeout=120, env={**env, "PYTHONPATH": str(REPO)},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    line, fault = done.stdout.strip().splitlines()
    assert fault == "None", line
    from lampbox.engine.machine import cpu_flags

    if "amx_int8" in cpu_flags():  # the AMX variant scores best here: skipped, and said why
        assert "skipped sapphirerapids" in line or "sapphirerapids" not in line


def test_the_override_loads_the_named_variant_and_refuses_a_bad_name() -> None:
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed")
    from lampbox.engine.generation.llamacpp import cpu_backend_folders

    if not any(any(folder.glob("libggml-cpu-*.so")) for folder in cpu_backend_folders()):
        pytest.skip("llama-cpp-python was built without GGML_BACKEND_DL (not by scripts/setup.sh)")
    forced = child(CHOICE, **{VARIANT_ENV: "x64"})
    assert forced.returncode == 0, forced.stderr
    assert forced.stdout.strip() == f"llama.cpp CPU variant: x64 (forced by {VARIANT_ENV})"
    bad = child(CHOICE, **{VARIANT_ENV: "pentium"})
    assert bad.returncode != 0
    assert "no such llama.cpp CPU variant" in bad.stderr.strip().splitlines()[-1]
