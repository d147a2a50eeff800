"""ROPG jobs: feedback from the store's questions, then a trained, registered retriever.

`collect_feedback` ranks a split's questions with the base retriever (stored rankings reused),
takes each question's top ctx_size items and stores each item's utility in `ropg_feedback`
under the feedback key (model identity, decoding, prompt settings, metric); what is stored is
never computed again, and it is saved a chunk of questions at a time (a killed job resumes,
and its generations are in the generation cache too). `train_ropg` trains the encoder on the
train feedback (dev feedback for its evaluation), writes models/NAME atomically (kind
"retriever") and registers it; `ropg:NAME` then ranks with it. Under torchrun every rank
computes its share of the feedback, rank 0 (the store is its) stores it all, and every rank
trains the encoder (DDP).
"""

from __future__ import annotations

import contextlib
import dataclasses
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from lampbox.engine.defaults import (
    HF_DTYPES,
    default_max_new_tokens,
    default_model,
    feedback_batch_size,
)
from lampbox.engine.generation.base import GenerationParams
from lampbox.engine.generation.pool import GeneratorPool
from lampbox.engine.retrieval import create_retriever, is_retriever_name, known_retriever_names
from lampbox.engine.retrieval.base import document_texts
from lampbox.engine.ropg.feedback import FEEDBACK_KINDS, compute_feedback, feedback_key
from lampbox.engine.ropg.objective import METHODS, RankingExample, RetrieverObjective
from lampbox.engine.ropg.retriever import RETRIEVER_KIND
from lampbox.engine.tasks import TaskSpec
from lampbox.engine.training.trainer import TrainConfig, TrainProgress, TrainResult
from lampbox.engine.types import ItemFeedback, ProfileItem, Question
from lampbox.errors import LampboxError, UnknownNameError
from lampbox.lab import ranks
from lampbox.lab.ranking import rank_stored
from lampbox.lab.registry import install_folder
from lampbox.model_folders import WORK_SUFFIXES, hold_name, work_path
from lampbox.store.artifacts import Artifact, save_artifact
from lampbox.store.caches import StoreGenerationCache
from lampbox.store.core import Store
from lampbox.store.selection import save_item_feedback, stored_item_feedback

FEEDBACK_MAX_LENGTH = 512  # the feedback scorers' prompt budget (REFERENCE.md)
CHUNK_QUESTIONS = 16  # questions whose feedback is saved together
FeedbackProgress = Callable[[str, int, int], None]  # (split, pairs done, pairs total)


def ropg_config(lr: float = 1e-5, epochs: float = 1.0, batch_size: int = 4, max_steps: int | None = None,
                seed: int = 0, eval_every: int | None = None, precision: str = "fp32") -> TrainConfig:  # fmt: skip
    """The core's settings for a retriever: whole model, no LoRA, no length grouping. Checkpoints
    at each dev evaluation (each epoch, or every `eval_every` steps): a killed training resumes
    from the newest, and with dev feedback the best one by NDCG is the model kept."""
    return TrainConfig(
        epochs=epochs, lr=lr, weight_decay=0.0, warmup_ratio=0.0, batch_size=batch_size, seed=seed,
        precision=precision, lora=None, eval_every=eval_every, max_steps=max_steps, group_by_length=False,
    )  # fmt: skip


