"""The openai backend: any OpenAI-compatible server (vLLM, llama.cpp's server, TGI), with concurrent requests.

Uses only the standard library (urllib), so it needs no extra package. A request's per-user
adapter is named to a server that serves many LoRAs (`adapters`): as the request's model (vLLM's
registered LoRA names), or as the per-request `lora` scales of llama.cpp's server.
"""

from __future__ import annotations

import json
import os
import re
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from typing import Any

from lampbox.engine.generation.base import (
    GenerationParams,
    GenerationRequest,
    Requests,
    Tokenizer,
    prompts_and_adapters,
)
from lampbox.engine.generation.common import GenerationCancelled, user_message
from lampbox.errors import LampboxError, UnknownNameError

BASE_URL_ENV = "LAMPBOX_OPENAI_BASE_URL"
API_KEY_ENV = "LAMPBOX_OPENAI_API_KEY"
ADAPTERS_ENV = "LAMPBOX_OPENAI_ADAPTERS"
# How a request names its adapter: "model" (the adapter's name is the request's model: vLLM
# with --enable-lora, or a server with one model alias per adapter), "lora" (llama.cpp's
# server: {"lora": [{"id": N, "scale": 1.0}, ...]}, ids from its GET /lora-adapters).
ADAPTER_MODES = ("model", "lora")
DEFAULT_BASE_URL = "http://127.0.0.1:8000/v1"


class ServerError(LampboxError):
    """The server could not be reached or answered with an error."""


class OpenAIServer:
    """A small JSON client for one OpenAI-compatible server."""

    def __init__(self, base_url: str, api_key: str | None, timeout: float) -> None:
        base_url = base_url.rstrip("/")
        if not re.search(r"/v\d+$", base_url):
            base_url += "/v1"
        self.base_url = base_url
        self.root_url = re.sub(r"/v\d+$", "", base_url)
        self.api_key = api_key
        self.timeout = timeout

    def _open(self, url: str, body: dict[str, Any] | None, timeout: float | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            url, data=data, method="POST" if body is not None else "GET"
        )
        request.add_header("Content-Type", "application/json")
        if self.api_key:
            request.add_header("Authorization", f"Bearer {self.api_key}")
        try:
            return urllib.request.urlopen(request, timeout=timeout or self.timeout)
        except urllib.error.HTTPError as error:
            detail = error.read().decode("utf-8", errors="replace")[:300]
            raise ServerError(f"server {url} answered HTTP {error.code}: {detail}") from error
        except (urllib.error.URLError, ConnectionError, TimeoutError) as error:
            reason = getattr(error, "reason", error)
            raise ServerError(
                f"cannot reach the OpenAI-compatible server at {url}: {reason}"
            ) from error

    def get(self, path: str, timeout: float | None = None) -> Any:
        with self._open(self.base_url + path, None, timeout) as response:
            return json.loads(response.read())

    def get_root(self, path: str) -> Any:
        """GET a path beside /v1 (llama.cpp's server's /lora-adapters)."""
        with self._open(self.root_url + path, None) as response:
            return json.loads(response.read())

    def post(self, url: str, body: dict[str, Any]) -> Any:
        with self._open(url, body) as response:
            raw = response.read()
        try:
            return json.loads(raw)
        except ValueError as error:
            raise ServerError(f"server {url} answered with something other than JSON") from error

    def post_stream(self, url: str, body: dict[str, Any]) -> Iterator[dict[str, Any]]:
        """Server-sent events of a streaming request, parsed."""
        with self._open(url, body) as response:
            for raw in response:
                line = raw.decode("utf-8").strip()
                if not line.startswith("data:"):
                    continue
                payload = line[len("data:") :].strip()
                if payload == "[DONE]":
                    return
                yield json.loads(payload)


