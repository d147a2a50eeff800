"""The openai backend names a request's adapter to a server that serves many LoRAs: as the
request's model (vLLM, or llama-cpp-python's server with one model alias per adapter) or as
llama.cpp's per-request `lora` scales. The request format against a local recording server on
127.0.0.1; the outputs against llama-cpp-python's server started with two converted adapters
(llama.cpp's own server is not installed here: its `lora` field is checked on the recording
server only)."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from lora_helpers import MODEL, random_lora, trained_lora

from lampbox.engine.generation.base import GenerationParams, GenerationRequest
from lampbox.errors import LampboxError

PARAMS = GenerationParams(max_new_tokens=8)


class _Recorder(BaseHTTPRequestHandler):
    """An OpenAI-compatible stand-in: answers each chat request with its body, lists its LoRAs."""

    bodies: list[dict[str, Any]] = []
    loras: list[dict[str, Any]] = []

    def _send(self, answer: Any) -> None:
        raw = json.dumps(answer).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        if self.path == "/lora-adapters":
            self._send(self.loras)
        else:
            self._send({"data": [{"id": "base-model"}]})

    def do_POST(self) -> None:  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.bodies.append(body)
        text = json.dumps({"model": body["model"], "lora": body.get("lora")}, sort_keys=True)
        if not body.get("stream"):
            self._send({"choices": [{"message": {"content": text}}]})
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        for piece in (text[:5], text[5:]):
            self.wfile.write(f"data: {json.dumps({'choices': [{'delta': {'content': piece}}]})}\n\n".encode())
        self.wfile.write(b"data: [DONE]\n\n")

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def recorder() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    _Recorder.bodies = []
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def two_users(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Two trained adapters (models/user-a, models/user-b) with their GGUF LoRAs beside them
    (no model is loaded: the recording server only reads their paths)."""
    monkeypatch.setenv("LAMPBOX_HOME", str(tmp_path / "home"))
    found = {}
    for name in ("a", "b"):
        folder = tmp_path / "home" / "models" / f"user-{name}"
        (folder / "gguf").mkdir(parents=True)
        (folder / "gguf" / "0123.gguf").write_bytes(b"")
        (folder / "adapter").mkdir()
        found[name] = str(folder / "adapter")
    return found


def _answers(outputs: list[str]) -> list[dict[str, Any]]:
    return [json.loads(output) for output in outputs]


def test_model_mode_sends_the_adapters_name_as_the_model(recorder: str, two_users: dict[str, str]) -> None:
    from lampbox.engine.generation.openai_compat import OpenAIGenerator

    remote = OpenAIGenerator("base-model", base_url=recorder, adapters="model")
    assert remote.supports_adapters and remote.identity()["adapters"] == "model"
    requests = [GenerationRequest("hi", adapter=two_users["a"]), GenerationRequest("hi"), GenerationRequest("hi", adapter=two_users["b"])]
    answers = _answers(remote.generate(requests, PARAMS))
    assert [a["model"] for a in answers] == ["user-a", "base-model", "user-b"]
    assert all(a["lora"] is None for a in answers)
    assert json.loads("".join(remote.stream(requests[2], PARAMS)))["model"] == "user-b"


def test_lora_mode_sends_llama_cpp_servers_lora_ids(recorder: str, two_users: dict[str, str]) -> None:
    from lampbox.engine.generation.openai_compat import OpenAIGenerator, ServerError

    _Recorder.loras = [
        {"id": 0, "path": str(Path(two_users["b"]).parent / "gguf" / "0123.gguf"), "scale": 0.0},
        {"id": 1, "path": str(Path(two_users["a"]).parent / "gguf" / "0123.gguf"), "scale": 0.0},
    ]
    remote = OpenAIGenerator("base-model", base_url=recorder, adapters="lora")
    requests = [GenerationRequest("hi", adapter=two_users["a"]), GenerationRequest("hi"), GenerationRequest("hi", adapter=two_users["b"])]
    answers = _answers(remote.generate(requests, PARAMS))
    assert [a["model"] for a in answers] == ["base-model"] * 3
    # every request lists its scales: the others are 0 for it (a plain request: none applied)
    assert [a["lora"] for a in answers] == [[{"id": 1, "scale": 1.0}], [], [{"id": 0, "scale": 1.0}]]
    _Recorder.loras = _Recorder.loras[:1]
    fresh = OpenAIGenerator("base-model", base_url=recorder, adapters="lora")
    with pytest.raises(ServerError, match="has no LoRA adapter for user-a"):
        fresh.generate([requests[0]], PARAMS)


