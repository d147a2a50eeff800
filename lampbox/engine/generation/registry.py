"""Backends by name, loaded lazily: importing this module imports neither torch nor llama_cpp.

A backend registers with `register_backend(name, "module:Class")` (or the class itself), or
from another package through the `lampbox.backends` entry point group (lampbox.engine.registry);
the module is imported only when the backend is chosen, so adding one touches no caller.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from lampbox.engine.generation.base import Generator, Tokenizer
from lampbox.engine.registry import Registry
from lampbox.models import register_derivation


def _generator_class(name: str, target: Any) -> Any:
    if not isinstance(target, type):
        raise TypeError(f"a backend is a generator class, not {type(target).__name__}")
    return target


# backend name -> "module:class" (imported when chosen) or the class itself.
BACKENDS: Registry[Any] = Registry("backend", "backends", resolve=_generator_class)


def register_backend(name: str, target: str | type, *, replace: bool = False, description: str = "") -> None:
    """Make a backend available by name (a taken name is an error unless replace=True)."""
    BACKENDS.register(name, target, replace=replace, description=description)


def unregister_backend(name: str) -> None:
    BACKENDS.unregister(name)


register_backend("llamacpp", "lampbox.engine.generation.llamacpp:LlamaCppGenerator")
register_backend("hf", "lampbox.engine.generation.hf:HFGenerator")
register_backend("openai", "lampbox.engine.generation.openai_compat:OpenAIGenerator")
register_backend("dummy", "lampbox.engine.generation.dummy:DummyGenerator")
register_backend("fid", "lampbox.engine.generation.fid:FiDGenerator")


def _requantize(source: Path, target: Path, quant: str) -> None:
    from lampbox.engine.generation.llamacpp import requantize_gguf

    requantize_gguf(source, target, quant)


# The manifest's `derive = "requantize"` models are written by llama.cpp: the ground floor
# (lampbox.models) declares derivations, the engine provides this one.
REQUANTIZE_RECIPE = "pure, token embeddings Q8_0, plain rounding"  # change it with the recipe
register_derivation("requantize", _requantize, REQUANTIZE_RECIPE)


def known_backends() -> list[str]:
    """Names accepted by load_generator(backend=...)."""
    return BACKENDS.names()


def known_models() -> list[str]:
    """Model names from the manifest (paths, HF folders and hub ids are accepted too)."""
    from lampbox.models import known_models as manifest_models

    return manifest_models()


def backend_class(backend: str) -> Any:
    """The generator class of a backend (imports its module, not its heavy libraries)."""
    return BACKENDS.get(backend)


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
