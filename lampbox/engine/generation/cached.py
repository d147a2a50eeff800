"""Generation through a cache: each distinct request is generated once, batch by batch, and
every batch is kept as soon as it is done (so a killed run resumes where it stopped)."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from lampbox.engine.caches import GenerationCache
from lampbox.engine.generation.base import GenerationParams, GenerationRequest, Generator
from lampbox.engine.generation.common import GenerationCancelled


def generation_cache_key(
    identity: Mapping[str, Any], params: GenerationParams, request: GenerationRequest | str
) -> str:
    """The cache key of one output: the model's identity, the decoding parameters, the request."""
    prompt = request.cache_json() if isinstance(request, GenerationRequest) else request
    data = json.dumps({"model": identity, "params": params.to_json(), "prompt": prompt}, sort_keys=True)
    return hashlib.sha256(data.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class CachedOutputs:
    outputs: list[str]  # one per request, in order
    generated: int  # distinct requests generated in this call
    cached: int  # requests served from the cache


def generate_cached(
    generator: Generator,
    requests: Sequence[GenerationRequest],
    params: GenerationParams,
    *,
    cache: GenerationCache | None = None,
    sizes: Sequence[int] | None = None,
    batch_size: int = 8,
    on_progress: Callable[[int, int], None] | None = None,
    should_cancel: Callable[[], bool] | None = None,
) -> CachedOutputs:
    """One output per request, from the cache where it has one, generated otherwise.

    `sizes` (e.g. prompt token counts) orders the uncached requests longest first, so each
    batch holds requests of similar length (batched backends pad to the longest of a batch).
    on_progress(done, total) counts requests, cached ones included.
    """
    identity = generator.identity()
    keys = [generation_cache_key(identity, params, request) for request in requests]

    def compute(batch: Sequence[GenerationRequest]) -> list[str]:
        return generator.generate(batch, params, should_cancel=should_cancel)

    return cached_outputs(
        generator, requests, keys, compute, cache=cache, sizes=sizes, batch_size=batch_size,
        on_progress=on_progress, should_cancel=should_cancel,
    )  # fmt: skip


def cached_outputs(
    generator: Generator,
    requests: Sequence[GenerationRequest],
    keys: Sequence[str],
    compute: Callable[[Sequence[GenerationRequest]], list[str]],
    *,
    cache: GenerationCache | None = None,
    sizes: Sequence[int] | None = None,
    batch_size: int = 8,
    on_progress: Callable[[int, int], None] | None = None,
    should_cancel: Callable[[], bool] | None = None,
) -> CachedOutputs:
    """One text per request under its cache key: cached ones served, each distinct missing key
    computed once (`compute` on a batch of requests), every batch kept as soon as it is done."""
    outputs = cache.load(keys) if cache is not None else {}
    cached = sum(1 for key in keys if key in outputs)
    first = {key: index for index, key in reversed(list(enumerate(keys)))}
    waiting = Counter(key for key in keys if key not in outputs)  # requests per distinct key
    todo = list(waiting)
    if sizes is not None:
        todo.sort(key=lambda key: -sizes[first[key]])
    total = len(requests)
    done = total - sum(waiting.values())
    if on_progress:
        on_progress(done, total)
    generated = 0
    for start in range(0, len(todo), batch_size):
        if should_cancel and should_cancel():
            raise GenerationCancelled(done, total)
        batch = todo[start : start + batch_size]
        texts = compute([requests[first[key]] for key in batch])
        fresh = dict(zip(batch, texts, strict=True))
        if cache is not None:
            cache.save(generator.name, generator.backend, fresh)
        outputs.update(fresh)
        generated += len(batch)
        done += sum(waiting[key] for key in batch)
        if on_progress:
            on_progress(done, total)
    return CachedOutputs([outputs[key] for key in keys], generated, cached)
