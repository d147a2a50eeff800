"""Which CPU variant of a runtime-dispatch llama.cpp build runs here (docs/backends.md, "CPU
variants and AMX").

A dispatch build keeps ggml's CPU code once per x86 level (libggml-cpu-<variant>.so). ggml's own
`ggml_backend_load_all` loads the best-scoring one; lampbox scores them the same way (each
module's exported `ggml_backend_score`) but loads one file itself, so that it can skip a
variant known to crash the process, follow an explicit override and say what it chose.

A variant is skipped when its code faults on a CPU that can run it: the AMX variant
(sapphirerapids) of the llama.cpp that llama-cpp-python up to 0.3.36 vendors dies with SIGILL in
`tileloadd` (ggml's AMX path latches its tile configuration per thread, so a model that needs a
second configuration faults). On a newer llama-cpp-python the AMX variant is not trusted
blindly either: a canary decodes the default model with it in a child process once, and the
verdict is cached per CPU, build and variant.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from lampbox.errors import LampboxError

VARIANT_ENV = "LAMPBOX_LLAMA_CPU_VARIANT"
PREFIX = "libggml-cpu-"

# Variant -> (the newest llama-cpp-python version known to carry the fault, what goes wrong).
KNOWN_FAULTS = {
    "sapphirerapids": (
        (0, 3, 36),
        "its AMX matrix code dies with SIGILL (tileloadd in ggml_backend_amx_mul_mat) once a model "
        "needs a second tile configuration",
    ),
}
# Variants whose code uses AMX tiles: checked by a canary on versions past KNOWN_FAULTS.
AMX_VARIANTS = frozenset({"sapphirerapids"})
CANARY_TIMEOUT_S = 180


@dataclass(frozen=True)
class CpuVariant:
    name: str
    path: Path
    score: int  # ggml's: 0 when this CPU lacks an instruction the variant needs


# verdict(variant): None when the variant runs here, else why it does not
Verdict = Callable[[CpuVariant], "str | None"]


@dataclass(frozen=True)
class VariantChoice:
    chosen: CpuVariant
    skipped: tuple[tuple[CpuVariant, str], ...] = ()  # better-scoring variants passed over, why
    forced: bool = False

    def line(self) -> str:
        """One line for the user: the variant, and why a better-scoring one was not used."""
        how = f"forced by {VARIANT_ENV}" if self.forced else "best for this CPU"
        text = f"llama.cpp CPU variant: {self.chosen.name} ({how})"
        for variant, reason in self.skipped:
            text += f"; skipped {variant.name}: {reason} (set {VARIANT_ENV}={variant.name} to use it anyway)"
        return text


def variant_name(path: Path) -> str:
    return path.name.removeprefix(PREFIX).removesuffix(".so")


def score_variants(paths: Sequence[Path]) -> list[CpuVariant]:
    """Each module's `ggml_backend_score()` on this CPU, best first. The module is opened only to
    call that function (as ggml's loader does) and closed again: no variant code runs."""
    import _ctypes
    import ctypes

    variants = []
    for path in paths:
        try:
            library = ctypes.CDLL(str(path))
        except OSError:
            continue
        try:
            score_fn = library.ggml_backend_score
            score_fn.restype = ctypes.c_int
            score = int(score_fn())
        except AttributeError:
            score = 0
        finally:
            _ctypes.dlclose(library._handle)
        variants.append(CpuVariant(variant_name(path), path, score))
    return sorted(variants, key=lambda variant: (-variant.score, variant.name))


def parse_version(text: str) -> tuple[int, ...]:
    parts = []
    for piece in text.split("."):
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)


def known_fault(variant: str, version: str) -> str | None:
    fault = KNOWN_FAULTS.get(variant)
    if fault is None or parse_version(version) > fault[0]:
        return None
    return f"{fault[1]} in llama-cpp-python {version}"


