"""Per-request LoRA adapters on the llamacpp backend: the packaged SmolLM2 GGUF with two seeded
random peft LoRAs (written with numpy), converted to GGUF LoRAs and set per request on the one
loaded model. Each adapter's greedy output is the one llama-cpp-python gives with that adapter
fixed at load, whatever ran before (A -> B -> A, one at a time and batched, mixed in one batch);
a trained model's own adapter stays under the request's; an adapter trained on other weights
is refused."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from lora_helpers import MODEL, random_lora, trained_lora

from lampbox.engine.generation.base import GenerationParams, GenerationRequest
from lampbox.errors import LampboxError

pytestmark = pytest.mark.slow
pytest.importorskip("llama_cpp")
PROMPTS = ["Name a colour.", "What is the capital of France?", "Write one word.", "Say hello."]
PARAMS = GenerationParams(max_new_tokens=8)


@pytest.fixture(scope="module")
def adapters(module_home: Path) -> dict[str, Any]:
    from lampbox.engine.fingerprint import file_sha256
    from lampbox.models import resolve_model

    work = module_home / "loras"
    fingerprint = file_sha256(resolve_model(MODEL).path)
    parts_a: list[tuple[np.ndarray, np.ndarray]] = []
    parts_b: list[tuple[np.ndarray, np.ndarray]] = []
    a = trained_lora(module_home, "user-a", random_lora(work / "a", 1, parts=parts_a), fingerprint)
    b = trained_lora(module_home, "user-b", random_lora(work / "b", 2, parts=parts_b), fingerprint)
    return {"a": str(a / "adapter"), "b": str(b / "adapter"), "parts": (parts_a, parts_b), "fingerprint": fingerprint}


def _alone(adapter_gguf: Path | None, prompts: list[str]) -> list[str]:
    """llama-cpp-python's own chat completion with the adapter fixed at load (its high-level API)."""
    from lampbox.engine.generation.llamacpp import _open_llama
    from lampbox.models import resolve_model

    llama = _open_llama(resolve_model(MODEL).path, n_ctx=2048, n_threads=1, seed=0, lora_path=str(adapter_gguf) if adapter_gguf else None)
    try:
        outputs = []
        for prompt in prompts:
            answer = llama.create_chat_completion(
                messages=[{"role": "user", "content": prompt}], max_tokens=PARAMS.max_new_tokens,
                temperature=0.0, top_p=1.0, top_k=0, min_p=0.0, repeat_penalty=1.0, seed=0,
            )  # fmt: skip
            outputs.append(str(answer["choices"][0]["message"]["content"] or ""))
            llama.reset()
        return outputs
    finally:
        llama.close()


@pytest.fixture(scope="module")
def generator(adapters: dict[str, Any]):  # type: ignore[no-untyped-def]
    from lampbox.engine.generation.llamacpp import LlamaCppGenerator

    loaded = LlamaCppGenerator(MODEL, threads=1, batch_size=4, max_adapters=2)
    yield loaded
    loaded.close()


def test_switching_a_to_b_to_a_gives_each_adapters_own_output(generator: Any, adapters: dict[str, Any]) -> None:
    from lampbox.engine.generation.gguf_lora import gguf_adapter

    path = generator.path
    alone = {name: _alone(gguf_adapter(adapters[name], path), PROMPTS) for name in ("a", "b")}
    alone["base"] = _alone(None, PROMPTS)
    assert alone["a"] != alone["b"] and alone["a"] != alone["base"] and alone["b"] != alone["base"]

    def run(name: str, batched: bool) -> list[str]:
        adapter = adapters.get(name)
        if batched:
            return generator.generate([GenerationRequest(p, adapter=adapter) for p in PROMPTS], PARAMS)
        return [generator.generate([GenerationRequest(p, adapter=adapter)], PARAMS)[0] for p in PROMPTS]

    for batched in (False, True):  # one at a time (the Llama's own context), then one batch
        for name in ("a", "b", "a", "base", "b"):
            assert run(name, batched) == alone[name], (name, batched)
    # one prompt under A, B, A in turn: nothing of the previous adapter's prefix is reused
    for name in ("a", "b", "a"):
        assert "".join(generator.stream(GenerationRequest(PROMPTS[1], adapter=adapters[name]), PARAMS)) == alone[name][1]
    # requests naming different adapters in one call: grouped by adapter, outputs in order
    names = ["a", "b", "base", "a", "b", "base"]
    mixed = [GenerationRequest(PROMPTS[i % 4], adapter=adapters.get(n)) for i, n in enumerate(names)]
    assert generator.generate(mixed, PARAMS) == [alone[n][i % 4] for i, n in enumerate(names)]
    assert len(generator._adapters.loaded) == 2  # both initialised once, within the bound