def test_without_a_mode_an_adapter_is_one_clear_line(recorder: str, two_users: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    from lampbox.engine.generation.openai_compat import ADAPTERS_ENV, OpenAIGenerator

    monkeypatch.delenv(ADAPTERS_ENV, raising=False)
    remote = OpenAIGenerator("base-model", base_url=recorder)
    assert not remote.supports_adapters
    with pytest.raises(LampboxError, match=f"set \\${ADAPTERS_ENV}"):
        remote.generate([GenerationRequest("hi", adapter=two_users["a"])], PARAMS)
    with pytest.raises(LampboxError, match="must be one of model, lora"):
        OpenAIGenerator("base-model", base_url=recorder, adapters="vllm")
    monkeypatch.setenv(ADAPTERS_ENV, "model")
    assert OpenAIGenerator("base-model", base_url=recorder).supports_adapters


@pytest.mark.slow
def test_llama_cpp_python_server_serves_each_adapter_by_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """llama_cpp.server with one model alias per adapter (the same GGUF, each with its converted
    LoRA): each request's output is the local llamacpp backend's with that adapter."""
    pytest.importorskip("uvicorn", reason="llama-cpp-python[server] extras are not installed")
    from test_generation_openai import SAME_AS_LOCAL, _free_port

    from lampbox.engine.fingerprint import file_sha256
    from lampbox.engine.generation.gguf_lora import gguf_adapter
    from lampbox.engine.generation.llamacpp import LlamaCppGenerator
    from lampbox.engine.generation.openai_compat import OpenAIGenerator
    from lampbox.models import resolve_model

    home = tmp_path / "home"
    monkeypatch.setenv("LAMPBOX_HOME", str(home))
    base = resolve_model(MODEL).path
    adapters = {
        name: str(trained_lora(home, f"user-{name}", random_lora(tmp_path / name, seed), file_sha256(base)) / "adapter")
        for name, seed in (("a", 1), ("b", 2))
    }  # fmt: skip
    settings = {"n_ctx": 2048, "n_threads": 1, "model": str(base)}
    models = [{**settings, "model_alias": MODEL}]
    models += [{**settings, "model_alias": f"user-{name}", "lora_path": str(gguf_adapter(path, base))} for name, path in adapters.items()]
    port = _free_port()
    config = tmp_path / "server.json"
    config.write_text(json.dumps({"host": "127.0.0.1", "port": port, "models": models}))
    start = ("from lampbox.engine.generation.llamacpp import load_cpu_backend; load_cpu_backend(); "
             "import runpy; runpy.run_module('llama_cpp.server', run_name='__main__', alter_sys=True)")  # fmt: skip
    log = tmp_path / "server.log"
    with log.open("w") as log_file:
        process = subprocess.Popen([sys.executable, "-c", start, "--config_file", str(config)], stdout=log_file, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(url + "/models", timeout=2):
                    break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"llama_cpp.server did not start: {log.read_text()[-2000:]}")
                time.sleep(0.3)
        # one request at a time: the server holds one model alias loaded and swaps on a change
        remote = OpenAIGenerator(MODEL, base_url=url, adapters="model", concurrency=1, extra_body=SAME_AS_LOCAL)
        asked = [("Name a colour.", "a"), ("Name a colour.", "b"), ("Name a colour.", None), ("Name a colour.", "a"), ("Say hello.", "b")]
        requests = [GenerationRequest(prompt, adapter=adapters[name] if name else None) for prompt, name in asked]
        served = remote.generate(requests, PARAMS)
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    local = LlamaCppGenerator(MODEL, threads=1)
    try:
        expected = [local.generate([request], PARAMS)[0] for request in requests]
    finally:
        local.close()
    assert served == expected
    assert served[0] == served[3] and len({served[0], served[1], served[2]}) > 1  # the adapters matter