class ServerTokenizer:
    """The server's own tokenizer: llama-cpp-python's /extras/(de)tokenize, or /tokenize of vLLM and llama.cpp.

    Tokens the server adds to empty text (a BOS) are stripped, so encode() has no special tokens.
    """

    def __init__(self, server: OpenAIServer, model: str, tokenize_path: str) -> None:
        self._server = server
        self._model = model
        self._tokenize_url = server.root_url + tokenize_path
        self._detokenize_url = self._tokenize_url.replace("tokenize", "detokenize")
        self._prefix: list[int] = []
        self._prefix = self._raw_encode("")

    def _raw_encode(self, text: str) -> list[int]:
        body = {
            "model": self._model,
            "input": text,  # llama-cpp-python
            "content": text,  # llama.cpp server
            "prompt": text,  # vLLM
            "add_special": False,
            "add_special_tokens": False,
        }
        return [int(token) for token in self._server.post(self._tokenize_url, body)["tokens"]]

    def encode(self, text: str) -> list[int]:
        ids = self._raw_encode(text)
        if self._prefix and ids[: len(self._prefix)] == self._prefix:
            ids = ids[len(self._prefix) :]
        return ids

    def decode(self, token_ids: Sequence[int]) -> str:
        answer = self._server.post(
            self._detokenize_url, {"model": self._model, "tokens": list(token_ids)}
        )
        return str(answer.get("text", answer.get("content", answer.get("prompt", ""))))


class WordTokenizer:
    """A documented approximation when no real tokenizer is available: one token per word or symbol.

    Subword tokenizers give about 1.3 tokens per English word, so budgets computed with it are
    optimistic; decode() reproduces the encoded text exactly.
    """

    _pattern = re.compile(r"\s*\w+|\s*[^\w\s]|\s+")

    def __init__(self) -> None:
        self._ids: dict[str, int] = {}
        self._pieces: list[str] = []

    def encode(self, text: str) -> list[int]:
        ids = []
        for piece in self._pattern.findall(text):
            if piece not in self._ids:
                self._ids[piece] = len(self._pieces)
                self._pieces.append(piece)
            ids.append(self._ids[piece])
        return ids

    def decode(self, token_ids: Sequence[int]) -> str:
        return "".join(self._pieces[token] for token in token_ids if 0 <= token < len(self._pieces))


def _local_tokenizer(model: str) -> Tokenizer | None:
    """The tokenizer of a model lampbox knows locally (manifest name, .gguf path, HF folder)."""
    from lampbox.engine.generation.registry import load_tokenizer
    from lampbox.models import resolve_model

    try:
        resolved = resolve_model(model)
        if resolved.is_hub_id:
            return None
        return load_tokenizer(model)
    except (LampboxError, UnknownNameError, ImportError):
        return None


def adapter_name(adapter: str) -> str:
    """The name a server knows an adapter by: its trained model's name (the folder holding
    adapter/, `SET.u.<user>` for an OPPU user), or the adapter folder's own name."""
    from pathlib import Path

    path = Path(adapter)
    return path.parent.name if path.name == "adapter" else path.name


