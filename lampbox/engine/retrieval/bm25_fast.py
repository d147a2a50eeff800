"""`bm25-fast`: BM25 with a real tokenizer (bm25s: lower-casing, English stopwords, PyStemmer).

Not the official retriever: a better-tokenized variant. Tokens are bm25s's (same splitter,
stopwords and stemmer; each distinct document tokenized once per process, each distinct word
stemmed once); scores follow bm25s's default "lucene"
BM25 (idf = log(1 + (N - df + 0.5) / (df + 0.5)), tf / (tf + k1 (1 - b + b |d| / avgdl)),
summed over the query's tokens), computed per question with numpy over the query's terms
only: building a bm25s index per question costs more than the scoring itself. A test checks
the scores against bm25s.BM25 on real questions. Ties keep profile order.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from lampbox.engine.retrieval.base import (
    BaseRetriever,
    Ranking,
    RetrievalCancelled,
    RetrievalContext,
    as_bool,
    document_texts,
)
from lampbox.engine.retrieval.memory import (
    BM25_FAST_CONFIGURATIONS,
    BM25_FAST_TEXTS,
    RETRIEVAL_MEMORY,
)
from lampbox.engine.tasks import TaskSpec
from lampbox.engine.types import Question
from lampbox.errors import LampboxError


class _WordNumbers(dict):
    """word -> its number, in order of first sight: a missing word gets the next number as it
    is looked up, so one C-level pass over a text's words both finds the new words and
    numbers every word."""

    __slots__ = ()

    def __missing__(self, word: str) -> int:
        number = self[word] = len(self)
        return number


class _Vocabulary:
    """Token ids per text for one tokenizer configuration (process-wide, bounded: `_vocabulary`).

    Tokenizes exactly like bm25s's Tokenizer (lower-case, its `\\b\\w\\w+\\b` splitter, its
    stopword lists, PyStemmer), but leaner: each distinct word is numbered, checked against
    the stopwords and stemmed once; afterwards a word costs one dict lookup and a table read
    (word number -> stem id), which is what makes `bm25-fast` fast on cold profiles.
    """

    def __init__(self, stopwords: str, stemmer_language: str) -> None:
        import re

        # bm25s splits on (?u)\b\w\w+\b; maximal runs of 2+ word characters are exactly what
        # \w\w+ matches, and without the \b checks the regex runs about 25% faster.
        self._split_joined = re.compile(r"\w\w+|\0").findall
        self._stopwords = _stopwords(stopwords)
        self._stemmer = None
        if stemmer_language:
            import Stemmer

            # No PyStemmer cache: each distinct word is stemmed once here anyway, and its
            # cache costs more than the stemming when a cold corpus has many new words.
            self._stemmer = Stemmer.Stemmer(stemmer_language, 0)
        self._numbers = _WordNumbers({"\0": 0})  # word -> number
        # number -> stem id (-1: a stopword or a one-letter word, -2: the separator)
        self._stem_of = np.array([SEPARATOR_ID], dtype=np.int64)
        self.ids: dict[str, int] = {}  # stemmed token -> id
        self.texts: dict[str, np.ndarray] = {}
        self._lock = threading.Lock()  # the TUI ranks from worker threads

    def token_ids(self, texts: Sequence[str]) -> list[np.ndarray]:
        self.add(texts)
        known = self.texts
        return [known[text] for text in texts]

    def add(self, texts: Sequence[str]) -> None:
        """Tokenize the texts not seen yet (all of them in one pass)."""
        known = self.texts
        missing = [text for text in dict.fromkeys(texts) if text not in known]
        if not missing:
            return
        with self._lock:
            missing = [text for text in missing if text not in known]
            ascii_texts = [text for text in missing if text.isascii()]
            other_texts = [text for text in missing if not text.isascii()]
            for group, ascii_only in ((ascii_texts, True), (other_texts, False)):
                if group:
                    self._tokenize(group, ascii_only)

    def _tokenize(self, texts: list[str], ascii_only: bool) -> None:
        """Tokenize many texts in one pass: one lower-casing and one scan over the texts
        joined by NUL (a separator token; NUL is not a word character, so no word spans two
        texts), one number per word, then one split into per-text arrays."""
        words = self._words(
            [text.replace("\0", " ") if "\0" in text else text for text in texts], ascii_only
        )
        seen = len(self._numbers)
        numbers = np.fromiter(
            map(self._numbers.__getitem__, words), dtype=np.int64, count=len(words)
        )
        if len(self._numbers) > seen:
            new_words = list(itertools.islice(self._numbers, seen, None))
            self._stem_of = np.concatenate([self._stem_of, self._stem_ids(new_words)])
        ids = self._stem_of[numbers]
        text_index = np.cumsum(ids == SEPARATOR_ID)  # which text each token belongs to
        kept = ids >= 0  # drops separators and stopwords
        ids, text_index = ids[kept], text_index[kept]
        bounds = [0, *np.searchsorted(text_index, np.arange(1, len(texts))).tolist(), len(ids)]
        # Plain slices (views of one array): np.split costs several times more per text.
        self.texts.update(
            zip(texts, [ids[a:b] for a, b in zip(bounds, bounds[1:], strict=False)], strict=True)
        )

    def _stem_ids(self, words: list[str]) -> np.ndarray:
        """The stem id of each new word (-1 for stopwords and one-letter words)."""
        stopwords = self._stopwords
        result = np.full(len(words), -1, dtype=np.int64)
        kept = [index for index, word in enumerate(words) if len(word) > 1 and word not in stopwords]
        kept_words = [words[index] for index in kept]
        stems = self._stemmer.stemWords(kept_words) if self._stemmer is not None else kept_words
        ids = self.ids
        for stem in stems:
            if stem not in ids:
                ids[stem] = len(ids)
        result[kept] = np.fromiter(map(ids.__getitem__, stems), dtype=np.int64, count=len(stems))
        return result

    def _words(self, texts: list[str], ascii_only: bool) -> list[str]:
        """The words of the NUL-joined texts (NUL tokens between texts), exactly as bm25s's
        regex splits them. ASCII text takes a faster equivalent path: every non-word character
        becomes a space and str.split() cuts (one-letter words come out too; they are mapped
        to -1 like stopwords, since \\w\\w+ never yields them)."""
        joined = " \0 ".join(texts).lower()
        if ascii_only:
            return joined.translate(_ASCII_NON_WORD).split()
        return self._split_joined(joined)


SEPARATOR_ID = -2  # the NUL between joined texts (stopwords are -1)
# ASCII characters that are not \w (letters, digits, underscore), except NUL, -> space.
_ASCII_NON_WORD = {
    code: " " for code in range(128) if not (chr(code).isalnum() or chr(code) in "_\0")
}


def _stopwords(name: str) -> frozenset[str]:
    """bm25s's stopword list by language ("en", "english", "french", ...; "" for none).

    Read from bm25s's stopwords module without importing the bm25s package, whose import
    (scipy.sparse) would cost more than tokenizing a cold profile set.
    """
    if not name:
        return frozenset()
    import importlib.util
    from pathlib import Path

    package = importlib.util.find_spec("bm25s")
    if package is None or not package.submodule_search_locations:
        raise LampboxError("bm25-fast needs bm25s: pip install bm25s")
    path = Path(package.submodule_search_locations[0]) / "stopwords.py"
    spec = importlib.util.spec_from_file_location("_lampbox_bm25s_stopwords", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    language = {"en": "EN", "english": "EN"}.get(name.lower(), name.upper())
    words = getattr(module, f"STOPWORDS_{language}", None)
    if words is None:
        raise LampboxError(f"bm25-fast: no stopword list for {name!r}")
    return frozenset(words)


def _vocabulary(stopwords: str, stemmer_language: str) -> _Vocabulary:
    """The process's vocabulary for a tokenizer configuration: a slot of RETRIEVAL_MEMORY (at
    most BM25_FAST_CONFIGURATIONS of them; one is made anew once it holds BM25_FAST_TEXTS
    texts, between batches: a batch's documents and queries share one vocabulary)."""
    vocabularies: dict[tuple[str, str], _Vocabulary] = RETRIEVAL_MEMORY.slot(
        "bm25-fast vocabularies",
        dict,
        lambda kept: len(kept) > BM25_FAST_CONFIGURATIONS,
        lambda kept: sum(len(v.texts) for v in kept.values()),
    )
    key = (stopwords, stemmer_language)
    vocabulary = vocabularies.get(key)
    if vocabulary is None or len(vocabulary.texts) >= BM25_FAST_TEXTS:
        vocabulary = vocabularies[key] = _Vocabulary(stopwords, stemmer_language)
    return vocabulary