@dataclass(frozen=True)
class RopgSpec:
    """What a ROPG job trains on and how (its JSON is stored with the trained retriever)."""

    task: str
    scheme: str
    method: str = "kd"
    split: str = "train"
    dev_split: str = "dev"
    retriever: str = "bm25"  # the base retriever proposing the candidates
    ctx_size: int = 20
    feedback: str = "generate"
    backend: str = "llamacpp"
    model: str = field(default_factory=default_model)  # the generator giving the feedback
    dtype: str | None = None  # hf weight dtype (None: the backend's default); in the feedback key
    max_length: int = FEEDBACK_MAX_LENGTH
    retriever_model: str = "all-MiniLM-L6-v2"
    encoder_max_length: int = 256
    temperature: float = 0.1
    use_date: bool = True  # ROPG documents always carry their date (REFERENCE.md)
    limit: int | None = None
    skip: int = 0  # training questions left out first (those a fine-tuned generator learnt from)
    dev_limit: int | None = 100
    config: TrainConfig = field(default_factory=ropg_config)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise LampboxError(f"--method must be one of {', '.join(METHODS)}, not {self.method!r}")
        if self.feedback not in FEEDBACK_KINDS:
            raise LampboxError(
                f"--feedback must be one of {', '.join(FEEDBACK_KINDS)} (for now), not {self.feedback!r}"
            )
        if self.ctx_size < 2:
            raise LampboxError(
                f"--ctx-size must be at least 2: ROPG ranks candidates against each other (got {self.ctx_size})"
            )
        if not is_retriever_name(self.retriever):
            raise UnknownNameError("retriever", self.retriever, known_retriever_names())
        if self.retriever == "none":
            raise LampboxError(
                "--base-retriever none proposes no candidates; use bm25, dense, recency, ..."
            )
        if self.dtype is not None:
            if self.backend != "hf":
                raise LampboxError(f"--dtype {self.dtype} applies to the hf backend, not {self.backend}")
            if self.dtype not in HF_DTYPES:
                raise UnknownNameError("dtype", self.dtype, list(HF_DTYPES))
        if not self.temperature > 0:
            raise LampboxError(f"--temperature must be greater than 0 (got {self.temperature})")
        for name in ("limit", "skip", "dev_limit"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise LampboxError(f"--{name.replace('_', '-')} cannot be negative")
        config = self.config
        if not config.lr > 0 or config.batch_size < 1:
            raise LampboxError("--lr must be greater than 0 and --batch-size at least 1")
        if not config.epochs > 0 or (config.max_steps is not None and config.max_steps < 1):
            raise LampboxError("--epochs must be positive and --max-steps at least 1")

    @property
    def model_options(self) -> tuple[tuple[str, Any], ...]:
        """The generator's loading options that change its outputs (they are in its identity,
        so in the feedback key: fp32 and bf16 feedback never mix)."""
        return (("dtype", self.dtype),) if self.dtype else ()

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["config"] = self.config.to_json()
        if not self.skip:  # as written before --skip existed: an unfinished run of then still resumes
            del data["skip"]
        data["k"] = self.ctx_size  # what `models list` shows as its retrieval
        return data


def candidate_items(
    store: Store, task: TaskSpec, questions: Sequence[Question], retriever_name: str, ctx_size: int
) -> list[list[ProfileItem]]:
    """Each question's top ctx_size items under the base retriever (stored rankings reused)."""
    retriever = create_retriever(retriever_name)
    if not retriever.selects_context:
        raise LampboxError(
            f"base retriever {retriever_name} puts no item into a prompt; it cannot propose candidates"
        )
    rankings = {r.question_id: r for r in rank_stored(store, task, questions, retriever)}
    chosen = []
    for question in questions:
        by_key = {item.key: item for item in question.profile}
        ranking = rankings.get(question.id)
        keys = ranking.item_keys[:ctx_size] if ranking is not None else ()
        chosen.append([by_key[key] for key in keys if key in by_key])
    return chosen


@dataclass
class FeedbackResult:
    questions: list[Question]
    candidates: list[list[ProfileItem]]
    feedback: dict[str, ItemFeedback]  # by question id
    key: str
    computed_questions: int  # questions whose feedback was computed now (the rest were stored)
    seconds: float


@dataclass
class _FeedbackPlan:
    """Rank 0's side of collecting a split's feedback: what is stored, what is left, and the
    rounds it deals out (chunk_questions questions per rank a round)."""

    task: TaskSpec
    scheme: str
    params: GenerationParams
    key: str
    label: str
    questions: list[Question]
    candidates: list[list[ProfileItem]]
    stored: dict[str, ItemFeedback]
    todo: list[int]  # indices of the questions with candidates not stored yet
    chunk_questions: int
    total: int = 0  # (question, item) pairs
    done: int = 0
    position: int = 0  # in todo
    dealt: list[int] = field(default_factory=list)  # the questions of the round being computed

    def next_round(self) -> list[tuple[list[Question], list[list[ProfileItem]]] | None]:
        """Each rank's questions and candidates for the next round (dealt by pair count), or
        None for every rank when all is done. Only what a prompt uses travels: no profiles."""
        world = ranks.world_size()
        self.dealt = self.todo[self.position : self.position + self.chunk_questions * world]
        self.position += len(self.dealt)
        if not self.dealt:
            return [None] * world
        shares = ranks.deal([len(self.candidates[i]) for i in self.dealt], world)
        picked = [[self.dealt[j] for j in share] for share in shares]
        return [
            ([dataclasses.replace(self.questions[i], profile=()) for i in share], [self.candidates[i] for i in share])
            for share in picked
        ]  # fmt: skip

    def keep(self, store: Store, made: Sequence[ItemFeedback]) -> None:
        """Save a round's feedback, each question's with what was stored for its other candidates."""
        merged = []
        for entry in made:
            new_keys = {u.item_key for u in entry.items}
            old = self.stored.get(entry.question_id)
            kept = tuple(u for u in (old.items if old else ()) if u.item_key not in new_keys)
            merged.append(ItemFeedback(entry.question_id, self.key, self.label, entry.items + kept))
        save_item_feedback(store, self.task.name, self.scheme, merged)
        store.idle()
        self.stored.update({entry.question_id: entry for entry in merged})
        self.done += sum(len(self.candidates[i]) for i in self.dealt)


def _plan_feedback(
    spec: RopgSpec, store: Store, split: str, limit: int | None, generators: GeneratorPool, chunk_questions: int,
    skip: int = 0,
) -> _FeedbackPlan:  # fmt: skip
    task = store.task(spec.task)
    questions = [
        q for q in store.questions(task.name, spec.scheme, split, limit=limit, skip=skip) if q.gold is not None
    ]
    if not questions:
        after = f" after the first {skip}" if skip else ""
        raise LampboxError(
            f"no {task.name} {spec.scheme} {split} question{after} has a gold output: ROPG feedback needs golds"
        )
    candidates = candidate_items(store, task, questions, spec.retriever, spec.ctx_size)
    generator = generators.get(spec.backend, spec.model, spec.model_options)
    params = GenerationParams(max_new_tokens=default_max_new_tokens(task))
    key = feedback_key(generator.identity(), params, spec.max_length, task, spec.feedback)
    stored = stored_item_feedback(store, task.name, spec.scheme, key, [q.id for q in questions])
    todo = [
        index for index, (question, items) in enumerate(zip(questions, candidates, strict=True))
        if items and not {item.key for item in items} <= {u.item_key for u in stored.get(question.id, ItemFeedback("", "", "", ())).items}
    ]  # fmt: skip
    label = f"{spec.backend}:{spec.model}" + (f" {spec.dtype}" if spec.dtype else "") + " k=1" + (" likelihood" if spec.feedback == "likelihood" else "")
    total = sum(len(items) for items in candidates)
    done = total - sum(len(candidates[index]) for index in todo)
    return _FeedbackPlan(
        task, spec.scheme, params, key, label, questions, candidates, stored, todo, chunk_questions, total, done
    )  # fmt: skip


def collect_feedback(
    spec: RopgSpec,
    store: Store,
    split: str,
    limit: int | None,
    *,
    generators: GeneratorPool | None = None,
    on_progress: FeedbackProgress | None = None,
    batch_size: int | None = None,
    chunk_questions: int = CHUNK_QUESTIONS,
    skip: int = 0,
) -> FeedbackResult:
    """The utilities of the split's questions' candidates, computed where not stored yet.

    Under torchrun rank 0 (the one with the store) calls it while every other rank calls
    `feedback_share`: the questions whose feedback is not stored are dealt out to the ranks
    a round at a time (chunk_questions per rank), balanced by their (question, item) pairs;
    each rank computes its share with its own generator (the generation cache looked up and
    kept through rank 0's store), and rank 0 saves each round's feedback as one process saves
    its chunk. In one process the rounds are the chunks."""
    started = time.perf_counter()
    generators = generators or GeneratorPool()
    plan = _plan_feedback(spec, store, split, limit, generators, chunk_questions, skip)
    _feedback_rounds(spec, generators, batch_size, plan, store, split, on_progress)
    return FeedbackResult(
        plan.questions, plan.candidates, plan.stored, plan.key, len(plan.todo), time.perf_counter() - started
    )  # fmt: skip


def feedback_share(spec: RopgSpec, *, generators: GeneratorPool | None = None, batch_size: int | None = None) -> None:
    """A torchrun rank's part of the feedback rank 0 collects (`collect_feedback`, called on
    rank 0 at the same time): the questions rank 0 deals it, computed with this rank's own
    generator and handed back. It never opens the store."""
    _feedback_rounds(spec, generators or GeneratorPool(), batch_size)


def _feedback_rounds(
    spec: RopgSpec, generators: GeneratorPool, batch_size: int | None, plan: _FeedbackPlan | None = None,
    store: Store | None = None, split: str = "", on_progress: FeedbackProgress | None = None,
) -> None:  # fmt: skip
    """Every rank's rounds: its share computed, the results gathered, saved by rank 0 (the
    one with the plan and the store). batch_size None: the backend's default feedback batch."""
    batch_size = batch_size or feedback_batch_size(spec.backend)
    task, params, key, label = ranks.share((plan.task, plan.params, plan.key, plan.label) if plan else None)
    generator = generators.get(spec.backend, spec.model, spec.model_options)
    if plan is None and feedback_key(generator.identity(), params, spec.max_length, task, spec.feedback) != key:
        raise LampboxError(
            f"rank {ranks.rank()}: {spec.backend}:{spec.model} is not the model rank 0 loaded (another identity);"
            " every rank of a torchrun job needs the same model files"
        )
    if plan is not None and on_progress:
        on_progress(split, plan.done, plan.total)
    cache = ranks.SharedGenerationCache(StoreGenerationCache(store) if store is not None else None)
    while (mine := ranks.scatter(plan.next_round() if plan else None)) is not None:
        before = plan.done if plan else 0

        def report(pairs: int, _total: int, before: int = before) -> None:
            if plan is not None and on_progress:  # rank 0's own pairs of the round
                on_progress(split, before + pairs, plan.total)

        made = compute_feedback(
            task, mine[0], mine[1], generator, params, spec.max_length, label=label, kind=spec.feedback,
            cache=cache, batch_size=batch_size, on_progress=report,
        )  # fmt: skip
        cache.flush()
        everyone = ranks.gather(made)
        if plan is not None and store is not None and everyone is not None:
            plan.keep(store, [entry for made_by in everyone for entry in made_by])
            if on_progress:
                on_progress(split, plan.done, plan.total)


def ranking_examples(
    task: TaskSpec, result: FeedbackResult, use_date: bool
) -> list[RankingExample]:
    """Questions with at least two candidates, as the objective trains on them."""
    examples = []
    for question, items in zip(result.questions, result.candidates, strict=True):
        feedback = result.feedback.get(question.id)
        if feedback is None or len(items) < 2:
            continue
        found = [feedback.utility(item.key) for item in items]
        utilities = [float(u) for u in found if u is not None]
        if len(utilities) < len(items):
            continue
        documents = document_texts(task, items, use_date)
        examples.append(RankingExample(question.id, task.query(question.input), tuple(documents), tuple(utilities)))
    return examples


def train_ropg(
    spec: RopgSpec,
    store: Store | None,
    name: str,
    *,
    overwrite: bool = False,
    generators: GeneratorPool | None = None,
    on_feedback: FeedbackProgress | None = None,
    on_progress: Callable[[TrainProgress], None] | None = None,
    on_note: Callable[[str], None] | None = None,
    threads: int | None = None,
    feedback_batch_size: int | None = None,
) -> tuple[Artifact | None, TrainResult]:
    """Feedback (stored reused), training, the model folder and its registration, under the
    name's lock. Under torchrun every rank computes its share of the feedback (collect_feedback)
    and rank 0 (the one given the store) stores it, hands the ranking examples to the others,
    and every rank trains the encoder (DDP, each its share of every batch); rank 0 saves and
    registers it, the other ranks (store None) return None. `threads`: torch's CPU threads while it trains (the
    feedback's generator takes its own from `generators`' options); `feedback_batch_size`: the
    feedback prompts handed to the generator at a time (None: the backend's default; the
    generator's own batch size is a loading option)."""
    from lampbox.engine.retrieval.dense import resolve_encoder_model
    from lampbox.engine.training.trainer import train
    from lampbox.lab.training import check_name, check_unfinished, start_work

    ranks.join()
    source = resolve_encoder_model(spec.retriever_model)
    score = "dot" if source.is_contriever else "cos"
    main = store is not None
    with hold_name(name, f"train {name}") if main else contextlib.nullcontext():
        target = check_name(name, overwrite, store) if store is not None else None
        work = work_path(name, "training")
        if main:  # checkpoints of an unfinished training: resumed only under the same settings
            check_unfinished(work, spec.to_json(), name, overwrite)
        data = _ranking_data(spec, store, generators or GeneratorPool(), on_feedback, on_note, feedback_batch_size)
        examples, dev_examples = ranks.share(data[1:] if data is not None else None)
        objective = RetrieverObjective(
            source.location, spec.method, examples, dev_examples, temperature=spec.temperature, score=score,
            max_length=spec.encoder_max_length,
        )  # fmt: skip
        if main:
            start_work(work, spec.to_json(), on_note)
        ranks.barrier()
        model, result = train(objective, spec.config, work, on_progress=on_progress, threads=threads)
        if store is None or data is None:
            return None, result
        artifact = _save(spec, name, target, model, objective, result, score, data[0].key, source.identity)
        save_artifact(store, artifact)
        store.idle()
        for suffix in WORK_SUFFIXES:
            shutil.rmtree(work_path(name, suffix), ignore_errors=True)
        return artifact, result


def _ranking_data(
    spec: RopgSpec, store: Store | None, generators: GeneratorPool, on_feedback: FeedbackProgress | None,
    on_note: Callable[[str], None] | None, batch_size: int | None = None,
) -> tuple[FeedbackResult, list[RankingExample], list[RankingExample]] | None:  # fmt: skip
    """The train feedback and the ranking examples of train and dev (computing what is not
    stored); the generator is closed afterwards, its memory the encoder's. Under torchrun
    every rank computes its share of the feedback, and the ranks without the store get None."""
    if store is None:  # another rank of a torchrun job: its shares of the train and dev feedback
        feedback_share(spec, generators=generators, batch_size=batch_size)
        if ranks.share():
            feedback_share(spec, generators=generators, batch_size=batch_size)
        generators.close()
        return None
    task = store.task(spec.task)
    train_feedback = collect_feedback(
        spec, store, spec.split, spec.limit, generators=generators, on_progress=on_feedback, batch_size=batch_size,
        skip=spec.skip,
    )  # fmt: skip
    dev_examples: list[RankingExample] = []
    has_dev = ranks.share(spec.dev_limit != 0 and bool(store.count_questions(task.name, spec.scheme, spec.dev_split)))
    if has_dev:
        dev_feedback = collect_feedback(
            spec, store, spec.dev_split, spec.dev_limit, generators=generators, on_progress=on_feedback,
            batch_size=batch_size,
        )  # fmt: skip
        dev_examples = ranking_examples(task, dev_feedback, spec.use_date)
    elif spec.dev_limit != 0 and on_note:
        on_note(f"no {task.name} {spec.scheme} {spec.dev_split} questions: training without a dev evaluation")
    generators.close()
    examples = ranking_examples(task, train_feedback, spec.use_date)
    if not examples:
        raise LampboxError(f"no {task.name} {spec.split} question has two candidates or more to rank")
    store.idle()
    return train_feedback, examples, dev_examples


def _save(
    spec: RopgSpec, name: str, target: Any, model: Any, objective: RetrieverObjective, result: TrainResult,
    score: str, key: str, base_identity: str,
) -> Artifact:  # fmt: skip
    """models/NAME written atomically (staging, then one rename), lampbox-model.json last."""
    metrics = result.kept_metrics()  # the best dev checkpoint's (the last evaluation's before checkpoints)
    data = spec.to_json()
    data["score"] = score
    info = {
        "name": name, "kind": RETRIEVER_KIND, "method": f"ropg-{spec.method}", "task": spec.task,
        "base": spec.retriever_model, "base_fingerprint": base_identity, "feedback_key": key, "spec": data,
        "history": result.history, "metrics": metrics,
        "result": {"steps": result.steps, "seconds": round(result.seconds, 2), "best_step": result.best_step},
    }  # fmt: skip
    return install_folder(name, target, info, lambda staging: objective.save(model, staging), "the trained retriever")