def test_at_most_max_adapters_stay_loaded(adapters: dict[str, Any], module_home: Path) -> None:
    from lampbox.engine.generation.llamacpp import LlamaCppGenerator

    one = LlamaCppGenerator(MODEL, threads=1, batch_size=2, max_adapters=1)
    try:
        first = one.generate([GenerationRequest(PROMPTS[0], adapter=adapters["a"])] * 2, PARAMS)
        one.generate([GenerationRequest(PROMPTS[0], adapter=adapters["b"])] * 2, PARAMS)
        assert one._adapters.loaded == [str(Path(adapters["b"]).resolve())]  # A freed
        assert one.generate([GenerationRequest(PROMPTS[0], adapter=adapters["a"])], PARAMS) == first[:1]
        assert one.generate([GenerationRequest(PROMPTS[0], adapter=adapters["a"])] * 2, PARAMS) == first
    finally:
        one.close()


def test_a_trained_models_own_adapter_stays_under_the_requests(adapters: dict[str, Any], module_home: Path) -> None:
    from safetensors.numpy import save_file

    from lampbox.engine.generation.llamacpp import LlamaCppGenerator

    # A and B at once equal one rank-8 adapter made of both (alpha = rank: every scale is 1)
    parts_a, parts_b = adapters["parts"]
    source = json.loads((Path(adapters["a"]) / "adapter_config.json").read_text())
    both = module_home / "loras" / "both"
    both.mkdir()
    tensors = {}
    layers = len(parts_a) // 2
    for index, ((a1, b1), (a2, b2)) in enumerate(zip(parts_a, parts_b, strict=True)):
        prefix = f"base_model.model.model.layers.{index // 2}.self_attn.{('q_proj', 'v_proj')[index % 2]}"
        tensors[f"{prefix}.lora_A.weight"] = np.concatenate([a1, a2])
        tensors[f"{prefix}.lora_B.weight"] = np.concatenate([b1, b2], axis=1)
    assert len(tensors) == 4 * layers
    save_file(tensors, str(both / "adapter_model.safetensors"))
    (both / "adapter_config.json").write_text(json.dumps({**source, "r": 8, "lora_alpha": 8}))
    from lampbox.engine.generation.gguf_lora import gguf_adapter
    from lampbox.models import resolve_model

    expected = _alone(gguf_adapter(both, resolve_model(MODEL).path), PROMPTS)
    own = LlamaCppGenerator("user-a", threads=1, batch_size=4)  # a trained LoRA model: A at load
    try:
        assert own.identity()["adapter_sha256"]
        assert own.generate([GenerationRequest(p, adapter=adapters["b"]) for p in PROMPTS], PARAMS) == expected
        assert own.generate(PROMPTS, PARAMS) == _alone(gguf_adapter(adapters["a"], own.path), PROMPTS)
    finally:
        own.close()


def test_an_adapter_trained_on_other_weights_is_refused(adapters: dict[str, Any], generator: Any, module_home: Path) -> None:
    other = trained_lora(module_home, "user-other", Path(adapters["a"]), "0" * 64)
    with pytest.raises(LampboxError, match="'user-other' was trained on 'smollm2-135m-instruct', whose weights differ"):
        generator.generate([GenerationRequest(PROMPTS[0], adapter=str(other / "adapter"))], PARAMS)
    assert generator.generate([GenerationRequest(PROMPTS[0], adapter=adapters["a"])], PARAMS)  # still serving
