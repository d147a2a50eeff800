"""Training jobs: from the store's questions to a registered, named trained model.

A job (1) reads the split's questions and ranks their profiles as a run would (stored
rankings reused), (2) builds each prompt with the method's own preparer and the model's
tokenizer, so training and inference see the same text, (3) trains with the engine's core
(checkpoints under the lampbox home; the same command resumes a killed job), then (4) writes
the model folder atomically (staged, then renamed) and registers it in the store. Only rank 0
of a torchrun job reads or writes the store: the other ranks read the prepared examples
from the job folder.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lampbox.engine.defaults import DEFAULT_MAX_LENGTH, default_max_new_tokens, default_model
from lampbox.engine.generation.base import GenerationParams
from lampbox.engine.methods import get_method, selected_items
from lampbox.engine.retrieval import create_retriever, is_retriever_name, known_retriever_names
from lampbox.engine.tasks import TaskSpec
from lampbox.engine.training.data import DevExample, SFTExample, encode_dev, encode_examples
from lampbox.engine.training.objective import TrainingObjective
from lampbox.engine.training.trainer import (
    LoraSettings,
    TrainConfig,
    TrainProgress,
    TrainResult,
    is_main_process,
)
from lampbox.errors import LampboxError, UnknownNameError
from lampbox.lab import ranks
from lampbox.lab.ranking import rank_stored
from lampbox.lab.registry import install_folder, register_folder
from lampbox.model_folders import (
    WORK_SUFFIXES,
    check_model_name,
    hold_name,
    is_model_folder,
    model_path,
    read_info,
    work_path,
)
from lampbox.models import load_manifest, resolve_model
from lampbox.store.artifacts import Artifact, get_artifact, save_artifact
from lampbox.store.core import Store

# The learning rate of `train ipa` / `train fid` unless one is given: a LoRA adapter learns
# faster than a model whose every weight is trained (full fine-tuning, FiD).
LORA_LR = 2e-4
FULL_LR = 5e-5


def default_lr(lora: LoraSettings | None) -> float:
    """The learning rate a job takes unless told: LORA_LR with a LoRA adapter, else FULL_LR."""
    return LORA_LR if lora is not None else FULL_LR


@dataclass(frozen=True)
class TrainSpec:
    """What a training job trains on and how (its JSON is stored with the trained model).

    The spec owns its settings' checks and defaults: build it with `TrainSpec.build` to have
    the learning rate chosen by `default_lr` when none is given."""

    task: str
    scheme: str
    method: str = "ipa"
    split: str = "train"
    dev_split: str = "dev"
    retriever: str = "bm25"
    k: int = 4
    model: str = field(default_factory=default_model)
    max_length: int = DEFAULT_MAX_LENGTH  # the IPA prompt budget
    max_target_tokens: int = 64
    limit: int | None = None  # only the first N training questions
    dev_limit: int | None = 100  # dev questions evaluated during training
    config: TrainConfig = field(default_factory=TrainConfig)
    # Also train on the training users' profile items as questions of the task, each with k of
    # the user's earlier items retrieved (`engine.training.profile_pairs`).
    profile_pairs: bool = False

    @classmethod
    def build(cls, *, config: dict[str, Any], **fields: Any) -> TrainSpec:
        """A spec from its fields and its TrainConfig's settings (`config`), with the defaults
        filled in: a learning rate of None (or none given) takes `default_lr`'s."""
        settings = dict(config)
        if settings.get("lr") is None:
            settings["lr"] = default_lr(settings.get("lora"))
        return cls(config=TrainConfig(**settings), **fields)

    def __post_init__(self) -> None:
        """Every setting checked here, before a job touches the store or the models folder."""
        if not is_retriever_name(self.retriever):
            raise UnknownNameError("retriever", self.retriever, known_retriever_names())
        if self.k < 0:
            raise LampboxError("--k cannot be negative")
        for name in ("limit", "dev_limit"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise LampboxError(f"{name} cannot be negative")
        config = self.config
        if config.batch_size < 1 or config.grad_accum < 1:
            raise LampboxError("batch size and gradient accumulation must be at least 1")
        if not config.lr > 0:  # also refuses NaN
            raise LampboxError(f"--lr must be greater than 0 (got {config.lr:g})")
        if not config.epochs > 0 or (config.max_steps is not None and config.max_steps < 1):
            raise LampboxError("--epochs must be positive and --max-steps at least 1")
        if config.cross_attention_lr is not None and not config.cross_attention_lr > 0:
            raise LampboxError(f"--cross-attention-lr must be greater than 0 (got {config.cross_attention_lr:g})")
        if self.method != "fid" and (config.cross_attention_lr is not None or config.freeze_encoder):
            raise LampboxError("--cross-attention-lr and --freeze-encoder are FiD settings (`lampbox train fid`)")
        if config.eval_every is not None and config.eval_every < 1:
            raise LampboxError(f"--eval-every must be at least 1 step (got {config.eval_every})")
        if self.max_target_tokens < 1:
            raise LampboxError(f"--max-target-tokens must be at least 1 (got {self.max_target_tokens})")
        if self.max_length < 1:
            raise LampboxError(f"--max-length must be at least 1 (got {self.max_length})")
        if not self.split or not self.dev_split:
            raise LampboxError("--split and --dev-split cannot be empty")
        get_method(self.method)
        if self.profile_pairs and self.method != "ipa":
            raise LampboxError(f"--profile-pairs trains IPA prompts (train ipa, train oppu), not {self.method}")

    @property
    def personalized(self) -> bool:
        return self.retriever != "none" and self.k > 0

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["config"] = self.config.to_json()
        if not self.profile_pairs:  # absent by default: models trained before keep their spec
            del data["profile_pairs"]
        return data


@dataclass
class PreparedData:
    """A job's examples, as every rank trains on them (JSON in the job folder)."""

    train: list[Any]  # SFTExample (causal) or FiDExample (fid)
    dev: list[Any]  # DevExample or FiDDevExample
    model_source: str
    chat: bool
    base_fingerprint: str
    architecture: str = "causal"

    def to_json(self) -> dict[str, Any]:
        if self.architecture == "fid":
            train = [[e.question_id, [list(p) for p in e.passages], list(e.target_ids)] for e in self.train]
            dev = [[e.question_id, [list(p) for p in e.passages], e.gold] for e in self.dev]
        else:
            train = [[e.question_id, list(e.prompt_ids), list(e.target_ids)] for e in self.train]
            dev = [[e.question_id, list(e.prompt_ids), e.gold] for e in self.dev]
        return {
            "train": train, "dev": dev, "model_source": self.model_source, "chat": self.chat,
            "base_fingerprint": self.base_fingerprint, "architecture": self.architecture,
        }  # fmt: skip

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PreparedData:
        architecture = data.get("architecture", "causal")
        if architecture == "fid":
            from lampbox.engine.training.fid import FiDDevExample, FiDExample

            def passages(value: Any) -> tuple[tuple[int, ...], ...]:
                return tuple(tuple(p) for p in value)

            train: list[Any] = [FiDExample(q, passages(p), tuple(t)) for q, p, t in data["train"]]
            dev: list[Any] = [FiDDevExample(q, passages(p), g) for q, p, g in data["dev"]]
        else:
            train = [SFTExample(q, tuple(p), tuple(t)) for q, p, t in data["train"]]
            dev = [DevExample(q, tuple(p), g) for q, p, g in data["dev"]]
        return cls(train, dev, data["model_source"], data["chat"], data["base_fingerprint"], architecture)


class _TokenizerView:
    """What a method's preparer needs of a generator, without loading its weights."""

    def __init__(
        self, tokenizer: Any, context_size: int, *, special_tokens: int = 0, supports_passages: bool = False
    ) -> None:
        self.tokenizer = tokenizer
        self.context_size = context_size
        self.special_tokens = special_tokens
        self.supports_passages = supports_passages


def check_name(name: str, overwrite: bool, store: Store | None = None) -> Path:
    """The folder a trained model of this name goes to; a clear error when it cannot."""
    check_model_name(name)
    if name in load_manifest()[0]:
        raise LampboxError(f"{name!r} is a model of the manifest; choose another name")
    target = model_path(name)
    taken = target.exists() or (store is not None and get_artifact(store, name) is not None)
    if taken and not overwrite:
        raise LampboxError(f"a trained model named {name!r} exists; choose another name or pass --overwrite")
    return target


def causal_lm_source(model: str) -> tuple[Any, str, Any]:
    """(resolved model, the folder transformers loads, its config); causal LMs only."""
    from transformers import AutoConfig

    from lampbox.engine.generation.hf import _local_folder

    resolved = resolve_model(model)
    if resolved.adapter is not None:
        raise LampboxError(f"{model!r} is a trained adapter; train from a base model")
    source = _local_folder(resolved)
    try:
        config = AutoConfig.from_pretrained(source)
    except (OSError, ValueError) as error:
        raise LampboxError(f"could not read the config of {model!r}: {error}") from error
    architectures = getattr(config, "architectures", None) or []
    if getattr(config, "is_encoder_decoder", False) or not any(a.endswith("ForCausalLM") for a in architectures):
        raise LampboxError(
            f"{model!r} is not a causal LM ({', '.join(architectures) or 'unknown architecture'}); "
            "`lampbox train ipa` fine-tunes decoder-only models"
        )
    return resolved, source, config


def _questions_and_items(spec: TrainSpec, store: Store, task: Any, split: str, limit: int | None) -> tuple[list[Any], list[Any]]:
    """The split's questions with a gold, and their retrieved items (stored rankings reused)."""
    questions = [q for q in store.questions(task.name, spec.scheme, split, limit=limit) if q.gold is not None]
    rankings = {}
    if spec.personalized and questions:
        retriever = create_retriever(spec.retriever)
        rankings = {r.question_id: r for r in rank_stored(store, task, questions, retriever)}
    return questions, [selected_items(q, rankings.get(q.id), spec.k) for q in questions]


def _train_and_dev(
    spec: TrainSpec, store: Store, task: Any, build: Callable[[str, int | None, bool], list[Any]]
) -> tuple[list[Any], list[Any]]:
    """`build(split, limit, dev)` for the training split (an error when no question has a
    gold) and for the dev split when it exists and dev_limit is not 0."""
    train = build(spec.split, spec.limit, False)
    if not train:
        raise LampboxError(f"no {task.name} {spec.scheme} {spec.split} question has a gold output to train on")
    dev: list[Any] = []
    if spec.dev_limit != 0:
        dev = build(spec.dev_split, spec.dev_limit, True)
    return train, dev


def check_splits(spec: TrainSpec, store: Store) -> None:
    """The dev split evaluated during training exists (unless dev_limit is 0): a typo would
    otherwise train without any dev evaluation."""
    if spec.dev_limit == 0 or store.count_questions(spec.task, spec.scheme, spec.dev_split):
        return
    stored = sorted({d.split for d in store.datasets() if (d.task, d.scheme) == (spec.task, spec.scheme)})
    raise LampboxError(
        f"no {spec.task} {spec.scheme} {spec.dev_split!r} questions to evaluate on (stored splits: "
        f"{', '.join(stored) or 'none'}); name one with --dev-split, or pass --dev-limit 0 to train without a dev set"
    )


def _fid_preparer(spec: TrainSpec, store: Store) -> tuple[Any, str, Any, Any]:
    """(task, model source, tokenizer, the fid method's preparer) for a FiD spec."""
    from transformers import AutoTokenizer

    from lampbox.engine.generation.hf import HFTokenizer
    from lampbox.engine.training import fid as fid_core

    task = store.task(spec.task)
    source = fid_core.seq2seq_source(spec.model)
    fid_core.seq2seq_config(source)  # a clear error for a model that is not an encoder-decoder
    tokenizer = AutoTokenizer.from_pretrained(source)
    limit, special = fid_core.passage_limits(tokenizer)
    view = _TokenizerView(HFTokenizer(tokenizer), limit, special_tokens=special, supports_passages=True)
    params = GenerationParams(max_new_tokens=default_max_new_tokens(task))
    return task, source, tokenizer, get_method("fid").preparer(task, view, params, spec.max_length)  # type: ignore[arg-type]


def fid_swapped_passages(spec: TrainSpec, store: Store, split: str, limit: int | None) -> tuple[list[Any], list[Any], list[Any]]:
    """(questions, their passages, other passages) of a split: the other passages pair each
    question's own input with the items retrieved for the question half the split away (in
    the split's order; another user's, mostly), as the fid method builds passages. What
    `passage_dependence` compares: the same question with different passages."""
    from lampbox.engine.training import fid as fid_core

    task, _, tokenizer, prepare = _fid_preparer(spec, store)
    questions, selected = _questions_and_items(spec, store, task, split, limit)
    count = len(questions)

    def passages(question: Any, items: Any) -> Any:
        return fid_core.passage_ids(tokenizer, prepare(question, items).request.passages, spec.max_length)

    own = [passages(q, items) for q, items in zip(questions, selected, strict=True)]
    other = [passages(q, selected[(i + count // 2) % count]) for i, q in enumerate(questions)]
    return questions, own, other


def prepare_fid_data(spec: TrainSpec, store: Store) -> PreparedData:
    """FiD examples: one passage per retrieved item, as the fid method builds them."""
    from lampbox.engine.fingerprint import model_fingerprint
    from lampbox.engine.training import fid as fid_core

    task, source, tokenizer, prepare = _fid_preparer(spec, store)

    def examples(split: str, limit: int | None, dev: bool) -> list[Any]:
        questions, selected = _questions_and_items(spec, store, task, split, limit)
        built: list[Any] = []
        for question, items in zip(questions, selected, strict=True):
            passages = fid_core.passage_ids(tokenizer, prepare(question, items).request.passages, spec.max_length)
            if dev:
                built.append(fid_core.FiDDevExample(question.id, passages, question.gold or ""))
            else:
                target = fid_core.fid_target_ids(tokenizer, question.gold or "", spec.max_target_tokens)
                built.append(fid_core.FiDExample(question.id, passages, target))
        return built

    train, dev = _train_and_dev(spec, store, task, examples)
    return PreparedData(train, dev, source, False, model_fingerprint(source), "fid")


def profile_pair_questions(spec: TrainSpec, store: Store, task: Any, questions: list[Any]) -> tuple[list[Any], list[Any]]:
    """`--profile-pairs`: the training users' profile items as questions of the task, each with
    its k retrieved items among that user's earlier ones (ranked in memory: these questions are
    not in the store, so their rankings are not kept; item embeddings are)."""
    from lampbox.engine.training.oppu import user_profiles
    from lampbox.engine.training.profile_pairs import profile_questions

    pairs = profile_questions(task, spec.scheme, spec.split, user_profiles(questions))
    rankings = {}
    ranked = [pair for pair in pairs if pair.profile]
    if spec.personalized and ranked:
        retriever = create_retriever(spec.retriever)
        rankings = {r.question_id: r for r in rank_stored(store, task, ranked, retriever, keep_rankings=False)}
    return pairs, [selected_items(pair, rankings.get(pair.id), spec.k) for pair in pairs]


def prepare_data(spec: TrainSpec, store: Store) -> PreparedData:
    """Questions, rankings and prompts -> tokenized examples (rank 0 only: reads the store)."""
    if spec.method == "fid":
        return prepare_fid_data(spec, store)
    from lampbox.engine.fingerprint import model_fingerprint
    from lampbox.engine.generation.hf import HFTokenizer, context_limit, load_hf_tokenizer

    task = store.task(spec.task)
    resolved, source, config = causal_lm_source(spec.model)
    tokenizer = load_hf_tokenizer(resolved).hf_tokenizer
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    chat = resolved.chat if resolved.chat is not None else bool(getattr(tokenizer, "chat_template", None))
    view = _TokenizerView(HFTokenizer(tokenizer), context_limit(config))
    params = GenerationParams(max_new_tokens=default_max_new_tokens(task))
    prepare = get_method(spec.method).preparer(task, view, params, spec.max_length)  # type: ignore[arg-type]

    def examples(split: str, limit: int | None, dev: bool) -> list[Any]:
        questions, selected = _questions_and_items(spec, store, task, split, limit)
        if spec.profile_pairs and not dev:
            pairs, pair_items = profile_pair_questions(spec, store, task, questions)
            questions, selected = questions + pairs, selected + pair_items
        ids = [q.id for q in questions]
        texts = [prepare(q, items).request.prompt for q, items in zip(questions, selected, strict=True)]
        golds = [q.gold or "" for q in questions]
        if dev:
            return list(encode_dev(tokenizer, chat, ids, texts, golds))
        return list(encode_examples(tokenizer, chat, ids, texts, golds, spec.max_target_tokens))

    train, dev = _train_and_dev(spec, store, task, examples)
    return PreparedData(train, dev, source, chat, model_fingerprint(resolved.location, is_hub_id=resolved.is_hub_id))


def train_model(
    spec: TrainSpec,
    store: Store | None,
    name: str,
    *,
    overwrite: bool = False,
    on_progress: Callable[[TrainProgress], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    on_note: Callable[[str], None] | None = None,
    threads: int | None = None,
) -> tuple[Artifact | None, TrainResult]:
    """Train, save and register a model called `name` (rank 0 returns its Artifact; other
    ranks, which get store=None, return None). `threads`: torch's CPU threads (None: the
    default; they never change the result, so they are not in the spec).

    Rank 0 holds the name's lock (models/.NAME.lock) from the first check to the registration,
    so a second job of that name, its --overwrite or `models rm NAME` is refused meanwhile. It
    uses the store at the start (questions, rankings) and at the end (the registration) only:
    a store opened with hold_lock=False is given back to other processes while it trains."""
    check_model_name(name)
    ranks.join()  # every rank now: rank 0 may prepare for longer than the group's own timeout
    if not is_main_process():
        folder = model_path(name)
        if not overwrite and is_model_folder(folder) and read_info(folder).get("spec") == spec.to_json():
            return None, TrainResult([], None, None, 0, 0, 0.0, None)  # rank 0 finishes its registration
        return _train(spec, None, name, overwrite, on_progress, should_stop, on_note, threads)
    if store is None:
        raise LampboxError("the main process needs the store")
    with hold_name(name, f"train {name}"):
        finished = _finish_saved(spec, store, name, overwrite, on_note)
        if finished is not None:
            return finished
        return _train(spec, store, name, overwrite, on_progress, should_stop, on_note, threads)


def _finish_saved(
    spec: TrainSpec, store: Store, name: str, overwrite: bool, on_note: Callable[[str], None] | None
) -> tuple[Artifact, TrainResult] | None:
    """A job of the same spec killed after its save: finish the registration and clean up
    (None when there is nothing to finish)."""
    if overwrite:
        return None
    folder = model_path(name)
    wanted = spec.to_json()
    restore_staged(name, wanted)
    if not is_model_folder(folder) or read_info(folder).get("spec") != wanted:
        return None
    row = get_artifact(store, name)
    if row is not None and not work_path(name, "training").exists():
        return None  # a finished job run again: check_name says the name is taken
    artifact = register_folder(store, name) if row is None else row
    for suffix in WORK_SUFFIXES:
        shutil.rmtree(work_path(name, suffix), ignore_errors=True)
    if on_note:
        on_note(f"{name} was trained and saved before; registered it from {folder}")
    result = read_info(folder).get("result") or {}
    return artifact, TrainResult(
        [dict(entry) for entry in artifact.history], result.get("best_metric"), result.get("best_step"), int(result.get("steps", 0)),
        int(result.get("train_tokens", 0)), 0.0, result.get("resumed_from"),
    )  # fmt: skip


def restore_staged(name: str, wanted: dict[str, Any]) -> None:
    """Put a model of these settings left staged in place (a job killed between moving the old
    model aside and renaming the staged one)."""
    folder, staged = model_path(name), work_path(name, "staging")
    if not folder.exists() and is_model_folder(staged) and read_info(staged).get("spec") == wanted:
        staged.replace(folder)


def check_unfinished(work: Path, settings: Any, name: str, overwrite: bool) -> None:
    """A work folder left by an unfinished training of `name` with other settings: refused,
    or removed with --overwrite (the same settings resume from it)."""
    spec_file = work / "spec.json"
    if spec_file.is_file() and json.loads(spec_file.read_text()) != settings:
        if not overwrite:
            raise LampboxError(
                f"an unfinished training of {name!r} with other settings is in {work}; "
                "run it with the same settings to resume, or pass --overwrite to start over"
            )
        shutil.rmtree(work)


def _train(
    spec: TrainSpec,
    store: Store | None,
    name: str,
    overwrite: bool,
    on_progress: Callable[[TrainProgress], None] | None,
    should_stop: Callable[[], bool] | None,
    on_note: Callable[[str], None] | None,
    threads: int | None,
) -> tuple[Artifact | None, TrainResult]:
    from lampbox.engine.generation.hf import load_hf_tokenizer
    from lampbox.engine.training.trainer import train

    main = store is not None
    work = work_path(name, "training")
    target = check_name(name, overwrite, store)
    data_file = work / "examples.json"
    spec_file = work / "spec.json"
    if store is not None:
        store.purpose = f"train {name}, preparing"
        check_unfinished(work, spec.to_json(), name, overwrite)
        check_splits(spec, store)
        if overwrite and not spec_file.is_file():
            shutil.rmtree(work, ignore_errors=True)
        data = prepare_data(spec, store)
        if on_note and spec.profile_pairs:
            pairs = sum(1 for example in data.train if str(example.question_id).startswith("profile:"))
            on_note(f"{len(data.train)} training examples: {len(data.train) - pairs} questions and {pairs} profile pairs")
        task = store.task(spec.task)
        work.mkdir(parents=True, exist_ok=True)
        _write_json(data_file, data.to_json())
        _write_json(work / "task.json", task.to_json())
        start_work(work, spec.to_json(), on_note)
        store.idle()  # read what it needs: other processes may use the store while it trains
    ranks.barrier()
    if not main:
        data = PreparedData.from_json(json.loads(data_file.read_text()))
        task = TaskSpec.from_stored(json.loads((work / "task.json").read_text()))
    if data.architecture == "fid":
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(data.model_source)
    else:
        tokenizer = load_hf_tokenizer(resolve_model(spec.model)).hf_tokenizer
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token

    def progress(event: TrainProgress) -> None:
        if store is not None:  # a busy message names the job and how far it got
            store.purpose = f"train {name}, step {event.step}/{event.max_steps}"
        if on_progress:
            on_progress(event)

    objective = training_objective(data, tokenizer, task)
    model, result = train(objective, spec.config, work, on_progress=progress, should_stop=should_stop, threads=threads)
    if store is None:
        return None, result
    store.purpose = f"train {name}, registering (step {result.steps}/{result.steps})"
    artifact = _save(spec, name, target, model, objective, data, result)
    save_artifact(store, artifact)
    store.idle()
    for suffix in WORK_SUFFIXES:
        shutil.rmtree(work_path(name, suffix), ignore_errors=True)
    return artifact, result


def training_objective(data: PreparedData, tokenizer: Any, task: TaskSpec) -> TrainingObjective:
    """The engine's objective for a job's prepared examples: FiD or IPA fine-tuning (the
    engine's objective registry)."""
    from lampbox.engine.training.registry import objective_class

    objective = objective_class("fid" if data.architecture == "fid" else "ipa")
    return objective(data.model_source, tokenizer, task, data.train, data.dev)  # type: ignore[no-any-return]


def start_work(work: Path, settings: Any, on_note: Callable[[str], None] | None = None) -> None:
    """A resumable training's work folder: its settings written (atomically: `check_unfinished`
    reads them back after a kill), and a note when there are checkpoints to resume from."""
    work.mkdir(parents=True, exist_ok=True)
    _write_json(work / "spec.json", settings)
    if on_note and any((work / "checkpoints").glob("checkpoint-*")):
        on_note(f"resuming from the checkpoints in {work / 'checkpoints'}")


def _write_json(path: Path, data: Any, indent: int | None = None) -> None:
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(data, indent=indent), encoding="utf-8")
    partial.replace(path)


def _save(
    spec: TrainSpec, name: str, target: Path, model: Any, objective: TrainingObjective, data: PreparedData,
    result: TrainResult,
) -> Artifact:
    """Write the model folder atomically (staging folder, then one rename) and describe it.

    Its lampbox-model.json, written last, holds everything its store row holds (history, dev
    metrics), so a kill before the registration is repaired from the folder alone."""

    kind = "fid" if data.architecture == "fid" else "lora" if spec.config.lora is not None else "full"
    metrics = result.kept_metrics()
    info = {
        "name": name, "kind": kind, "method": spec.method, "task": spec.task, "base": spec.model,
        "base_fingerprint": data.base_fingerprint, "chat": data.chat, "architecture": data.architecture,
        "spec": spec.to_json(), "history": result.history, "metrics": metrics,
        "result": {
            "best_metric": result.best_metric, "best_step": result.best_step, "steps": result.steps,
            "train_tokens": result.train_tokens, "resumed_from": result.resumed_from,
        },
    }  # fmt: skip
    return install_folder(name, target, info, lambda staging: objective.save(model, staging))  # adapter/ or model/


def lora_settings(r: int, alpha: int, dropout: float, targets: str) -> LoraSettings:
    names = tuple(part.strip() for part in targets.split(",") if part.strip())
    if r < 1 or alpha < 1 or not 0 <= dropout < 1 or not names:
        raise LampboxError("LoRA needs r >= 1, alpha >= 1, 0 <= dropout < 1 and at least one target module")
    return LoraSettings(r, alpha, dropout, names)
