"""Backends by name, loaded lazily: importing this module imports neither torch nor llama_cpp."""

from __future__ import annotations

import importlib
import importlib.util
from typing import Any

from lampbox.engine.generation.base import Generator, Tokenizer
from lampbox.errors import UnknownNameError

# backend name -> "module:class"; the module is imported only when the backend is chosen.
BACKENDS: dict[str, str] = {
    "llamacpp": "lampbox.engine.generation.llamacpp:LlamaCppGenerator",
    "hf": "lampbox.engine.generation.hf:HFGenerator",
    "openai": "lampbox.engine.generation.openai_compat:OpenAIGenerator",
}
DEFAULT_BACKEND = "llamacpp"


def known_backends() -> list[str]:
    """Names accepted by load_generator(backend=...)."""
    return sorted(BACKENDS)


def known_models() -> list[str]:
    """Model names from the manifest (paths, HF folders and hub ids are accepted too)."""
    from lampbox.models import known_models as manifest_models

    return manifest_models()


def _backend_class(backend: str) -> Any:
    if backend not in BACKENDS:
        raise UnknownNameError("backend", backend, known_backends())
    module_name, class_name = BACKENDS[backend].split(":")
    return getattr(importlib.import_module(module_name), class_name)


def load_generator(
    backend: str = DEFAULT_BACKEND, model: str | None = None, **options: Any
) -> Generator:
    """Load `model` (manifest name, .gguf path, HF folder or hub id; None = default) on `backend`.

    Options are the backend's keyword arguments (see docs/backends.md), for example
    chat=False, context_size=4096, threads=2 (llamacpp), batch_size=8 (hf), base_url=... (openai).
    """
    generator: Generator = _backend_class(backend)(model, **options)
    return generator


def load_tokenizer(model: str | None = None) -> Tokenizer:
    """Just the tokenizer of a model, without loading its weights.

    GGUF models use llama.cpp's vocab-only load (or transformers when llama_cpp is missing);
    HF folders and hub ids use transformers' AutoTokenizer.
    """
    from lampbox.models import resolve_model

    resolved = resolve_model(model)
    if resolved.format == "gguf":
        if importlib.util.find_spec("llama_cpp") is not None:
            from lampbox.engine.generation.llamacpp import load_vocab

            return load_vocab(resolved.path)
        from lampbox.engine.generation.hf import load_hf_tokenizer

        return load_hf_tokenizer(resolved)
    from lampbox.engine.generation.hf import load_hf_tokenizer

    return load_hf_tokenizer(resolved)
