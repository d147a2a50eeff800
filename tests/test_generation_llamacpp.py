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
    assert sorted(seen) == [0, 1, 2]  # each as it finishes: batched, not in prompt order
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
    # the build's CPU code (AVX2 or AVX512 kernels) changes outputs: part of the cache key
    from lampbox.engine.generation.llamacpp import cpu_backend_features

    assert identity["cpu_backend"] == ",".join(f"{k}={v}" for k, v in cpu_backend_features().items())
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
        # Batched plain completion: the prompt tokens create_completion builds, the same outputs.
        prompts = ["The capital of France is", "Once upon a time", "1, 2, 3,"]
        one_by_one = [plain.generate([prompt], PARAMS)[0] for prompt in prompts]
        assert plain.generate(prompts, PARAMS) == one_by_one
    finally:
        plain.close()


def bench_prompts(store_path: Path, questions: int, k: int) -> list[str]:
    """The IPA prompts `lampbox bench` builds on commit_subject dev (BM25 top-k; k=0: bare inputs)."""
    from lampbox.engine.methods import selected_items
    from lampbox.engine.prompting import PromptBuilder
    from lampbox.lab.pipeline import rank
    from lampbox.lab.specs import RunSpec
    from lampbox.store import Store

    with Store(store_path) as store:
        spec = RunSpec("commit_subject", "user", "dev", retriever="bm25" if k else "none", k=k, limit=questions)
        task = store.task("commit_subject")
        selected = store.questions("commit_subject", "user", "dev", limit=questions)
        rankings = rank(spec, task, selected, store)
        builder = PromptBuilder(task, load_tokenizer(), max_length=256)
        return [builder.build(q.input, selected_items(q, rankings.get(q.id), k)).text for q in selected]


@pytest.fixture(scope="module")
def one_at_a_time(generator: Generator) -> Iterator[Generator]:
    loaded = load_generator("llamacpp", "smollm2-135m-instruct", threads=THREADS, batch_size=1)
    yield loaded
    loaded.close()


def test_batched_greedy_outputs_equal_one_at_a_time_on_bench_prompts(
    commits_store_path: Path, one_at_a_time: Generator
) -> None:
    # Long (BM25 k=4, ~280 tokens) and short (bare input) prompts, more than the batch holds,
    # so sequences of different lengths share decode steps and finished slots are reused.
    long, short = bench_prompts(commits_store_path, 3, 4), bench_prompts(commits_store_path, 3, 0)
    prompts = [long[0], short[0], short[1], long[1], short[2], long[2]]
    params = GenerationParams(max_new_tokens=16)
    batched = load_generator("llamacpp", "smollm2-135m-instruct", threads=THREADS, batch_size=4)
    try:
        assert batched.identity() == one_at_a_time.identity()  # same outputs, same cache keys
        seen: list[int] = []
        outputs = batched.generate(prompts, params, on_output=lambda index, _: seen.append(index))
        assert outputs == one_at_a_time.generate(prompts, params)
        assert sorted(seen) == list(range(len(prompts)))
        word = outputs[0].split()[1]
        stopped = GenerationParams(max_new_tokens=16, stop=(word, "\n"))
        assert batched.generate(prompts, stopped) == one_at_a_time.generate(prompts, stopped)
    finally:
        batched.close()


def test_batched_decoding_cancels_between_steps(generator: Generator) -> None:
    calls = 0

    def cancel_after_a_few_steps() -> bool:
        nonlocal calls
        calls += 1
        return calls > 6  # prompts evaluated, a few tokens decoded

    with pytest.raises(GenerationCancelled, match="after 0 of 3"):
        generator.generate(PROMPTS, GenerationParams(max_new_tokens=32), should_cancel=cancel_after_a_few_steps)
    assert calls == 7
    # The batched context is left empty: the next call gives the usual outputs.
    assert generator.generate(PROMPTS, PARAMS) == [generator.generate([p], PARAMS)[0] for p in PROMPTS]


