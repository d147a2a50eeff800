"""Dense retrieval's logic without a model: model names, options and keys, the bounded set of
loaded encoders, and ranking (cosine or inner product, ties, empty profiles, progress, cancel)
with a stand-in encoder. The packaged MiniLM itself (vectors, ONNX export, bf16) is
test_retrieval_dense.py's, marked slow."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from lampbox.engine.retrieval import create_retriever, dense
from lampbox.engine.retrieval.base import RetrievalCancelled, RetrievalContext
from lampbox.engine.tasks import builtin_task
from lampbox.engine.types import ProfileItem, Question
from lampbox.errors import InputFileError, LampboxError, UnknownNameError


def test_model_names_resolve_to_the_packaged_model_a_folder_or_a_hub_id(tmp_path: Path) -> None:
    for alias in ("minilm", "All-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"):
        source = dense.resolve_encoder_model(alias)
        assert (source.kind, source.name, source.identity) == ("packaged", dense.DEFAULT_MODEL, dense.DEFAULT_MODEL)
    hub = dense.resolve_encoder_model("facebook/contriever")
    assert (hub.kind, hub.location, hub.is_contriever) == ("hub", "facebook/contriever", True)
    folder = tmp_path / "encoder"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    local = dense.resolve_encoder_model(str(folder))
    assert local.kind == "local" and local.identity.startswith(f"{folder.resolve()}@")
    (folder / "config.json").write_text('{"changed": 1}')
    assert dense.resolve_encoder_model(str(folder)).identity != local.identity  # keyed by content
    with pytest.raises(UnknownNameError, match="all-MiniLM-L6-v2"):
        dense.resolve_encoder_model("minilm-l12")
    with pytest.raises(InputFileError, match="no such model folder"):
        dense.resolve_encoder_model("./nowhere/encoder")
    (tmp_path / "weights.bin").write_bytes(b"x")
    with pytest.raises(InputFileError, match="not a model folder"):
        dense.resolve_encoder_model(str(tmp_path / "weights.bin"))


def test_options_choose_pooling_and_score_and_only_what_changes_vectors_is_keyed() -> None:
    default = create_retriever("dense")
    assert (default.pooling, default.score) == ("auto", "cos")
    contriever = create_retriever("dense", model="facebook/contriever")
    assert (contriever.pooling, contriever.score) == ("mean", "dot")  # Contriever's own recipe
    assert create_retriever("dense", model="facebook/contriever", score="cos").score == "cos"
    assert create_retriever("dense", runtime="torch", batch_size=4, device="cpu").key == default.key
    assert create_retriever("dense", max_length=128).key_values()["max_length"] == 128
    assert "dtype" not in default.key_values()
    assert create_retriever("dense", dtype="bfloat16").key_values()["dtype"] == "bfloat16"
    for options, message in (
        ({"pooling": "max"}, "pooling must be one of auto, mean, cls, not 'max'"),
        ({"score": "l2"}, "score must be one of auto, cos, dot, not 'l2'"),
        ({"dtype": "int4"}, "dtype must be one of float32, bfloat16, not 'int4'"),
    ):
        with pytest.raises(LampboxError, match=message):
            create_retriever("dense", **options)


def test_a_bad_runtime_is_refused_before_any_model_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_loading(*args: Any) -> Any:
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(dense, "_load_sentence_transformer", no_loading)
    source = dense.resolve_encoder_model("minilm")
    with pytest.raises(LampboxError, match="runtime must be one of auto, onnx, torch, not 'tensorrt'"):
        dense.Encoder(source, "auto", None, "cpu", runtime="tensorrt")
    with pytest.raises(LampboxError, match="dtype bfloat16 runs on torch"):
        dense.Encoder(source, "auto", None, "cpu", runtime="onnx", dtype="bfloat16")
    assert dense.model_key(source, "mean", 256, "bfloat16") == f"{dense.DEFAULT_MODEL}|pooling=mean|max_length=256|dtype=bfloat16"
    assert dense.model_key(source, "auto", None) == f"{dense.DEFAULT_MODEL}|pooling=auto|max_length=model"


class _StandInEncoder:
    """An Encoder's place: vectors from a table of texts, every text it encodes recorded."""

    made = 0

    def __init__(self, source: Any = None, pooling: str = "auto", max_length: Any = None, device: str = "cpu",
                 runtime: str = "auto", dtype: str = "float32", vectors: dict[str, list[float]] | None = None) -> None:  # fmt: skip
        self.key = f"stand-in-{_StandInEncoder.made}"
        self.vectors = vectors or {}
        self.encoded: list[str] = []
        _StandInEncoder.made += 1

    def encode(self, texts: list[str], batch_size: int | None = None) -> np.ndarray:
        self.encoded += texts
        return np.array([self.vectors[text] for text in texts], dtype=np.float32)


