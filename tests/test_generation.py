"""The generation registry and helpers, without loading a model."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from lampbox.engine.generation import (
    GenerationParams,
    GenerationRequest,
    known_backends,
    known_models,
    load_generator,
)
from lampbox.engine.generation.common import cut_at_stop, settled_length, stop_filtered
from lampbox.engine.generation.openai_compat import WordTokenizer
from lampbox.errors import InputFileError, LampboxError, UnknownNameError


@pytest.fixture(autouse=True)
def private_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LAMPBOX_HOME", str(tmp_path / "home"))


def test_importing_generation_loads_no_backend() -> None:
    code = (
        "import sys, lampbox.engine.generation as g\n"
        "g.known_backends(); g.known_models()\n"
        "print(','.join(m for m in ('torch', 'llama_cpp', 'transformers') if m in sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == ""


def test_unknown_backend_and_model_list_the_known_ones() -> None:
    assert known_backends() == ["dummy", "fid", "hf", "llamacpp", "openai"]
    assert "smollm2-135m-instruct" in known_models()
    with pytest.raises(UnknownNameError, match="Known: dummy, fid, hf, llamacpp, openai"):
        load_generator("vllm", "smollm2-135m-instruct")
    with pytest.raises(UnknownNameError, match="gemma-3-270m, smollm2-135m-instruct"):
        load_generator("llamacpp", "no-such-model")


def test_a_corrupt_gguf_names_the_file(tmp_path: Path) -> None:
    corrupt = tmp_path / "corrupt.gguf"
    corrupt.write_bytes(bytes(range(256)) * 64)
    with pytest.raises(InputFileError) as caught:
        load_generator("llamacpp", str(corrupt))
    assert str(corrupt) in str(caught.value)
    assert "could not load" in str(caught.value)


def test_an_unreachable_server_is_a_clear_error() -> None:
    with socket.socket() as probe:  # a port that was free a moment ago: nothing listens there
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(
        LampboxError,
        match=f"cannot reach the OpenAI-compatible server at http://127.0.0.1:{port}/v1",
    ):
        load_generator("openai", "any-model", base_url=f"http://127.0.0.1:{port}", timeout=5)


def test_stop_strings_cut_outputs_and_streams() -> None:
    assert cut_at_stop("one\ntwo###three", ("###", "\n")) == "one"
    assert cut_at_stop("no stop here", ("###",)) == "no stop here"
    pieces = ["Hel", "lo #", "#", "# world"]
    assert "".join(stop_filtered(iter(pieces), ("###",))) == "Hello "
    assert "".join(stop_filtered(iter(pieces), ())) == "Hello ### world"
    assert "".join(stop_filtered(iter(["a#", "b"]), ("###",))) == "a#b"


def test_only_text_no_stop_string_can_cut_is_settled() -> None:
    # before a stop string found, before a tail that may start one, else all of it
    assert settled_length("abc STOP x", ["STOP"]) == 4
    assert settled_length("abc ST", ["STOP", "\n"]) == 4
    assert settled_length("abc STX", ["STOP"]) == 7
    assert settled_length("abS", ["STOP", "bSX"]) == 1  # the longest possible start wins
    assert settled_length(b"caf\xc3 <|en", [b"<|end|>"]) == 5  # UTF-8 bytes too
    # each piece is shown as soon as no stop string can cut it, never a start that one does
    pieces = ["ab S", "T", "x S", "TOP!"]
    assert list(stop_filtered(iter(pieces), ("STOP",))) == ["ab ", "STx "]


def test_word_tokenizer_round_trips_and_counts_words() -> None:
    tokenizer = WordTokenizer()
    text = "Hello, world!  Two  spaces\nand a newline."
    ids = tokenizer.encode(text)
    assert tokenizer.decode(ids) == text
    assert len(tokenizer.encode("one two three")) == 3


def test_default_params_are_greedy() -> None:
    params = GenerationParams()
    assert params.temperature == 0.0 and params.seed == 0


def test_streaming_several_requests_one_after_another_and_whole() -> None:
    from lampbox.engine.generation.common import GenerationCancelled
    from lampbox.engine.generation.streaming import generate_streaming, streams_batches

    generator = load_generator("dummy", words=3)
    assert not streams_batches(generator)  # the dummy streams request by request
    requests = [GenerationRequest("a b c d"), GenerationRequest("e f g")]
    events: list[tuple[str, int, str]] = []
    outputs = generate_streaming(
        generator, requests, GenerationParams(max_new_tokens=8),
        on_piece=lambda index, piece: events.append(("piece", index, piece)),
        on_output=lambda index, output: events.append(("output", index, output)),
    )  # fmt: skip
    assert outputs == generator.generate(requests, GenerationParams(max_new_tokens=8)) == ["a b c", "e f g"]
    assert events[:4] == [("piece", 0, "a"), ("piece", 0, " b"), ("piece", 0, " c"), ("output", 0, "a b c")]
    assert events[-1] == ("output", 1, "e f g")

    calls = []

    def cancel_after_two_pieces() -> bool:
        calls.append(1)
        return len(calls) > 2

    with pytest.raises(GenerationCancelled):
        generate_streaming(generator, requests, GenerationParams(), on_piece=lambda *_: None, should_cancel=cancel_after_two_pieces)
