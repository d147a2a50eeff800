"""The hf backend: transformers + torch, batched with left padding; CUDA/bf16 when present, CPU/fp32 otherwise.

A GGUF model is dequantized once (transformers' gguf_file=) and saved as a normal folder in
lampbox's cache ("hf-models/<sha256 prefix>"), so later loads take about a second.
"""

from __future__ import annotations

import inspect
import os
import shutil
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
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
from lampbox.engine.generation.common import (
    GenerationCancelled,
    cut_at_stop,
    settled_length,
    stop_filtered,
    user_message,
)
from lampbox.engine.generation.hf_adapters import DEFAULT_CAPACITY, AdapterSlots
from lampbox.engine.lm_head import canonical_head_input
from lampbox.engine.machine import default_threads
from lampbox.errors import InputFileError, LampboxError
from lampbox.models import ResolvedModel, resolve_model


def _import_torch() -> Any:
    try:
        import torch
        import transformers  # noqa: F401
    except ImportError as error:
        raise LampboxError(
            "the hf backend needs torch and transformers (pip install 'lampbox[torch]')"
        ) from error
    return torch


def converted_gguf_folder(gguf_path: Path) -> Path:
    """A normal HF folder for a GGUF file: converted on first use, then reused from the cache."""
    from lampbox.paths import cache_dir

    _import_torch()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lampbox.engine.quiet import quiet_transformers

    quiet_transformers()  # before the conversion's own bars
    if not gguf_path.is_file():
        raise InputFileError(gguf_path, "no such GGUF file")
    target = cache_dir("hf-models") / f"{gguf_path.stem}-{file_sha256(gguf_path)[:16]}"
    if (target / "config.json").is_file():
        return target
    model: Any
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
        model = AutoModelForCausalLM.from_pretrained(
            str(gguf_path.parent), gguf_file=gguf_path.name
        )
    except Exception as error:  # transformers raises many types for a bad file
        raise InputFileError(
            gguf_path, f"transformers could not load this GGUF model ({error})"
        ) from error
    # The dequantized weights are plain tensors: drop the GGUF quantizer so it saves as a normal folder.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    partial = target.with_name(f"{target.name}.partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    model.save_pretrained(partial)
    tokenizer.save_pretrained(partial)
    partial.replace(target)
    return target


def _local_folder(resolved: ResolvedModel) -> str:
    """What from_pretrained() gets: a converted GGUF folder, an HF folder or a hub id."""
    if resolved.format == "gguf":
        return str(converted_gguf_folder(resolved.path))
    return resolved.location


class HFTokenizer:
    """A transformers tokenizer behind the Tokenizer protocol."""

    def __init__(self, tokenizer: Any) -> None:
        self.hf_tokenizer = tokenizer

    def encode(self, text: str) -> list[int]:
        return list(self.hf_tokenizer.encode(text, add_special_tokens=False))

    def decode(self, token_ids: Sequence[int]) -> str:
        return str(self.hf_tokenizer.decode(list(token_ids), skip_special_tokens=True))


def _auto_tokenizer(source: str, name: str) -> Any:
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(source)
    except OSError as error:
        raise LampboxError(f"could not load the tokenizer of {name!r}: {error}") from error


def load_hf_tokenizer(resolved: ResolvedModel) -> HFTokenizer:
    """The transformers tokenizer of a model (a GGUF is converted once, like the model)."""
    _import_torch()
    return HFTokenizer(_auto_tokenizer(_local_folder(resolved), resolved.name))


QUANTIZE_MODES = (None, "int8")


def _quantize_int8(model: Any) -> Any:
    """Dynamic int8 quantization of every Linear layer (int8 weights, activations quantized per
    batch): on CPU it makes prefill and, more so, batched decoding faster (fbgemm int8 GEMMs, a
    quarter of the weight traffic). Outputs change slightly, so it is part of the identity and
    of the cache key; bench_generation.py measures both its speed and its quality."""
    import warnings

    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", UserWarning)
        try:
            quantize_dynamic = torch.ao.quantization.quantize_dynamic
        except AttributeError as error:
            raise LampboxError(
                f"hf: quantize=int8 needs torch.ao.quantization, which torch {torch.__version__} "
                "no longer has; leave quantize unset"
            ) from error
        return quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)


