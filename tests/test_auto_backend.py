"""--backend auto / --dtype auto: the choice from the machine's facts and the model."""

from __future__ import annotations

from lampbox.engine.generation.auto import choose_backend, hf_dtype
from lampbox.engine.machine import Machine

PLAIN = Machine(cuda=False, amx_bf16=False, avx512_bf16=False, avx512_vnni=False)
AVX512_BF16 = Machine(cuda=False, amx_bf16=False, avx512_bf16=True, avx512_vnni=True)
AMX = Machine(cuda=False, amx_bf16=True, avx512_bf16=True, avx512_vnni=True)


def test_cpus_get_hf_batched_in_the_dtype_that_is_fastest_there() -> None:
    for machine, dtype in ((PLAIN, "float32"), (AVX512_BF16, "bfloat16"), (AMX, "bfloat16")):
        choice = choose_backend("ipa", "gguf", True, machine)
        assert (choice.backend, choice.dtype) == ("hf", dtype)
        assert hf_dtype("cpu", machine) == dtype
    assert "AVX512-BF16" in choose_backend("ipa", "hf", False, AVX512_BF16).line()


def test_gguf_files_fid_and_explicit_devices() -> None:
    assert choose_backend("ipa", "gguf", False, AMX).backend == "llamacpp"  # not a manifest model
    assert choose_backend("fid", "hf", False, AMX).backend == "fid"
    assert choose_backend("ipa", "hf", False, PLAIN).backend == "hf"  # an HF folder or a trained model
    assert hf_dtype("cpu", Machine(cuda=True, amx_bf16=False, avx512_bf16=False, avx512_vnni=False)) == "float32"
