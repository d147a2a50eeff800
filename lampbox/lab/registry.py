"""Trained models as folders and store rows together: register, check, repair, remove.

A model folder (models/NAME, renamed into place in one step with its lampbox-model.json
written last) is the truth; its store row is an index rebuilt from the folder alone, so a kill
between the two is repaired by registering the folder again (`register_folder`). `leftovers`
finds what a kill or a removed folder leaves behind; `repair` fixes what can be fixed safely;
`remove_model` deletes only folders lampbox made, inside the models folder, under the name's lock,
with the parts of an OPPU set, and the models that stand on it only when asked (`removal_plan`).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Sequence
from contextlib import ExitStack, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lampbox.errors import LampboxError
from lampbox.model_folders import (
    TRAINED_INFO,
    TRAINED_NAME,
    WORK_SUFFIXES,
    check_model_name,
    hold_name,
    is_model_folder,
    model_names,
    model_path,
    models_dir,
    name_holder,
    read_info,
    record_kind,
    stands_on,
    user_adapter_name,
    work_path,
)
from lampbox.store.artifacts import (
    Artifact,
    delete_artifact,
    get_artifact,
    list_artifacts,
    save_artifact,
)
from lampbox.store.core import Store


def install_folder(
    name: str,
    target: Path,
    info: dict[str, Any],
    fill: Callable[[Path], None] | None,
    what: str = "the trained model",
    staged: bool = False,
) -> Artifact:
    """Write models/NAME in one step: `fill(staging)` writes its files into a fresh staging
    folder (or they are there already: `staged`), lampbox-model.json goes in last, then one
    rename puts it in place (a model of that name moved aside first); its description."""
    from lampbox.engine.fingerprint import folder_sha256
    from lampbox.lampfiles import write_json_atomic

    staging = work_path(name, "staging")
    try:
        if not staged:
            shutil.rmtree(staging, ignore_errors=True)
            staging.mkdir(parents=True)
        if fill is not None:
            fill(staging)
        write_json_atomic(staging / TRAINED_INFO, info, indent=2)
        content = folder_sha256(staging)
        if target.exists():
            old = work_path(name, "old")
            shutil.rmtree(old, ignore_errors=True)
            target.replace(old)
            staging.replace(target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            staging.replace(target)
    except OSError as error:
        shutil.rmtree(staging, ignore_errors=True)
        raise LampboxError(f"could not save {what} to {target}: {error}") from error
    return artifact_from_folder(target, content)


def artifact_from_folder(folder: Path, content_hash: str | None = None) -> Artifact:
    """The store row a model folder describes: its lampbox-model.json and its content hash
    (`content_hash` when the caller has just computed it)."""
    from lampbox.engine.fingerprint import folder_sha256

    info = read_info(folder)
    spec = info.get("spec") or {}
    user = info.get("user") if record_kind(info) == "user-adapter" else None
    return Artifact(
        str(info.get("name", folder.name)), record_kind(info), str(info.get("method", spec.get("method", "ipa"))),
        str(info.get("task", spec.get("task", ""))), str(info.get("base", spec.get("model", ""))),
        str(info.get("base_fingerprint", "")), spec, list(info.get("history") or []),
        dict(info.get("metrics") or {}), str(folder), content_hash or folder_sha256(folder), None,
        None if user is None else str(user), stands_on(info),
    )  # fmt: skip


def register_folder(store: Store, name: str) -> Artifact:
    """Register models/NAME in the store from the folder alone (replacing a row of that name)."""
    folder = model_path(name)
    if not is_model_folder(folder):
        raise LampboxError(f"{folder} is not a lampbox model folder (no readable lampbox-model.json)")
    artifact = artifact_from_folder(folder)
    save_artifact(store, artifact)
    stored = get_artifact(store, name)
    assert stored is not None
    return stored


@dataclass(frozen=True)
class Leftover:
    """Something a kill (or a hand-removed folder) left: what it is, and what fixes it."""

    name: str
    problem: str  # unregistered | missing-folder | staged | stale | unfinished | busy | outside
    detail: str
    fixable: bool

    @property
    def line(self) -> str:
        return f"{self.name}: {self.detail}"


def _work_names() -> set[str]:
    """Names that have a .NAME.SUFFIX work folder in the models folder."""
    root = models_dir()
    names: set[str] = set()
    if root.is_dir():
        for path in root.iterdir():
            for suffix in WORK_SUFFIXES:
                if path.name.startswith(".") and path.name.endswith(f".{suffix}"):
                    name = path.name[1 : -len(suffix) - 1]
                    if TRAINED_NAME.match(name):
                        names.add(name)
    return names


def leftovers(store: Store) -> list[Leftover]:
    """What does not add up between the models folder and the store's rows, by name."""
    rows = {artifact.name: artifact for artifact in list_artifacts(store)}
    folders = set(model_names())
    found: list[Leftover] = []
    for name in sorted(folders | set(rows) | _work_names()):
        if not TRAINED_NAME.match(name):
            continue
        holder = name_holder(name)
        if holder is not None:
            found.append(Leftover(name, "busy", f"in use by {holder}; left alone", False))
            continue
        try:
            folder, row = model_path(name), rows.get(name)
            staged, old, training = (work_path(name, suffix) for suffix in ("staging", "old", "training"))
        except LampboxError as error:  # a link out of the models folder: reported, never followed
            found.append(Leftover(name, "outside", str(error), False))
            continue
        if name in folders and row is None:
            found.append(Leftover(name, "unregistered", f"folder {folder} is not registered in this store", True))
        if row is not None and not Path(row.path).exists() and name not in folders:
            found.append(Leftover(name, "missing-folder", f"registered, but its folder {row.path} is gone", True))
        if name not in folders and is_model_folder(staged):
            found.append(Leftover(name, "staged", f"a complete save in {staged} was not moved into place", True))
        elif staged.exists():
            found.append(Leftover(name, "stale", f"an unfinished save in {staged}", True))
        if old.exists():
            found.append(Leftover(name, "stale", f"the replaced model in {old}", True))
        if training.exists():
            if name in folders and _same_spec(training, folder):
                found.append(Leftover(name, "stale", f"the finished job's folder {training}", True))
            else:
                found.append(Leftover(
                    name, "unfinished",
                    f"an unfinished training in {training}: run the same `lampbox train` command to resume, "
                    f"or `lampbox models rm {name}`",
                    False,
                ))  # fmt: skip
    return found


