"""The official BM25: rank_bm25's BM25Okapi over whitespace tokens, reproduced exactly.

The reference (LaMP/rank_profiles.py) builds `BM25Okapi([doc.split() for doc in corpus])` per
question and calls `get_top_n(query.split(), profile, n=len(profile))`, which orders by
`numpy.argsort(scores)[::-1]`. This module computes the same float64 scores with the same
operations in the same order (so they are bit-identical), but tokenizes each distinct document
once per process instead of once per question, and orders with the same argsort call, so ties
come out exactly as the reference puts them. The vocabulary is bounded (retrieval/memory.py).
"""

from __future__ import annotations

import math
import threading
from collections import Counter
from typing import ClassVar

import numpy as np

from lampbox.engine.retrieval.base import BaseRetriever, Ranking, as_bool, document_texts
from lampbox.engine.retrieval.memory import BM25_DOCUMENTS, BM25_WORDS, RETRIEVAL_MEMORY
from lampbox.engine.tasks import TaskSpec
from lampbox.engine.types import Question

K1 = 1.5
B = 0.75
EPSILON = 0.25

class Vocabulary:
    """Whitespace token -> id, and per document text its distinct token ids (first-occurrence
    order), their counts and its length. Process-wide, bounded: a slot of RETRIEVAL_MEMORY,
    made anew once it holds BM25_DOCUMENTS texts or BM25_WORDS words (between questions: a
    question's documents and query always share one vocabulary)."""

    def __init__(self) -> None:
        self.words: dict[str, int] = {}
        self.documents: dict[str, tuple[np.ndarray, np.ndarray, int]] = {}
        self._lock = threading.Lock()  # the TUI ranks from worker threads

    def full(self) -> bool:
        return len(self.documents) >= BM25_DOCUMENTS or len(self.words) >= BM25_WORDS

    def tokenized(self, text: str) -> tuple[np.ndarray, np.ndarray, int]:
        """Whitespace tokens of a document as rank_bm25 counts them (cached per text)."""
        cached = self.documents.get(text)
        if cached is None:
            tokens = text.split()
            frequencies = Counter(tokens)  # first-occurrence order, like rank_bm25's dict
            with self._lock:
                vocabulary = self.words
                for word in frequencies:
                    if word not in vocabulary:
                        vocabulary[word] = len(vocabulary)
                ids = np.array(list(map(vocabulary.__getitem__, frequencies)), dtype=np.int64)
            counts = np.array(list(frequencies.values()), dtype=np.int64)
            cached = self.documents[text] = (ids, counts, len(tokens))
        return cached


def vocabulary() -> Vocabulary:
    """This process's BM25 vocabulary (a fresh one once the last is full)."""
    return RETRIEVAL_MEMORY.slot("bm25 vocabulary", Vocabulary, Vocabulary.full, lambda v: len(v.documents))


def okapi_scores(corpus: list[str], query: str) -> np.ndarray:
    """BM25Okapi(...).get_scores(query.split()) for whitespace-tokenized documents, bit for bit.

    Vectorized, but every float operation is the one rank_bm25 does, in the same order: the
    idf of each word from its document frequency with math.log, a plain running sum of the idfs
    in first-occurrence order for the epsilon floor, and one `score += term` per query token.
    """
    shared = vocabulary()  # one vocabulary for the documents and the query
    documents = [shared.tokenized(text) for text in corpus]
    corpus_size = len(documents)
    lengths = np.array([length for _, _, length in documents])
    avgdl = int(lengths.sum()) / corpus_size
    word_ids = np.concatenate([ids for ids, _, _ in documents])
    counts = np.concatenate([c for _, c, _ in documents])
    doc_index = np.repeat(np.arange(corpus_size), [len(ids) for ids, _, _ in documents])
    # Distinct words with their document frequency, in rank_bm25's dict order (first occurrence).
    words, first, doc_freq = np.unique(word_ids, return_index=True, return_counts=True)
    in_order = np.argsort(first, kind="stable")
    idf_by_freq = [
        math.log(corpus_size - freq + 0.5) - math.log(freq + 0.5) for freq in range(corpus_size + 1)
    ]
    idf_table = np.array(idf_by_freq)
    idf_values = idf_table[doc_freq]
    idf_sum = float(np.add.accumulate(idf_values[in_order])[-1])
    eps = EPSILON * (idf_sum / len(words))
    idf_values = np.where(idf_values < 0, eps, idf_values)
    score = np.zeros(corpus_size)
    query_ids = [shared.words.get(term, -1) for term in query.split()]
    present = sorted({i for i in query_ids if i >= 0})
    if not present:
        return score
    columns = np.array(present)
    position = np.searchsorted(words, columns)
    found = (position < len(words)) & (words[np.minimum(position, len(words) - 1)] == columns)
    column_of = {int(c): j for j, c in enumerate(columns) if found[j]}
    if not column_of:
        return score
    # q_freq[d, j]: occurrences of the j-th query word in document d (0 when absent).
    q_freq = np.zeros((corpus_size, len(columns)), dtype=np.int64)
    hit_position = np.searchsorted(columns, word_ids)
    hit_position[hit_position == len(columns)] = 0
    hit = columns[hit_position] == word_ids
    q_freq[doc_index[hit], hit_position[hit]] = counts[hit]
    idf_columns = np.where(found, idf_values[np.minimum(position, len(words) - 1)], 0.0)
    terms = idf_columns * (
        q_freq * (K1 + 1) / (q_freq + (K1 * (1 - B + B * lengths / avgdl))[:, None])
    )
    for term in query_ids:
        j = column_of.get(term)
        if j is not None:
            score += terms[:, j]
    return score


def official_order(scores: np.ndarray) -> np.ndarray:
    """rank_bm25.get_top_n's order: numpy's default argsort, reversed (ties included)."""
    return np.argsort(scores)[::-1]


class BM25Retriever(BaseRetriever):
    """Official BM25 (rank_bm25 BM25Okapi, whitespace tokens, k1 1.5, b 0.75, epsilon 0.25)."""

    name: ClassVar[str] = "bm25"
    description: ClassVar[str] = "official BM25 (rank_bm25 BM25Okapi over whitespace tokens)"
    option_defaults: ClassVar[dict] = {"use_date": False}
    key_options: ClassVar[tuple[str, ...]] = ("use_date",)
    preferred_batch_size: ClassVar[int] = 128

    def key_values(self) -> dict:
        return {"use_date": as_bool(self._options["use_date"], "use_date")}

    def rank_one(self, task: TaskSpec, question: Question) -> Ranking:
        if not question.profile:
            return self.ranking(question, [], [])
        corpus = document_texts(task, question.profile, self.key_values()["use_date"])
        scores = okapi_scores(corpus, task.query(question.input))
        return self.ranking(question, official_order(scores), scores)
