"""ONNX Runtime for dense encoders on CPU: the same vectors as sentence-transformers, faster.

A sentence-transformers model made of a Transformer, a mean or CLS Pooling and an optional
Normalize is exported once to ONNX (torch's exporter, fp32) and cached under
`$LAMPBOX_HOME/cache/onnx/`; ONNX Runtime then runs the transformer with its fused CPU kernels
and pooling is done in numpy. Many batches run on one single-threaded session from one Python
thread per core (ONNX Runtime releases the GIL; on 2 cores this beat one session using both
cores inside each batch by about 20%); a few batches (a query, one profile) use all cores
each. Vectors equal the torch ones within float noise (checked when the export is made, and
by the tests), so the embedding cache key does not change with the runtime.
Anything else (other pooling modes, extra modules, a GPU) keeps the torch path.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from lampbox.errors import LampboxError

EXPORT_VERSION = 2  # bump when the export changes, so cached files are rebuilt
CHECK_TOLERANCE = 1e-4  # max |onnx - torch| on the check texts; float noise is ~1e-7


def onnxruntime_available() -> bool:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def supported_structure(model: Any) -> tuple[str, bool] | None:
    """(pooling, normalize) when the model is Transformer + mean/CLS Pooling [+ Normalize]."""
    modules = list(model)
    names = [type(module).__name__ for module in modules]
    if len(names) not in (2, 3) or names[0] != "Transformer" or names[1] != "Pooling":
        return None
    if len(names) == 3 and names[2] != "Normalize":
        return None
    config = modules[1].get_config_dict()
    mode = config.get("pooling_mode")
    if mode is None:  # older sentence-transformers: one flag per mode
        flags = [key for key, value in config.items() if key.startswith("pooling_mode_") and value]
        mode = {
            ("pooling_mode_mean_tokens",): "mean",
            ("pooling_mode_cls_token",): "cls",
        }.get(tuple(flags))
    if mode not in ("mean", "cls") or config.get("include_prompt", True) is not True:
        return None
    return str(mode), len(names) == 3


class OnnxEncoder:
    """A sentence-transformers model's transformer on ONNX Runtime, pooling in numpy."""

    def __init__(self, model: Any, identity: str, threads: int | None = None) -> None:
        structure = supported_structure(model)
        if structure is None:
            raise LampboxError("this model's modules are not Transformer + mean/CLS Pooling")
        self.pooling, self.normalize = structure
        self.tokenizer = model.tokenizer
        self.max_length = int(model.max_seq_length)
        self.path = _exported(model, identity)
        self.threads = threads or _torch_threads()
        self.input_names: list[str] = []
        self._session = _session(self.path, self.threads)
        self.input_names = [node.name for node in self._session.get_inputs()]
        self._single: Any = None  # the single-threaded session for parallel batches, made lazily
        self._lock = threading.Lock()

    def encode(self, texts: Sequence[str], batch_size: int) -> np.ndarray:
        """One float32 row per text; texts are batched by token length (little padding)."""
        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        encoded = self.tokenizer(
            list(texts), truncation=True, max_length=self.max_length, padding=False
        )
        ids = encoded["input_ids"]
        order = sorted(range(len(texts)), key=lambda index: -len(ids[index]))
        batches = [order[start : start + batch_size] for start in range(0, len(order), batch_size)]
        rows: list[np.ndarray | None] = [None] * len(texts)

        def run(batch: list[int], session: Any) -> tuple[list[int], np.ndarray]:
            return batch, self._run([encoded_row(encoded, i) for i in batch], session)

        if self.threads > 1 and len(batches) >= 2 * self.threads:
            session = self._single_session()
            with ThreadPoolExecutor(self.threads, thread_name_prefix="lampbox-onnx") as pool:
                done = list(pool.map(lambda batch: run(batch, session), batches))
        else:
            done = [run(batch, self._session) for batch in batches]
        for batch, vectors in done:
            for index, vector in zip(batch, vectors, strict=True):
                rows[index] = vector
        return np.stack(rows).astype(np.float32)  # type: ignore[arg-type]

    def _single_session(self) -> Any:
        with self._lock:
            if self._single is None:
                self._single = _session(self.path, 1)
            return self._single

    def _run(self, rows: list[dict[str, list[int]]], session: Any = None) -> np.ndarray:
        width = max(len(row["input_ids"]) for row in rows)
        pad = self.tokenizer.pad_token_id or 0
        feeds: dict[str, np.ndarray] = {}
        for name in self.input_names:
            fill = pad if name == "input_ids" else 0
            array = np.full((len(rows), width), fill, dtype=np.int64)
            for position, row in enumerate(rows):
                values = row.get(name)
                if values is None and name == "attention_mask":
                    values = [1] * len(row["input_ids"])
                if values is not None:
                    array[position, : len(values)] = values
            feeds[name] = array
        hidden = (session or self._session).run(None, feeds)[0]
        if self.pooling == "cls":
            vectors = hidden[:, 0]
        else:
            mask = feeds["attention_mask"][..., None].astype(np.float32)
            vectors = (hidden * mask).sum(axis=1) / np.maximum(mask.sum(axis=1), 1e-9)
        if self.normalize:
            vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        return vectors