def test_at_most_dense_encoders_stay_loaded_least_recently_used_out(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dense, "Encoder", _StandInEncoder)
    dense.clear_memory_cache()
    sources = [dense.ModelSource(f"m{i}", f"m{i}", "hub") for i in range(3)]
    first = dense.loaded_encoder(sources[0], device="cpu")
    assert dense.loaded_encoder(sources[0], device="cpu") is first  # loaded once
    second = dense.loaded_encoder(sources[1], device="cpu")
    dense.loaded_encoder(sources[0], device="cpu")  # m0 used again: m1 is now the oldest
    dense.loaded_encoder(sources[2], device="cpu")
    assert dense.DENSE_ENCODERS == 2
    assert dense.loaded_encoder(sources[0], device="cpu") is first
    assert dense.loaded_encoder(sources[1], device="cpu") is not second  # m1 was dropped: loaded again
    dense.clear_memory_cache()


def _question(qid: str, texts: list[str]) -> Question:
    profile = tuple(ProfileItem(f"{qid}-{i}", f"{qid}-{i}", {"text": text}) for i, text in enumerate(texts))
    return Question("LaMP_7", "user", "dev", qid, "u", f"Paraphrase the following tweet: {qid} query", profile=profile)


def test_ranking_by_cosine_or_inner_product_with_ties_in_profile_order(monkeypatch: pytest.MonkeyPatch) -> None:
    task = builtin_task("LaMP_7")
    dense.clear_memory_cache()
    question = _question("q1", ["long and off", "short and on", "tie a", "tie b"])
    empty = _question("q2", [])
    vectors = {task.query(question.input): [1.0, 0.0]}
    for item, vector in zip(question.profile, ([4.0, 3.0], [0.9, 0.1], [0.0, 1.0], [0.0, 1.0]), strict=True):
        vectors[task.document_text(item.fields)] = vector
    progress: list[tuple[int, int]] = []
    rankings = {}
    for score in ("cos", "dot"):
        retriever = create_retriever("dense", score=score)
        encoder = _StandInEncoder(vectors=vectors)
        monkeypatch.setattr(retriever, "encoder", lambda encoder=encoder: encoder)
        found = retriever.rank(task, [question, empty], RetrievalContext(on_progress=lambda done, total: progress.append((done, total))))
        rankings[score] = [key.split("-")[1] for key in found[0].item_keys]
        assert found[1].item_keys == () and task.query(empty.input) not in encoder.encoded  # nothing to rank for
        assert found[0].retriever_key == retriever.key
    assert rankings["cos"] == ["1", "0", "2", "3"]  # the direction counts
    assert rankings["dot"] == ["0", "1", "2", "3"]  # the length counts too; the tie keeps profile order
    assert progress == [(1, 2), (2, 2)] * 2  # every question reported, the one with no items too
    retriever = create_retriever("dense")
    monkeypatch.setattr(retriever, "encoder", lambda: _StandInEncoder(vectors=vectors))
    dense.clear_memory_cache()
    with pytest.raises(RetrievalCancelled, match="encoding cancelled"):
        retriever.rank(task, [question], RetrievalContext(should_cancel=lambda: True))
    dense.clear_memory_cache()


def test_only_transformer_plus_mean_or_cls_pooling_runs_on_onnx() -> None:
    """onnx_runtime.supported_structure reads a sentence-transformers model's modules: the
    ONNX path pools in numpy, so anything else stays on torch."""
    from lampbox.engine.retrieval.onnx_runtime import supported_structure

    def module(name: str, config: dict[str, Any] | None = None) -> Any:
        return type(name, (), {"get_config_dict": lambda self: config or {}})()

    def model(*modules: Any) -> list[Any]:
        return list(modules)

    transformer, normalize = module("Transformer"), module("Normalize")
    assert supported_structure(model(transformer, module("Pooling", {"pooling_mode": "mean"}), normalize)) == ("mean", True)
    assert supported_structure(model(transformer, module("Pooling", {"pooling_mode": "cls"}))) == ("cls", False)
    older = module("Pooling", {"pooling_mode_cls_token": True, "pooling_mode_mean_tokens": False})  # one flag per mode
    assert supported_structure(model(transformer, older)) == ("cls", False)
    for unsupported in (
        model(transformer, module("Pooling", {"pooling_mode": "max"})),
        model(transformer, module("Pooling", {"pooling_mode": "mean", "include_prompt": False})),
        model(transformer, module("Pooling", {"pooling_mode_mean_tokens": True, "pooling_mode_max_tokens": True})),
        model(transformer, module("Pooling", {"pooling_mode": "mean"}), module("Dense")),
        model(transformer),
    ):
        assert supported_structure(unsupported) is None
