"""`--backend auto` / `--dtype auto`: the fastest path on this machine that keeps outputs at the
reference's quality, chosen from what the machine has (engine.machine) and what the model is.

Measured (benchmarks/bench_generation.py --questions 24 --skip-bare, SmolLM2-135M-Instruct,
commit_subject dev, BM25 k=4, 32 new tokens, 2 threads, quiet machine; x = speed of the bench's
BM25 k=4 configuration against transformers' generate one prompt at a time):
- CPU with AVX512-BF16, no AMX: hf bfloat16 4.64x (ROUGE-1 0.143), hf float32 2.57x (0.118),
  llamacpp batched 2.28x (0.117), hf int8 6.60x but ROUGE-1 0.052 (quality lost: never chosen).
  (An earlier run on the same CPU under load had bf16 slower than fp32; quiet, it is not.)
- CPU with AMX: hf bfloat16 5.15x;
- CUDA: hf bfloat16 (fp16 where the GPU has no bf16);
- a CPU without bf16 instructions: hf float32 (bf16 is emulated there).
A GGUF file that is not a manifest model runs on llamacpp (transformers converts only some
GGUF architectures). The choice is recorded in the run spec like an explicit one; an explicit
--backend / --dtype always wins.
"""

from __future__ import annotations

from dataclasses import dataclass

from lampbox.engine.machine import Machine, this_machine


@dataclass(frozen=True)
class AutoChoice:
    backend: str
    dtype: str | None  # hf weight dtype (None for other backends)
    reason: str

    def line(self) -> str:
        dtype = f" {self.dtype}" if self.dtype else ""
        return f"backend auto: {self.backend}{dtype} ({self.reason})"


def hf_dtype(device: str | None = None, machine: Machine | None = None) -> str:
    """--dtype auto for the hf backend on `device` (default: CUDA when there is one): bfloat16 on
    CUDA (float16 without bf16 support) and on CPUs with AMX or AVX512-BF16, float32 on CPUs
    without bf16 instructions."""
    machine = machine or this_machine()
    if (device or ("cuda" if machine.cuda else "cpu")).startswith("cuda"):
        try:
            import torch

            return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
        except (ImportError, RuntimeError):  # pragma: no cover - no usable CUDA after all
            return "bfloat16"
    return "bfloat16" if machine.cpu_bf16 else "float32"


def choose_backend(method: str, model_format: str, manifest_model: bool, machine: Machine | None = None) -> AutoChoice:
    """The backend (and hf dtype) for `--backend auto`."""
    machine = machine or this_machine()
    if method == "fid":
        return AutoChoice("fid", None, "Fusion-in-Decoder runs on its own backend")
    if model_format == "gguf" and not manifest_model:
        return AutoChoice("llamacpp", None, "a GGUF file runs on llama.cpp")
    try:
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError:
        return AutoChoice("llamacpp", None, "transformers/torch are not installed")
    dtype = hf_dtype(None, machine)
    if machine.cuda:
        reason = "CUDA GPU: batched on the GPU"
    elif machine.amx_bf16:
        reason = "CPU with AMX: batched bf16 matmuls, measured 5x the reference loop"
    elif machine.avx512_bf16:
        reason = f"{machine.describe()}: batched bf16 matmuls, measured 4.6x the reference loop, fp32 2.6x, llama.cpp 2.3x"
    else:
        reason = f"{machine.describe()}: batched fp32 matmuls (no bf16 instructions)"
    return AutoChoice("hf", dtype, reason)