def prompt_ids(tokenizer: Any, prompt: str, chat: bool) -> list[int]:
    """Token ids the model sees for a prompt: the chat template (with the generation prompt) or
    plain text. Training builds its inputs with this too, so both see the same tokens."""
    if chat:
        text = tokenizer.apply_chat_template(
            user_message(prompt), tokenize=False, add_generation_prompt=True
        )
        return list(tokenizer(text, add_special_tokens=False)["input_ids"])
    return list(tokenizer(prompt)["input_ids"])


def context_limit(config: Any) -> int:
    """The most tokens (prompt + output) a causal LM takes, from its config."""
    return int(getattr(config, "max_position_embeddings", None) or 2048)


def apply_adapter(model: Any, adapter: str) -> Any:
    """A trained LoRA adapter merged into the model's weights (inference runs at base speed)."""
    try:
        from peft import PeftModel
    except ImportError as error:
        raise LampboxError("trained adapters need peft (pip install 'lampbox[torch]')") from error
    from safetensors import SafetensorError  # a truncated or garbage weights file

    try:
        return PeftModel.from_pretrained(model, adapter).merge_and_unload()
    except (OSError, ValueError, KeyError, RuntimeError, SafetensorError) as error:
        # A truncated or garbage weights file, a config of another model: one line naming it.
        reason = " ".join(f"{type(error).__name__}: {error}".split())[:300]
        raise InputFileError(Path(adapter), f"not a LoRA adapter for this model, or a damaged one ({reason})") from None


class _RowStreamer:
    """A transformers streamer for a whole batch: each row's new text goes to on_piece(row, text)
    as its tokens arrive. Text that may still change is held back until it settles: an
    unfinished UTF-8 character, a different decoding of the same prefix, and a tail that may
    start a stop string (shown once the next text rules the stop string out)."""

    def __init__(self, tokenizer: Any, rows: int, on_piece: Callable[[int, str], None], stop: Sequence[str]) -> None:
        self.tokenizer = tokenizer
        self.tokens: list[list[int]] = [[] for _ in range(rows)]
        self.shown = [""] * rows
        self.on_piece = on_piece
        self.stop = [marker for marker in stop if marker]
        self.prompt_seen = False

    def put(self, value: Any) -> None:
        if not self.prompt_seen:  # the first call hands over the prompts
            self.prompt_seen = True
            return
        for row, token in enumerate(value.reshape(-1).tolist()):
            self.tokens[row].append(int(token))
            self.show(row, self.settled(row))

    def settled(self, row: int) -> str:
        """The row's text so far that no stop string can still cut."""
        text = self.tokenizer.decode(self.tokens[row], skip_special_tokens=True).rstrip("\ufffd")
        return text[: settled_length(text, self.stop)]

    def show(self, row: int, text: str) -> None:
        """Show what `text` adds to the row's shown text (nothing if it does not extend it)."""
        if len(text) > len(self.shown[row]) and text.startswith(self.shown[row]):
            self.on_piece(row, text[len(self.shown[row]) :])
            self.shown[row] = text

    def end(self) -> None:
        pass


class _Cancelled:
    """A stopping criterion that ends every row once should_cancel() says so."""

    def __init__(self, should_cancel: Callable[[], bool]) -> None:
        self.should_cancel = should_cancel

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        return torch.full((input_ids.shape[0],), self.should_cancel(), dtype=torch.bool, device=input_ids.device)


