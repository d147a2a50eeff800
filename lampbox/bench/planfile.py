"""Plans as written: a TOML plan file or `--config` strings, read into a Plan.

Reading happens in two steps, so that a bad plan is one clear line and nothing runs: the
written form is checked for shape (`read_plan_file`, `parse_config_strings`: fields, types,
labels, before the store is opened), then each configuration becomes a RunSpec against the
task (`build_plan`: registered methods, retrievers and backends, models, decoding). Every
message names where the plan came from and the configuration (its number and label). The
format is described in docs/plans.md.
"""

from __future__ import annotations

import shlex
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lampbox.bench.plan import Configuration, Plan, role_of
from lampbox.engine.defaults import HF_DTYPES
from lampbox.engine.tasks import TaskSpec
from lampbox.errors import InputFileError, LampboxError, UnknownNameError
from lampbox.store.core import Store

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

HEADER_FIELDS = ("task", "split", "scheme", "limit", "users", "min_profile", "skip", "reference", "configurations")
TEXT_FIELDS = ("label", "method", "model", "backend", "retriever", "decode", "dtype", "quantize", "train", "selector")
WHOLE_NUMBERS = {"k": 0, "max_new_tokens": 1, "max_length": 1}  # field -> its least value
CONFIG_FIELDS = (*TEXT_FIELDS, *WHOLE_NUMBERS, "postprocess")
# Fields that only a method with a model uses; a model-free method naming one is a mistake.
MODEL_FIELDS = ("model", "backend", "dtype", "quantize", "decode", "max_new_tokens", "max_length", "postprocess", "train")
HF_OPTIONS = {"dtype": HF_DTYPES, "quantize": ("int8",)}  # hf backend options


class PlanError(LampboxError):
    """A bad plan: one line naming where the plan came from, the configuration and the problem."""

    exit_code = 2


@dataclass(frozen=True)
class PlanSource:
    """A plan as written, checked for shape: its bench-wide settings and one entry per
    configuration (fields as given, whole numbers already numbers)."""

    where: str  # the plan file, or "--config"
    header: dict[str, Any]
    entries: list[dict[str, Any]]
    is_file: bool = True
    names: list[str] = field(default_factory=list)  # per entry: "configuration 3 (label)"

    def fail(self, problem: str, index: int | None = None) -> PlanError:
        """The error for a problem in the plan (in configuration `index`, when given)."""
        context = "" if index is None else f"{self.names[index]}: "
        return PlanError(f"{self.where}: {context}{problem}" if self.is_file else f"{context}{problem}")


def _entry_name(index: int, entry: Mapping[str, Any], is_file: bool) -> str:
    label = entry.get("label")
    number = f"configuration {index + 1}" if is_file else f"--config {index + 1}"
    return f"{number} ({label})" if isinstance(label, str) and label else number


