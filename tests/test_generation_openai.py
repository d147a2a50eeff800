"""The openai backend against llama-cpp-python's own OpenAI-compatible server on 127.0.0.1."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from lampbox.engine.generation import GenerationParams, load_generator, load_tokenizer
from lampbox.engine.generation.openai_compat import ServerTokenizer
from lampbox.models import resolve_model

pytestmark = pytest.mark.slow
pytest.importorskip("uvicorn", reason="llama-cpp-python[server] extras are not installed")
PROMPTS = ["What is the capital of France?", "Name a colour.", "Write one word.", "Say hello."]
PARAMS = GenerationParams(max_new_tokens=8)
# llama-cpp-python's server defaults repeat_penalty to 1.1; the local backend uses 1.0.
SAME_AS_LOCAL = {"repeat_penalty": 1.0}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """llama_cpp.server with the packaged SmolLM2, started for this module and killed after it."""
    port = _free_port()
    log = tmp_path_factory.mktemp("server") / "server.log"
    # llama_cpp.server as `python -m` runs it, after lampbox has loaded the CPU backend (a
    # GGML_BACKEND_DL build, as scripts/setup.sh makes, finds none by itself)
    start = ("from lampbox.engine.generation.llamacpp import load_cpu_backend; load_cpu_backend(); "
             "import runpy; runpy.run_module('llama_cpp.server', run_name='__main__', alter_sys=True)")  # fmt: skip
    command = [sys.executable, "-c", start, "--model", str(resolve_model().path)]
    command += ["--host", "127.0.0.1", "--port", str(port), "--n_ctx", "2048", "--n_threads", "1"]
    with log.open("w") as log_file:
        process = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(url + "/models", timeout=2) as response:
                    json.loads(response.read())
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"llama_cpp.server did not start: {Path(log).read_text()[-2000:]}")
                time.sleep(0.3)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def remote(server_url: str, tmp_path_factory: pytest.TempPathFactory):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LAMPBOX_HOME", str(tmp_path_factory.mktemp("home")))
        yield load_generator(
            "openai", "smollm2-135m-instruct", base_url=server_url, extra_body=SAME_AS_LOCAL
        )


def test_concurrent_outputs_come_back_in_order_and_match_local(remote) -> None:
    assert remote.chat is True and remote.concurrency == 4
    seen: list[int] = []
    outputs = remote.generate(PROMPTS, PARAMS, on_output=lambda index, _: seen.append(index))
    assert sorted(seen) == [0, 1, 2, 3]
    assert all(outputs)
    singles = [remote.generate([prompt], PARAMS)[0] for prompt in PROMPTS]
    assert outputs == singles
    local = load_generator("llamacpp", "smollm2-135m-instruct", threads=1)
    try:
        assert local.generate(PROMPTS, PARAMS) == outputs
    finally:
        local.close()


def test_streaming_joins_to_the_generated_text(remote) -> None:
    # The server reuses its KV cache for a repeated prompt prefix (then evaluates only the rest),
    # and how many tokens are evaluated at once can move a greedy near-tie in some llama.cpp builds
    # (the runtime-dispatch AVX512 one here): prime the cache with this prompt so that the stream
    # and the generation below both start from it.
    remote.generate([PROMPTS[1]], PARAMS)
    pieces = list(remote.stream(PROMPTS[1], PARAMS))
    assert len(pieces) > 1
    assert "".join(pieces) == remote.generate([PROMPTS[1]], PARAMS)[0]


def test_plain_completion_endpoint(server_url: str) -> None:
    plain = load_generator("openai", "smollm2-135m-instruct", base_url=server_url, chat=False)
    assert plain.identity()["chat"] is False
    assert plain.generate(["The capital of France is"], GenerationParams(max_new_tokens=4))[0]


def test_server_tokenizer_matches_the_local_one(remote) -> None:
    tokenizer = remote.tokenizer
    assert isinstance(tokenizer, ServerTokenizer)
    text = "Personalized headlines for LaMP users."
    ids = tokenizer.encode(text)
    assert ids == load_tokenizer("smollm2-135m-instruct").encode(text)
    assert tokenizer.decode(ids) == text


def test_default_model_is_the_first_served_one(server_url: str) -> None:
    served = load_generator("openai", base_url=server_url.removesuffix("/v1"))
    assert served.name.endswith("SmolLM2-135M-Instruct.Q4_1.gguf")
    assert served.base_url == server_url
    assert served.identity()["model"] == served.name
