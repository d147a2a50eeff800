"""OPPU jobs: a task adapter, then one adapter per user of the evaluated split.

`train_oppu(spec, store, name)`:
1. the task adapter: an existing LoRA model by name, or trained here as `NAME.task` by the same
   job `lampbox train ipa` runs (`training.train_model`; reused as it is on a re-run);
2. one fresh LoRA per user, trained only on that user's own profile items as the task's
   training pairs, every user from the same clean base with the task adapter merged
   (`engine.training.adapters.AdapterTrainer`); each is its own model folder
   `models/NAME.u.<user>` (kind user-adapter: the user and the task adapter it stands on are
   in its record), staged and renamed in one step and registered at once, so a killed job
   resumes user by user: users whose adapter is saved with the same settings are skipped;
3. the set `models/NAME` (kind oppu): the task adapter's name and each user's adapter with
   its content hash, written last. `--model NAME` resolves to the base with the task adapter
   merged; the `oppu` method serves each question with its user's adapter.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lampbox.engine.training.trainer import TrainConfig, TrainProgress
from lampbox.errors import LampboxError
from lampbox.lab import ranks
from lampbox.lab.registry import install_folder, register_folder
from lampbox.lab.training import (
    TrainSpec,
    causal_lm_source,
    check_name,
    restore_staged,
    train_model,
)
from lampbox.model_folders import (
    check_model_name,
    hold_name,
    is_model_folder,
    model_path,
    read_info,
    user_adapter_name,
    work_path,
)
from lampbox.store.artifacts import Artifact, get_artifact, save_artifact
from lampbox.store.core import Store

USER_KIND = "user-adapter"
SET_KIND = "oppu"


@dataclass(frozen=True)
class OppuSpec:
    """What an OPPU job trains. Either `task_adapter` (an existing LoRA model's name) or
    `task_spec` (the task adapter trained here); users are those of `split` with at least
    `min_profile` profile items (when set): the first `users` of them, or those of `user_ids`,
    or all of them."""

    task: str
    scheme: str
    model: str
    config: TrainConfig  # each user's adapter (LoRA settings, epochs, lr, batch)
    split: str = "dev"
    users: int | None = None
    user_ids: tuple[str, ...] = ()
    min_profile: int | None = None  # only users with at least this many profile items
    task_adapter: str | None = None
    task_spec: TrainSpec | None = None
    max_target_tokens: int = 256

    def __post_init__(self) -> None:
        if (self.task_adapter is None) == (self.task_spec is None):
            raise LampboxError("an OPPU job needs a task adapter: an existing one by name, or one trained here")
        if self.users is not None and self.users < 1:
            raise LampboxError(f"--users must be at least 1 (got {self.users})")
        if self.users is not None and self.user_ids:
            raise LampboxError("give --users N or --user ID, not both")
        if self.min_profile is not None and self.min_profile < 0:
            raise LampboxError(f"--min-profile cannot be negative (got {self.min_profile})")
        config = self.config
        if config.lora is None:
            raise LampboxError("per-user adapters are LoRA adapters: give LoRA settings")
        if config.batch_size < 1 or config.grad_accum < 1:
            raise LampboxError("batch size and gradient accumulation must be at least 1")
        if not config.lr > 0:
            raise LampboxError(f"--user-lr must be greater than 0 (got {config.lr:g})")
        if not config.epochs > 0 or (config.max_steps is not None and config.max_steps < 1):
            raise LampboxError("--user-epochs must be positive and --user-max-steps at least 1")
        if self.max_target_tokens < 1:
            raise LampboxError(f"--max-target-tokens must be at least 1 (got {self.max_target_tokens})")
        if not self.split:
            raise LampboxError("the users' split cannot be empty")

    def user_json(self, task_adapter: str, task_adapter_hash: str) -> dict[str, Any]:
        """What decides a user's adapter besides the user (a re-run with these skips them)."""
        return {
            "method": "oppu", "task": self.task, "scheme": self.scheme, "split": self.split, "model": self.model,
            "task_adapter": task_adapter, "task_adapter_hash": task_adapter_hash,
            "max_target_tokens": self.max_target_tokens, "config": self.config.to_json(),
        }  # fmt: skip

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["config"] = self.config.to_json()
        data["task_spec"] = self.task_spec.to_json() if self.task_spec is not None else None
        data["user_ids"] = list(self.user_ids)
        return data


@dataclass(frozen=True)
class UserDone:
    """One user's turn, for progress: trained (with its seconds), skipped as already trained,
    or skipped for having no profile items."""

    user_id: str
    index: int  # 1-based position among the selected users
    total: int
    items: int
    status: str  # trained | existing | empty
    seconds: float = 0.0
    eta_seconds: float | None = None


@dataclass
class OppuResult:
    artifact: Artifact  # the set
    task_adapter: str
    trained: list[str] = field(default_factory=list)
    existing: list[str] = field(default_factory=list)
    empty: list[str] = field(default_factory=list)  # users with no profile items: no adapter
    too_few: list[str] = field(default_factory=list)  # named by --user, under --min-profile: left out
    seconds: list[float] = field(default_factory=list)  # per trained user


def select_users(spec: OppuSpec, store: Store) -> tuple[list[str], list[str]]:
    """The users of the split the job trains, in file order, and the users named by --user
    that --min-profile leaves out; an unknown --user is an error, as is no user left."""
    task, scheme, split = spec.task, spec.scheme, spec.split
    everyone = store.first_users(task, scheme, split)
    if not everyone:
        raise LampboxError(f"no {task} {scheme} {split} questions: no users to train adapters for")
    enough = set(everyone if spec.min_profile is None else store.first_users(task, scheme, split, min_profile=spec.min_profile))
    if spec.user_ids:
        known = set(everyone)
        missing = [user for user in spec.user_ids if user not in known]
        if missing:
            raise LampboxError(f"no user {', '.join(map(repr, missing))} in {task} {scheme} {split}")
        named = list(dict.fromkeys(spec.user_ids))
        chosen = [user for user in named if user in enough]
        too_few = [user for user in named if user not in enough]
    else:
        chosen = [user for user in everyone if user in enough][: spec.users]
        too_few = []
    if not chosen:
        raise LampboxError(
            f"no {'named ' if spec.user_ids else ''}user of {task} {scheme} {split} has {spec.min_profile} or more "
            "profile items in every question (--min-profile)"
        )
    return chosen, too_few


def _task_adapter(
    spec: OppuSpec, store: Store, name: str, overwrite: bool,
    on_progress: Callable[[TrainProgress], None] | None, on_note: Callable[[str], None] | None, threads: int | None,
) -> tuple[str, Path]:  # fmt: skip
    """The task adapter's name and its adapter folder: the named one (checked), or NAME.task
    (reused when it was trained before with the same settings, else trained now). It tells
    the other ranks whether they train it with rank 0."""
    from lampbox.engine.fingerprint import model_fingerprint
    from lampbox.models import resolve_model, trained_model_folder

    if spec.task_adapter is not None:
        folder = trained_model_folder(spec.task_adapter)
        if folder is None:
            raise LampboxError(f"no trained model named {spec.task_adapter!r} to use as the task adapter (see `lampbox models list`)")
        info = read_info(folder)
        if info.get("kind") != "lora":
            raise LampboxError(f"--task-adapter {spec.task_adapter}: a {info.get('kind')} model, not a LoRA adapter")
        if info.get("task") != spec.task:
            raise LampboxError(f"--task-adapter {spec.task_adapter} was trained for {info.get('task')}, not {spec.task}")
        base = resolve_model(spec.model)
        wanted = model_fingerprint(base.location, is_hub_id=base.is_hub_id)
        if info.get("base_fingerprint") != wanted:
            raise LampboxError(
                f"--task-adapter {spec.task_adapter} stands on {info.get('base')!r}, whose weights differ from "
                f"--model {spec.model!r}; give the model it was trained on"
            )
        ranks.share(False)
        return spec.task_adapter, folder / "adapter"
    assert spec.task_spec is not None
    task_name = f"{name}.task"
    folder = model_path(task_name)
    restore_staged(task_name, spec.task_spec.to_json())
    if not overwrite and is_model_folder(folder) and read_info(folder).get("spec") == spec.task_spec.to_json():
        if get_artifact(store, task_name) is None:
            register_folder(store, task_name)
        if on_note:
            on_note(f"task adapter {task_name}: trained before, reused")
        ranks.share(False)
        return task_name, folder / "adapter"
    if on_note:
        on_note(f"task adapter {task_name}: training on {spec.task} {spec.task_spec.split}")
    ranks.share(True)  # under torchrun every rank trains it (DDP), as `train ipa` does
    train_model(
        spec.task_spec, store, task_name, overwrite=overwrite, on_progress=on_progress, on_note=on_note, threads=threads
    )
    return task_name, folder / "adapter"


def _check_set_name(spec: OppuSpec, store: Store, name: str, overwrite: bool) -> dict[str, Any] | None:
    """The set's record when NAME is an OPPU set made with the same settings (a re-run adds
    or resumes users); None when the name is free (or --overwrite); an error otherwise."""
    folder = model_path(name)
    if overwrite or not folder.exists():
        check_name(name, True, store)  # the manifest's names stay refused
        return None
    if not is_model_folder(folder) or read_info(folder).get("kind") != SET_KIND:
        check_name(name, overwrite, store)  # a model of another kind: "exists"
        return None
    info = read_info(folder)
    mine = spec.to_json()
    theirs = dict(info.get("spec") or {})
    for key in ("users", "user_ids", "min_profile"):  # which users, not how they are trained
        mine.pop(key, None)
        theirs.pop(key, None)
    if mine != theirs:
        raise LampboxError(
            f"the OPPU set {name!r} was trained with other settings; use them to add users, "
            "or pass --overwrite to train it again"
        )
    return info


def train_oppu(
    spec: OppuSpec,
    store: Store | None,
    name: str,
    *,
    overwrite: bool = False,
    on_user: Callable[[UserDone], None] | None = None,
    on_progress: Callable[[TrainProgress], None] | None = None,
    on_note: Callable[[str], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    threads: int | None = None,
) -> OppuResult | None:
    """Train (or resume) the OPPU set `name`: its task adapter, its users' adapters, its record
    (`threads`: torch's CPU threads, None for the default).

    Under torchrun rank 0 (the one given the store) prepares: it checks the name, picks the
    users, trains the task adapter with every rank (DDP) or reuses it, and shares its plan;
    the users left to train are dealt out in turn (user i to rank i mod N) and each rank
    trains its own on its own loaded base; after all of them, rank 0 registers every user's
    adapter and writes the set. The other ranks (store None) return None."""
    from lampbox.engine.fingerprint import folder_sha256, model_fingerprint
    from lampbox.engine.generation.hf import load_hf_tokenizer
    from lampbox.engine.training.oppu import user_profiles

    check_model_name(name)
    user_adapter_name(name, "0")  # a name too long for its users: refused before any work
    ranks.join()
    spec = ranks.share(spec)  # rank 0's, resolved against the store
    if store is None:
        if ranks.share() and spec.task_spec is not None:  # rank 0 trains the task adapter: with it
            train_model(spec.task_spec, None, f"{name}.task", overwrite=True, threads=threads)
        plan = ranks.share()
        done = _train_share(plan, None, on_user, should_stop, [], threads)
        ranks.gather(done)
        return None
    with hold_name(name, f"train oppu {name}"):
        previous = _check_set_name(spec, store, name, overwrite)
        resolved, source, _ = causal_lm_source(spec.model)
        users, too_few = select_users(spec, store)
        if on_note and spec.min_profile is not None:
            left_out = f"; left out: {', '.join(too_few)}" if too_few else ""
            on_note(f"--min-profile {spec.min_profile}: {len(users)} users with at least {spec.min_profile} profile items{left_out}")
        task = store.task(spec.task)
        task_adapter, adapter_folder = _task_adapter(spec, store, name, overwrite, on_progress, on_note, threads)
        task_hash = folder_sha256(adapter_folder)
        user_spec = spec.user_json(task_adapter, task_hash)
        questions = store.questions(spec.task, spec.scheme, spec.split, user_ids=users)
        profiles = user_profiles(questions)
        store.idle()
        tokenizer = load_hf_tokenizer(resolved).hf_tokenizer
        chat = resolved.chat if resolved.chat is not None else bool(getattr(tokenizer, "chat_template", None))
        base_fingerprint = model_fingerprint(resolved.location, is_hub_id=resolved.is_hub_id)
        result = OppuResult(None, task_adapter, too_few=too_few)  # type: ignore[arg-type]
        entries: dict[str, dict[str, Any]] = dict((previous or {}).get("users") or {})
        todo: list[tuple[int, str]] = []
        skipped: list[UserDone] = []  # reported in order, between the users trained here
        for index, user in enumerate(users, 1):
            items = profiles.get(user, [])
            adapter_name = user_adapter_name(name, user)
            folder = model_path(adapter_name)
            if not items:
                result.empty.append(user)
                entries.pop(user, None)
            elif not overwrite and is_model_folder(folder) and read_info(folder).get("spec") == {**user_spec, "user": user}:
                artifact = get_artifact(store, adapter_name) or register_folder(store, adapter_name)
                result.existing.append(user)
                entries[user] = {"adapter": adapter_name, "content_hash": artifact.content_hash, "items": len(items)}
            else:
                todo.append((index, user))
                continue
            skipped.append(UserDone(user, index, len(users), len(items), "existing" if items else "empty"))
        store.idle()
        plan = _SharePlan(
            name, spec, source, str(adapter_folder), user_spec, base_fingerprint, chat, task, len(users),
            [(index, user, profiles[user]) for index, user in todo],
        )  # fmt: skip
        mine = _train_share(ranks.share(plan), store, on_user, should_stop, skipped, threads)
        for done in ranks.gather(mine) or []:
            for user, seconds in done.items():  # rank 0's registered already, the others' now
                adapter_name = user_adapter_name(name, user)
                registered = get_artifact(store, adapter_name) if user in mine else register_folder(store, adapter_name)
                assert registered is not None
                result.trained.append(user)
                result.seconds.append(seconds)
                entries[user] = {"adapter": adapter_name, "content_hash": registered.content_hash, "items": len(profiles[user])}
        order = {user: index for index, user in todo}
        result.trained.sort(key=order.__getitem__)
        info = {
            "name": name, "kind": SET_KIND, "method": "oppu", "task": spec.task, "base": spec.model,
            "base_fingerprint": base_fingerprint, "chat": chat, "task_adapter": task_adapter,
            "task_adapter_hash": task_hash, "spec": spec.to_json(), "users": dict(sorted(entries.items())),
            "skipped": sorted(set((previous or {}).get("skipped") or []) - set(entries) | set(result.empty)),
            "history": [], "metrics": {},
        }  # fmt: skip
        result.artifact = _write_folder(store, name, info, lambda staging: None)
        return result


@dataclass(frozen=True)
class _SharePlan:
    """What rank 0 hands every rank: the users left to train (index, user, profile items), in
    order, and what each user's adapter needs besides its items."""

    name: str
    spec: OppuSpec
    source: str
    task_adapter_folder: str
    user_spec: dict[str, Any]
    base_fingerprint: str
    chat: bool
    task: Any
    total: int
    todo: list[tuple[int, str, list[Any]]]

    def mine(self) -> list[tuple[int, str, list[Any]]]:
        """This rank's users: every Nth of those left, starting at its rank."""
        return self.todo[ranks.rank() :: ranks.world_size()]


def _train_share(
    plan: _SharePlan, store: Store | None, on_user: Callable[[UserDone], None] | None,
    should_stop: Callable[[], bool] | None, skipped: list[UserDone], threads: int | None = None,
) -> dict[str, float]:  # fmt: skip
    """Train this rank's users on one loaded base (the task adapter merged); the seconds each
    took, by user. `skipped` (users not to train) are reported in order among them."""
    from lampbox.engine.generation.hf import load_hf_tokenizer

    def report_skipped(before: int) -> None:
        while on_user and skipped and skipped[0].index < before:
            on_user(skipped.pop(0))

    mine = plan.mine()
    done: dict[str, float] = {}
    if not mine:
        report_skipped(plan.total + 1)
        return done
    from lampbox.engine.training.adapters import AdapterTrainer

    tokenizer = load_hf_tokenizer(causal_lm_source(plan.spec.model)[0]).hf_tokenizer
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    trainer = AdapterTrainer(plan.source, plan.spec.config, task_adapter=plan.task_adapter_folder, threads=threads)
    seconds: list[float] = []
    for turn, (index, user, items) in enumerate(mine, 1):
        if should_stop and should_stop():
            raise LampboxError(f"stopped after {len(done)} users of this job; run the same command to resume")
        report_skipped(index)
        started = time.perf_counter()
        _train_user(
            trainer, plan.spec, store, user_adapter_name(plan.name, user), user, items, tokenizer, plan.chat,
            plan.task, plan.source, {**plan.user_spec, "user": user}, plan.base_fingerprint,
        )  # fmt: skip
        seconds.append(time.perf_counter() - started)
        done[user] = seconds[-1]
        if on_user:
            eta = sum(seconds) / len(seconds) * (len(mine) - turn)
            on_user(UserDone(user, index, plan.total, len(items), "trained", seconds[-1], eta))
    report_skipped(plan.total + 1)
    return done


def _train_user(
    trainer: Any, spec: OppuSpec, store: Store | None, adapter_name: str, user: str, items: Sequence[Any], tokenizer: Any,
    chat: bool, task: Any, source: str, user_spec: dict[str, Any], base_fingerprint: str,
) -> Artifact:  # fmt: skip
    """One user's adapter: trained on their items alone, saved as models/<set>.u.<user> (staged,
    renamed in one step) and registered (by rank 0 at the end, for another rank's user)."""
    from lampbox.engine.training.oppu import user_objective

    objective = user_objective(source, tokenizer, chat, task, items, spec.max_target_tokens)
    with hold_name(adapter_name, f"train oppu {adapter_name}"):
        staging = work_path(adapter_name, "staging")
        shutil.rmtree(staging, ignore_errors=True)
        trained = trainer.train_adapter(objective, staging)
        info = {
            "name": adapter_name, "kind": USER_KIND, "method": "oppu", "task": spec.task, "base": spec.model,
            "base_fingerprint": base_fingerprint, "chat": chat, "user": user,
            "task_adapter": user_spec["task_adapter"], "items": [item.id for item in items],  # the official ids of the items it learnt
            "spec": user_spec, "history": trained.history, "metrics": {},
            "result": {"steps": trained.steps, "train_tokens": trained.train_tokens},
        }  # fmt: skip
        return _write_folder(store, adapter_name, info, None, staged=True)


def _write_folder(
    store: Store | None, name: str, info: dict[str, Any], fill: Callable[[Path], None] | None, *, staged: bool = False
) -> Artifact:
    """Write models/NAME (its lampbox-model.json last) through its staging folder, replace any
    old one in one rename, and register it (without a store: not registered, the folder's
    description). `staged`: the staging folder already holds the rest."""
    artifact = install_folder(name, model_path(name), info, fill, name, staged=staged)
    if store is None:
        return artifact
    save_artifact(store, artifact)
    stored = get_artifact(store, name)
    store.idle()  # after the read-back: the next user trains with the file given back
    assert stored is not None
    return stored