def _same_spec(training: Path, folder: Path) -> bool:
    """Whether a job folder trained the model now in `folder` (its spec.json is the model's)."""
    import json

    try:
        return bool(json.loads((training / "spec.json").read_text(encoding="utf-8")) == read_info(folder).get("spec"))
    except (OSError, ValueError, LampboxError):
        return False


def repair(store: Store, leftover: Leftover) -> str:
    """Fix one fixable leftover under its name's lock; says what was done."""
    name = leftover.name
    with hold_name(name, f"models doctor {name}"):
        if leftover.problem == "unregistered":
            register_folder(store, name)
            return f"registered {model_path(name)}"
        if leftover.problem == "missing-folder":
            delete_artifact(store, name)
            return "removed the registration of a model whose folder is gone"
        if leftover.problem == "staged":
            staged = work_path(name, "staging")
            staged.replace(model_path(name))
            register_folder(store, name)
            return f"moved {staged.name} into place and registered it"
        if leftover.problem == "stale":
            removed = []
            for suffix in ("staging", "old"):
                path = work_path(name, suffix)
                if path.exists():
                    shutil.rmtree(path)
                    removed.append(path.name)
            training = work_path(name, "training")
            if training.exists() and _same_spec(training, model_path(name)):
                shutil.rmtree(training)
                removed.append(training.name)
            return "removed " + ", ".join(removed) if removed else "nothing left to remove"
    raise LampboxError(f"{name}: {leftover.problem} cannot be fixed automatically")


def _records(store: Store) -> dict[str, dict[str, Any]]:
    """Every trained model by name, as its folder's record says, or as its row says for a
    registered model whose folder is gone."""
    records: dict[str, dict[str, Any]] = {}
    for artifact in list_artifacts(store):
        records[artifact.name] = {"kind": artifact.kind, "user": artifact.user_id, "task_adapter": artifact.stands_on}
    for name in model_names():
        try:
            records[name] = read_info(model_path(name))
        except LampboxError:
            continue  # unreadable, or a link out of the folder: `models doctor` reports it
    return records


def _set_of(name: str, record: dict[str, Any]) -> str | None:
    """The OPPU set a user's adapter belongs to: the set whose name and the user make its name."""
    if record_kind(record) != "user-adapter" or record.get("user") is None:
        return None
    user, at = str(record["user"]), name.find(".u.")
    while at > 0:
        try:
            if user_adapter_name(name[:at], user) == name:
                return name[:at]
        except LampboxError:
            pass
        at = name.find(".u.", at + 1)
    return None


@dataclass(frozen=True)
class RemovalPlan:
    """What `models rm NAME` removes: the model, its parts (an OPPU set's users' adapters, gone
    with it), and the models that stand on it or on its parts, removed only when asked
    (`--with-dependents`), each with its own parts. `order`: sets first, then users' adapters,
    then the rest, so a kill midway never leaves a set naming a removed adapter."""

    name: str
    parts: tuple[str, ...]
    dependents: tuple[str, ...]
    kinds: dict[str, str]
    stands_on: str | None = None  # what NAME itself stands on (kept by its removal)
    direct: tuple[str, ...] = ()  # the dependents that stand on NAME or its parts themselves

    def dependents_line(self) -> str:
        """'OPPU set s stands on 's.u.ann' (with its user adapter s.u.bob)'."""
        direct = [name for name in self.dependents if name in self.direct]
        rest = [name for name in self.dependents if name not in self.direct]
        verb = "stands" if len(direct) == 1 else "stand"
        return f"{self.describe(direct)} {verb} on {self.name!r}" + (f" (with {self.describe(rest)})" if rest else "")

    def order(self, with_dependents: bool) -> list[str]:
        names = [self.name, *self.parts, *(self.dependents if with_dependents else ())]
        rank = {"oppu": 0, "user-adapter": 1}
        return sorted(names, key=lambda n: (rank.get(self.kinds.get(n, ""), 2), n))

    def describe(self, names: Sequence[str]) -> str:
        """'OPPU set a, user adapters a.u.ann, a.u.bob' (the first few of each kind named)."""
        words = {"oppu": ("OPPU set", "OPPU sets"), "user-adapter": ("user adapter", "user adapters")}
        groups: dict[str, list[str]] = {}
        for name in names:
            groups.setdefault(self.kinds.get(name, "model"), []).append(name)
        shown = []
        for kind, members in groups.items():
            one, many = words.get(kind, (f"{kind} model", f"{kind} models"))
            listed = ", ".join(members[:6]) + (f" and {len(members) - 6} more" if len(members) > 6 else "")
            shown.append(f"{one if len(members) == 1 else many} {listed}")
        return "; ".join(shown)