def read_plan_file(path: Path) -> PlanSource:
    """A TOML plan file: bench-wide settings at the top, then one [[configurations]] table each."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputFileError(path, "no such plan file") from None
    except (OSError, UnicodeDecodeError) as error:
        raise InputFileError(path, f"cannot read the plan: {error}") from None
    except tomllib.TOMLDecodeError as error:
        raise InputFileError(path, f"not a valid TOML plan: {error}") from None
    source = PlanSource(str(path), {}, [])
    for name in data:
        if name not in HEADER_FIELDS:
            raise source.fail(_unknown_field(name, HEADER_FIELDS, "plan setting"))
    entries = data.get("configurations")
    if not isinstance(entries, list) or not entries or not all(isinstance(e, dict) for e in entries):
        raise source.fail("no configurations: add one [[configurations]] table per row of the table")
    header = {name: value for name, value in data.items() if name != "configurations"}
    return _checked(PlanSource(str(path), header, entries, True, [_entry_name(i, e, True) for i, e in enumerate(entries)]))


def parse_config_strings(configs: Sequence[str]) -> PlanSource:
    """`--config "method=ipa model=M backend=hf retriever=bm25 k=4"` strings, one per row
    (shell quoting for values with spaces: label='LoRA k=4')."""
    entries: list[dict[str, Any]] = []
    for index, text in enumerate(configs):
        where = PlanSource("--config", {}, [], False, [f"--config {index + 1}"])
        try:
            words = shlex.split(text)
        except ValueError as error:
            raise where.fail(f"cannot read {text!r}: {error}", 0) from None
        entry: dict[str, Any] = {}
        for word in words:
            name, equals, value = word.partition("=")
            if not equals or not name:
                raise where.fail(f"{word!r} is not name=value", 0)
            if name in entry:
                raise where.fail(f"{name} is given twice", 0)
            entry[name] = value
        if not entry:
            raise where.fail("empty: give at least method=...", 0)
        entries.append(entry)
    if not entries:
        raise LampboxError("no configurations given")
    names = [_entry_name(i, e, False) for i, e in enumerate(entries)]
    return _checked(PlanSource("--config", {}, entries, False, names))


def _unknown_field(name: str, known: Sequence[str], kind: str) -> str:
    return str(UnknownNameError(kind, name, list(known)))


def _checked(source: PlanSource) -> PlanSource:
    """Shape: known fields, texts are texts, whole numbers in range, labels unique."""
    for index, entry in enumerate(source.entries):
        for name in list(entry):
            if name not in CONFIG_FIELDS:
                raise source.fail(_unknown_field(name, CONFIG_FIELDS, "field"), index)
            value = entry[name]
            if name in WHOLE_NUMBERS:
                entry[name] = _whole_number(source, index, name, value)
            elif name == "postprocess":
                entry[name] = _names(source, index, name, value)
            elif not isinstance(value, str) or not value.strip():
                raise source.fail(f"{name} must be a non-empty text, not {value!r}", index)
        if "method" not in entry:
            raise source.fail("method is missing (ipa, fid, retrieval-only or another registered method)", index)
    seen: dict[str, int] = {}
    for index, entry in enumerate(source.entries):
        label = entry.get("label")
        if label is None:
            continue
        if label in seen:
            raise source.fail(f"label {label!r} is also the label of {source.names[seen[label]]}", index)
        seen[label] = index
    for name in ("limit", "users"):
        if name in source.header:
            source.header[name] = _whole_number(source, None, name, source.header[name], least=1)
    for name in ("min_profile", "skip"):
        if name in source.header:
            source.header[name] = _whole_number(source, None, name, source.header[name], least=0)
    for name in ("task", "split", "scheme"):
        value = source.header.get(name)
        if value is not None and (not isinstance(value, str) or not value):
            raise source.fail(f"{name} must be a non-empty text, not {value!r}")
    return source


def _whole_number(source: PlanSource, index: int | None, name: str, value: Any, least: int | None = None) -> int:
    least = WHOLE_NUMBERS[name] if least is None else least
    if isinstance(value, str) and not source.is_file and value.strip().lstrip("-").isdigit():
        value = int(value)  # a --config string's number
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise source.fail(f"{name} must be a whole number >= {least}, not {value!r}", index)
    return value


def _names(source: PlanSource, index: int, name: str, value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    if isinstance(value, list) and all(isinstance(part, str) for part in value):
        return tuple(value)
    raise source.fail(f"{name} must be a list of names (or comma-separated), not {value!r}", index)


# -- from the written form to run specs --------------------------------------------------------


def plan_task(source: PlanSource, store: Store, task_name: str | None = None) -> TaskSpec:
    """The plan's task: `task_name` (a flag) or the plan's own, known to the store."""
    task_name = task_name or source.header.get("task")
    if task_name is None:
        raise source.fail('task is missing: set task = "..." at the top of the plan, or give --task')
    try:
        return store.task(task_name)
    except LampboxError as error:
        raise source.fail(f"task: {error}") from None


AutoReport = Callable[[str], None]


def build_plan(
    source: PlanSource,
    task: TaskSpec,
    scheme: str,
    split: str,
    *,
    limit: int | None = None,
    users: int | None = None,
    min_profile: int | None = None,
    skip: int = 0,
    reference: str | None = None,
    on_auto: AutoReport | None = None,
) -> Plan:
    """The plan's configurations as RunSpecs on `task` (bench-wide settings given by the
    caller: the plan's header, or the flags that override it). `reference`: a configuration's
    label or number, instead of the plan's own (default: the first configuration). Every model
    is checked (its content fingerprint is part of the run key) before anything runs."""
    from lampbox.lab.specs import run_key

    common = {
        "task": task.name, "scheme": scheme, "split": split, "limit": limit, "users": users, "min_profile": min_profile,
        "skip": skip,
    }  # fmt: skip
    configurations = []
    keys: dict[str, int] = {}
    for index, entry in enumerate(source.entries):
        try:
            configuration = _configuration(entry, task, common, on_auto)
            key = run_key(configuration.spec, task)
        except PlanError:
            raise
        except LampboxError as error:
            raise source.fail(str(error), index) from None
        if key in keys:
            raise source.fail(f"the same run as {source.names[keys[key]]} (give the two different settings)", index)
        keys[key] = index
        configurations.append(configuration)
    names: dict[str, int] = {}
    for index, configuration in enumerate(configurations):
        if configuration.name in names:
            other = source.names[names[configuration.name]]
            raise source.fail(f"its row would be called {configuration.name!r} like {other}: give one a label", index)
        names[configuration.name] = index
    chosen = reference if reference is not None else source.header.get("reference")
    return Plan(
        task.name, scheme, split, tuple(configurations), limit, users,
        reference=_reference_index(source, chosen, [c.name for c in configurations]),
        source=source.where, min_profile=min_profile, skip=skip,
    )  # fmt: skip


def _configuration(
    entry: Mapping[str, Any], task: TaskSpec, common: Mapping[str, Any], on_auto: AutoReport | None
) -> Configuration:
    from lampbox.engine.defaults import DEFAULT_MAX_LENGTH, default_max_new_tokens
    from lampbox.engine.generation.base import GenerationParams
    from lampbox.engine.methods import get_method
    from lampbox.engine.retrieval import is_retriever_name, known_retriever_names
    from lampbox.lab.specs import RunSpec

    method = get_method(entry["method"])
    if method.selects:  # RSPG: its selector's pool gives the configurations it chooses among
        extra = [name for name in entry if name not in ("method", "selector", "label")]
        if extra:
            raise LampboxError(f"method {method.name} chooses among its selector's pool: remove {', '.join(extra)} (it takes selector and label)")
        if "selector" not in entry:
            raise LampboxError(f"selector is missing (method {method.name} needs a trained selector: `lampbox train rspg ... --name NAME`)")
        spec = RunSpec(**common, method=method.name, selector=entry["selector"])  # its key checks the selector
        return Configuration(spec, role_of(spec), entry.get("label"))
    if "selector" in entry:
        raise LampboxError(f"selector applies to method rspg-pre or rspg-post, not {method.name}")
    retriever = entry.get("retriever", "none")
    if not is_retriever_name(retriever):  # registered names and prefixed ones (ropg:NAME)
        raise UnknownNameError("retriever", retriever, known_retriever_names())
    k = entry.get("k", 0)
    if retriever != "none" and k == 0:
        raise LampboxError(f"retriever {retriever} needs k >= 1 (for no retrieval, leave the retriever out)")
    if retriever == "none" and k > 0:
        raise LampboxError(f"k={k} needs a retriever (retriever = bm25, dense, recency, ...)")
    retrieval = {"retriever": retriever, "k": k, "method": method.name}
    if not method.uses_model:
        extra = [name for name in MODEL_FIELDS if name in entry]
        if extra:
            raise LampboxError(f"method {method.name} uses no model: remove {', '.join(extra)}")
        if retriever == "none" or task.target_field is None:
            raise LampboxError(f"method {method.name} answers from the retrieved items: it needs a retriever and k >= 1 on a task whose items have a target field")
        return Configuration(RunSpec(**common, **retrieval), role="retrieval-only", label=entry.get("label"))
    if "model" not in entry:
        raise LampboxError(f"model is missing (method {method.name} needs one: a manifest name, a trained model, a .gguf path, an HF folder or hub id)")
    model, train = entry["model"], entry.get("train")
    if train is not None:
        _check_trained(model, train)
    backend, options = _backend(entry, method.name, on_auto)
    spec = RunSpec(
        **common, **retrieval, backend=backend, model=model, model_options=options,
        params=GenerationParams(max_new_tokens=entry.get("max_new_tokens", default_max_new_tokens(task))),
        max_length=entry.get("max_length", DEFAULT_MAX_LENGTH), postprocess=entry.get("postprocess", ()),
        decode=entry.get("decode", "generate"),
    )  # fmt: skip
    _check_decoding(spec, task)
    return Configuration(spec, role_of(spec), entry.get("label") or oppu_label(spec), train)


def oppu_label(spec: Any) -> str | None:
    """A row on an OPPU set (`lampbox train oppu`) named by what it runs: `task-lora` (the set's
    model, base + task adapter, method ipa), `oppu` (each user's adapter on it), `+rag RETRIEVER
    k=K` with retrieval; None for any other model (the run's own label)."""
    from lampbox.models import resolve_model

    try:
        info = resolve_model(spec.model).trained or {}
    except LampboxError:
        return None
    name = {"ipa": "task-lora", "oppu": "oppu"}.get(spec.method)
    if info.get("kind") != "oppu" or name is None:
        return None
    return f"{name}+rag {spec.retriever} k={spec.k}" if spec.personalized else name


def _check_trained(model: str, train: str) -> None:
    """A configuration that says how its model is trained needs that model trained."""
    from lampbox.models import trained_model_folder, trained_models_dir

    if trained_model_folder(model) is None:
        raise LampboxError(f"model {model!r} is not trained yet (no {trained_models_dir() / model}): make it with `{train}`")


def _backend(entry: Mapping[str, Any], method: str, on_auto: AutoReport | None) -> tuple[str, tuple[tuple[str, Any], ...]]:
    """The configuration's backend (auto resolved, as `lampbox bench --backend auto` does) and
    its options that change outputs."""
    from lampbox.engine.generation.registry import known_backends

    backend = entry.get("backend", "auto")
    options = {name: entry[name] for name in HF_OPTIONS if name in entry}
    if backend == "auto":
        choice, dtype = resolve_auto(entry["model"], method, options.get("dtype"))
        if on_auto is not None:
            on_auto(choice.line())
        backend = choice.backend
        if dtype is not None:
            options["dtype"] = dtype
    if backend not in known_backends():
        raise UnknownNameError("backend", backend, known_backends())
    for name, value in options.items():
        if backend != "hf":
            raise LampboxError(f"{name} applies to the hf backend, not {backend}")
        if value not in HF_OPTIONS[name]:
            raise UnknownNameError(name, value, list(HF_OPTIONS[name]))
    return backend, tuple(sorted(options.items()))


def auto_backend(model: str | None, method: str) -> Any:
    """`--backend auto`'s choice (an AutoChoice) for a model and method."""
    from lampbox.engine.defaults import default_model
    from lampbox.engine.generation.auto import choose_backend
    from lampbox.models import resolve_model

    try:
        resolved = resolve_model(model or default_model())
    except LampboxError:  # not a model lampbox can resolve: the backend's own error says why
        return choose_backend(method, "hf", False)
    return choose_backend(method, resolved.format, resolved.entry is not None)


def resolve_auto(model: str | None, method: str, dtype: str | None) -> tuple[Any, str | None]:
    """`--backend auto` resolved for a model and method: its choice (an AutoChoice) and the hf
    dtype the job records. An explicit dtype wins; auto's float32 (hf's CPU default) is left
    unrecorded, so those jobs keep the keys of an explicit `--backend hf`."""
    choice = auto_backend(model, method)
    if choice.backend == "hf" and dtype is None and choice.dtype not in (None, "float32"):
        dtype = choice.dtype
    return choice, dtype


def _check_decoding(spec: Any, task: TaskSpec) -> None:
    from lampbox.engine.generation.labels import check_decoding, check_label_scoring
    from lampbox.engine.generation.registry import backend_class

    check_decoding(spec.decode, task)
    if spec.decode != "generate":
        check_label_scoring(backend_class(spec.backend))


def _reference_index(source: PlanSource, reference: Any, names: Sequence[str]) -> int:
    """The reference row: a configuration's label or number (default: the first)."""
    if reference is None:
        return 0
    if isinstance(reference, str) and reference.isdigit() and reference not in names:
        reference = int(reference)
    if isinstance(reference, int) and not isinstance(reference, bool):
        if not 1 <= reference <= len(names):
            raise source.fail(f"reference {reference} names no configuration: the plan has {len(names)}, numbered from 1")
        return reference - 1
    if not isinstance(reference, str):
        raise source.fail(f"reference must be a configuration's label or number, not {reference!r}")
    if reference not in names:
        raise source.fail(f"reference: {UnknownNameError('configuration', reference, list(names))}")
    return list(names).index(reference)
