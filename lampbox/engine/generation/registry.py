"""Backends by name, loaded lazily: importing this module imports neither torch nor llama_cpp.

A backend registers with `register_backend(name, "module:Class")` (or the class itself); the
module is imported only when the backend is chosen, so adding one touches no caller.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import Any

from lampbox.engine.generation.base import Generator, Tokenizer
from lampbox.errors import UnknownNameError

# backend name -> "module:class" (imported when chosen) or the class itself.
_BACKENDS: dict[str, Any] = {}


def register_backend(name: str, target: str | type) -> None:
    """Make a backend available by name (a later registration under the same name wins)."""
    _BACKENDS[name] = target


register_backend("llamacpp", "lampbox.engine.generation.llamacpp:LlamaCppGenerator")
register_backend("hf", "lampbox.engine.generation.hf:HFGenerator")
register_backend("openai", "lampbox.engine.generation.openai_compat:OpenAIGenerator")
register_backend("dummy", "lampbox.engine.generation.dummy:DummyGenerator")
register_backend("fid", "lampbox.engine.generation.fid:FiDGenerator")


def known_backends() -> list[str]:
    """Names accepted by load_generator(backend=...)."""
    return sorted(_BACKENDS)


def known_models() -> list[str]:
    """Model names from the manifest (paths, HF folders and hub ids are accepted too)."""
    from lampbox.models import known_models as manifest_models

    return manifest_models()


def backend_class(backend: str) -> Any:
    """The generator class of a backend (imports its module, not its heavy libraries)."""
    if backend not in _BACKENDS:
        raise UnknownNameError("backend", backend, known_backends())
    target = _BACKENDS[backend]
    if isinstance(target, str):
        module_name, class_name = target.split(":")
        target = getattr(importlib.import_module(module_name), class_name)
    return target


def load_generator(backend: str, model: str | None = None, **options: Any) -> Generator:
    """Load `model` (manifest name, .gguf path, HF folder or hub id; None = default) on `backend`.

    Options are the backend's keyword arguments (see docs/backends.md), for example
    chat=False, context_size=4096, threads=2 (llamacpp), batch_size=8 (hf, llamacpp),
    base_url=... (openai).
    """
    generator: Generator = backend_class(backend)(model, **options)
    return generator


def load_tokenizer(model: str | None = None) -> Tokenizer:
    """Just the tokenizer of a model, without loading its weights.

    GGUF models use llama.cpp's vocab-only load (or transformers when llama_cpp is missing);
    HF folders and hub ids use transformers' AutoTokenizer.
    """
    from lampbox.models import resolve_model

    resolved = resolve_model(model)
    if resolved.format == "gguf" and importlib.util.find_spec("llama_cpp") is not None:
        from lampbox.engine.generation.llamacpp import load_vocab

        return load_vocab(resolved.path)
    from lampbox.engine.generation.hf import load_hf_tokenizer

    return load_hf_tokenizer(resolved)