def lucene_scores(
    doc_tokens: list[np.ndarray], query_tokens: np.ndarray, k1: float, b: float
) -> np.ndarray:
    """bm25s's lucene BM25 of each document for the query (query tokens counted with repeats)."""
    n_docs = len(doc_tokens)
    scores = np.zeros(n_docs, dtype=np.float64)
    if n_docs == 0 or len(query_tokens) == 0:
        return scores
    lengths = np.fromiter(map(len, doc_tokens), dtype=np.int64, count=n_docs)
    terms, query_counts = np.unique(query_tokens, return_counts=True)
    flat = np.concatenate(doc_tokens)
    # Which query term each document token is (-1: none), through a table indexed by token id:
    # one gather instead of a binary search per token.
    table = _term_table(max(int(terms[-1]), int(flat.max(initial=0))) + 1)
    table[terms] = np.arange(len(terms))
    position = table[flat]
    table[terms] = -1
    hit = position >= 0
    doc_index = np.repeat(np.arange(n_docs), lengths)
    # tf[d, t]: occurrences of query term t in document d.
    cells = doc_index[hit] * len(terms) + position[hit]
    tf = np.bincount(cells, minlength=n_docs * len(terms)).reshape(n_docs, len(terms))
    tf = tf.astype(np.float64)
    df = (tf > 0).sum(axis=0)
    idf = np.log(1.0 + (n_docs - df + 0.5) / (df + 0.5))
    norm = k1 * ((1 - b) + b * lengths / lengths.mean())
    term_scores = tf / (tf + norm[:, None]) * idf[None, :]
    return term_scores @ query_counts.astype(np.float64)


