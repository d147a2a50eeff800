"""`fid`: Fusion-in-Decoder generation with an encoder-decoder model (a T5, a trained FiD
model from `lampbox train fid`, or the offline minilm-bert2bert base). A request's passages are
encoded one by one and fused for the decoder; a request without passages is its prompt alone."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from lampbox.engine.fingerprint import folder_sha256
from lampbox.engine.generation.base import GenerationParams, GenerationRequest, Requests, as_request
from lampbox.engine.generation.common import GenerationCancelled, cut_at_stop
from lampbox.errors import LampboxError


def locate(model: str | None) -> tuple[str, bool, str | None]:
    """(weights location, is a hub id, adapter) of a FiD model name, without loading it."""
    from lampbox.engine.generation.fid_model import (
        OFFLINE_BASE,
        offline_base_folder,
        offline_base_settings,
    )
    from lampbox.models import resolve_model

    settings = offline_base_settings(model or OFFLINE_BASE)
    if settings is not None:
        return str(offline_base_folder(*settings)), False, None
    resolved = resolve_model(model)
    if resolved.adapter is not None or resolved.format != "hf":
        what = "a LoRA model" if resolved.adapter is not None else "a GGUF model"
        raise LampboxError(
            f"{model!r} is {what}, not an encoder-decoder: the fid backend runs FiD models "
            "(`lampbox train fid`, a T5); run this one with --backend hf or llamacpp"
        )
    return resolved.location, resolved.is_hub_id, None


class FiDGenerator:
    backend = "fid"
    supports_streaming = False
    supports_scoring = False
    supports_label_scoring = True
    supports_passages = True
    supports_adapters = False
    loads_local_weights = True
    locate = staticmethod(locate)

    def __init__(
        self,
        model: str | None = None,
        *,
        device: str | None = None,
        batch_size: int = 8,
        passage_length: int | None = None,
        threads: int | None = None,
    ) -> None:
        import torch
        from transformers import AutoTokenizer

        from lampbox.engine.generation.fid_model import OFFLINE_BASE, load_seq2seq, passage_limits
        from lampbox.engine.generation.hf import HFTokenizer
        from lampbox.engine.quiet import quiet_transformers

        quiet_transformers()
        if threads:
            torch.set_num_threads(threads)
        self.name = model or OFFLINE_BASE
        self.location, self.is_hub_id, _ = locate(model)
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self._model = load_seq2seq(self.location).to(self.device).eval()
        self._hf_tokenizer = AutoTokenizer.from_pretrained(self.location)
        self._tokenizer = HFTokenizer(self._hf_tokenizer)
        limit, self.special_tokens = passage_limits(self._hf_tokenizer)
        self.passage_length = passage_length or limit
        self.context_size = limit
        self.batch_size = batch_size
        self._lock = threading.Lock()

    @property
    def tokenizer(self) -> Any:
        return self._tokenizer

    def identity(self) -> dict[str, Any]:
        import torch
        import transformers

        weights = {"hub_id": self.location} if self.is_hub_id else {"folder_sha256": folder_sha256(self.location)}
        return {
            "backend": self.backend, **weights, "device": "cuda" if self.device.startswith("cuda") else self.device,
            "passage_length": self.passage_length, "transformers": transformers.__version__,
            "torch": torch.__version__.split("+")[0],
        }  # fmt: skip

    def generate(
        self,
        prompts: Requests,
        params: GenerationParams,
        on_output: Callable[[int, str], None] | None = None,
        should_cancel: Callable[[], bool] | None = None,
    ) -> list[str]:
        from lampbox.engine.generation.fid_model import fid_generate, passage_ids

        if params.temperature > 0:
            raise LampboxError("the fid backend decodes greedily (temperature 0)")
        requests = [as_request(p) for p in prompts]
        outputs: list[str] = []
        for start in range(0, len(requests), self.batch_size):
            if should_cancel and should_cancel():
                raise GenerationCancelled(start, len(requests))
            batch = requests[start : start + self.batch_size]
            passages = [passage_ids(self._hf_tokenizer, r.passages or (r.prompt,), self.passage_length) for r in batch]
            with self._lock:
                texts = fid_generate(self._model, self._hf_tokenizer, passages, params.max_new_tokens)
            for text in texts:
                outputs.append(cut_at_stop(text, params.stop))
                if on_output:
                    on_output(len(outputs) - 1, outputs[-1])
        return outputs

    def stream(self, prompt: GenerationRequest | str, params: GenerationParams) -> Iterator[str]:
        yield from self.generate([prompt], params)

    def score(self, prompts: Sequence[str], continuations: Sequence[str]) -> list[float]:
        raise LampboxError("the fid backend does not score continuations")

    def score_labels(
        self, prompts: Requests, labels: Sequence[str], should_cancel: Callable[[], bool] | None = None
    ) -> list[list[float]]:
        """Each label's log-likelihood as the decoder's whole answer (its tokens and the end
        token) given the request's fused passages."""
        from lampbox.engine.generation.fid_model import fid_label_logliks, passage_ids

        scores: list[list[float]] = []
        for index, prompt in enumerate(prompts):
            if should_cancel and should_cancel():
                raise GenerationCancelled(index, len(prompts))
            request = as_request(prompt)
            passages = passage_ids(self._hf_tokenizer, request.passages or (request.prompt,), self.passage_length)
            with self._lock:
                scores.append(fid_label_logliks(self._model, self._hf_tokenizer, passages, labels))
        return scores

    def close(self) -> None:
        self._model = None
