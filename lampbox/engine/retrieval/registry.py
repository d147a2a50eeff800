"""Retrievers by name, loaded lazily: a registered name maps to "module:Class" or a factory.

Extra retrievers (trained ROPG retrievers, plugins) plug in with `register_retriever` or, from
another package, the `lampbox.retrievers` entry point group (lampbox.engine.registry); callers
only ever use `create_retriever(name, **options)` and the Retriever protocol.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from lampbox.engine.registry import Registry
from lampbox.engine.retrieval.base import Retriever
from lampbox.errors import UnknownNameError

RetrieverFactory = Callable[..., Retriever]


def _factory(name: str, target: Any) -> RetrieverFactory:
    if not callable(target):
        raise TypeError(f"a retriever is a class or factory, not {type(target).__name__}")
    return target  # type: ignore[no-any-return]


RETRIEVERS: Registry[RetrieverFactory] = Registry("retriever", "retrievers", resolve=_factory)
# prefix -> its factory, with the option PREFIX:VALUE sets (trained retrievers: `ropg:NAME`)
RETRIEVER_PREFIXES: Registry[RetrieverFactory] = Registry("retriever prefix", None, resolve=_factory)


def register_retriever(
    name: str, target: str | RetrieverFactory, description: str = "", replace: bool = False
) -> None:
    """Make a retriever available by name (a taken name is an error unless replace=True)."""
    RETRIEVERS.register(name, target, description=description, replace=replace)


def unregister_retriever(name: str) -> None:
    """Remove a registered retriever (no error if it is not there)."""
    RETRIEVERS.unregister(name)


def retriever_names() -> list[str]:
    return RETRIEVERS.names()


def retriever_descriptions() -> dict[str, str]:
    return RETRIEVERS.descriptions()


def register_retriever_prefix(
    prefix: str, target: str | RetrieverFactory, option: str, description: str = "", replace: bool = False
) -> None:
    """Make `PREFIX:VALUE` a retriever name: the target is made with `option=VALUE`."""
    RETRIEVER_PREFIXES.register(prefix, target, description=description, replace=replace, data=option)


def _prefixed(name: str) -> tuple[str, str] | None:
    """(prefix, value) of a PREFIX:VALUE name of a registered prefix."""
    prefix, colon, value = name.partition(":")
    return (prefix, value) if colon and value and prefix in RETRIEVER_PREFIXES else None


def _registered(name: str) -> str | None:
    """The registered name `name` stands for (names are matched as given, then lower-cased)."""
    for candidate in (name, name.strip().lower()):
        if candidate in RETRIEVERS:
            return candidate
    return None


def is_retriever_name(name: str) -> bool:
    """A registered name, or PREFIX:VALUE of a registered prefix (the value is checked later)."""
    return _registered(name) is not None or _prefixed(name) is not None


def known_retriever_names() -> list[str]:
    """Registered names and the prefixed forms, for messages."""
    return retriever_names() + [f"{prefix}:NAME" for prefix in RETRIEVER_PREFIXES.names()]


def create_retriever(name: str, **options: Any) -> Retriever:
    """A retriever by name with its options (unknown names suggest the closest)."""
    registered = _registered(name)
    if registered is not None:
        return RETRIEVERS.get(registered)(**options)
    prefixed = _prefixed(name)
    if prefixed is None:
        raise UnknownNameError("retriever", name, known_retriever_names())
    prefix, value = prefixed
    option = RETRIEVER_PREFIXES.registration(prefix).data
    return RETRIEVER_PREFIXES.get(prefix)(**{**options, option: value})


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