_TERM_TABLES = threading.local()  # per thread: the TUI ranks in worker threads


def _term_table(size: int) -> np.ndarray:
    """A table of -1s with at least `size` entries (callers restore the -1s they change)."""
    table = getattr(_TERM_TABLES, "table", None)
    if table is None or len(table) < size:
        grown = max(size, 2 * (0 if table is None else len(table)))
        table = _TERM_TABLES.table = np.full(grown, -1, dtype=np.int64)
    return table


class BM25FastRetriever(BaseRetriever):
    """BM25 over lower-cased, stemmed tokens without stopwords (bm25s tokenizer)."""

    name: ClassVar[str] = "bm25-fast"
    description: ClassVar[str] = "BM25 with bm25s tokenization (lower-case, stopwords, stemming)"
    option_defaults: ClassVar[dict[str, Any]] = {
        "use_date": False,
        "k1": 1.5,
        "b": 0.75,
        "stopwords": "en",
        "stemmer": "english",
    }
    key_options: ClassVar[tuple[str, ...]] = ("use_date", "k1", "b", "stopwords", "stemmer")
    preferred_batch_size: ClassVar[int] = 1024  # one tokenizer pass and one store write

    def key_values(self) -> dict[str, Any]:
        values = {name: self._options[name] for name in self.key_options}
        values["use_date"] = as_bool(values["use_date"], "use_date")
        values["k1"] = float(values["k1"])
        values["b"] = float(values["b"])
        return values

    def rank(
        self, task: TaskSpec, questions: Sequence[Question], context: RetrievalContext | None = None
    ) -> list[Ranking]:
        context = context or RetrievalContext()
        values = self.key_values()
        vocabulary = _vocabulary(str(values["stopwords"]), str(values["stemmer"]))
        # Tokenize the whole batch's distinct texts in one call (bm25s is fastest in bulk).
        corpora = [document_texts(task, q.profile, values["use_date"]) for q in questions]
        queries = [task.query(q.input) for q in questions]
        vocabulary.add([text for corpus in corpora for text in corpus] + queries)
        tokens = vocabulary.texts
        rankings = []
        for index, (question, corpus, query) in enumerate(
            zip(questions, corpora, queries, strict=False)
        ):
            if context.cancelled():
                raise RetrievalCancelled(f"{self.name}: ranking cancelled")
            scores = lucene_scores(
                [tokens[text] for text in corpus], tokens[query], values["k1"], values["b"]
            )
            order = np.argsort(-scores, kind="stable")
            rankings.append(self.ranking(question, order, scores))
            if context.on_progress:
                context.on_progress(index + 1, len(questions))
        return rankings
