"""The llamacpp backend: quantized GGUF models through llama-cpp-python; greedy generation of
several prompts is batched (llamacpp_batch), streamed or not, anything else goes one prompt at
a time. LoRA adapters (a trained model's own, and per request) are applied to the one loaded
model through llama.cpp's adapter API (llamacpp_adapters)."""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from lampbox.crashnote import forget_running, note_running
from lampbox.engine.fingerprint import file_sha256, folder_sha256
from lampbox.engine.generation.base import (
    GenerationParams,
    GenerationRequest,
    Requests,
    prompts_and_adapters,
)
from lampbox.engine.generation.common import GenerationCancelled, user_message
from lampbox.engine.generation.llamacpp_cpu import (
    VARIANT_ENV,
    VariantChoice,
    cached_canary_verdict,
    choose_variant,
    score_variants,
)
from lampbox.engine.machine import default_threads
from lampbox.errors import InputFileError, LampboxError
from lampbox.models import resolve_model


@contextlib.contextmanager
def _quiet_llama_log() -> Iterator[None]:
    """llama-cpp-python passes llama.cpp's and ggml's log to stderr below its logger's level:
    raised to ERROR for the block."""
    logger = logging.getLogger("llama-cpp-python")
    level = logger.level
    logger.setLevel(max(level, logging.ERROR))
    try:
        yield
    finally:
        logger.setLevel(level)


def cpu_backend_folders() -> list[Path]:
    """Where a llama-cpp-python built with GGML_BACKEND_DL keeps its CPU backends
    (libggml-cpu-<variant>.so, one per instruction-set level): the wheel installs them in `bin/`
    beside the `llama_cpp` package; `llama_cpp/lib` (beside libllama) is looked at first."""
    import llama_cpp

    package = Path(llama_cpp.__file__).resolve().parent
    return [package / "lib", package.parent / "bin"]


_variant_choice: VariantChoice | None = None


def load_cpu_backend() -> Path | None:
    """Load the CPU backend of a GGML_BACKEND_DL build; return its folder (None when the CPU
    backend is linked in, as in a build without GGML_BACKEND_DL, or is already loaded).

    ggml looks for backend libraries only beside the Python executable and in the current
    directory, never beside libggml, so llama-cpp-python alone finds none and every model load
    fails. This scores the variants in the package's folder as ggml does and loads one file:
    the best this CPU runs, less any known to crash here, or the one LAMPBOX_LLAMA_CPU_VARIANT
    names (llamacpp_cpu); before llama_backend_init."""
    import ctypes

    import llama_cpp

    global _variant_choice
    library = llama_cpp.llama_cpp._lib  # libllama; ggml's symbols resolve through its dependencies
    count = library.ggml_backend_reg_count
    count.restype = ctypes.c_size_t
    if count() > 0:
        return None
    for folder in cpu_backend_folders():
        modules = sorted(folder.glob("libggml-cpu-*.so"))
        if not modules:
            continue
        version = llama_cpp.__version__
        choice = choose_variant(
            score_variants(modules), version, os.environ.get(VARIANT_ENV) or None, cached_canary_verdict(version)
        )
        load = library.ggml_backend_load
        load.argtypes = [ctypes.c_char_p]
        load.restype = ctypes.c_void_p
        # ggml logs "loaded CPU backend from ...": kept quiet, as Llama(verbose=False) does afterwards.
        with _quiet_llama_log():
            load(str(choice.chosen.path).encode())
        if count() > 0:
            _variant_choice = choice
            if choice.skipped:
                logging.getLogger("lampbox").warning(choice.line())
            return folder
    looked = ", ".join(str(folder) for folder in cpu_backend_folders())
    raise LampboxError(
        "llama.cpp has no CPU backend: this llama-cpp-python was built with GGML_BACKEND_DL and "
        f"none of its libggml-cpu-*.so runs on this CPU or they are missing (looked in {looked}); "
        "reinstall it with scripts/setup.sh"
    )


