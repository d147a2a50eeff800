"""Dense retrieval on the packaged all-MiniLM-L6-v2: permutations and the embedding cache."""

from __future__ import annotations

import pytest

from lampbox.engine.retrieval import create_retriever
from lampbox.engine.retrieval.dense import Encoder, clear_memory_cache, loaded_encoder
from lampbox.engine.retrieval.service import rank_questions
from lampbox.store.retrieval_store import count_embeddings

pytestmark = pytest.mark.slow


def test_dense_embeds_once_and_reuses_the_store(commits_store):
    task = commits_store.task("commit_subject")
    scheme = commits_store.resolve_scheme("commit_subject", "dev")
    questions = commits_store.questions("commit_subject", scheme, "dev", limit=3)
    clear_memory_cache()
    retriever = create_retriever("dense")
    loads = Encoder.loads
    rankings = rank_questions(commits_store, task, questions, retriever)
    encoder = retriever.encoder()
    distinct = {task.document_text(i.fields) for q in questions for i in q.profile}
    distinct |= {task.query(q.input) for q in questions}
    assert encoder.texts_encoded == len(distinct)  # shared profile items encoded once
    assert count_embeddings(commits_store, encoder.key) == len(distinct)
    for question, ranking in zip(questions, rankings, strict=False):
        assert sorted(ranking.item_keys) == sorted(i.key for i in question.profile)
        assert list(ranking.scores) == sorted(ranking.scores, reverse=True)
    # A new "run": nothing in memory; recomputing the rankings hits the stored embeddings.
    clear_memory_cache()
    again = rank_questions(
        commits_store, task, questions, create_retriever("dense"), recompute=True
    )
    fresh = loaded_encoder(retriever.source)
    assert fresh.texts_encoded == 0 and fresh.calls == 0
    assert Encoder.loads == loads + 2  # one load per process state, never per question
    assert [r.item_keys for r in again] == [r.item_keys for r in rankings]
