"""Run specs, their keys, progress and results.

A RunSpec is frozen and hashable; its JSON, the content fingerprint of its model and (for a
custom task) of its task's definition make the run key, so the same configuration always maps
to the same stored run.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lampbox.engine.defaults import DEFAULT_BACKEND, DEFAULT_MAX_LENGTH, default_model
from lampbox.engine.fingerprint import task_fingerprint
from lampbox.engine.generation.base import GenerationParams
from lampbox.engine.generation.labels import DEFAULT_DECODING, check_decoding
from lampbox.engine.methods import Method, get_method
from lampbox.engine.scoring import POSTPROCESSORS
from lampbox.engine.tasks import TaskSpec
from lampbox.engine.types import Prediction, UserScore
from lampbox.errors import LampboxError

RUN_KEY_VERSION = 1


@dataclass(frozen=True)
class RunSpec:
    """Everything that defines a run's results (frozen, hashable; its hash keys the run)."""

    task: str
    scheme: str
    split: str
    retriever: str = "none"
    k: int = 0
    method: str = "ipa"  # a registered method: ipa, retrieval-only, ...
    backend: str = DEFAULT_BACKEND
    model: str = field(default_factory=default_model)
    params: GenerationParams = field(default_factory=GenerationParams)
    max_length: int = DEFAULT_MAX_LENGTH
    postprocess: tuple[str, ...] = ()
    retriever_options: tuple[tuple[str, Any], ...] = ()
    model_options: tuple[tuple[str, Any], ...] = ()  # backend options that change outputs; never threads
    limit: int | None = None
    users: int | None = None
    # Only users with at least this many profile items (store.first_users); None: every user.
    min_profile: int | None = None
    # Leave out the first N of those questions (in file order, before `limit`): e.g. the ones a
    # fine-tuned model was trained on. 0: none (and absent from the run key).
    skip: int = 0
    decode: str = DEFAULT_DECODING  # "generate" (raw model text) or "labels" (most likely label)
    selector: str = ""  # an RSPG method's trained selector (a model folder of kind selector)

    def __post_init__(self) -> None:
        method = get_method(self.method)  # a clear error for an unknown method
        if method.selects:
            if not self.selector:
                raise LampboxError(f"method {self.method} needs a trained selector: {self.method}:NAME (`lampbox train rspg ... --name NAME`)")
            if self.personalized:
                raise LampboxError(f"{self.method}:{self.selector} chooses among its pool's configurations: it takes no retriever or k of its own")
        elif self.selector:
            raise LampboxError(f"a selector ({self.selector}) goes with method rspg-pre or rspg-post, not {self.method}")
        check_decoding(self.decode)
        if self.decode != DEFAULT_DECODING and not self.uses_model:
            raise LampboxError(f"method {self.method} uses no model: it has no decoding to choose")
        unknown = [name for name in self.postprocess if name not in POSTPROCESSORS]
        if unknown:
            raise LampboxError(f"unknown post-processing {', '.join(unknown)} (known: {', '.join(POSTPROCESSORS)})")
        if self.k < 0:
            raise LampboxError("k cannot be negative")
        for name in ("limit", "users"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise LampboxError(f"{name} must be at least 1 (or unset for all), not {value}")
        if self.min_profile is not None and self.min_profile < 0:
            raise LampboxError(f"min_profile cannot be negative (got {self.min_profile})")
        if isinstance(self.skip, bool) or not isinstance(self.skip, int) or self.skip < 0:
            raise LampboxError(f"skip must be a whole number >= 0, not {self.skip!r}")

    @property
    def method_impl(self) -> Method:
        return get_method(self.method)

    @property
    def uses_model(self) -> bool:
        return self.method_impl.uses_model

    @property
    def personalized(self) -> bool:
        return self.retriever != "none" and self.k > 0

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["params"] = self.params.to_json()
        data["postprocess"] = list(self.postprocess)
        data["retriever_options"] = dict(self.retriever_options)
        data["model_options"] = dict(self.model_options)
        if self.decode == DEFAULT_DECODING:  # absent by default: run keys made before it stay valid
            data.pop("decode")
        if not self.selector:  # likewise
            data.pop("selector")
        if self.min_profile is None:  # likewise
            data.pop("min_profile")
        if not self.skip:  # likewise
            data.pop("skip")
        if not self.uses_model:  # a model-free baseline does not depend on these
            for name in ("backend", "model", "params", "max_length", "model_options", "postprocess"):
                data.pop(name)
        return data

    @property
    def label(self) -> str:
        """A short human name, e.g. 'bm25 k=4 llamacpp:smollm2-135m-instruct'."""
        if self.selector:
            return f"{self.method}:{self.selector}"
        if not self.uses_model:
            return f"{self.retriever} k={self.k} {self.method}"
        retrieval = "no personalization" if not self.personalized else f"{self.retriever} k={self.k}"
        extras = "".join(f" {name}={value}" for name, value in self.retriever_options)
        model_extras = "".join(f" {name}={value}" for name, value in self.model_options)
        method = self.method_impl.label(retrieval + extras, self.personalized)
        decode = "" if self.decode == DEFAULT_DECODING else f" decode={self.decode}"
        return f"{method} {self.backend}:{Path(self.model).name}{model_extras}{decode}"


def spec_from_json(data: Mapping[str, Any]) -> RunSpec:
    """Rebuild a RunSpec from its stored JSON."""
    values = dict(data)
    if "params" in values:
        params = dict(values["params"])
        params["stop"] = tuple(params.get("stop", ()))
        values["params"] = GenerationParams(**params)
    values["postprocess"] = tuple(values.get("postprocess", ()))
    values["retriever_options"] = tuple(sorted(dict(values.get("retriever_options", {})).items()))
    values["model_options"] = tuple(sorted(dict(values.get("model_options", {})).items()))
    return RunSpec(**values)


def model_fingerprint(spec: RunSpec) -> str:
    """What identifies the run's model without loading it: the content of local weights, or
    the name where the backend does not load weights itself (a server, the dummy)."""
    if not spec.uses_model:
        return spec.model
    from lampbox.engine.fingerprint import model_fingerprint as weights_fingerprint
    from lampbox.engine.generation.registry import backend_class
    from lampbox.models import resolve_model

    generator_class = backend_class(spec.backend)
    if not generator_class.loads_local_weights:
        return spec.model
    locate = getattr(generator_class, "locate", None)  # a backend that finds its own weights
    if locate is not None:
        location, is_hub_id, adapter = locate(spec.model)
        return weights_fingerprint(location, is_hub_id=is_hub_id, adapter=adapter)
    resolved = resolve_model(spec.model)
    fingerprint = weights_fingerprint(resolved.location, is_hub_id=resolved.is_hub_id, adapter=resolved.adapter)
    users = (resolved.trained or {}).get("users") if (resolved.trained or {}).get("kind") == "oppu" else None
    if users is not None:  # an OPPU set: every user's adapter by its content hash
        content = json.dumps({user: entry["content_hash"] for user, entry in users.items()}, sort_keys=True)
        fingerprint += "+users:" + hashlib.sha256(content.encode()).hexdigest()[:24]
    return fingerprint


def run_key(spec: RunSpec, task: TaskSpec) -> str:
    """The run's key: its spec, its model's content and, for a custom task, the content of the
    task's definition (a changed task.json makes new runs; results under the old one stay apart).
    A built-in task's definition is lampbox's code, so its runs keep the keys they always had."""
    if task.name != spec.task:
        raise LampboxError(f"run_key: the task given is {task.name}, the spec's is {spec.task}")
    data: dict[str, Any] = {"spec": spec.to_json(), "model": model_fingerprint(spec), "version": RUN_KEY_VERSION}
    if task.custom:
        data["task"] = task_fingerprint(task)
    if ":" in spec.retriever and spec.personalized:  # a trained retriever: its checkpoint's content too
        from lampbox.engine.retrieval import create_retriever

        data["retriever"] = create_retriever(spec.retriever, **dict(spec.retriever_options)).key
    if spec.selector:  # an RSPG selection: its selector's content and its pool's runs
        from lampbox.lab.selection import selection_key_data

        data["selection"] = selection_key_data(spec, task)
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:24]


@dataclass(frozen=True)
class RunProgress:
    """A progress report: phase is 'rank', 'prompt', 'generate' or 'score'."""

    spec: RunSpec
    phase: str
    done: int
    total: int


ProgressCallback = Callable[[RunProgress], None]


@dataclass
class RunRecord:
    """A run's results: official metrics, predictions, per-user scores."""

    run_key: str
    spec: RunSpec
    metrics: dict[str, float]
    predictions: list[Prediction]
    user_scores: dict[str, UserScore]
    predictions_path: str | None
    from_store: bool = False
    task_hash: str | None = None  # the task definition's fingerprint it was made under (None: not recorded)
    generated: int = 0  # outputs generated in this call
    cached: int = 0  # outputs served from the generation cache
    seconds: float = 0.0
    name: str | None = None  # its name in a bench plan's table (None: the spec's label)
    selection: Any = None  # an RSPG run's comparison with its pool (lampbox.lab.rspg.SelectionResult)

    @property
    def label(self) -> str:
        return self.name or self.spec.label
