"""The one place the TUI reaches the generation pipeline (lampbox.lab.pipeline).

The generation panes call only the helpers here, which wrap the pipeline's single-question
functions with a RunSpec built from each pane's choice (PaneChoice: retriever, k, method,
backend, model): `prepare_question` (rank, select top k, build the input, as a run would),
`cached_output` / `remember_output` (the generation cache the bench shares) and
`score_output` (the task metric); for a what-if, `prepare_whatif` (the engine applies the
edit, under a cache key of its own) and `save_whatif` (a small run of kind 'whatif'). The TUI holds no prompting, generation or scoring code.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from lampbox.engine import scoring
from lampbox.engine.defaults import DEFAULT_BACKEND, interactive_model
from lampbox.engine.generation.base import GenerationParams
from lampbox.engine.generation.pool import GeneratorPool, thread_options
from lampbox.engine.generation.streaming import generate_streaming
from lampbox.engine.machine import CpuSample, ThreadChoice, idle_threads
from lampbox.engine.tasks import TaskSpec
from lampbox.engine.types import Question
from lampbox.engine.whatif import WhatIf
from lampbox.lab import pipeline
from lampbox.lab.pipeline import PreparedPrompt
from lampbox.lab.specs import RunSpec
from lampbox.model_folders import KIND_GROUPS
from lampbox.store.core import Store

# Trained models a pane can generate with by themselves (an OPPU set needs its method).
GENERATING_KINDS = (*KIND_GROUPS["generator"], "fid")
OPPU_SET = "oppu"  # an OPPU set: offered with method oppu (each question's user's adapter)


@dataclass(frozen=True)
class PaneChoice:
    """What one generation pane runs: a retriever at k, and a method on a backend and model."""

    retriever: str
    k: int
    backend: str = DEFAULT_BACKEND
    model: str = field(default_factory=interactive_model)
    method: str = "ipa"

    @property
    def personalized(self) -> bool:
        return self.retriever != "none" and self.k > 0

    @property
    def retrieval_label(self) -> str:
        return f"{self.retriever} k={self.k}" if self.personalized else "no personalization"

    @property
    def model_label(self) -> str:
        method = "" if self.method == "ipa" else f" ({self.method})"
        return f"{self.backend}:{Path(self.model).name}{method}"

    @property
    def label(self) -> str:
        return f"{self.retrieval_label} · {self.model_label}"

    @property
    def model_key(self) -> tuple[str, str]:
        """Panes with the same key share one loaded model (and one batch or queue)."""
        return (self.backend, self.model)


@dataclass(frozen=True)
class ModelOption:
    """A model a pane can choose: from the manifest or trained (the store's registry)."""

    name: str  # what the backend loads: a manifest name, a trained model's name or folder
    label: str
    backends: tuple[str, ...]  # the backends it runs on, the first preferred
    method: str = "ipa"
    trained_for: str | None = None  # the task a trained model learned
    why: str = ""  # why only those backends


def model_options(store: Store) -> list[ModelOption]:
    """The manifest's models, then the registry's trained models (newest first), then its
    OPPU sets (method oppu: each question answered with its user's adapter)."""
    from lampbox.models import interactive_model, load_manifest, trained_model_folder
    from lampbox.store.artifacts import list_artifacts

    entries, _ = load_manifest()
    first = interactive_model()  # the panes' default
    options = []
    for name in sorted(entries, key=lambda name: (name != first, name)):
        entry = entries[name]
        if entry.format == "gguf":
            backends: tuple[str, ...] = ("llamacpp", "hf", "dummy")
            why = f"{name} is a GGUF model: llama.cpp, transformers (converted) or the dummy stand-in"
        else:
            backends = ("hf", "dummy")
            why = f"{name} is a Hugging Face model: the hf backend (or the dummy stand-in)"
        options.append(ModelOption(name, f"{name}  (manifest)", backends, why=why))
    for artifact in list_artifacts(store, kinds=GENERATING_KINDS):  # not retrievers, selectors, OPPU's
        if trained_model_folder(artifact.name) is not None:
            location = artifact.name
        elif Path(artifact.path).is_dir():
            location = artifact.path
        else:
            continue  # registered, but its folder is gone: it cannot load
        if artifact.method == "fid":
            backends, method = ("fid",), "fid"
            why = f"{artifact.name} is a Fusion-in-Decoder model: method fid on the fid backend"
        else:
            backends, method = ("hf",), "ipa"
            why = f"{artifact.name} is a trained {artifact.kind} model: it runs on the hf backend (transformers)"
        made = artifact.kind if artifact.kind == artifact.method else f"{artifact.kind} {artifact.method}"
        label = f"{artifact.name}  (trained {made}, {artifact.task})"
        options.append(ModelOption(location, label, backends, method, artifact.task, why))
    options.extend(oppu_options(store))
    return options


def oppu_options(store: Store) -> list[ModelOption]:
    """The registry's OPPU sets, each on method oppu: a pane answers the question with its
    user's own adapter on the set's task adapter (the task adapter alone for a user who has
    none; the pane says so). On hf, and on llamacpp too when the set's base is a GGUF model."""
    from lampbox.errors import LampboxError
    from lampbox.model_folders import read_info
    from lampbox.models import resolve_model, trained_model_folder
    from lampbox.store.artifacts import list_artifacts

    options = []
    for artifact in list_artifacts(store, kinds=(OPPU_SET,)):
        folder = trained_model_folder(artifact.name)
        if folder is None:
            continue  # registered, but its folder is gone
        info = read_info(folder)
        try:
            gguf = resolve_model(artifact.name).format == "gguf"
        except LampboxError:
            continue  # its task adapter is gone: it cannot load
        backends: tuple[str, ...] = ("hf", "llamacpp") if gguf else ("hf",)
        users = len(info.get("users") or {})
        why = (
            f"{artifact.name} is an OPPU set: each question's user's own adapter on its task adapter "
            f"{info.get('task_adapter')} (method oppu, {' or '.join(backends)}); a user without one gets the task adapter alone"
        )
        label = f"{artifact.name}  (OPPU set, {artifact.task}: the user's adapter, {users} users)"
        options.append(ModelOption(artifact.name, label, backends, "oppu", artifact.task, why))
    return options


def refusal(choice: PaneChoice, options: list[ModelOption]) -> str | None:
    """Why a choice cannot run (a LoRA model on llama.cpp, a FiD model on hf, ...), or None."""
    found = [option for option in options if option.name == choice.model]
    if not found:
        return None  # a model chosen elsewhere: its backend says what is wrong when it loads
    option = found[0]
    if choice.backend not in option.backends:
        return f"{option.why}, not {choice.backend}"
    if choice.method != option.method:
        return f"{option.name} runs with method {option.method}, not {choice.method}"
    return None


def new_pool() -> GeneratorPool:
    """The app's generator pool: a model is loaded once per session, on the usable cores but
    one, which is left to the app's own render loop (or $LAMPBOX_THREADS); each generation
    then runs on the threads `choose_threads` picks for it."""
    from lampbox.engine.machine import default_threads

    return GeneratorPool(backend_options=thread_options(default_threads(reserve=1)))


def default_choices(retrievers: list[str], k: int) -> list[PaneChoice]:
    """No personalization first, then each chosen retriever at k, on the TUI's default model."""
    return [PaneChoice("none", 0)] + [
        PaneChoice(name, k) for name in retrievers if name != "none" and k > 0
    ]


def schedule(choices: list[PaneChoice]) -> list[list[int]]:
    """Pane indexes grouped by model, in pane order: each group is one worker."""
    groups: dict[tuple[str, str], list[int]] = {}
    for index, choice in enumerate(choices):
        groups.setdefault(choice.model_key, []).append(index)
    return list(groups.values())


def how_scheduled(backend: str, panes: int) -> str:
    """'one batch' or 'one after another': how a backend generates several (greedy) panes:
    one batch on hf and llama.cpp (`generate_streaming`), otherwise one after another."""
    from lampbox.engine.generation.registry import backend_class
    from lampbox.engine.generation.streaming import streams_batches

    if panes < 2:
        return "1 pane"
    generator_class = backend_class(backend)
    # A backend that cannot stream (fid) generates the panes as one batch too.
    together = streams_batches(generator_class) or getattr(generator_class, "supports_streaming", True) is False
    return f"{panes} panes, {'one batch' if together else 'one after another'}"


def run_spec(
    question: Question, scheme: str, split: str, choice: PaneChoice, tokens: int
) -> RunSpec:
    """The RunSpec a bench would use for this pane's choice (so caches are shared)."""
    return RunSpec(
        task=question.task,
        scheme=scheme,
        split=split,
        retriever=choice.retriever if choice.personalized else "none",
        k=choice.k if choice.personalized else 0,
        method=choice.method,
        backend=choice.backend,
        model=choice.model,
        params=GenerationParams(max_new_tokens=tokens),
    )


def prepare(
    spec: RunSpec, question: Question, store: Store, pool: GeneratorPool
) -> tuple[PreparedPrompt, str | None]:
    """The prompt for one pane and the cached output, if a run or an earlier view made it."""
    prepared = pipeline.prepare_question(spec, question, store, pool)
    return prepared, pipeline.cached_output(store, prepared)


def prepare_whatif(
    spec: RunSpec, question: Question, store: Store, pool: GeneratorPool, edit: WhatIf
) -> tuple[PreparedPrompt, str | None]:
    """The prompt of one pane for an edited question (the engine applies the edit) and its
    output if this very what-if was generated before: never the unedited question's."""
    prepared = pipeline.prepare_question(spec, question, store, pool, edit)
    return prepared, pipeline.cached_output(store, prepared)


def save_whatif(
    store: Store, prepared: PreparedPrompt, question: Question, output: str, original: str | None
) -> str:
    """Keep one pane's what-if as a small run of kind 'whatif' (lampbox.lab.whatif)."""
    from lampbox.lab.whatif import save_whatif as save

    return save(store, prepared, question, output, original)


def choose_threads(
    prepared: PreparedPrompt, pool: GeneratorPool, before: CpuSample | None, sharers: int
) -> ThreadChoice | None:
    """Just before one model's panes generate: one thread per usable core that other processes
    left idle since `before` (read at `g`), shared among the `sharers` models generating at
    once, or $LAMPBOX_THREADS (engine.machine.idle_threads); set on the model without
    reloading it. None for a model that does not run on CPU threads (dummy, openai, fid, hf on
    a GPU)."""
    spec = prepared.spec
    generator = pool.get(spec.backend, spec.model, spec.model_options)
    set_threads = getattr(generator, "set_threads", None)
    if not callable(set_threads):
        return None
    choice = idle_threads(before, sharers)
    return choice if set_threads(choice.threads) else None


def generate_outputs(
    prepared: list[PreparedPrompt],
    pool: GeneratorPool,
    on_piece: Callable[[int, str], None],
    on_output: Callable[[int, str], None],
    should_cancel: Callable[[], bool],
) -> None:
    """Generate prompts prepared for ONE model, text as it grows: one batch on hf and (greedy)
    llama.cpp, every pane's pieces interleaved (engine.generation.streaming). Raises
    GenerationCancelled on cancel."""
    spec = prepared[0].spec
    generator = pool.get(spec.backend, spec.model, spec.model_options)
    requests = [entry.input.request for entry in prepared]
    generate_streaming(generator, requests, spec.params, on_piece, on_output, should_cancel)


def remember(store: Store, prepared: PreparedPrompt, pool: GeneratorPool, output: str) -> None:
    """Cache a finished streamed output so the bench and later views reuse it."""
    spec = prepared.spec
    generator = pool.get(spec.backend, spec.model, spec.model_options)
    pipeline.remember_output(store, prepared, generator, output)


def score(task: TaskSpec, output: str, gold: str | None) -> dict[str, float]:
    """Per-question scores of an output against the gold with the task's metric."""
    return scoring.score_output(task, output, gold)