def encoded_row(encoded: Any, index: int) -> dict[str, list[int]]:
    return {name: values[index] for name, values in encoded.items()}


def _session(path: Path, threads: int | None) -> Any:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads or _torch_threads()
    options.log_severity_level = 3
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _torch_threads() -> int:
    try:
        import torch

        return int(torch.get_num_threads())
    except ImportError:
        return os.cpu_count() or 1


def _exported(model: Any, identity: str) -> Path:
    """The cached ONNX file of this model (exported and checked on first use)."""
    from lampbox.paths import cache_dir

    digest = hashlib.sha256(
        json.dumps([identity, EXPORT_VERSION, _weights_fingerprint(model)]).encode()
    ).hexdigest()[:16]
    folder = cache_dir("onnx")
    path = folder / f"{Path(identity.split('|')[0]).name}-{digest}.onnx"
    if path.is_file():
        return path
    handle, temporary = tempfile.mkstemp(dir=folder, suffix=".onnx.part")
    os.close(handle)
    try:
        _export(model, Path(temporary))
        _check(model, Path(temporary))
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)
    return path


def _weights_fingerprint(model: Any) -> list[Any]:
    """Cheap identity of the weights: the parameter shapes and a few sampled values."""
    parameters = list(model[0].auto_model.named_parameters())
    fingerprint: list[Any] = []
    for name, parameter in parameters[:: max(1, len(parameters) // 8)]:
        values = parameter.detach().reshape(-1)[:16].float().tolist()
        fingerprint.append([name, list(parameter.shape), [round(v, 6) for v in values]])
    return fingerprint


def _keyword_module(transformer: Any, names: list[str]) -> Any:
    """The transformer with a positional forward over `names` (what the exporter traces);
    transformers 5 reorders positional arguments, so they are passed by keyword."""
    import torch

    class KeywordForward(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.transformer = transformer

        def forward(self, *tensors: Any) -> Any:
            return self.transformer(**dict(zip(names, tensors, strict=True))).last_hidden_state

    return KeywordForward()


def _export(model: Any, path: Path) -> None:
    transformer = model[0].auto_model.eval()
    # Eager attention exports as plain MatMul/Softmax, which ONNX Runtime ran about 10% faster
    # on 2 CPU cores than the export of torch's fused attention (same vectors within 2e-7).
    previous = getattr(transformer.config, "_attn_implementation", None)
    switched = previous not in (None, "eager") and _set_attention(transformer, "eager")
    try:
        _export_transformer(model, transformer, path)
    finally:
        if switched:
            _set_attention(transformer, previous)


def _set_attention(transformer: Any, implementation: str) -> bool:
    setter = getattr(transformer, "set_attn_implementation", None)
    try:
        if setter is not None:
            setter(implementation)
        else:
            transformer.config._attn_implementation = implementation
    except (ValueError, ImportError, AttributeError):
        return False
    return True


def _export_transformer(model: Any, transformer: Any, path: Path) -> None:
    import warnings

    import torch

    sample = model.tokenizer(
        ["an example text for the export", "short"], padding=True, return_tensors="pt"
    )
    names = [name for name in ("input_ids", "attention_mask", "token_type_ids") if name in sample]
    dynamic = {name: {0: "batch", 1: "tokens"} for name in [*names, "last_hidden_state"]}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            _keyword_module(transformer, names),
            tuple(sample[name] for name in names),
            str(path),
            input_names=names,
            output_names=["last_hidden_state"],
            dynamic_axes=dynamic,
            opset_version=17,
            dynamo=False,
        )


CHECK_TEXTS = [
    "Fix the parser for nested blocks",
    "docs: explain how the cache is keyed, and why a second run is fast " * 6,
    "a",
]


def _check(model: Any, path: Path) -> None:
    """Refuse an export whose vectors differ from sentence-transformers' beyond float noise."""
    expected = np.asarray(
        model.encode(CHECK_TEXTS, convert_to_numpy=True, show_progress_bar=False),
        dtype=np.float32,
    )
    encoder = OnnxEncoder.__new__(OnnxEncoder)
    encoder.pooling, encoder.normalize = supported_structure(model)  # type: ignore[misc]
    encoder.tokenizer = model.tokenizer
    encoder.max_length = int(model.max_seq_length)
    encoder.path = path
    encoder.threads = 1
    encoder._session = _session(path, 1)
    encoder.input_names = [node.name for node in encoder._session.get_inputs()]
    got = encoder.encode(CHECK_TEXTS, batch_size=2)
    difference = float(np.abs(got - expected).max())
    if difference > CHECK_TOLERANCE:
        raise LampboxError(
            f"the ONNX export differs from sentence-transformers by {difference:.2g}; "
            "use runtime=torch"
        )
