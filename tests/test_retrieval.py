"""Retrieval: official BM25 parity, permutations, seeds, stored rankings and bad input."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from lampbox.engine.retrieval import create_retriever, register_retriever, unregister_retriever
from lampbox.engine.retrieval.base import BaseRetriever, Ranking
from lampbox.engine.retrieval.service import sorted_questions_data
from lampbox.errors import InputFileError, LampboxError, UnknownNameError
from lampbox.lab.ranking import rank_stored

TEXT_RETRIEVERS = ("bm25", "bm25-fast", "recency", "random", "none")


def _questions(store, task="commit_subject", limit=None):
    scheme = store.resolve_scheme(task, "dev")
    return store.task(task), store.questions(task, scheme, "dev", limit=limit)


@pytest.mark.parametrize("task_name", ["commit_subject", "commit_area"])
@pytest.mark.parametrize("use_date", [False, True])
def test_bm25_equals_rank_bm25(commits_store, task_name, use_date):
    from rank_bm25 import BM25Okapi

    task, questions = _questions(commits_store, task_name, limit=120)
    retriever = create_retriever("bm25", use_date=use_date)
    rankings = retriever.rank(task, questions)
    for question, ranking in zip(questions, rankings, strict=False):
        profile = list(question.profile)
        corpus = [task.document_text(i.fields, i.date if use_date else None) for i in profile]
        index = BM25Okapi([text.split() for text in corpus])
        query = task.query(question.input).split()
        official = index.get_top_n(query, profile, n=len(profile))
        assert list(ranking.item_keys) == [item.key for item in official]
        scores = dict(zip(ranking.item_keys, ranking.scores, strict=False))
        assert np.array_equal(index.get_scores(query), [scores[i.key] for i in profile])


def test_bm25_fast_scores_match_bm25s(commits_store):
    import bm25s
    import Stemmer

    task, questions = _questions(commits_store, limit=15)
    stemmer = Stemmer.Stemmer("english")
    rankings = create_retriever("bm25-fast").rank(task, questions)
    for question, ranking in zip(questions, rankings, strict=False):
        corpus = [task.document_text(i.fields) for i in question.profile]
        index = bm25s.BM25()
        index.index(
            bm25s.tokenize(corpus, stopwords="en", stemmer=stemmer, show_progress=False),
            show_progress=False,
        )
        query = bm25s.tokenize(
            [task.query(question.input)], stopwords="en", stemmer=stemmer, show_progress=False
        )
        words = {v: k for k, v in query.vocab.items()}
        reference = index.get_scores([words[i] for i in query.ids[0]])
        scores = dict(zip(ranking.item_keys, ranking.scores, strict=False))
        assert np.allclose(reference, [scores[i.key] for i in question.profile], atol=1e-4)


def test_bm25_fast_tokens_equal_bm25s_splitting_on_every_stand_in_text(commits_store):
    """The one-pass tokenizer (ASCII fast path, regex otherwise) against bm25s's own recipe:
    (?u)\\b\\w\\w+\\b on lower-cased text, English stopwords out, PyStemmer English."""
    import re

    import Stemmer

    from lampbox.engine.retrieval.bm25_fast import _stopwords, _Vocabulary

    task, questions = _questions(commits_store, limit=None)
    texts = sorted(
        {task.document_text(i.fields) for q in questions for i in q.profile}
        | {task.query(q.input) for q in questions}
    )
    texts += ["Héllo wörld, naïve café!", "a\0b text\0with NUL", "Ǆ x y zz _a __ 9 99", "\u212a kelvin"]
    assert any(not text.isascii() for text in texts) and any(text.isascii() for text in texts)
    vocabulary = _Vocabulary("en", "english")
    # In three calls, as the TUI grows the vocabulary profile by profile: new words met in a
    # later call must extend the word table without disturbing the earlier ones.
    vocabulary.token_ids(texts[::3])
    vocabulary.token_ids(texts[1::3] + texts[:5])
    got = vocabulary.token_ids(texts)
    stems = {token_id: stem for stem, token_id in vocabulary.ids.items()}
    stemmer, stopwords = Stemmer.Stemmer("english"), _stopwords("en")
    for text, ids in zip(texts, got, strict=True):
        words = re.findall(r"(?u)\b\w\w+\b", text.lower())
        expected = stemmer.stemWords([word for word in words if word not in stopwords])
        assert [stems[token_id] for token_id in ids] == expected, text


@pytest.mark.parametrize("name", TEXT_RETRIEVERS)
def test_every_retriever_returns_a_permutation(commits_store, name):
    task, questions = _questions(commits_store, limit=40)
    retriever = create_retriever(name)
    rankings = retriever.rank(task, questions)
    assert [r.question_id for r in rankings] == [q.id for q in questions]
    for question, ranking in zip(questions, rankings, strict=False):
        assert sorted(ranking.item_keys) == sorted(item.key for item in question.profile)
        assert len(ranking.scores) == len(question.profile)
        assert [ranking.item_ids[i] for i in range(3)] == [
            {it.key: it.id for it in question.profile}[k] for k in ranking.item_keys[:3]
        ]
    assert retriever.selects_context == (name != "none")
    if name == "none":
        assert rankings[0].top_keys(5) == ()


def test_random_is_reproducible_by_seed(commits_store):
    task, questions = _questions(commits_store, limit=20)
    first = create_retriever("random", seed=7).rank(task, questions)
    again = create_retriever("random", seed=7).rank(task, list(reversed(questions)))
    other = create_retriever("random", seed=8).rank(task, questions)
    assert [r.item_keys for r in first] == [r.item_keys for r in reversed(again)]
    assert [r.item_keys for r in first] != [r.item_keys for r in other]


def test_recency_newest_first_and_bad_dates(commits_store):
    task, questions = _questions(commits_store, limit=5)
    ranking = create_retriever("recency").rank(task, questions[:1])[0]
    dates = {i.key: i.date for i in questions[0].profile}
    ordered = [dates[k] for k in ranking.item_keys]
    assert ordered == sorted(ordered, reverse=True)
    item = questions[0].profile[2]
    broken = dataclasses.replace(item, date="last tuesday")
    question = dataclasses.replace(
        questions[0], profile=questions[0].profile[:2] + (broken,) + questions[0].profile[3:]
    )
    with pytest.raises(LampboxError, match=f"profile item {item.id}: date 'last tuesday'"):
        create_retriever("recency").rank(task, [question])
    lenient = create_retriever("recency", missing_dates="last").rank(task, [question])[0]
    assert lenient.item_keys[-1] == item.key


def test_stored_rankings_are_served_not_recomputed(commits_store):
    task, questions = _questions(commits_store, limit=30)
    calls = []

    class Counting(BaseRetriever):
        name = "counting-bm25"
        option_defaults = {"use_date": False}

        def rank(self, task, questions, context=None):
            calls.append(len(questions))
            inner = create_retriever("bm25").rank(task, questions, context)
            return [dataclasses.replace(r, retriever_key=self.key) for r in inner]

    register_retriever("counting-bm25", Counting, replace=True)
    try:
        first = rank_stored(commits_store, task, questions[:10], create_retriever("counting-bm25"))
        both = rank_stored(
            commits_store, task, questions, create_retriever("counting-bm25"), batch_size=8
        )
        assert calls == [10, 8, 8, 4]  # only the 20 missing questions were ranked, in batches
        assert both[:10] == first
        again = rank_stored(commits_store, task, questions, create_retriever("counting-bm25"))
        assert calls == [10, 8, 8, 4] and again == both
    finally:
        unregister_retriever("counting-bm25")


def test_saved_rankings_load_back_exactly(commits_store):
    from lampbox.store.retrieval_store import load_rankings, save_rankings

    task, questions = _questions(commits_store, limit=5)
    scheme = questions[0].scheme
    rankings = create_retriever("bm25").rank(task, questions)
    profile = questions[1].profile
    # The cases the flat insert must get right: no items, a cap of 0, scores out of order.
    rankings[0] = dataclasses.replace(rankings[0], item_keys=(), item_ids=(), scores=())
    rankings[1] = Ranking(
        questions[1].id, rankings[1].retriever_key,
        tuple(i.key for i in profile)[::-1], tuple(i.id for i in profile)[::-1],
        tuple(float(n) for n in range(len(profile))), 0,
    )  # fmt: skip
    save_rankings(commits_store, task, scheme, questions, rankings)
    loaded = load_rankings(commits_store, rankings[0].retriever_key, task, scheme, questions)
    assert [loaded[q.id] for q in questions] == rankings
    # Saving again replaces (one row per question), it does not add.
    changed = [dataclasses.replace(r, scores=tuple(s + 1 for s in r.scores)) for r in rankings]
    save_rankings(commits_store, task, scheme, questions, changed)
    loaded = load_rankings(commits_store, rankings[0].retriever_key, task, scheme, questions)
    assert [loaded[q.id] for q in questions] == changed
    count = commits_store.cursor().execute("SELECT count(*) FROM rankings").fetchone()[0]
    assert count == len(questions)


def test_saved_embeddings_load_back_exactly_and_are_stored_once(commits_store):
    from lampbox.store.retrieval_store import count_embeddings, load_embeddings, save_embeddings

    vectors = np.random.default_rng(0).standard_normal((5, 7)).astype(np.float32)
    hashes = [f"h{i}" for i in range(5)]
    save_embeddings(commits_store, "model-a", hashes[:3], vectors[:3])
    # Already stored hashes are skipped (their first vectors stay), new ones are added.
    save_embeddings(commits_store, "model-a", hashes[1:], vectors[1:] + 1)
    loaded = load_embeddings(commits_store, "model-a", hashes)
    expected = [vectors[0], vectors[1], vectors[2], vectors[3] + 1, vectors[4] + 1]
    assert all(np.array_equal(loaded[h], v) for h, v in zip(hashes, expected, strict=True))
    assert count_embeddings(commits_store, "model-a") == 5
    assert load_embeddings(commits_store, "model-b", hashes) == {}


def test_empty_profile_ranks_nothing_and_warns_once(commits_store):
    task, questions = _questions(commits_store, limit=4)
    empty = [dataclasses.replace(q, profile=()) for q in questions[:2]] + questions[2:]
    warnings: list[str] = []
    rankings = rank_stored(
        commits_store, task, empty, create_retriever("bm25"), on_warning=warnings.append
    )
    assert len(warnings) == 1 and "2 question(s) have an empty profile" in warnings[0]
    assert rankings[0].item_keys == () and len(rankings[2]) == len(questions[2].profile)


def test_unknown_names_suggest_the_closest(tmp_path: Path):
    with pytest.raises(UnknownNameError, match="Did you mean bm25"):
        create_retriever("bm52")
    with pytest.raises(UnknownNameError, match="all-MiniLM-L6-v2"):
        create_retriever("dense", model="all-MiniLM-L6")
    with pytest.raises(InputFileError, match="not a model folder"):
        create_retriever("dense", model=str(tmp_path))
    with pytest.raises(LampboxError, match="no option colour"):
        create_retriever("bm25", colour="red")


def test_rank_command_writes_official_files(commits_store_path, tmp_path):
    import shutil

    from lampbox.cli import cli

    db = tmp_path / "store.duckdb"
    shutil.copy(commits_store_path, db)
    output, exported = tmp_path / "ranks.json", tmp_path / "questions.json"
    result = CliRunner().invoke(
        cli,
        ["rank", "--db", str(db), "--task", "commit_area", "--split", "dev", "--retriever", "bm25",
         "--use-date", "--output", str(output), "--export-questions", str(exported)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    ranks = json.loads(output.read_text())
    questions = json.loads(exported.read_text())
    assert len(ranks) == len(questions) == 186
    first = questions[0]
    assert [item["id"] for item in first["profile"]] == ranks[first["id"]]
    assert "output" in first and "date" in first["profile"][0]
    bad = CliRunner().invoke(
        cli, ["rank", "--db", str(db), "--task", "commit_area", "--retriever", "bm2"]
    )
    assert bad.exit_code == 2 and "Did you mean bm25" in bad.output


def test_rank_command_bad_limit_and_output_paths_are_one_clear_line(tmp_path):
    from lampbox.cli import cli

    db = tmp_path / "demo.duckdb"
    assert CliRunner().invoke(cli, ["data", "demo", "--db", str(db)]).exit_code == 0
    rank = ["rank", "--db", str(db), "--task", "LaMP_7", "--retriever", "recency"]

    result = CliRunner().invoke(cli, [*rank, "--limit", "-1"])
    assert result.exit_code == 2 and "-1 is not in the range x>=1" in result.stderr

    nested = tmp_path / "new" / "folder" / "ranks.json"  # missing folders are created
    result = CliRunner().invoke(cli, [*rank, "--limit", "2", "--output", str(nested)])
    assert result.exit_code == 0, result.output
    assert len(json.loads(nested.read_text())) == 2

    a_file = tmp_path / "ranks.json"
    a_file.write_text("{}")
    for option in ("--output", "--export-questions"):
        under = a_file / "sub" / "out.json"
        result = CliRunner().invoke(cli, [*rank, option, str(under)])
        assert result.exit_code != 0 and not isinstance(result.exception, OSError)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and str(under) in lines[0] and f"{a_file} is a file" in lines[0], result.stderr
    assert a_file.read_text() == "{}"


def test_sorted_questions_follow_the_ranking(commits_store):
    task, questions = _questions(commits_store, limit=2)
    reverse = [
        Ranking(
            q.id,
            "x",
            tuple(i.key for i in q.profile[::-1]),
            tuple(i.id for i in q.profile[::-1]),
            (),
        )
        for q in questions
    ]
    data = sorted_questions_data(questions, reverse)
    assert [item["id"] for item in data[0]["profile"]] == [i.id for i in questions[0].profile[::-1]]