def removal_plan(store: Store, name: str) -> RemovalPlan:
    """What removing NAME takes with it, and what stands on it (from every model's record)."""
    records = _records(store)
    sets = {n: _set_of(n, record) for n, record in records.items()}
    parts_of: dict[str, set[str]] = {}
    for member, owner in sets.items():
        if owner is not None:
            parts_of.setdefault(owner, set()).add(member)
    for owner, record in records.items():  # a set's record lists its users' adapters too
        if record_kind(record) == "oppu":
            for entry in dict(record.get("users") or {}).values():
                if isinstance(entry, dict) and entry.get("adapter") in records:
                    parts_of.setdefault(owner, set()).add(str(entry["adapter"]))
    needed_by: dict[str, set[str]] = {}
    for user, record in records.items():
        for needed in {stands_on(record), *parts_of.get(user, ())} - {None}:
            needed_by.setdefault(str(needed), set()).add(user)
    group = {name, *parts_of.get(name, ())}
    direct = set().union(*(needed_by.get(member, set()) for member in group)) - group
    dependents: set[str] = set()
    waiting = list(group)
    while waiting:
        for user in needed_by.get(waiting.pop(), ()):
            for found in (user, *parts_of.get(user, ())):
                if found not in group and found not in dependents:
                    dependents.add(found)
                    waiting.append(found)
    kinds = {n: record_kind(record) for n, record in records.items()}
    below = stands_on(records[name]) if name in records else None
    return RemovalPlan(name, tuple(sorted(group - {name})), tuple(sorted(dependents)), kinds, below, tuple(sorted(direct)))


def remove_model(store: Store, name: str, *, with_dependents: bool = False) -> tuple[RemovalPlan, dict[str, list[str]]]:
    """Delete a trained model: its registration, its folder and its job's work folders, and
    its parts (an OPPU set's users' adapters); its plan, and what was removed by name.

    Models that stand on it (an OPPU set and its users' adapters on their task adapter) are
    named and the removal refused, unless `with_dependents`: then they go first. Only names
    `lampbox train` accepts, only paths inside the models folder, and only lampbox model
    folders (or the one a row names); refused while any of the names is in use."""
    check_model_name(name)
    plan = removal_plan(store, name)
    if plan.dependents and not with_dependents:
        raise LampboxError(
            f"{plan.dependents_line()}; remove them too with `lampbox models rm {name} --with-dependents`, "
            "or remove them first"
        )
    names = plan.order(with_dependents)
    for each in names:  # every path checked before any delete
        model_path(each)
        for suffix in WORK_SUFFIXES:
            work_path(each, suffix)
    holders = [n for n in names if plan.kinds.get(n) != "user-adapter"] or [name]
    removed: dict[str, list[str]] = {}
    with ExitStack() as held:  # the set, its task adapter...: held throughout; users' adapters one by one
        for each in holders:
            held.enter_context(hold_name(each, f"models rm {name}"))
        for each in names:
            with hold_name(each, f"models rm {name}") if each not in holders else nullcontext():
                removed[each] = _remove_one(store, each)
    if not any(removed.values()):
        raise LampboxError(f"no trained model named {name!r} (see `lampbox models list`)")
    return plan, {n: what for n, what in removed.items() if what}


def _remove_one(store: Store, name: str) -> list[str]:
    """Delete one model (its lock held): what was removed, [] when there was nothing."""
    folder = model_path(name)
    artifact = get_artifact(store, name)
    registered_here = artifact is not None and Path(artifact.path).resolve() == folder.resolve()
    removed: list[str] = []
    if folder.exists() or folder.is_symlink():
        if not (is_model_folder(folder) or (registered_here and folder.is_dir() and not folder.is_symlink())):
            raise LampboxError(f"{folder} is not a lampbox model folder (no lampbox-model.json); not deleting it")
        shutil.rmtree(folder)
        removed.append(str(folder))
    for path in (work_path(name, suffix) for suffix in WORK_SUFFIXES):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
            removed.append(str(path))
    if artifact is not None:
        delete_artifact(store, name)
        removed.append("its registration")
    return removed
