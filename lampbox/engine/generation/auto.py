"""`--backend auto` / `--dtype auto`: the fastest path on this machine that keeps outputs at the
reference's quality, chosen from what the machine has (engine.machine) and what the model is.

Measured (benchmarks/bench_generation.py, SmolLM2-135M-Instruct, commit_subject dev, BM25 k=4,
32 new tokens; x = speed against transformers' generate one prompt at a time):
- CPU without AMX (AVX512-BF16 or less): hf float32 batched 2.51x, hf bfloat16 2.13x,
  llamacpp 0.98x, hf int8 4.21x but ROUGE-1 0.045 against 0.118 (quality lost: never chosen);
- CPU with AMX: hf bfloat16 5.15x;
- CUDA: hf bfloat16 (fp16 where the GPU has no bf16).
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
    CUDA (float16 without bf16 support) and on AMX CPUs, float32 on other CPUs (bf16 inference
    without AMX is slower than fp32 there)."""
    machine = machine or this_machine()
    if (device or ("cuda" if machine.cuda else "cpu")).startswith("cuda"):
        try:
            import torch

            return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
        except (ImportError, RuntimeError):  # pragma: no cover - no usable CUDA after all
            return "bfloat16"
    return "bfloat16" if machine.amx_bf16 else "float32"


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
    else:
        reason = f"{machine.describe()}: batched fp32 matmuls, measured 2.5x the reference loop, llama.cpp 1x"
    return AutoChoice("hf", dtype, reason)
