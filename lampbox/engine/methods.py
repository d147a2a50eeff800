"""Methods by name: how a run turns questions and their retrieved items into outputs.

A method registers itself (`register_method`, or another package's `lampbox.methods` entry
point: lampbox.engine.registry) and the run pipeline calls `method.produce`,
so fine-tuned IPA, FiD, OPPU or RSPG plug in with no edit to the pipeline. The default
`produce` of a model method builds one GenerationRequest per question (`preparer`) and
generates through the generation cache (or, with `decode="labels"`, answers each question with
the label the model finds most likely); a model-free method answers from the items alone.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from lampbox.engine.caches import GenerationCache
from lampbox.engine.generation.base import GenerationParams, GenerationRequest, Generator
from lampbox.engine.generation.cached import generate_cached
from lampbox.engine.generation.common import GenerationCancelled
from lampbox.engine.generation.labels import (
    DEFAULT_DECODING,
    check_decoding,
    choose_label,
    label_record,
    score_labels_cached,
)
from lampbox.engine.prompting import Prompt, PromptBuilder
from lampbox.engine.registry import Registry
from lampbox.engine.tasks import TaskSpec
from lampbox.engine.types import ProfileItem, Question, Ranking
from lampbox.errors import LampboxError

Report = Callable[[str, int, int], None]  # (phase, done, total)
CHAT_MARGIN = 64  # room for a chat template's own tokens


def selected_items(question: Question, ranking: Ranking | None, k: int) -> list[ProfileItem]:
    """The top-k profile items of a ranking, best first (none for k = 0 or no ranking)."""
    if ranking is None or k <= 0:
        return []
    by_key = {item.key: item for item in question.profile}
    return [by_key[key] for key in ranking.top_keys(k) if key in by_key]


@dataclass(frozen=True)
class MethodInput:
    """What a model method sends for one question, and the record of how it was built."""

    request: GenerationRequest
    prompt: Prompt


@dataclass
class MethodJob:
    """Everything a method may use for one run."""

    task: TaskSpec
    questions: Sequence[Question]
    selected: Sequence[Sequence[ProfileItem]]  # retrieved items per question, best first
    params: GenerationParams
    max_length: int
    generator: Callable[[], Generator] | None = None  # loads the run's model (model methods)
    cache: GenerationCache | None = None
    batch_size: int = 8
    report: Report | None = None
    should_cancel: Callable[[], bool] | None = None
    decode: str = DEFAULT_DECODING  # "generate" (the model's text) or "labels" (most likely label)


@dataclass
class MethodResult:
    raw_outputs: list[str]  # one per question, in order
    inputs: list[MethodInput | None]  # None for a model-free method
    generated: int = 0
    cached: int = 0
    records: list[dict[str, Any]] | None = None  # per question, how the output was decoded (labels)


Preparer = Callable[[Question, Sequence[ProfileItem]], MethodInput]


class Method:
    """A way to produce outputs. Subclasses set `name` and implement `preparer` (model
    methods) or `answer` (model-free), or override `produce` for anything else."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    uses_model: ClassVar[bool] = True
    needs_adapters: ClassVar[bool] = False  # sends per-request adapters: a backend that loads them
    # A selection among other configurations' answers (RSPG): the lab composes its runs from a
    # trained selector's pool (lampbox/lab/rspg.py); it produces nothing inside one run.
    selects: ClassVar[bool] = False

    def label(self, retrieval: str, personalized: bool) -> str:
        """How a run's label names this method and its retrieval ('bm25 k=4', or 'no
        personalization'): the retrieval, then the method's name."""
        return f"{retrieval} {self.name}"

    def preparer(
        self, task: TaskSpec, generator: Generator, params: GenerationParams, max_length: int
    ) -> Preparer:
        """A function that builds one question's input (made once per run: it may cache)."""
        raise NotImplementedError

    def answer(self, task: TaskSpec, items: Sequence[ProfileItem]) -> str:
        raise NotImplementedError

    def produce(self, job: MethodJob) -> MethodResult:
        if not self.uses_model:
            outputs = [self.answer(job.task, items) for items in job.selected]
            return MethodResult(outputs, [None] * len(outputs))
        if job.generator is None:
            raise LampboxError(f"method {self.name} needs a model")
        generator = job.generator()
        prepare = self.preparer(job.task, generator, job.params, job.max_length)
        built: list[MethodInput] = []
        for index, (question, items) in enumerate(zip(job.questions, job.selected, strict=True)):
            if index % 64 == 0:
                if job.should_cancel and job.should_cancel():
                    raise GenerationCancelled(0, len(job.questions))
                if job.report:
                    job.report("prompt", index, len(job.questions))
            built.append(prepare(question, items))
        report = job.report
        if job.decode != DEFAULT_DECODING:
            return _decode_labels(generator, built, job)
        result = generate_cached(
            generator,
            [entry.request for entry in built],
            job.params,
            cache=job.cache,
            sizes=[entry.prompt.token_count for entry in built],
            batch_size=job.batch_size,
            on_progress=(lambda done, total: report("generate", done, total)) if report else None,
            should_cancel=job.should_cancel,
        )
        return MethodResult(result.outputs, list(built), result.generated, result.cached)