def cpu_variant_choice() -> VariantChoice | None:
    """The CPU variant this process loaded and why (None for a build without variants); loads
    the backend first."""
    load_cpu_backend()
    return _variant_choice


def cpu_backend_features() -> dict[str, str]:
    """What llama.cpp's CPU backend was built with, from llama_print_system_info
    ({"AVX2": "1", "AVX512": "1", "OPENMP": "1", ...}); loads the backend first."""
    import llama_cpp

    load_cpu_backend()
    llama_cpp.llama_backend_init()
    features: dict[str, str] = {}
    backend = ""
    for piece in llama_cpp.llama_print_system_info().decode("utf-8", errors="replace").split("|"):
        if " : " in piece:  # "CPU : SSE3 = 1": the first feature of the next backend
            backend, piece = (part.strip() for part in piece.split(" : ", 1))
        name, _, value = piece.partition("=")
        if backend == "CPU" and name.strip():
            features[name.strip()] = value.strip()
    return features


def requantize_gguf(source: Path, target: Path, quant: str) -> None:
    """Write `source` (a quantized GGUF) requantized to `quant` ("Q4_0" or "Q8_0") at `target`.

    llama.cpp's llama_model_quantize with allow_requantize dequantizes each weight to fp32 and
    quantizes it again (going through an F32 file gives the identical file; through F16 only
    adds fp16 rounding). Every 2-d weight takes `quant` (pure), except the token embeddings
    (also the output layer when tied), which stay Q8_0. ggml's plain rounding is kept: its
    least-squares scale search (switched on by importance weights) halves the error of fewer
    weights but lost 0.056 ROUGE-1 on commit_subject where plain rounding lost none
    (docs/backends.md, "Derived models"). The manifest's derived models are written with it
    (registry.py registers it with the recipe it records: change REQUANTIZE_RECIPE with it).
    """
    import ctypes

    import llama_cpp

    ftypes = {"Q4_0": llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_0, "Q8_0": llama_cpp.LLAMA_FTYPE_MOSTLY_Q8_0}
    if quant not in ftypes:
        raise LampboxError(f"cannot requantize to {quant!r}: choose one of {', '.join(ftypes)}")
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftypes[quant]
    params.allow_requantize = True
    params.pure = True
    params.token_embedding_type = llama_cpp.GGML_TYPE_Q8_0
    params.nthread = default_threads()
    load_cpu_backend()
    with _quiet_llama_log():  # llama.cpp logs every tensor otherwise
        failed = llama_cpp.llama_model_quantize(str(source).encode(), str(target).encode(), ctypes.byref(params))
    if failed:
        raise InputFileError(source, f"llama.cpp could not requantize this GGUF model to {quant}")


def _open_llama(path: Path, **kwargs: Any) -> Any:
    """Llama(path) with a clear error naming the file when llama.cpp cannot load it."""
    try:
        from llama_cpp import Llama
    except ImportError as error:
        raise LampboxError(
            "the llamacpp backend needs llama-cpp-python (pip install 'lampbox[llamacpp]')"
        ) from error
    load_cpu_backend()
    if not path.is_file():
        raise InputFileError(path, "no such GGUF file")
    try:
        return Llama(model_path=str(path), verbose=False, **kwargs)
    except (ValueError, RuntimeError, OSError) as error:
        raise InputFileError(path, f"llama.cpp could not load this GGUF model ({error})") from error


def _log_softmax(logits: Any) -> Any:
    """log_softmax over the last axis, in float64."""
    import numpy as np

    values = np.asarray(logits, dtype=np.float64)
    shifted = values - values.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


class LlamaCppTokenizer:
    """A llama.cpp vocabulary: encode without BOS/EOS, decode skipping special tokens."""

    def __init__(self, llama: Any) -> None:
        self._llama = llama

    def encode(self, text: str) -> list[int]:
        return list(self._llama.tokenize(text.encode("utf-8"), add_bos=False, special=False))

    def decode(self, token_ids: Sequence[int]) -> str:
        raw = self._llama.detokenize(list(token_ids), special=False)
        return raw.decode("utf-8", errors="replace")


