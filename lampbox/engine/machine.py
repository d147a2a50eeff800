"""What this machine computes fast: the facts the automatic choices (training precision, the
bench's backend and dtype) are made from, read once."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path


@dataclass(frozen=True)
class Machine:
    cuda: bool
    amx_bf16: bool  # Intel AMX: bf16 matmuls several times fp32's speed
    avx512_bf16: bool  # bf16 dot products on AVX-512 (faster training; inference no faster than fp32)
    avx512_vnni: bool

    @property
    def cpu_bf16(self) -> bool:
        return self.amx_bf16 or self.avx512_bf16

    def describe(self) -> str:
        if self.cuda:
            return "CUDA GPU"
        flags = [name for name, present in (("AMX-BF16", self.amx_bf16), ("AVX512-BF16", self.avx512_bf16),
                                            ("AVX512-VNNI", self.avx512_vnni)) if present]  # fmt: skip
        return f"CPU ({', '.join(flags) or 'no AMX/AVX512-BF16'})"


def cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


@lru_cache(maxsize=1)
def this_machine() -> Machine:
    try:
        import torch

        cuda = bool(torch.cuda.is_available())
    except ImportError:
        cuda = False
    flags = cpu_flags()
    return Machine(cuda, "amx_bf16" in flags, "avx512_bf16" in flags, "avx512_vnni" in flags)
