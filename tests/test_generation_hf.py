"""The hf backend on the real SmolLM2 GGUF, converted once to a normal transformers folder."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lampbox.engine.generation import GenerationParams, load_generator, load_tokenizer

pytestmark = pytest.mark.slow
PROMPTS = ["What is the capital of France?", "Name a colour.", "Write one word."]
PARAMS = GenerationParams(max_new_tokens=6)


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A private LAMPBOX_HOME for this module: the GGUF conversion is cached there."""
    path = tmp_path_factory.mktemp("hf-home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LAMPBOX_HOME", str(path))
        yield path


@pytest.fixture(scope="module")
def generator(home: Path):
    loaded = load_generator("hf", "smollm2-135m-instruct", batch_size=2)
    yield loaded
    loaded.close()


def test_gguf_is_converted_once_and_reused(home: Path, generator) -> None:
    folders = list((home / "cache" / "hf-models").iterdir())
    assert [folder.name for folder in folders] == [Path(generator.source).name]
    config = json.loads((folders[0] / "config.json").read_text())
    assert "quantization_config" not in config
    assert (folders[0] / "model.safetensors").is_file()
    saved_at = (folders[0] / "model.safetensors").stat().st_mtime_ns
    time.sleep(0.01)
    again = load_generator("hf", "smollm2-135m-instruct")
    assert again.source == generator.source
    assert (folders[0] / "model.safetensors").stat().st_mtime_ns == saved_at
    again.close()


def test_batched_outputs_equal_one_at_a_time(generator) -> None:
    # fp32 on CPU: left padding with an attention mask leaves greedy outputs unchanged.
    seen: list[int] = []
    batched = generator.generate(PROMPTS, PARAMS, on_output=lambda index, _: seen.append(index))
    assert sorted(seen) == [0, 1, 2]
    singles = [generator.generate([prompt], PARAMS)[0] for prompt in PROMPTS]
    assert batched == singles
    assert all(batched)


def test_streaming_joins_to_the_generated_text(generator) -> None:
    pieces = list(generator.stream(PROMPTS[0], PARAMS))
    assert "".join(pieces) == generator.generate([PROMPTS[0]], PARAMS)[0]


def test_a_streamed_batch_shows_every_row_and_equals_generate(generator) -> None:
    from lampbox.engine.generation.streaming import generate_streaming, streams_batches

    assert streams_batches(generator)
    pieces: dict[int, list[str]] = {0: [], 1: [], 2: []}
    firsts: list[int] = []

    def on_piece(index: int, piece: str) -> None:
        if not pieces[index]:
            firsts.append(index)
        pieces[index].append(piece)

    outputs = generate_streaming(generator, PROMPTS, PARAMS, on_piece)
    # One batch: all three rows stream, each in several pieces, and join to the outputs.
    assert sorted(firsts) == [0, 1, 2] and all(len(pieces[i]) > 1 for i in range(3))
    assert ["".join(pieces[i]) for i in range(3)] == outputs
    assert outputs == generator.generate(PROMPTS, PARAMS)


def test_tokenizer_matches_the_gguf_vocabulary(generator) -> None:
    text = "Personalized headlines for LaMP users."
    ids = generator.tokenizer.encode(text)
    assert generator.tokenizer.decode(ids) == text
    assert ids == load_tokenizer("smollm2-135m-instruct").encode(text)  # llama.cpp's vocab


def test_chat_template_wraps_the_prompt(generator) -> None:
    assert generator.chat is True
    rendered = generator.tokenizer.hf_tokenizer.decode(generator._prompt_ids("Hi there"))
    assert rendered.endswith("<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n")


def test_scores_prefer_the_likely_continuation(generator) -> None:
    assert generator.supports_scoring
    prompts = ["What is the capital of France?"] * 2
    scores = generator.score(prompts, ["The capital of France is Paris.", "Bananas sing loudly."])
    assert scores[0] > scores[1]
    assert all(score < 0 for score in scores)
    # Batching (left padding) does not change a score beyond float noise.
    alone = generator.score(prompts[:1], ["Bananas sing loudly."])[0]
    assert alone == pytest.approx(scores[1], abs=1e-3)


def test_identity_names_weights_chat_and_precision(generator) -> None:
    identity = generator.identity()
    assert identity["backend"] == "hf"
    assert identity["device"] == "cpu" and identity["dtype"] == "float32"
    assert identity["chat"] is True
    assert len(identity["model_sha256"]) == 64


def test_int8_quantization_is_recorded_and_still_generates(home: Path, generator) -> None:
    quantized = load_generator("hf", "smollm2-135m-instruct", batch_size=2, quantize="int8")
    try:
        import torch

        linears = [m for m in quantized.model.modules() if isinstance(m, torch.nn.Linear)]
        assert not linears  # every Linear layer was replaced by its dynamic int8 version
        identity = quantized.identity()
        assert identity["quantize"] == "int8"
        assert {k: v for k, v in identity.items() if k != "quantize"} == generator.identity()
        outputs = quantized.generate(PROMPTS, PARAMS)
        assert len(outputs) == 3 and any(outputs)
        # Activations are quantized per batch, so outputs depend on the batch's make-up
        # (documented), but the same batch always gives the same outputs.
        assert quantized.generate(PROMPTS, PARAMS) == outputs
        alone = quantized.generate(PROMPTS[:1], PARAMS)[0]
        assert alone == quantized.generate(PROMPTS[:1], PARAMS)[0]
    finally:
        quantized.close()


def test_loading_prints_no_transformers_progress_bars(tmp_path: Path) -> None:
    """A first hf bench converts the GGUF, saves and loads it: none of transformers' tqdm bars
    may print into the bench's output; lampbox's own progress lines stay."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "LAMPBOX_HOME": str(tmp_path / "home")}
    db = tmp_path / "demo.duckdb"

    def lampbox(*args: str) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([sys.executable, "-m", "lampbox", *args], capture_output=True, text=True, env=env)
        assert result.returncode == 0, result.stderr
        return result

    lampbox("data", "demo", "--db", str(db))
    result = lampbox(
        "bench", "--task", "LaMP_7", "--backend", "hf", "--retrievers", "none", "--no-baselines", "--limit", "1",
        "--max-new-tokens", "2", "--threads", "2", "--db", str(db), "--out", str(tmp_path / "out"),
    )  # fmt: skip
    assert list((tmp_path / "home" / "cache" / "hf-models").iterdir())  # it did convert
    for bar in ("Converting and de-quantizing", "Loading weights", "Writing model shards", "it/s]"):
        assert bar not in result.stderr and bar not in result.stdout, result.stderr
    assert "[1/1] no personalization hf:" in result.stderr
