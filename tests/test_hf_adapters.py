"""Per-request adapters on the hf backend (OPPU's serving): one loaded model, requests of one
batch naming different adapters, each output what the same adapter merged into the model
gives (greedy); requests without an adapter get the model as loaded. A tiny random Llama
with SmolLM2's tokenizer and two random LoRA adapters."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

PROMPTS = ["Write a subject: fix the parser", "Hi", "Write a subject: speed up the diff machinery in git"]


@pytest.fixture(scope="module")
def adapters(tiny_lm: Path, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Two LoRA adapters with random A and B (a fresh LoRA's B is zero: it would change nothing),
    each saved as a lampbox trained model (adapter/ + lampbox-model.json), which the hf backend
    loads merged when it is the model itself."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    folders = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        model = get_peft_model(
            AutoModelForCausalLM.from_pretrained(tiny_lm),
            LoraConfig(r=4, lora_alpha=32, target_modules=["q_proj", "v_proj", "o_proj"], init_lora_weights=False),
        )  # fmt: skip
        folder = tmp_path_factory.mktemp(f"adapter-{seed}")
        model.save_pretrained(folder / "adapter")
        (folder / "lampbox-model.json").write_text(json.dumps({"kind": "lora", "base": str(tiny_lm), "chat": True}))
        folders.append(folder)
    return folders


def test_one_batch_serves_two_adapters_as_their_merged_models(tiny_lm: Path, adapters: list[Path]) -> None:
    from lampbox.engine.generation.base import GenerationParams, GenerationRequest
    from lampbox.engine.generation.hf import HFGenerator

    params = GenerationParams(max_new_tokens=8)
    merged = [HFGenerator(str(folder), batch_size=8).generate(PROMPTS, params) for folder in adapters]
    plain = HFGenerator(str(tiny_lm), batch_size=8).generate(PROMPTS, params)
    assert merged[0] != merged[1] != plain  # the adapters change the outputs

    generator = HFGenerator(str(tiny_lm), batch_size=8, max_adapters=2)
    assert generator.supports_adapters
    first, second = (str(folder) for folder in adapters)
    requests = [
        GenerationRequest(PROMPTS[0], adapter=first), GenerationRequest(PROMPTS[1], adapter=second),
        GenerationRequest(PROMPTS[2]), GenerationRequest(PROMPTS[2], adapter=first),
        GenerationRequest(PROMPTS[0], adapter=str(adapters[1] / "adapter")), GenerationRequest(PROMPTS[1]),
    ]  # fmt: skip
    outputs = generator.generate(requests, params)
    assert outputs == [merged[0][0], merged[1][1], plain[2], merged[0][2], merged[1][0], plain[1]]
    # streamed: one batch per adapter, the same outputs
    pieces: dict[int, str] = {}
    streamed = generator.generate_streaming(requests, params, lambda i, p: pieces.__setitem__(i, pieces.get(i, "") + p))
    assert streamed == outputs and set(pieces) == {i for i, text in enumerate(outputs) if text}


@pytest.mark.slow
def test_adapters_beyond_the_bound_are_dropped_least_recently_used_first(tiny_lm: Path, adapters: list[Path]) -> None:
    from lampbox.engine.generation.base import GenerationParams, GenerationRequest
    from lampbox.engine.generation.hf import HFGenerator

    params = GenerationParams(max_new_tokens=6)
    generator = HFGenerator(str(tiny_lm), batch_size=8, max_adapters=1)
    first, second = (str(folder) for folder in adapters)
    expected = [HFGenerator(str(folder)).generate(PROMPTS[:1], params)[0] for folder in adapters]
    for _ in range(2):  # each adapter loaded again after the other pushed it out
        outputs = generator.generate([GenerationRequest(PROMPTS[0], adapter=a) for a in (first, second)], params)
        assert outputs == expected
    slots = generator._adapters
    assert slots is not None and slots.loaded == [str((adapters[1] / "adapter").resolve())]
    # the model as loaded again for a plain prompt, after an adapter was active
    assert generator.generate(PROMPTS[:1], params) == HFGenerator(str(tiny_lm)).generate(PROMPTS[:1], params)


@pytest.mark.slow
def test_labels_are_scored_with_each_requests_adapter(tiny_lm: Path, adapters: list[Path]) -> None:
    from lampbox.engine.generation.base import GenerationRequest
    from lampbox.engine.generation.hf import HFGenerator

    labels = ["parser", "diff", "git-gui"]
    merged = [HFGenerator(str(folder)).score_labels(PROMPTS[:2], labels) for folder in adapters]
    plain = HFGenerator(str(tiny_lm)).score_labels(PROMPTS[:2], labels)
    generator = HFGenerator(str(tiny_lm))
    first, second = (str(folder) for folder in adapters)
    requests = [GenerationRequest(PROMPTS[0], adapter=second), GenerationRequest(PROMPTS[1]), GenerationRequest(PROMPTS[1], adapter=first)]
    scored = generator.score_labels(requests, labels)
    expected = [merged[1][0], plain[1], merged[0][1]]
    assert all(got == pytest.approx(want, abs=1e-4) for got, want in zip(scored, expected, strict=True))
    assert scored[0] != pytest.approx(plain[0], abs=1e-3)  # the adapter changed the scores


def test_an_adapter_trained_on_other_weights_is_refused(tiny_lm: Path, adapters: list[Path], tmp_path: Path) -> None:
    import shutil

    from lampbox.engine.fingerprint import folder_sha256
    from lampbox.engine.generation.base import GenerationParams, GenerationRequest
    from lampbox.engine.generation.hf import HFGenerator
    from lampbox.errors import LampboxError

    generator = HFGenerator(str(tiny_lm), batch_size=8)
    params = GenerationParams(max_new_tokens=2)
    for name, fingerprint in (("same", folder_sha256(tiny_lm)), ("other", "0" * 64)):
        folder = tmp_path / name
        shutil.copytree(adapters[0], folder)
        info = json.loads((folder / "lampbox-model.json").read_text())
        (folder / "lampbox-model.json").write_text(json.dumps({**info, "base_fingerprint": fingerprint}))
    assert generator.generate([GenerationRequest(PROMPTS[0], adapter=str(tmp_path / "same"))], params)
    with pytest.raises(LampboxError, match="'other' was trained on .*, whose weights differ from the loaded model"):
        generator.generate([GenerationRequest(PROMPTS[0], adapter=str(tmp_path / "other"))], params)
