"""The llamacpp backend on the real packaged SmolLM2-135M-Instruct GGUF."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from lampbox.engine.generation import (
    GenerationCancelled,
    GenerationParams,
    Generator,
    load_generator,
    load_tokenizer,
)

pytestmark = pytest.mark.slow
PROMPTS = ["What is the capital of France?", "Name a colour.", "Write one word."]
PARAMS = GenerationParams(max_new_tokens=8)
# One thread: llama.cpp's spinning workers slow down badly when other jobs share the 2 cores.
THREADS = 1


@pytest.fixture(scope="module")
def generator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Generator]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LAMPBOX_HOME", str(tmp_path_factory.mktemp("home")))
        loaded = load_generator("llamacpp", "smollm2-135m-instruct", threads=THREADS)
        yield loaded
        loaded.close()


def test_greedy_batch_is_deterministic_and_in_order(generator: Generator) -> None:
    seen: list[int] = []
    first = generator.generate(PROMPTS, PARAMS, on_output=lambda index, _: seen.append(index))
    assert len(first) == 3 and all(first)
    assert seen == [0, 1, 2]
    assert generator.generate(PROMPTS, PARAMS) == first
    assert generator.generate(list(reversed(PROMPTS)), PARAMS) == list(reversed(first))


def test_streaming_joins_to_the_generated_text(generator: Generator) -> None:
    assert generator.supports_streaming
    pieces = list(generator.stream(PROMPTS[1], PARAMS))
    assert len(pieces) > 1
    assert "".join(pieces) == generator.generate([PROMPTS[1]], PARAMS)[0]


def test_tokenizer_round_trip_matches_the_vocab_only_tokenizer(generator: Generator) -> None:
    text = "Personalized headlines for LaMP users."
    ids = generator.tokenizer.encode(text)
    assert generator.tokenizer.decode(ids) == text
    assert 4 < len(ids) < len(text)
    assert load_tokenizer("smollm2-135m-instruct").encode(text) == ids
    # No BOS/EOS on encode; special tokens are skipped on decode.
    assert generator.tokenizer.decode([1, *ids, 2]) == text


def test_identity_records_file_hash_and_chat_template(generator: Generator) -> None:
    identity = generator.identity()
    assert identity["backend"] == "llamacpp"
    assert len(identity["model_sha256"]) == 64
    assert identity["chat"] is True
    assert "threads" not in identity
    assert generator.context_size == 2048
    assert not generator.supports_scoring


def test_stop_strings_and_cancelling(generator: Generator) -> None:
    full = generator.generate([PROMPTS[0]], GenerationParams(max_new_tokens=8))[0]
    word = full.split()[1]
    stopped = generator.generate([PROMPTS[0]], GenerationParams(max_new_tokens=8, stop=(word,)))
    assert stopped == [full[: full.index(word)]]
    with pytest.raises(GenerationCancelled, match="after 0 of 3"):
        generator.generate(PROMPTS, PARAMS, should_cancel=lambda: True)


def test_plain_completion_for_base_use(tmp_path: Path, generator: Generator) -> None:
    plain = load_generator(
        "llamacpp", "smollm2-135m-instruct", chat=False, context_size=512, threads=THREADS
    )
    try:
        assert plain.identity()["chat"] is False
        assert plain.identity() != generator.identity()
        text = plain.generate(["The capital of France is"], GenerationParams(max_new_tokens=4))[0]
        assert text and text != generator.generate(["The capital of France is"], PARAMS)[0]
    finally:
        plain.close()
