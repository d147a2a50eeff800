"""Retrievers by name, loaded lazily: a registered name maps to "module:Class" or a factory.

Extra retrievers (trained ROPG retrievers, plugins) plug in with `register_retriever`; callers
only ever use `create_retriever(name, **options)` and the Retriever protocol.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lampbox.engine.retrieval.base import Retriever
from lampbox.errors import UnknownNameError

RetrieverFactory = Callable[..., Retriever]


@dataclass(frozen=True)
class RetrieverEntry:
    name: str
    target: str | RetrieverFactory  # "package.module:Class" (imported on first use) or a factory
    description: str = ""

    def factory(self) -> RetrieverFactory:
        if callable(self.target):
            return self.target
        module_name, _, attribute = self.target.partition(":")
        return getattr(importlib.import_module(module_name), attribute)


_REGISTRY: dict[str, RetrieverEntry] = {}


def register_retriever(
    name: str, target: str | RetrieverFactory, description: str = "", replace: bool = False
) -> None:
    """Make a retriever available by name (replace=True to override an existing one)."""
    if name in _REGISTRY and not replace:
        raise ValueError(f"retriever {name!r} is already registered")
    _REGISTRY[name] = RetrieverEntry(name, target, description)


def unregister_retriever(name: str) -> None:
    """Remove a registered retriever (no error if it is not there)."""
    _REGISTRY.pop(name, None)


def retriever_names() -> list[str]:
    return sorted(_REGISTRY)


def retriever_descriptions() -> dict[str, str]:
    return {name: _REGISTRY[name].description for name in retriever_names()}


# prefix -> (entry, option): "PREFIX:VALUE" makes the entry's retriever with option=VALUE
# (trained retrievers: `ropg:NAME`).
_PREFIXES: dict[str, tuple[RetrieverEntry, str]] = {}


def register_retriever_prefix(
    prefix: str, target: str | RetrieverFactory, option: str, description: str = ""
) -> None:
    """Make `PREFIX:VALUE` a retriever name: the target is made with `option=VALUE`."""
    _PREFIXES[prefix] = (RetrieverEntry(f"{prefix}:", target, description), option)


def is_retriever_name(name: str) -> bool:
    """A registered name, or PREFIX:VALUE of a registered prefix (the value is checked later)."""
    prefix, colon, value = name.partition(":")
    return (
        name in _REGISTRY
        or name.strip().lower() in _REGISTRY
        or bool(colon and value and prefix in _PREFIXES)
    )


def known_retriever_names() -> list[str]:
    """Registered names and the prefixed forms, for messages."""
    return retriever_names() + [f"{prefix}:NAME" for prefix in sorted(_PREFIXES)]


def create_retriever(name: str, **options: Any) -> Retriever:
    """A retriever by name with its options (unknown names suggest the closest)."""
    entry = _REGISTRY.get(name) or _REGISTRY.get(name.strip().lower())
    if entry is None:
        prefix, colon, value = name.partition(":")
        if colon and value and prefix in _PREFIXES:
            prefixed, option = _PREFIXES[prefix]
            return prefixed.factory()(**{**options, option: value})
        raise UnknownNameError("retriever", name, known_retriever_names())
    return entry.factory()(**options)


_PACKAGE = "lampbox.engine.retrieval"
for _name, _target, _description in (
    ("bm25", "bm25:BM25Retriever", "official BM25 (rank_bm25 BM25Okapi, whitespace tokens)"),
    ("bm25-fast", "bm25_fast:BM25FastRetriever", "BM25 with bm25s tokenization and stemming"),
    ("dense", "dense:DenseRetriever", "sentence-transformers embeddings (all-MiniLM-L6-v2)"),
    ("recency", "simple:RecencyRetriever", "newest profile items first"),
    ("random", "simple:RandomRetriever", "seeded random order"),
    ("none", "simple:NoRetriever", "no retrieval (nothing goes into the prompt)"),
):
    register_retriever(_name, f"{_PACKAGE}.{_target}", _description)
register_retriever_prefix(
    "ropg",
    "lampbox.engine.ropg.retriever:RopgRetriever",
    "trained",
    "a retriever trained from the model's feedback (lampbox train ropg --name NAME)",
)