class OpenAIGenerator:
    """Prompts sent to an OpenAI-compatible server, `concurrency` requests at a time."""

    backend = "openai"
    supports_passages = False
    # The backend can name a per-request adapter to a server that serves many LoRAs; an
    # instance does when `adapters` (or $LAMPBOX_OPENAI_ADAPTERS) says how.
    supports_adapters = True
    # the server owns the weights: run keys use the served model name
    loads_local_weights = False

    def __init__(
        self,
        model: str | None = None,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        chat: bool | None = None,
        concurrency: int = 4,
        timeout: float = 120.0,
        context_size: int | None = None,
        extra_body: dict[str, Any] | None = None,
        adapters: str | None = None,
    ) -> None:
        adapters = adapters or os.environ.get(ADAPTERS_ENV) or None
        if adapters is not None and adapters not in ADAPTER_MODES:
            raise LampboxError(
                f"openai: adapters (${ADAPTERS_ENV}) must be one of {', '.join(ADAPTER_MODES)}, not {adapters!r}"
            )
        self.adapters = adapters
        self.supports_adapters = adapters is not None
        self._lora_ids: dict[str, int] | None = None  # "lora" mode: the server's adapters by path
        base_url = base_url or os.environ.get(BASE_URL_ENV) or DEFAULT_BASE_URL
        api_key = api_key or os.environ.get(API_KEY_ENV)
        self._server = OpenAIServer(base_url, api_key, timeout)
        served = self._server.get("/models", timeout=min(timeout, 10.0)).get("data", [])
        served_ids = [str(entry.get("id")) for entry in served]
        if model is None:
            if not served_ids:
                raise ServerError(
                    f"server {self._server.base_url} lists no models; pass a model name"
                )
            model = served_ids[0]
        self.name = model
        self.concurrency = max(1, concurrency)
        self.extra_body = dict(extra_body or {})
        self.chat = self._chat_default(model) if chat is None else chat
        self._context_size = context_size or self._served_context(served, model) or 2048
        self._tokenizer: Tokenizer | None = None

    @staticmethod
    def _chat_default(model: str) -> bool:
        """Chat for manifest models marked chat; for unknown served models, chat (servers' usual mode)."""
        from lampbox.models import load_manifest

        entry = load_manifest()[0].get(model)
        return entry.chat if entry is not None else True

    @staticmethod
    def _served_context(served: list[dict[str, Any]], model: str) -> int | None:
        for entry in served:
            if entry.get("id") == model and entry.get("max_model_len"):  # vLLM reports it
                return int(entry["max_model_len"])
        return None

    @property
    def base_url(self) -> str:
        return self._server.base_url

    @property
    def tokenizer(self) -> Tokenizer:
        if self._tokenizer is None:
            self._tokenizer = self._find_tokenizer()
        return self._tokenizer

    def _find_tokenizer(self) -> Tokenizer:
        for path in ("/extras/tokenize", "/tokenize"):
            try:
                return ServerTokenizer(self._server, self.name, path)
            except (ServerError, KeyError, ValueError, TypeError):
                continue
        return _local_tokenizer(self.name) or WordTokenizer()

    @property
    def context_size(self) -> int:
        return self._context_size

    @property
    def supports_streaming(self) -> bool:
        return True

    @property
    def supports_scoring(self) -> bool:
        return False

    # Servers' completions APIs do not give every label's log-likelihood the same way.
    supports_label_scoring = False

    def identity(self) -> dict[str, Any]:
        # The server's weights cannot be hashed from here: the served model name stands for them.
        return {
            "backend": self.backend,
            "base_url": self.base_url,
            "model": self.name,
            "chat": self.chat,
            "extra_body": self.extra_body,
            **({"adapters": self.adapters} if self.adapters else {}),
        }

    def _server_loras(self) -> dict[str, int]:
        """llama.cpp's server: its LoRA adapters' resolved paths -> ids (GET /lora-adapters)."""
        if self._lora_ids is None:
            from pathlib import Path

            listed = self._server.get_root("/lora-adapters")
            if not isinstance(listed, list):
                raise ServerError(f"server {self._server.root_url}/lora-adapters did not list LoRA adapters")
            self._lora_ids = {str(Path(entry["path"]).resolve()): int(entry["id"]) for entry in listed}
        return self._lora_ids

    def _lora_id(self, adapter: str) -> int | None:
        """The id the server gave this adapter: a GGUF LoRA it loaded from inside the adapter's
        model folder (lampbox converts beside it, gguf/), or named after the adapter."""
        from pathlib import Path

        folder = Path(adapter).resolve()
        home = folder.parent if folder.name == "adapter" else folder
        for path, lora_id in self._server_loras().items():
            served = Path(path)
            if served.is_relative_to(home) or served.stem == adapter_name(adapter):
                return lora_id
        return None

    def _adapter_fields(self, adapter: str | None) -> dict[str, Any]:
        """What names the request's adapter to the server ({} without one in "model" mode)."""
        if self.adapters == "model":
            return {"model": adapter_name(adapter)} if adapter is not None else {}
        if self.adapters != "lora":
            raise LampboxError(
                f"the openai backend names an adapter ({adapter}) only to a server that serves LoRAs: "
                f"set ${ADAPTERS_ENV} (or adapters=) to model (vLLM) or lora (llama.cpp's server)"
            )
        wanted = [a for a in (self._own_adapter(), adapter) if a is not None]
        ids = []
        for one in wanted:
            lora_id = self._lora_id(one)
            if lora_id is None:
                if one != adapter:
                    continue  # the model's own adapter merged into what the server serves
                raise ServerError(
                    f"server {self._server.root_url} has no LoRA adapter for {adapter_name(one)} "
                    f"(start it with --lora <its GGUF LoRA>; it lists {sorted(self._server_loras())})"
                )
            ids.append(lora_id)
        # llama.cpp's server: an adapter left out of the list has scale 0 for this request
        return {"lora": [{"id": lora_id, "scale": 1.0} for lora_id in ids]}

    def _own_adapter(self) -> str | None:
        """The adapter of the model name as lampbox knows it (a trained LoRA, an OPPU set's task
        adapter), when the server serves it as one of its LoRAs."""
        from lampbox.models import resolve_model

        try:
            return resolve_model(self.name).adapter
        except (LampboxError, UnknownNameError):
            return None

    def _request(
        self, prompt: str, params: GenerationParams, stream: bool, adapter: str | None = None
    ) -> tuple[str, dict[str, Any]]:
        body: dict[str, Any] = {
            "model": self.name,
            "max_tokens": params.max_new_tokens,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "seed": params.seed,
            "stream": stream,
        }
        if params.top_k > 0:
            body["top_k"] = params.top_k  # vLLM / llama.cpp extension
        if params.stop:
            body["stop"] = list(params.stop)
        body.update(self.extra_body)
        if self.adapters is not None or adapter is not None:
            body.update(self._adapter_fields(adapter))
        if self.chat:
            body["messages"] = user_message(prompt)
            return self._server.base_url + "/chat/completions", body
        body["prompt"] = prompt
        return self._server.base_url + "/completions", body

    def _text(self, answer: dict[str, Any]) -> str:
        choice = answer["choices"][0]
        if self.chat:
            return str(choice["message"].get("content") or "")
        return str(choice.get("text") or "")

    def _complete(self, prompt: str, params: GenerationParams, adapter: str | None = None) -> str:
        url, body = self._request(prompt, params, stream=False, adapter=adapter)
        return self._text(self._server.post(url, body))

    def generate(
        self,
        prompts: Requests,
        params: GenerationParams,
        on_output: Callable[[int, str], None] | None = None,
        should_cancel: Callable[[], bool] | None = None,
    ) -> list[str]:
        outputs: list[str | None] = [None] * len(prompts)
        pending_prompts = iter(enumerate(prompts_and_adapters(prompts, self.backend)))
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            running: dict[Any, int] = {}

            def submit_next() -> None:
                for index, (prompt, adapter) in pending_prompts:
                    running[pool.submit(self._complete, prompt, params, adapter)] = index
                    return

            for _ in range(self.concurrency):
                submit_next()
            done_count = 0
            while running:
                finished, _ = wait(list(running), timeout=0.2, return_when=FIRST_COMPLETED)
                if should_cancel and should_cancel():
                    for future in running:
                        future.cancel()
                    raise GenerationCancelled(done_count, len(prompts))
                for future in finished:
                    index = running.pop(future)
                    outputs[index] = future.result()  # re-raises ServerError
                    done_count += 1
                    if on_output:
                        on_output(index, outputs[index] or "")
                    submit_next()
        return [text or "" for text in outputs]

    def stream(self, prompt: GenerationRequest | str, params: GenerationParams) -> Iterator[str]:
        ((text, adapter),) = prompts_and_adapters([prompt], self.backend)
        url, body = self._request(text, params, stream=True, adapter=adapter)
        for event in self._server.post_stream(url, body):
            choices = event.get("choices") or []
            if not choices:
                continue
            choice = choices[0]
            piece = (choice.get("delta") or {}).get("content") if self.chat else choice.get("text")
            if piece:
                yield piece

    def score(self, prompts: Sequence[str], continuations: Sequence[str]) -> list[float]:
        raise LampboxError("the openai backend does not score continuations; use the hf backend")

    def score_labels(
        self, prompts: Requests, labels: Sequence[str], should_cancel: Callable[[], bool] | None = None
    ) -> list[list[float]]:
        from lampbox.engine.generation.labels import check_label_scoring

        check_label_scoring(self)
        return []

    def close(self) -> None:
        pass