def choose_variant(
    variants: Sequence[CpuVariant],
    version: str,
    forced: str | None = None,
    verdict: Verdict | None = None,
) -> VariantChoice:
    """The variant to load: `forced` when given (it must exist and run on this CPU), else the
    best-scoring one that is neither known to fault in this version nor failed its canary
    (`verdict(variant)` returns None when it runs, or why it does not)."""
    runnable = [variant for variant in variants if variant.score > 0]
    if forced:
        by_name = {variant.name: variant for variant in variants}
        if forced not in by_name:
            known = ", ".join(sorted(by_name)) or "none"
            raise LampboxError(f"{VARIANT_ENV}={forced}: no such llama.cpp CPU variant (this build has: {known})")
        if by_name[forced].score <= 0:
            runs = ", ".join(variant.name for variant in runnable) or "none"
            raise LampboxError(
                f"{VARIANT_ENV}={forced}: this CPU lacks instructions that variant needs "
                f"(variants this CPU runs: {runs})"
            )
        return VariantChoice(by_name[forced], forced=True)
    skipped: list[tuple[CpuVariant, str]] = []
    for variant in runnable:
        reason = known_fault(variant.name, version)
        if reason is None and variant.name in AMX_VARIANTS and verdict is not None:
            reason = verdict(variant)
        if reason is None:
            return VariantChoice(variant, tuple(skipped))
        skipped.append((variant, reason))
    raise LampboxError(
        "llama.cpp has no CPU variant that runs on this CPU: "
        + "; ".join(f"{variant.name}: {reason}" for variant, reason in skipped)
        + f" (set {VARIANT_ENV} to force one)"
    )


# -- the canary: one child process decodes the default model with a variant -------------------

CANARY_PROMPTS = ("What is the capital of France?", "Name a colour.", "Write one word.")


def canary_main(model: str | None = None) -> None:
    """Run in the child: the variant in VARIANT_ENV decodes the prompts that made the faulty AMX
    code crash, batched and streamed, on 1 and 2 threads."""
    from lampbox.engine.generation.base import GenerationParams
    from lampbox.engine.generation.llamacpp import LlamaCppGenerator

    params = GenerationParams(max_new_tokens=8)
    for threads in (1, 2):
        generator = LlamaCppGenerator(model, threads=threads)
        try:
            generator.generate(list(CANARY_PROMPTS), params)
            generator.generate_streaming(list(CANARY_PROMPTS), params, lambda index, piece: None)
        finally:
            generator.close()


def signal_name(returncode: int) -> str | None:
    """'SIGILL' for a child that died from signal 4 (returncode -4), else None."""
    if returncode >= 0:
        return None
    try:
        return signal.Signals(-returncode).name
    except ValueError:
        return f"signal {-returncode}"


def run_canary(variant: str, code: str | None = None, timeout: float = CANARY_TIMEOUT_S) -> str | None:
    """Decode in a child process with `variant` forced; None when it ran, else what happened
    (the signal it died from, or its error)."""
    code = code or "from lampbox.engine.generation.llamacpp_cpu import canary_main; canary_main()"
    env = {**os.environ, VARIANT_ENV: variant}
    try:
        done = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        return f"its canary decode did not finish in {timeout:.0f} s"
    died = signal_name(done.returncode)
    if died:
        return f"its canary decode died from {died}"
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no message"])[-1]
        return f"its canary decode failed ({last})"
    return None


def verdict_key(variant: CpuVariant, version: str) -> str:
    """A verdict holds for one CPU model, one build of one version, one variant file."""
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("model name", "flags")):
                cpu += line
                if line.startswith("flags"):
                    break
    except OSError:
        pass
    stat = variant.path.stat()
    raw = f"{cpu}|{version}|{variant.name}|{stat.st_size}|{stat.st_mtime_ns}"
    return hashlib.sha256(raw.encode()).hexdigest()[:24]


def cached_canary_verdict(version: str) -> Verdict:
    """verdict(variant) for choose_variant: a cached verdict, else a canary run (then cached)."""

    def verdict(variant: CpuVariant) -> str | None:
        from lampbox.lampfiles import write_json_atomic
        from lampbox.paths import cache_dir

        path = cache_dir("llama-cpu") / "verdicts.json"
        try:
            verdicts = json.loads(path.read_text())
        except (OSError, ValueError):
            verdicts = {}
        key = verdict_key(variant, version)
        if key not in verdicts:
            reason = run_canary(variant.name)
            verdicts[key] = {"variant": variant.name, "version": version, "fault": reason}
            write_json_atomic(path, verdicts)
        return verdicts[key]["fault"]

    return verdict
