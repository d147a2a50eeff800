"""What retrieval keeps in memory (retrieval/memory.py): every part bounded, one owner, and
starting over never changes a ranking."""

from __future__ import annotations

import numpy as np
import pytest

from lampbox.engine.retrieval import base, bm25, bm25_fast, create_retriever, dense
from lampbox.engine.retrieval.memory import RETRIEVAL_MEMORY, at_most


def _questions(store, limit=40):  # type: ignore[no-untyped-def]
    scheme = store.resolve_scheme("commit_subject", "dev")
    return store.task("commit_subject"), store.questions("commit_subject", scheme, "dev", limit=limit)


def _rankings(name, task, questions):  # type: ignore[no-untyped-def]
    return [(r.item_keys, r.scores) for r in create_retriever(name).rank(task, questions)]


@pytest.mark.parametrize("name", ["bm25", "bm25-fast"])
def test_full_vocabularies_and_texts_start_over_with_the_same_rankings(
    commits_store, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:  # type: ignore[no-untyped-def]
    task, questions = _questions(commits_store)
    RETRIEVAL_MEMORY.clear()
    unbounded = _rankings(name, task, questions)
    before = RETRIEVAL_MEMORY.renewals()
    RETRIEVAL_MEMORY.clear()
    monkeypatch.setattr(base, "_TEXTS_FULL", at_most(50))
    monkeypatch.setattr(bm25, "BM25_DOCUMENTS", 50)
    monkeypatch.setattr(bm25_fast, "BM25_FAST_TEXTS", 50)
    bounded = []
    for question in questions:  # one question at a time: the bounds are checked between them
        bounded += _rankings(name, task, [question])
        sizes = RETRIEVAL_MEMORY.sizes()
        largest_profile = max(len(q.profile) for q in questions) + 1
        assert sizes["document texts"] < 50 + largest_profile
        vocabulary = "bm25 vocabulary" if name == "bm25" else "bm25-fast vocabularies"
        assert sizes[vocabulary] < 50 + largest_profile
    after = RETRIEVAL_MEMORY.renewals()
    assert after["document texts"] > before.get("document texts", 0)  # it did start over
    for (keys, scores), (keys_bounded, scores_bounded) in zip(unbounded, bounded, strict=True):
        assert keys == keys_bounded
        if name == "bm25":  # the official scores are bit-identical whatever the vocabulary
            assert np.array_equal(scores, scores_bounded)
        else:  # bm25-fast sums over its term ids' order: the last bit may differ, as between processes
            assert np.allclose(scores, scores_bounded, rtol=1e-12, atol=0)


def test_a_vocabulary_in_use_is_replaced_not_cleared(monkeypatch: pytest.MonkeyPatch) -> None:
    RETRIEVAL_MEMORY.clear()
    monkeypatch.setattr(bm25, "BM25_DOCUMENTS", 2)
    held = bm25.vocabulary()  # a thread in the middle of a question holds it
    first = held.tokenized("a b a")
    held.tokenized("c d")
    fresh = bm25.vocabulary()
    assert fresh is not held and len(fresh.documents) == 0
    assert held.tokenized("a b a") is first and held.words == {"a": 0, "b": 1, "c": 2, "d": 3}


class FakeEncoder:
    key = "fake-encoder"

    def __init__(self) -> None:
        self.encoded: list[str] = []

    def encode(self, texts, batch_size=None):  # type: ignore[no-untyped-def]
        self.encoded += texts
        return np.array([[float(len(text)), 1.0] * 64 for text in texts], dtype=np.float32)


class DictCache:
    def __init__(self) -> None:
        self.vectors: dict[str, np.ndarray] = {}

    def load(self, model_key, hashes):  # type: ignore[no-untyped-def]
        return {h: self.vectors[h] for h in hashes if h in self.vectors}

    def save(self, model_key, hashes, vectors):  # type: ignore[no-untyped-def]
        self.vectors.update(zip(hashes, vectors, strict=True))


def test_dense_vectors_are_bounded_and_come_back_from_the_embedding_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    RETRIEVAL_MEMORY.clear()
    vector_bytes = 128 * 4
    monkeypatch.setattr(dense, "DENSE_VECTOR_BYTES", 10 * vector_bytes)
    encoder, cache = FakeEncoder(), DictCache()
    batches = [[f"text {batch} {i}" for i in range(4)] for batch in range(6)]
    for batch in batches:
        vectors = dense.embed_texts(encoder, batch, cache=cache)  # type: ignore[arg-type]
        assert [vectors[text][0] for text in batch] == [float(len(text)) for text in batch]
        assert RETRIEVAL_MEMORY.sizes()["dense vectors"] < 10 * vector_bytes + 4 * vector_bytes
    assert RETRIEVAL_MEMORY.renewals()["dense vectors"] >= 1
    assert sorted(encoder.encoded) == sorted(t for batch in batches for t in batch)  # each encoded once
    again = dense.embed_texts(encoder, batches[0], cache=cache)  # type: ignore[arg-type]
    assert len(encoder.encoded) == 24 and [again[t][0] for t in batches[0]] == [float(len(t)) for t in batches[0]]
    dense.clear_memory_cache()
    assert RETRIEVAL_MEMORY.sizes() == {}