def test_streamed_batch_interleaves_panes_and_equals_one_at_a_time(
    commits_store_path: Path, one_at_a_time: Generator
) -> None:
    from lampbox.engine.generation.streaming import generate_streaming, streams_batches

    prompts = [*bench_prompts(commits_store_path, 2, 4), bench_prompts(commits_store_path, 1, 0)[0]]
    params = GenerationParams(max_new_tokens=12)
    batched = load_generator("llamacpp", "smollm2-135m-instruct", threads=THREADS, batch_size=4)
    try:
        assert streams_batches(batched, params)
        assert not streams_batches(batched, GenerationParams(temperature=0.7))
        events: list[tuple[int, str]] = []
        finished: list[int] = []
        outputs = generate_streaming(
            batched, prompts, params, lambda index, piece: events.append((index, piece)),
            on_output=lambda index, _: finished.append(index),
        )  # fmt: skip
        assert outputs == one_at_a_time.generate(prompts, params)
        assert all(outputs) and finished == [0, 1, 2]
        joined = ["".join(piece for index, piece in events if index == row) for row in range(3)]
        assert joined == outputs and all(piece for _, piece in events)
        # Every prompt's first piece comes right after its own prefill (the shortest prompt's
        # first), before any prompt's second piece: the panes then grow together, interleaved.
        order = [index for index, _ in events]
        assert order[:3] == [2, 0, 1]
        assert order != sorted(order)
        # A stop string is never streamed past: the pieces still join to the cut outputs.
        word = outputs[0].split()[1]
        stopped = GenerationParams(max_new_tokens=12, stop=(word,))
        events.clear()
        cut = batched.generate_streaming(prompts, stopped, lambda index, piece: events.append((index, piece)))
        assert cut == one_at_a_time.generate(prompts, stopped)
        assert ["".join(p for i, p in events if i == row) for row in range(3)] == cut
    finally:
        batched.close()


def test_streamed_batch_cancels_and_sampling_streams_one_after_another(generator: Generator) -> None:
    calls = 0
    pieces: list[int] = []

    def cancel_after_a_few_steps() -> bool:
        nonlocal calls
        calls += 1
        return calls > 6  # prompts evaluated (first pieces shown), a few tokens decoded

    with pytest.raises(GenerationCancelled, match="after 0 of 3"):
        generator.generate_streaming(  # type: ignore[attr-defined]
            PROMPTS, GenerationParams(max_new_tokens=32), lambda index, _: pieces.append(index),
            should_cancel=cancel_after_a_few_steps,
        )  # fmt: skip
    assert sorted(set(pieces)) == [0, 1, 2] and len(pieces) < 3 * 32
    assert generator.generate(PROMPTS, PARAMS) == [generator.generate([p], PARAMS)[0] for p in PROMPTS]

    # Sampling keeps the old path: each prompt streamed whole before the next one starts.
    sampled = GenerationParams(max_new_tokens=6, temperature=0.8, seed=3)
    order: list[int] = []
    outputs = generator.generate_streaming(PROMPTS, sampled, lambda index, _: order.append(index))  # type: ignore[attr-defined]
    assert order == sorted(order) and set(order) == {0, 1, 2}
    assert len(outputs) == 3 and all(outputs)


def test_streamed_batch_keeps_multibyte_characters_whole(
    generator: Generator, one_at_a_time: Generator
) -> None:
    # Accented letters and emoji that take several tokens each (a 4-byte emoji arrives in
    # pieces of bytes): every streamed piece is whole characters and they join to the output.
    prompts = ["Écris une phrase en français sur le café et l'été.", "Write three emoji about the sea."]
    params = GenerationParams(max_new_tokens=16)
    events: list[tuple[int, str]] = []
    outputs = generator.generate_streaming(prompts, params, lambda index, piece: events.append((index, piece)))  # type: ignore[attr-defined]
    assert outputs == one_at_a_time.generate(prompts, params)
    assert any(ord(char) > 0xFFFF for char in outputs[1])  # an emoji came out
    assert all("\ufffd" not in piece for _, piece in events)
    assert ["".join(p for i, p in events if i == row) for row in range(2)] == outputs
