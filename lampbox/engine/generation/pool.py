"""Loaded generators shared across runs in one process, at most `size` at a time."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

from lampbox.engine.generation.base import Generator
from lampbox.engine.generation.registry import load_generator

DEFAULT_POOL_SIZE = 3

PoolKey = tuple[str, str, tuple[tuple[str, Any], ...]]

# The backends whose loading takes a CPU thread count (torch's or llama.cpp's).
THREADED_BACKENDS = ("llamacpp", "hf")


def thread_options(threads: int | None) -> dict[str, dict[str, Any]]:
    """Backend options that run generation on `threads` CPU threads ({} for the default)."""
    return {backend: {"threads": threads} for backend in THREADED_BACKENDS} if threads else {}


BATCHED_BACKENDS = ("llamacpp", "hf")  # backends that decode a batch of prompts together


def loading_options(threads: int | None, batch_size: int | None) -> dict[str, dict[str, Any]]:
    """`thread_options`, and the batch size the batching backends decode together (None: their
    own). Neither changes outputs (llamacpp's batched greedy outputs are the one-at-a-time ones;
    hf's left-padded batches give the same greedy text), so both are loading options, never
    part of a run's spec."""
    options = thread_options(threads)
    if batch_size:
        for backend in BATCHED_BACKENDS:
            options.setdefault(backend, {})["batch_size"] = batch_size
    return options


class GeneratorPool:
    """A model is loaded once and reused; when more than `size` are loaded, the least recently
    used one is closed first (OPPU loads one adapter after another).

    `backend_options` gives per-backend loading options that do not change outputs (threads
    for llamacpp, base_url for openai, ...); a RunSpec's model options come on top. A caller
    that holds a generator across a later `get` of other models must size the pool for it.
    """

    def __init__(
        self,
        backend_options: Mapping[str, Mapping[str, Any]] | None = None,
        size: int = DEFAULT_POOL_SIZE,
    ) -> None:
        if size < 1:
            raise ValueError("a generator pool holds at least one model")
        self.size = size
        self._backend_options = {
            name: dict(options) for name, options in (backend_options or {}).items()
        }
        self._loaded: OrderedDict[PoolKey, Generator] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, backend: str, model: str, options: tuple[tuple[str, Any], ...] = ()) -> Generator:
        key = (backend, model, tuple(options))
        with self._lock:
            generator = self._loaded.get(key)
            if generator is None:
                merged = {**self._backend_options.get(backend, {}), **dict(options)}
                generator = self._loaded[key] = load_generator(backend, model, **merged)
                while len(self._loaded) > self.size:
                    _, evicted = self._loaded.popitem(last=False)
                    evicted.close()
            self._loaded.move_to_end(key)
            return generator

    def make_room(self, models: int) -> None:
        """Hold at least `models` models at once (a caller about to use that many together:
        none of them is evicted while another loads)."""
        with self._lock:
            self.size = max(self.size, models)

    def loaded(self) -> list[PoolKey]:
        """What is loaded now, least recently used first."""
        with self._lock:
            return list(self._loaded)

    def close(self) -> None:
        with self._lock:
            for generator in self._loaded.values():
                generator.close()
            self._loaded.clear()
