"""The openai backend's logic against a stand-in OpenAI-compatible server on 127.0.0.1 (no
model): the served model and its context, request bodies, outputs in prompt order whatever
order they finish in, streaming, cancelling, server errors, the server's tokenizer and the
fallbacks when it has none. llama-cpp-python's real server is test_generation_openai.py's,
marked slow."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from lampbox.engine.generation.base import GenerationParams
from lampbox.engine.generation.common import GenerationCancelled
from lampbox.errors import LampboxError

PARAMS = GenerationParams(max_new_tokens=8)


class _Server(BaseHTTPRequestHandler):
    """Chat answers are the prompt upper-cased, completions the prompt reversed; "slow" prompts
    answer late, "fail" ones with HTTP 500, "garbage" ones with text that is not JSON. Tokens are
    a BOS (1) then one per character, as llama-cpp-python's /extras/tokenize adds one."""

    bodies: list[dict[str, Any]] = []
    tokenizes = True

    def _send(self, answer: Any, status: int = 200, raw: bytes | None = None) -> None:
        data = raw if raw is not None else json.dumps(answer).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        self._send({"data": [{"id": "served-a", "max_model_len": 321}, {"id": "served-b"}]})

    def do_POST(self) -> None:  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if self.path.endswith("tokenize"):
            if not _Server.tokenizes:
                self._send({"error": "no such route"}, status=404)
            elif self.path.endswith("/detokenize"):
                self._send({"text": "".join(chr(t) for t in body["tokens"] if t != 1)})
            else:
                self._send({"tokens": [1, *(ord(c) for c in body["input"])]})
            return
        _Server.bodies.append(body)
        prompt = body["messages"][0]["content"] if "messages" in body else body["prompt"]
        if "slow" in prompt:
            time.sleep(0.3)
        if "fail" in prompt:
            self._send({"error": "model crashed"}, status=500)
            return
        if "garbage" in prompt:
            self._send(None, raw=b"<html>oops</html>")
            return
        text = prompt.upper() if "messages" in body else prompt[::-1]
        if not body.get("stream"):
            self._send({"choices": [{"message": {"content": text}, "text": text}]})
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        self.wfile.write(b": a comment line\n\ndata: {\"choices\": []}\n\n")
        for char in text:
            choice = {"delta": {"content": char}} if "messages" in body else {"text": char}
            self.wfile.write(f"data: {json.dumps({'choices': [choice]})}\n\n".encode())
        self.wfile.write(b"data: [DONE]\n\n")

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    """The stand-in server's root URL (no /v1: the backend adds it)."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Server)
    _Server.bodies, _Server.tokenizes = [], True
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_the_first_served_model_and_its_context_are_the_defaults(server: str) -> None:
    from lampbox.engine.generation.openai_compat import OpenAIGenerator

    remote = OpenAIGenerator(base_url=server)
    assert remote.name == "served-a" and remote.base_url == server.rstrip("/") + "/v1"
    assert remote.context_size == 321  # the server's max_model_len (vLLM reports it)
    assert remote.chat is True  # a model lampbox does not know: the servers' usual chat mode
    assert OpenAIGenerator("served-b", base_url=server).context_size == 2048
    assert OpenAIGenerator("served-a", base_url=server, context_size=99).context_size == 99
    identity = OpenAIGenerator("served-b", base_url=server + "v1", chat=False, extra_body={"repeat_penalty": 1.0}).identity()
    assert identity == {"backend": "openai", "base_url": server + "v1", "model": "served-b", "chat": False,
                        "extra_body": {"repeat_penalty": 1.0}}  # fmt: skip


def test_outputs_come_back_in_prompt_order_with_the_request_body_built_from_params(server: str) -> None:
    from lampbox.engine.generation.openai_compat import OpenAIGenerator

    remote = OpenAIGenerator("served-a", base_url=server, concurrency=3, extra_body={"repeat_penalty": 1.0})
    finished: list[int] = []
    prompts = ["slow one", "two", "three"]
    params = GenerationParams(max_new_tokens=5, temperature=0.5, top_k=7, stop=("\n",), seed=3)
    outputs = remote.generate(prompts, params, on_output=lambda index, _: finished.append(index))
    assert outputs == ["SLOW ONE", "TWO", "THREE"]
    assert finished[-1] == 0 and sorted(finished) == [0, 1, 2]  # the slow one finished last
    body = next(b for b in _Server.bodies if b["messages"][0]["content"] == "two")
    assert {k: body[k] for k in ("model", "max_tokens", "temperature", "top_k", "stop", "seed", "repeat_penalty")} == {
        "model": "served-a", "max_tokens": 5, "temperature": 0.5, "top_k": 7, "stop": ["\n"], "seed": 3, "repeat_penalty": 1.0,
    }  # fmt: skip
    _Server.bodies.clear()
    remote.generate(["x"], PARAMS)
    assert "top_k" not in _Server.bodies[0] and "stop" not in _Server.bodies[0]  # left to the server's defaults


def test_plain_completion_and_streams(server: str) -> None:
    from lampbox.engine.generation.openai_compat import OpenAIGenerator

    plain = OpenAIGenerator("served-b", base_url=server, chat=False)
    assert plain.generate(["abc", "xyz"], PARAMS) == ["cba", "zyx"] and "prompt" in _Server.bodies[0]
    assert list(plain.stream("abc", PARAMS)) == ["c", "b", "a"]
    chat = OpenAIGenerator("served-b", base_url=server)
    assert "".join(chat.stream("hey", PARAMS)) == "HEY" and _Server.bodies[-1]["stream"] is True


def test_cancel_and_server_errors_are_clear(server: str) -> None:
    from lampbox.engine.generation.openai_compat import OpenAIGenerator, ServerError

    remote = OpenAIGenerator("served-a", base_url=server, concurrency=1)
    with pytest.raises(GenerationCancelled, match="after 0 of 3"):
        remote.generate(["slow a", "slow b", "slow c"], PARAMS, should_cancel=lambda: True)
    with pytest.raises(ServerError, match=r"/v1/chat/completions answered HTTP 500: .*model crashed"):
        remote.generate(["ok", "fail"], PARAMS)
    with pytest.raises(ServerError, match="answered with something other than JSON"):
        remote.generate(["garbage"], PARAMS)
    with pytest.raises(LampboxError, match="does not score continuations"):
        remote.score(["a"], ["b"])
    with pytest.raises(LampboxError, match="the openai backend cannot score labels"):
        remote.score_labels(["a"], ["x", "y"])


def test_the_servers_tokenizer_or_a_local_one_or_words(server: str) -> None:
    from lampbox.engine.generation.openai_compat import (
        OpenAIGenerator,
        ServerTokenizer,
        WordTokenizer,
    )

    tokenizer = OpenAIGenerator("served-a", base_url=server).tokenizer
    assert isinstance(tokenizer, ServerTokenizer)
    assert tokenizer.encode("hi") == [ord("h"), ord("i")]  # the BOS the server adds is stripped
    assert tokenizer.decode(tokenizer.encode("héllo")) == "héllo"
    _Server.tokenizes = False
    words = OpenAIGenerator("served-a", base_url=server).tokenizer
    assert isinstance(words, WordTokenizer)  # a model lampbox does not know: one token per word
    assert words.decode(words.encode("Fix the parser, again.")) == "Fix the parser, again."
    assert len(words.encode("Fix the parser, again.")) == 6
    local = OpenAIGenerator("smollm2-135m-instruct", base_url=server).tokenizer
    assert not isinstance(local, (WordTokenizer, ServerTokenizer))  # the manifest model's own vocabulary
    assert local.decode(local.encode("Fix the parser")) == "Fix the parser"