def _decode_labels(generator: Generator, built: Sequence[MethodInput], job: MethodJob) -> MethodResult:
    """The most likely label per question (every label scored as the answer to its prompt)."""
    check_decoding(job.decode, job.task)
    labels = job.task.labels
    report = job.report
    scores, result = score_labels_cached(
        generator,
        [entry.request for entry in built],
        labels,
        cache=job.cache,
        sizes=[entry.prompt.token_count for entry in built],
        batch_size=job.batch_size,
        on_progress=(lambda done, total: report("generate", done, total)) if report else None,
        should_cancel=job.should_cancel,
    )
    outputs = [choose_label(labels, row) for row in scores]
    records = [label_record(labels, row) for row in scores]
    return MethodResult(outputs, list(built), result.generated, result.cached, records)


class IPA(Method):
    """In-prompt augmentation: the retrieved items rendered into the prompt with the task's
    official template and token budget (capped by the model's context)."""

    name = "ipa"
    description = "retrieved items in the prompt (LaMP's IPA), any generator"

    def label(self, retrieval: str, personalized: bool) -> str:
        # the default method goes unnamed; a method built on it (a subclass) is named
        return retrieval if self.name == IPA.name else super().label(retrieval, personalized)

    def preparer(
        self, task: TaskSpec, generator: Generator, params: GenerationParams, max_length: int
    ) -> Preparer:
        builder = PromptBuilder(
            task,
            generator.tokenizer,
            max_length=max_length,
            context_size=generator.context_size,
            reserve_new_tokens=params.max_new_tokens + CHAT_MARGIN,
        )

        def prepare(question: Question, items: Sequence[ProfileItem]) -> MethodInput:
            prompt = builder.build(question.input, items)
            return MethodInput(GenerationRequest(prompt.text, user_id=question.user_id), prompt)

        return prepare


class OPPU(Method):
    """One PEFT Per User: each question is answered by the model with its user's own LoRA
    adapter on top (`--model` an OPPU set from `lampbox train oppu`: the base with the task
    adapter merged), with the retrieved items in the prompt as IPA puts them when k > 0
    (OPPU + RAG). A user without an adapter (no profile items to train on) gets the set's
    model alone. Needs a backend that loads per-request adapters (hf, llamacpp, or openai
    configured for a server that serves LoRAs)."""

    name = "oppu"
    description = "each user's own LoRA adapter (an OPPU set), retrieved items in the prompt when k > 0"
    needs_adapters = True

    def label(self, retrieval: str, personalized: bool) -> str:
        return f"oppu+rag {retrieval}" if personalized else "oppu"  # the user's adapter is personalization

    def preparer(
        self, task: TaskSpec, generator: Generator, params: GenerationParams, max_length: int
    ) -> Preparer:
        from lampbox.models import resolve_model, user_adapters

        if not generator.supports_adapters:
            how = (
                " configured for a server that serves LoRAs ($LAMPBOX_OPENAI_ADAPTERS=model or lora, docs/backends.md)"
                if generator.backend == "openai"
                else ""
            )
            raise LampboxError(
                f"method oppu needs a backend that loads per-user adapters (hf, llamacpp, openai), not {generator.backend}{how}"
            )
        adapters = user_adapters(resolve_model(generator.name))
        if not adapters:
            raise LampboxError(f"method oppu needs an OPPU set as its model (`lampbox train oppu`); {generator.name!r} is not one")
        ipa = IPA().preparer(task, generator, params, max_length)

        def prepare(question: Question, items: Sequence[ProfileItem]) -> MethodInput:
            built = ipa(question, items)
            request = GenerationRequest(built.request.prompt, user_id=question.user_id, adapter=adapters.get(question.user_id))
            return MethodInput(request, built.prompt)

        return prepare


