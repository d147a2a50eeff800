"""Dense retrieval on the packaged all-MiniLM-L6-v2: permutations and the embedding cache."""

from __future__ import annotations

import pytest

from lampbox.engine.retrieval import create_retriever
from lampbox.engine.retrieval.dense import Encoder, clear_memory_cache, loaded_encoder
from lampbox.lab.ranking import rank_stored
from lampbox.store.caches import StoreEmbeddingCache
from lampbox.store.retrieval_store import count_embeddings

pytestmark = pytest.mark.slow


def test_dense_embeds_once_and_reuses_the_store(commits_store):
    task = commits_store.task("commit_subject")
    scheme = commits_store.resolve_scheme("commit_subject", "dev")
    questions = commits_store.questions("commit_subject", scheme, "dev", limit=3)
    clear_memory_cache()
    retriever = create_retriever("dense")
    loads = Encoder.loads
    rankings = rank_stored(commits_store, task, questions, retriever)
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
    again = rank_stored(
        commits_store, task, questions, create_retriever("dense"), recompute=True
    )
    fresh = loaded_encoder(retriever.source)
    assert fresh.texts_encoded == 0 and fresh.calls == 0
    assert Encoder.loads == loads + 2  # one load per process state, never per question
    assert [r.item_keys for r in again] == [r.item_keys for r in rankings]


def test_onnx_runtime_gives_the_torch_rankings(commits_store, tmp_path, monkeypatch):
    """ONNX Runtime (the CPU default) and sentence-transformers agree within float noise."""
    import numpy as np

    from lampbox.engine.retrieval import onnx_runtime
    from lampbox.engine.retrieval.dense import embed_texts

    monkeypatch.setenv("LAMPBOX_HOME", str(tmp_path))
    task = commits_store.task("commit_subject")
    scheme = commits_store.resolve_scheme("commit_subject", "dev")
    questions = commits_store.questions("commit_subject", scheme, "dev", limit=4)
    clear_memory_cache()
    torch_retriever = create_retriever("dense", runtime="torch")
    onnx_retriever = create_retriever("dense", runtime="onnx")
    assert torch_retriever.encoder().runtime == "torch"
    assert onnx_retriever.encoder().runtime == "onnx"
    exported = list((tmp_path / "cache" / "onnx").glob("*.onnx"))
    assert len(exported) == 1 and not list((tmp_path / "cache" / "onnx").glob("*.part"))
    texts = sorted({task.document_text(i.fields) for q in questions for i in q.profile})
    by_torch = embed_texts(torch_retriever.encoder(), texts)
    clear_memory_cache()  # forget torch's vectors (and encoders) so onnx encodes them itself
    onnx_encoder = onnx_retriever.encoder()
    by_onnx = embed_texts(onnx_encoder, texts)
    assert onnx_encoder.texts_encoded == len(texts)
    difference = max(float(np.abs(by_onnx[t] - by_torch[t]).max()) for t in texts)
    assert difference < 1e-5
    clear_memory_cache()
    from_torch = torch_retriever.rank(task, questions)
    clear_memory_cache()
    from_onnx = onnx_retriever.rank(task, questions)
    assert [r.item_keys for r in from_onnx] == [r.item_keys for r in from_torch]
    # The export is made once: a new encoder reuses the cached file.
    mtime = exported[0].stat().st_mtime_ns
    clear_memory_cache()
    assert create_retriever("dense", runtime="onnx").encoder().runtime == "onnx"
    assert exported[0].stat().st_mtime_ns == mtime
    assert onnx_runtime.supported_structure(onnx_encoder._model) == ("mean", True)
    # The export switches attention to eager only while exporting.
    attention = [
        encoder._model[0].auto_model.config._attn_implementation
        for encoder in (onnx_encoder, torch_retriever.encoder())
    ]
    assert attention[0] == attention[1]
    # Many batches run in parallel on single-threaded sessions: the same vectors, in order.
    serial = onnx_runtime.OnnxEncoder(onnx_encoder._model, onnx_encoder.key, threads=1)
    parallel = onnx_runtime.OnnxEncoder(onnx_encoder._model, onnx_encoder.key, threads=2)
    expected, got = serial.encode(texts, batch_size=2), parallel.encode(texts, batch_size=2)
    assert len(texts) >= 8 and serial._single is None and parallel._single is not None
    assert got.shape == expected.shape and float(np.abs(got - expected).max()) < 1e-6


def test_bfloat16_is_opt_in_and_keyed_apart_from_float32(commits_store):
    """dtype=bfloat16 runs on torch, its vectors are close to fp32 but stored under their own
    model key (and its rankings under their own retriever key); fp32 keys are unchanged."""
    import numpy as np

    from lampbox.engine.retrieval.dense import embed_texts
    from lampbox.errors import LampboxError

    default = create_retriever("dense")
    bf16 = create_retriever("dense", dtype="bfloat16")
    assert "dtype" not in default.key and '"dtype":"bfloat16"' in bf16.key
    with pytest.raises(LampboxError, match="dtype must be one of float32, bfloat16"):
        create_retriever("dense", dtype="int4")
    with pytest.raises(LampboxError, match="runs on torch"):
        create_retriever("dense", dtype="bfloat16", runtime="onnx").encoder()
    task = commits_store.task("commit_subject")
    scheme = commits_store.resolve_scheme("commit_subject", "dev")
    questions = commits_store.questions("commit_subject", scheme, "dev", limit=2)
    texts = sorted({task.document_text(i.fields) for q in questions for i in q.profile})
    clear_memory_cache()
    encoder = bf16.encoder()
    assert encoder.runtime == "torch" and encoder.key.endswith("|dtype=bfloat16")
    by_bf16 = embed_texts(encoder, texts, cache=StoreEmbeddingCache(commits_store))
    by_fp32 = embed_texts(default.encoder(), texts, cache=StoreEmbeddingCache(commits_store))
    assert count_embeddings(commits_store, encoder.key) == len(texts)
    assert count_embeddings(commits_store, default.encoder().key) == len(texts)
    cosines = [
        float(by_bf16[t] @ by_fp32[t] / np.linalg.norm(by_bf16[t]) / np.linalg.norm(by_fp32[t]))
        for t in texts
    ]
    assert min(cosines) > 0.999  # close: the same model in lower precision
    assert max(float(np.abs(by_bf16[t] - by_fp32[t]).max()) for t in texts) > 1e-5  # not fp32