class HFGenerator:
    """A transformers causal LM; prompts are sorted by length and generated in left-padded batches."""

    backend = "hf"
    supports_label_scoring = True
    supports_passages = False
    # Per-request adapters (GenerationRequest.adapter, OPPU) are loaded onto the one loaded model
    # (hf_adapters.AdapterSlots); a trained model's own adapter is merged at load.
    supports_adapters = True
    # weights are local files: run keys hash their content
    loads_local_weights = True

    def __init__(
        self,
        model: str | None = None,
        *,
        chat: bool | None = None,
        device: str | None = None,
        dtype: str | None = None,
        batch_size: int = 8,
        context_size: int | None = None,
        threads: int | None = None,
        quantize: str | None = None,
        max_adapters: int = DEFAULT_CAPACITY,
    ) -> None:
        torch = _import_torch()
        from transformers import AutoModelForCausalLM

        resolved = resolve_model(model)
        self.name = resolved.name
        self._resolved = resolved
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        if dtype is None:  # CUDA: bf16 (fp16 without it); CPU: fp32 (`--backend auto` chooses bf16 where it pays)
            from lampbox.engine.generation.auto import hf_dtype

            dtype = hf_dtype(self.device) if self.device.startswith("cuda") else "float32"  # auto picks bf16 on CPUs
        self.dtype = dtype
        if quantize not in QUANTIZE_MODES:
            known = ", ".join(mode for mode in QUANTIZE_MODES if mode)
            raise LampboxError(f"hf: quantize must be one of {known} (or unset), not {quantize!r}")
        if quantize and self.device != "cpu":
            raise LampboxError(f"hf: quantize={quantize} is a CPU speed-up; on {self.device} leave it unset")
        self.quantize = quantize
        self.batch_size = batch_size
        if self.device == "cpu":  # torch's own default is every core, shared machine or not
            torch.set_num_threads(threads or default_threads())
        from lampbox.engine.quiet import quiet_transformers

        quiet_transformers()
        source = _local_folder(resolved)
        self.source = source
        tokenizer = _auto_tokenizer(source, resolved.name)
        tokenizer.padding_side = "left"
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        try:
            torch_model: Any = AutoModelForCausalLM.from_pretrained(
                source, dtype=getattr(torch, dtype)
            )
        except OSError as error:
            raise LampboxError(f"could not load model {resolved.name!r}: {error}") from error
        if resolved.adapter is not None:
            torch_model = apply_adapter(torch_model, resolved.adapter)
        self._model: Any = torch_model.to(self.device).eval()
        # a frozen head (peft freezes the base when it loads a user's adapter) in bfloat16 takes
        # torch's slow path for the last position's logits on the CPU (lm_head.py)
        canonical_head_input(self._model)
        if quantize == "int8":
            self._model = _quantize_int8(self._model)
        self._tokenizer = HFTokenizer(tokenizer)
        has_template = bool(getattr(tokenizer, "chat_template", None))
        if chat is None:
            chat = resolved.chat if resolved.chat is not None else has_template
        if chat and not has_template:
            raise LampboxError(f"model {resolved.name!r} has no chat template; use chat=False")
        self.chat = chat
        limit = context_limit(self._model.config)
        self._context_size = min(context_size or limit, limit)
        self._lock = threading.Lock()
        # int8 layers are not the nn.Linear peft puts adapters on
        self._adapters = (
            AdapterSlots(self._model, max_adapters, model_name=resolved.name, base_fingerprint=self._base_fingerprint)
            if quantize is None
            else None
        )
        kind = f"{dtype}, int8 layers" if quantize else dtype
        note_running(f"hf-{id(self)}", f"the hf backend: {self.name} (torch {torch.__version__}, {self.device}, {kind})")

    @property
    def tokenizer(self) -> HFTokenizer:
        return self._tokenizer

    def _base_fingerprint(self) -> str:
        """The loaded base's weights as training records them (a trained adapter names its base's)."""
        from lampbox.engine.fingerprint import model_fingerprint

        return model_fingerprint(self._resolved.location, is_hub_id=self._resolved.is_hub_id)

    @property
    def model(self) -> Any:
        """The torch model (for LoRA / OPPU training)."""
        return self._model

    @property
    def context_size(self) -> int:
        return self._context_size

    def set_threads(self, threads: int) -> bool:
        """The CPU threads the next calls run on (torch's, process-wide; the TUI chooses them per
        generation from the idle cores). False on a GPU, where they do not apply."""
        if threads < 1:
            raise LampboxError("threads must be at least 1")
        if self.device != "cpu":
            return False
        _import_torch().set_num_threads(threads)
        return True

    @property
    def supports_streaming(self) -> bool:
        return True

    @property
    def supports_scoring(self) -> bool:
        return True

    def identity(self) -> dict[str, Any]:
        import torch
        import transformers

        resolved = self._resolved
        weights: dict[str, Any]
        if resolved.format == "gguf":
            weights = {"model_sha256": file_sha256(resolved.path)}
        elif resolved.is_hub_id:
            revision = getattr(self._model.config, "_commit_hash", None)
            weights = {"hub_id": resolved.location, "revision": revision}
        else:
            weights = {"folder_sha256": folder_sha256(resolved.path)}
        if resolved.adapter is not None:
            weights["adapter_sha256"] = folder_sha256(resolved.adapter)
        return {
            "backend": self.backend,
            **weights,
            "chat": self.chat,
            "device": "cuda" if self.device.startswith("cuda") else self.device,
            "dtype": self.dtype,
            **({"quantize": self.quantize} if self.quantize else {}),
            "transformers": transformers.__version__,
            "torch": torch.__version__.split("+")[0],
        }

    def _prompt_ids(self, prompt: str) -> list[int]:
        return prompt_ids(self._tokenizer.hf_tokenizer, prompt, self.chat)

    def _check_length(self, ids: list[int], params: GenerationParams) -> None:
        if len(ids) + params.max_new_tokens > self._context_size:
            raise LampboxError(
                f"{self.name}: prompt of {len(ids)} tokens + {params.max_new_tokens} new tokens "
                f"exceeds the context size {self._context_size}"
            )

    def _generate_kwargs(self, params: GenerationParams) -> dict[str, Any]:
        tokenizer = self._tokenizer.hf_tokenizer
        kwargs: dict[str, Any] = {
            "max_new_tokens": params.max_new_tokens,
            "pad_token_id": tokenizer.pad_token_id,
        }
        if params.temperature > 0:
            kwargs.update(do_sample=True, temperature=params.temperature, top_p=params.top_p)
            kwargs["top_k"] = params.top_k or None
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        if params.stop:
            kwargs.update(stop_strings=list(params.stop), tokenizer=tokenizer)
        return kwargs

    def _padded(self, batch_ids: list[list[int]]) -> tuple[Any, Any]:
        """Left-padded input ids and attention mask on the model's device."""
        import torch

        width = max(len(ids) for ids in batch_ids)
        pad = self._tokenizer.hf_tokenizer.pad_token_id
        input_ids = torch.full((len(batch_ids), width), pad, dtype=torch.long)
        mask = torch.zeros((len(batch_ids), width), dtype=torch.long)
        for row, ids in enumerate(batch_ids):
            input_ids[row, width - len(ids) :] = torch.tensor(ids, dtype=torch.long)
            mask[row, width - len(ids) :] = 1
        return input_ids.to(self.device), mask.to(self.device)

    def generate(
        self,
        prompts: Requests,
        params: GenerationParams,
        on_output: Callable[[int, str], None] | None = None,
        should_cancel: Callable[[], bool] | None = None,
    ) -> list[str]:
        import torch

        requests = prompts_and_adapters(prompts, self.backend)
        all_ids = [self._prompt_ids(prompt) for prompt, _ in requests]
        for ids in all_ids:
            self._check_length(ids, params)
        outputs: list[str | None] = [None] * len(prompts)
        done = 0
        kwargs = self._generate_kwargs(params)
        for adapter, batch in self._batches(requests, all_ids):
            if should_cancel and should_cancel():
                raise GenerationCancelled(done, len(prompts))
            input_ids, mask = self._padded([all_ids[index] for index in batch])
            with self._lock, torch.inference_mode():
                self._use(adapter)
                torch.manual_seed(params.seed)
                generated = self._model.generate(input_ids=input_ids, attention_mask=mask, **kwargs)
            new_tokens = generated[:, input_ids.shape[1] :].tolist()
            for index, tokens in zip(batch, new_tokens, strict=True):
                decoded = self._tokenizer.hf_tokenizer.decode(tokens, skip_special_tokens=True)
                text = cut_at_stop(decoded, params.stop)
                outputs[index] = text
                done += 1
                if on_output:
                    on_output(index, text)
        return [output or "" for output in outputs]

    def generate_streaming(
        self,
        prompts: Requests,
        params: GenerationParams,
        on_piece: Callable[[int, str], None],
        should_cancel: Callable[[], bool] | None = None,
    ) -> list[str]:
        """Generate every prompt in ONE left-padded batch, reporting each row's text as it grows
        (on_piece(index, text)): every prompt shows its first tokens after one prefill. The
        outputs are decoded as generate() decodes them (the pieces join to them, except where a
        tokenizer decodes a prefix differently: the outputs are authoritative)."""
        requests = prompts_and_adapters(prompts, self.backend)
        all_ids = [self._prompt_ids(prompt) for prompt, _ in requests]
        for ids in all_ids:
            self._check_length(ids, params)
        groups: dict[str | None, list[int]] = {}
        for index, (_, adapter) in enumerate(requests):
            groups.setdefault(adapter, []).append(index)
        outputs = [""] * len(all_ids)
        for adapter, rows in groups.items():  # requests naming different adapters: one batch each

            def on_row_piece(row: int, piece: str, rows: list[int] = rows) -> None:
                on_piece(rows[row], piece)

            texts = self._stream_batch([all_ids[index] for index in rows], adapter, params, on_row_piece, should_cancel)
            for index, text in zip(rows, texts, strict=True):
                outputs[index] = text
        return outputs

    def _stream_batch(
        self,
        all_ids: list[list[int]],
        adapter: str | None,
        params: GenerationParams,
        on_piece: Callable[[int, str], None],
        should_cancel: Callable[[], bool] | None,
    ) -> list[str]:
        import torch
        from transformers import StoppingCriteriaList

        input_ids, mask = self._padded(all_ids)
        tokenizer = self._tokenizer.hf_tokenizer
        streamer = _RowStreamer(tokenizer, len(all_ids), on_piece, params.stop)
        kwargs = self._generate_kwargs(params)
        if should_cancel is not None:
            kwargs["stopping_criteria"] = StoppingCriteriaList([_Cancelled(should_cancel)])
        with self._lock, torch.inference_mode():
            self._use(adapter)
            torch.manual_seed(params.seed)
            generated = self._model.generate(input_ids=input_ids, attention_mask=mask, streamer=streamer, **kwargs)
        if should_cancel is not None and should_cancel():
            raise GenerationCancelled(0, len(all_ids))
        outputs = []
        for row, tokens in enumerate(generated[:, input_ids.shape[1] :].tolist()):
            text = cut_at_stop(tokenizer.decode(tokens, skip_special_tokens=True), params.stop)
            streamer.show(row, text)  # whatever was held back, now decided
            outputs.append(text)
        return outputs

    def _batches(self, requests: list[tuple[str, str | None]], all_ids: list[list[int]]) -> Iterator[tuple[str | None, list[int]]]:
        """Batches of request indices, each with one adapter (or none): requests grouped by
        adapter, then batched by length within a group (`_by_length`)."""
        groups: dict[str | None, list[int]] = {}
        for index, (_, adapter) in enumerate(requests):
            groups.setdefault(adapter, []).append(index)
        for adapter, indices in groups.items():
            for batch in self._by_length(indices, all_ids):
                yield adapter, batch

    def _by_length(self, indices: Iterable[int], all_ids: list[list[int]]) -> Iterator[list[int]]:
        """`indices` in batches of batch_size, longest first (similar lengths share a batch, less
        padding)."""
        order = sorted(indices, key=lambda index: -len(all_ids[index]))
        for start in range(0, len(order), self.batch_size):
            yield order[start : start + self.batch_size]

    def _use(self, adapter: str | None) -> None:
        """Make the model compute with `adapter` (None: as loaded); called under the lock."""
        if self._adapters is None:
            if adapter is not None:
                raise LampboxError(f"{self.name}: per-request adapters need quantize unset ({adapter})")
            return
        self._adapters.activate(adapter)

    def stream(self, prompt: GenerationRequest | str, params: GenerationParams) -> Iterator[str]:
        ((prompt, adapter),) = prompts_and_adapters([prompt], self.backend)
        import torch
        from transformers import TextIteratorStreamer

        ids = self._prompt_ids(prompt)
        self._check_length(ids, params)
        input_ids, mask = self._padded([ids])
        streamer = TextIteratorStreamer(
            self._tokenizer.hf_tokenizer, skip_prompt=True, skip_special_tokens=True
        )
        failures: list[BaseException] = []

        def run() -> None:
            try:
                with self._lock, torch.inference_mode():
                    self._use(adapter)
                    torch.manual_seed(params.seed)
                    self._model.generate(
                        input_ids=input_ids,
                        attention_mask=mask,
                        streamer=streamer,
                        **self._generate_kwargs(params),
                    )
            except BaseException as error:  # surfaced in the caller's thread below
                failures.append(error)
                streamer.end()

        worker = threading.Thread(target=run, daemon=True)
        worker.start()
        yield from (piece for piece in stop_filtered(iter(streamer), params.stop) if piece)
        worker.join()
        if failures:
            raise LampboxError(f"{self.name}: generation failed: {failures[0]}") from failures[0]

    def score(self, prompts: Sequence[str], continuations: Sequence[str]) -> list[float]:
        """Sum of log-probabilities of each continuation's tokens after its (templated) prompt."""
        import torch

        if len(prompts) != len(continuations):
            raise LampboxError("score() needs one continuation per prompt")
        tokenizer = self._tokenizer.hf_tokenizer
        pairs = []
        for prompt, continuation in zip(prompts, continuations, strict=True):
            context = self._prompt_ids(prompt)
            if not context and tokenizer.bos_token_id is not None:
                context = [tokenizer.bos_token_id]
            pairs.append((context, self._tokenizer.encode(continuation)))
        scores: list[float] = [0.0] * len(pairs)
        # Only the logits that predict continuation tokens are computed (the model's
        # logits_to_keep where it has it): over a whole prompt they cost a vocabulary-wide
        # matmul and softmax per token.
        trims = "logits_to_keep" in inspect.signature(self._model.forward).parameters
        joined = [context + cont for context, cont in pairs]
        # batched as generate() batches: longest first, similar lengths together (less padding)
        for indices in self._by_length(range(len(pairs)), joined):
            batch = [pairs[index] for index in indices]
            input_ids, mask = self._padded([joined[index] for index in indices])
            # the last `keep` tokens are scored (the first token of a row has nothing before it)
            keep = min(max(len(cont) for _, cont in batch), input_ids.shape[1] - 1)
            if keep < 1:  # nothing to score: empty continuations
                continue
            with self._lock, torch.inference_mode():
                self._use(None)
                extra = {"logits_to_keep": keep + 1} if trims else {}
                logits = self._model(input_ids=input_ids, attention_mask=mask, **extra).logits[:, -keep - 1 : -1].float()
            log_probs = torch.log_softmax(logits, dim=-1)
            token_scores = log_probs.gather(-1, input_ids[:, -keep:].unsqueeze(-1)).squeeze(-1)
            for row, (index, (_, cont)) in enumerate(zip(indices, batch, strict=True)):
                # Left padding: the continuation is the last len(cont) tokens of each row.
                scores[index] = float(token_scores[row, max(0, keep - len(cont)) :].sum()) if cont else 0.0
        return scores

    def score_labels(
        self,
        prompts: Requests,
        labels: Sequence[str],
        should_cancel: Callable[[], bool] | None = None,
    ) -> list[list[float]]:
        """Each label's summed token log-probabilities as the answer to each prompt: one forward
        pass over the (templated) prompt, then all labels in one batch on its KV cache. Requests
        naming an adapter are scored with it (grouped by adapter)."""
        import torch

        from lampbox.engine.generation.labels import score_each_prompt

        def score(ids: list[int], label_ids: list[list[int]], adapter: str | None) -> list[float]:
            with self._lock, torch.inference_mode():
                self._use(adapter)
                return self._label_logliks(ids, label_ids)

        return score_each_prompt(self, prompts, labels, self._prompt_ids, self._context_size, score, should_cancel)

    def _label_logliks(self, ids: list[int], label_ids: list[list[int]]) -> list[float]:
        import torch

        prompt = torch.tensor([ids], dtype=torch.long, device=self.device)
        out = self._model(input_ids=prompt, use_cache=True)
        first = torch.log_softmax(out.logits[0, -1].float(), dim=-1)
        scores = [float(first[tokens[0]]) for tokens in label_ids]
        longer = [row for row, tokens in enumerate(label_ids) if len(tokens) > 1]
        if not longer:
            return scores
        # The labels' later tokens, right-padded, all on copies of the prompt's cache: row r's
        # logits at position j predict its token j + 1.
        width = max(len(label_ids[row]) - 1 for row in longer)
        pad = self._tokenizer.hf_tokenizer.pad_token_id
        inputs = torch.full((len(longer), width), pad, dtype=torch.long)
        mask = torch.ones((len(longer), len(ids) + width), dtype=torch.long)
        for batch_row, row in enumerate(longer):
            tokens = label_ids[row][:-1]
            inputs[batch_row, : len(tokens)] = torch.tensor(tokens, dtype=torch.long)
            mask[batch_row, len(ids) + len(tokens) :] = 0
        # transformers 5 names the cache `cache` (`past_key_values` before, now deprecated).
        cache_name = "cache" if "cache" in inspect.signature(self._model.forward).parameters else "past_key_values"
        cache = out[cache_name]
        cache.batch_repeat_interleave(len(longer))
        logits = self._model(
            input_ids=inputs.to(self.device), attention_mask=mask.to(self.device), **{cache_name: cache}
        ).logits.float()
        log_probs = torch.log_softmax(logits, dim=-1)
        for batch_row, row in enumerate(longer):
            targets = label_ids[row][1:]
            positions = torch.arange(len(targets), device=self.device)
            picked = log_probs[batch_row, positions, torch.tensor(targets, device=self.device)]
            scores[row] += float(picked.sum())
        return scores

    def close(self) -> None:
        forget_running(f"hf-{id(self)}")
        self._model = None  # frees the weights once the caller drops the generator
        self._adapters = None