class FiD(Method):
    """Fusion-in-Decoder: one passage per retrieved item (the input and that item, rendered with
    the task's IPA template within the token budget), encoded separately by an encoder-decoder
    (the `fid` backend); without items, the input alone."""

    name = "fid"
    description = "Fusion-in-Decoder over the retrieved items (encoder-decoder, `fid` backend)"

    def preparer(
        self, task: TaskSpec, generator: Generator, params: GenerationParams, max_length: int
    ) -> Preparer:
        if not generator.supports_passages:
            raise LampboxError(f"method fid needs a backend that takes passages (fid), not {generator.backend}")
        builder = PromptBuilder(
            task,
            generator.tokenizer,
            max_length=max_length,
            context_size=generator.context_size,
            special_tokens=int(getattr(generator, "special_tokens", 0)),
        )

        def prepare(question: Question, items: Sequence[ProfileItem]) -> MethodInput:
            pairs = [builder.build(question.input, [item]) for item in items] or [builder.build(question.input)]
            record = Prompt(
                text="\n\n".join(p.text for p in pairs),
                token_count=sum(p.token_count for p in pairs),
                budget=builder.budget * len(pairs),
                input_tokens=pairs[0].input_tokens,
                input_total_tokens=pairs[0].input_total_tokens,
                items=tuple(entry for p in pairs for entry in p.items),
                offered_items=len(items),
                fell_back=any(p.fell_back for p in pairs),
            )
            passages = tuple(p.text for p in pairs)
            return MethodInput(GenerationRequest(question.input, passages=passages, user_id=question.user_id), record)

        return prepare


class RetrievalOnly(Method):
    """A model-free baseline from the user's history alone.

    Generation: the top item's target field. Classification: the majority label of the items
    (ties go to the label ranked first). Rating: the mean score of the items.
    """

    name = "retrieval-only"
    description = "no model: copy the top item, vote over labels or average ratings"
    uses_model = False

    def answer(self, task: TaskSpec, items: Sequence[ProfileItem]) -> str:
        return retrieval_only_output(task, items)


def retrieval_only_output(task: TaskSpec, items: Sequence[ProfileItem]) -> str:
    """RetrievalOnly's answer (see its docstring)."""
    field_name = task.target_field
    if not items or field_name is None:
        return ""
    values = [item.get(field_name).strip() for item in items]
    if task.kind == "generation":
        return values[0]
    if task.kind == "classification":
        counts = Counter(value for value in values if value)
        if not counts:
            return ""
        best = max(counts.values())
        return next(value for value in values if counts.get(value) == best)
    numbers = []
    for value in values:
        try:
            numbers.append(float(value))
        except ValueError:
            continue
    return f"{sum(numbers) / len(numbers):.4g}" if numbers else ""


class RSPGSelection(Method):
    """RSPG: per question, a trained selector (RunSpec.selector) picks one configuration of its
    pool. Pre scores the candidates' prompts and generates only the chosen one; Post scores
    every candidate's prompt and output. Composed on the lab floor, never inside one run."""

    uses_model = False  # its own spec names no model: the pool's configurations do
    selects = True
    mode: ClassVar[str] = ""

    def produce(self, job: MethodJob) -> MethodResult:
        raise LampboxError(f"method {self.name} is composed from its selector's pool by the lab (lampbox.lab.rspg), not produced inside one run")


class RSPGPre(RSPGSelection):
    name = "rspg-pre"
    description = "RSPG-Pre: a selector picks each question's configuration from the prompts, then only that one generates"
    mode = "pre"


class RSPGPost(RSPGSelection):
    name = "rspg-post"
    description = "RSPG-Post: every configuration of the selector's pool answers, the selector keeps one answer per question"
    mode = "post"


# -- the registry ------------------------------------------------------------------------------

def _method(name: str, target: object) -> Method:
    """A registered method as an instance (a plugin's entry point may name the class)."""
    method = target() if isinstance(target, type) and issubclass(target, Method) else target
    if not isinstance(method, Method):
        raise TypeError(f"a method is a lampbox.engine.methods.Method, not {type(method).__name__}")
    if method.name != name:
        raise ValueError(f"it is registered as {name!r} but its name is {method.name!r}")
    return method


METHODS: Registry[Method] = Registry("method", "methods", resolve=_method)


def register_method(method: Method, *, replace: bool = False) -> Method:
    """Make a method available by its name (a taken name is an error unless replace=True)."""
    if not method.name:
        raise ValueError("a method needs a name")
    METHODS.register(method.name, method, description=method.description, replace=replace)
    return method


def unregister_method(name: str) -> None:
    METHODS.unregister(name)


def get_method(name: str) -> Method:
    return METHODS.get(name)


def method_names() -> list[str]:
    return METHODS.names()


register_method(IPA())
register_method(FiD())
register_method(OPPU())
register_method(RetrievalOnly())
register_method(RSPGPre())
register_method(RSPGPost())