def load_vocab(path: Path) -> LlamaCppTokenizer:
    """The tokenizer of a GGUF file alone (vocab_only load: about 0.1 s, no weights)."""
    return LlamaCppTokenizer(_open_llama(path, vocab_only=True))


class LlamaCppGenerator:
    """A GGUF model on llama.cpp; chat template for instruct models, plain completion otherwise."""

    backend = "llamacpp"
    supports_label_scoring = True
    supports_passages = False
    # Per-request adapters (GenerationRequest.adapter, OPPU) are converted to GGUF LoRAs and set
    # per request on the one loaded model (llamacpp_adapters); a trained model's own adapter is
    # always set under them.
    supports_adapters = True
    # weights are local files: run keys hash their content
    loads_local_weights = True

    def __init__(
        self,
        model: str | None = None,
        *,
        chat: bool | None = None,
        context_size: int = 2048,
        threads: int | None = None,
        seed: int = 0,
        gpu_layers: int = 0,
        batch_size: int = 8,
        max_adapters: int = 8,
    ) -> None:
        resolved = resolve_model(model)
        if resolved.format != "gguf":
            raise LampboxError(
                f"backend llamacpp needs a GGUF model; {resolved.name!r} is a Hugging Face model "
                "(use the hf backend)"
            )
        self.name = resolved.name
        self.path = resolved.path
        self.own_adapter = resolved.adapter
        threads = threads or default_threads()
        self.threads = threads  # per call: set_threads changes it without reloading
        self._llama = _open_llama(
            self.path,
            n_ctx=context_size,
            n_threads=threads,
            n_threads_batch=threads,
            seed=seed,
            n_gpu_layers=gpu_layers,
        )
        self._gpu_layers = gpu_layers
        from lampbox.engine.generation.llamacpp_adapters import GgufAdapters

        self._adapters = GgufAdapters(
            self._llama._model.model, self.path, self.name, base_fingerprint=file_sha256(self.path),
            own_adapter=resolved.adapter, capacity=max_adapters,
        )  # fmt: skip
        self._lock = threading.Lock()  # the Llama's own context (one-at-a-time, streaming, labels)
        if batch_size < 1:
            raise LampboxError("batch_size must be at least 1")
        self.batch_size = batch_size
        self._batch_lock = threading.Lock()  # the batched context (its own KV cache)
        self._batch_decoder: Any = None
        has_template = bool(self._llama.metadata.get("tokenizer.chat_template"))
        if chat is None:
            chat = resolved.chat if resolved.chat is not None else has_template
        if chat and not has_template:
            raise InputFileError(
                self.path, "has no chat template; use chat=False (plain completion)"
            )
        self.chat = chat
        self._tokenizer = LlamaCppTokenizer(self._llama)
        self._chat_formatter: Any = None
        choice = _variant_choice
        variant = f"llama.cpp CPU variant {choice.chosen.name}" if choice else "llama.cpp without CPU variants"
        note_running(f"llamacpp-{id(self)}", f"the llamacpp backend: {self.name} ({self.path.name}), {variant}")

    @property
    def tokenizer(self) -> LlamaCppTokenizer:
        return self._tokenizer

    @property
    def context_size(self) -> int:
        return int(self._llama.n_ctx())

    @property
    def supports_streaming(self) -> bool:
        return True

    @property
    def supports_scoring(self) -> bool:
        return False  # needs logits_all=True (a second, slower model); the hf backend scores

    def identity(self) -> dict[str, Any]:
        import llama_cpp

        adapter = {"adapter_sha256": folder_sha256(self.own_adapter)} if self.own_adapter else {}
        return {
            "backend": self.backend,
            "model_sha256": file_sha256(self.path),
            **adapter,
            "chat": self.chat,
            "context_size": self.context_size,
            "device": "gpu" if self._gpu_layers else "cpu",
            "llama_cpp_python": llama_cpp.__version__,
            # the instruction sets its CPU code uses: an AVX2 and an AVX512 build of one version
            # give different outputs (docs/backends.md, "llama.cpp build")
            "cpu_backend": ",".join(f"{name}={value}" for name, value in cpu_backend_features().items()),
        }

    def set_threads(self, threads: int) -> bool:
        """The threads the next calls run on (the TUI chooses them per generation from the idle
        cores); applied to each llama.cpp context just before it decodes, no reload. True: a
        llama.cpp model always runs (some of) its work on CPU threads."""
        if threads < 1:
            raise LampboxError("threads must be at least 1")
        self.threads = threads
        return True

    def _use_threads(self, context: Any) -> None:
        """Apply `threads` to a llama.cpp context (a raw llama_context pointer); under the
        context's lock."""
        import llama_cpp

        llama_cpp.llama_set_n_threads(context, self.threads, self.threads)

    def _use_adapter(self, adapter: str | None) -> None:
        """Make the Llama's own context compute with `adapter` (None: the model as loaded);
        under its lock. Its KV cache is reset either way: nothing computed under another adapter
        is reused."""
        self._adapters.apply(self._llama.ctx, adapter)
        self._llama.reset()

    def _request(self, prompt: str, params: GenerationParams, stream: bool, adapter: str | None = None) -> Any:
        """One llama.cpp completion with `adapter`; the KV cache is reset so results never
        depend on order."""
        options: dict[str, Any] = {
            "max_tokens": params.max_new_tokens,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "top_k": params.top_k,
            "min_p": 0.0,
            "repeat_penalty": 1.0,
            "seed": params.seed,
            "stop": list(params.stop) or None,
            "stream": stream,
        }
        self._use_adapter(adapter)
        self._use_threads(self._llama.ctx)
        try:
            if self.chat:
                return self._llama.create_chat_completion(messages=user_message(prompt), **options)
            return self._llama.create_completion(prompt, **options)
        except ValueError as error:  # llama-cpp-python reports context overflow this way
            raise LampboxError(f"{self.name}: {error}") from error

    def _text(self, response: dict[str, Any]) -> str:
        choice = response["choices"][0]
        return str(choice["message"]["content"] or "") if self.chat else str(choice["text"])

    def generate(
        self,
        prompts: Requests,
        params: GenerationParams,
        on_output: Callable[[int, str], None] | None = None,
        should_cancel: Callable[[], bool] | None = None,
    ) -> list[str]:
        """Greedy decoding of several prompts runs `batch_size` sequences at a time in one
        llama.cpp context (outputs identical to one at a time); sampling, batch_size 1 and
        single prompts go one prompt at a time through llama-cpp-python's completion API. Requests
        naming an adapter are generated with it (batches are grouped by adapter)."""
        requests = prompts_and_adapters(prompts, self.backend)
        if self._batches([prompt for prompt, _ in requests], params):
            return self._generate_batched(requests, params, on_output, should_cancel)
        return self._generate_one_by_one(requests, params, on_output, should_cancel)

    @staticmethod
    def streams_together(params: GenerationParams) -> bool:
        """Whether `generate_streaming` decodes several requests together: greedy ones, yes
        (one batch); sampled ones stream one after another."""
        return params.temperature == 0

    def _batches(self, texts: list[str], params: GenerationParams) -> bool:
        return (
            self.streams_together(params)
            and self.batch_size > 1
            and len(texts) > 1
            and (self.chat or all(texts))  # an empty plain prompt starts its completion with BOS
        )

    def generate_streaming(
        self,
        prompts: Requests,
        params: GenerationParams,
        on_piece: Callable[[int, str], None],
        should_cancel: Callable[[], bool] | None = None,
    ) -> list[str]:
        """Every prompt's output, on_piece(index, text) as each one grows. Greedy decoding of
        several prompts is one batch (llamacpp_batch: each prompt evaluated, its first piece
        shown, then every sequence decoded together, pieces interleaved); outputs are those of
        `generate` and the pieces join to them. Anything else streams one prompt after another.
        Raises GenerationCancelled on cancel."""
        requests = prompts_and_adapters(prompts, self.backend)
        if self._batches([prompt for prompt, _ in requests], params):
            return self._generate_batched(requests, params, None, should_cancel, on_piece)
        from lampbox.engine.generation.streaming import stream_one_after_another

        return stream_one_after_another(self, prompts, params, on_piece, None, should_cancel)

    def _generate_batched(
        self,
        requests: list[tuple[str, str | None]],
        params: GenerationParams,
        on_output: Callable[[int, str], None] | None,
        should_cancel: Callable[[], bool] | None,
        on_piece: Callable[[int, str], None] | None = None,
    ) -> list[str]:
        from lampbox.engine.generation.llamacpp_batch import BatchDecoder, Completion

        n_ctx = self.context_size
        stops = [*params.stop, *([self._chat_stop()] if self.chat else [])]
        completions = []
        groups: dict[str | None, list[Completion]] = {}  # one batch per adapter (None: none)
        for index, (prompt, adapter) in enumerate(requests):
            tokens = self.prompt_tokens(prompt)
            if len(tokens) >= n_ctx:
                raise LampboxError(
                    f"{self.name}: Requested tokens ({len(tokens)}) exceed context window of {n_ctx}"
                )
            # llama-cpp-python's rule: max_tokens <= 0 means up to the context window.
            wanted = params.max_new_tokens if params.max_new_tokens > 0 else n_ctx - len(tokens)
            limit = wanted if wanted + len(tokens) < n_ctx else n_ctx - len(tokens)
            stop_bytes = tuple(stop.encode("utf-8") for stop in stops)
            completions.append(Completion(index, tokens, limit, stop_bytes))
            groups.setdefault(adapter, []).append(completions[-1])
        with self._batch_lock:
            if self._batch_decoder is None:
                self._batch_decoder = BatchDecoder(self._llama, self.batch_size, self._adapters)
            self._batch_decoder.threads = self.threads
            done = 0
            for adapter, group in groups.items():
                try:
                    self._batch_decoder.generate(group, on_output, should_cancel, on_piece, adapter)
                except GenerationCancelled as cancelled:
                    raise GenerationCancelled(done + cancelled.finished, len(completions)) from None
                done += len(group)
        return [completion.output() for completion in completions]

    def _chat_stop(self) -> str:
        """The stop string llama-cpp-python adds for a GGUF chat template: the EOS token's text."""
        eos = self._llama.token_eos()
        return str(self._llama._model.token_get_text(eos)) if eos != -1 else ""

    def _generate_one_by_one(
        self,
        requests: list[tuple[str, str | None]],
        params: GenerationParams,
        on_output: Callable[[int, str], None] | None,
        should_cancel: Callable[[], bool] | None,
    ) -> list[str]:
        outputs: list[str] = []
        for index, (prompt, adapter) in enumerate(requests):
            if should_cancel and should_cancel():
                raise GenerationCancelled(index, len(requests))
            with self._lock:
                text = self._text(self._request(prompt, params, stream=False, adapter=adapter))
            outputs.append(text)
            if on_output:
                on_output(index, text)
        return outputs

    def stream(self, prompt: GenerationRequest | str, params: GenerationParams) -> Iterator[str]:
        ((text, adapter),) = prompts_and_adapters([prompt], self.backend)
        with self._lock:
            for chunk in self._request(text, params, stream=True, adapter=adapter):
                choice = chunk["choices"][0]
                piece = choice.get("delta", {}).get("content") if self.chat else choice.get("text")
                if piece:
                    yield piece

    def score(self, prompts: Sequence[str], continuations: Sequence[str]) -> list[float]:
        raise LampboxError("the llamacpp backend does not score continuations; use the hf backend")

    def prompt_tokens(self, prompt: str) -> list[int]:
        """The tokens a generation from `prompt` starts with: the GGUF's chat template rendered
        as llama-cpp-python renders it for create_chat_completion, or the plain prompt as
        create_completion builds it (BOS, or CLS, when the model adds one; SEP or EOS after it
        when the model adds one)."""
        llama = self._llama
        if not self.chat:
            model = llama._model
            start = model.token_cls() if model.token_cls() != -1 else llama.token_bos()
            end = model.token_sep() if model.token_sep() != -1 else llama.token_eos()
            body = list(llama.tokenize(prompt.encode("utf-8"), add_bos=False, special=True)) if prompt else []
            head = [start] if model.add_bos_token() and start != -1 else []
            tail = [end] if model.add_eos_token() or model.token_sep() != -1 else []
            return head + body + tail
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        if self._chat_formatter is None:
            eos, bos = llama.token_eos(), llama.token_bos()
            self._chat_formatter = Jinja2ChatFormatter(
                template=llama.metadata["tokenizer.chat_template"],
                eos_token=llama._model.token_get_text(eos) if eos != -1 else "",
                bos_token=llama._model.token_get_text(bos) if bos != -1 else "",
                stop_token_ids=[eos],
            )
        rendered = self._chat_formatter(messages=user_message(prompt))
        return list(
            llama.tokenize(rendered.prompt.encode("utf-8"), add_bos=not rendered.added_special, special=True)
        )

    def score_labels(
        self,
        prompts: Requests,
        labels: Sequence[str],
        should_cancel: Callable[[], bool] | None = None,
    ) -> list[list[float]]:
        """Each label's summed token log-probabilities as the answer to each prompt: the prompt
        is evaluated once, then each label's tokens on its KV cache (the label's own cache
        entries are dropped before the next label). Requests naming an adapter are scored with
        it on top of the model's own (grouped by adapter), as they are generated."""
        from lampbox.engine.generation.labels import score_each_prompt

        def score(tokens: list[int], label_ids: list[list[int]], adapter: str | None) -> list[float]:
            with self._lock:
                try:
                    return self._label_logliks(tokens, label_ids, adapter)
                finally:
                    self._llama.reset()  # the next generation starts from an empty cache

        return score_each_prompt(self, prompts, labels, self.prompt_tokens, self.context_size, score, should_cancel)

    def _label_logliks(self, tokens: list[int], label_ids: list[list[int]], adapter: str | None = None) -> list[float]:
        import numpy as np

        llama = self._llama
        context = llama._ctx
        n_vocab = llama.n_vocab()
        self._use_adapter(adapter)  # the request's adapter on the model as loaded, whatever ran before
        self._use_threads(llama.ctx)
        llama.eval(tokens)  # the last token's logits are requested (llama-cpp-python marks it)
        first = _log_softmax(np.ctypeslib.as_array(context.get_logits_ith(-1), shape=(n_vocab,)))
        scores = []
        for label in label_ids:
            score = float(first[label[0]])
            if len(label) > 1:
                context.kv_cache_seq_rm(0, len(tokens), -1)  # the previous label's entries
                llama._batch.set_batch(batch=label[:-1], n_past=len(tokens), logits_all=True)
                context.decode(llama._batch)
                rows = np.ctypeslib.as_array(context.get_logits(), shape=(len(label) - 1, n_vocab))
                log_probs = _log_softmax(rows)
                score += float(log_probs[np.arange(len(label) - 1), label[1:]].sum())
            scores.append(score)
        return scores

    def close(self) -> None:
        forget_running(f"llamacpp-{id(self)}")
        decoder, self._batch_decoder = self._batch_decoder, None
        if decoder is not None:
            decoder.close()
        llama, self._llama = self._llama, None
        if llama is not None:
            llama.close()
