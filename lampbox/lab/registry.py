"""Trained models as folders and store rows together: register, check, repair, remove.

A model folder (models/NAME, renamed into place in one step with its lampbox-model.json
written last) is the truth; its store row is an index rebuilt from the folder alone, so a kill
between the two is repaired by registering the folder again (`register_folder`). `leftovers`
finds what a kill or a removed folder leaves behind; `repair` fixes what can be fixed safely;
`remove_model` deletes only folders lampbox made, inside the models folder, under the name's lock.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
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
    return Artifact(
        str(info.get("name", folder.name)), str(info["kind"]), str(info.get("method", spec.get("method", "ipa"))),
        str(info.get("task", spec.get("task", ""))), str(info.get("base", spec.get("model", ""))),
        str(info.get("base_fingerprint", "")), spec, list(info.get("history") or []),
        dict(info.get("metrics") or {}), str(folder), content_hash or folder_sha256(folder), None,
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


def remove_model(store: Store, name: str) -> list[str]:
    """Delete a trained model: its registration, its folder and its job's work folders.

    Only a name `lampbox train` accepts, only paths inside the models folder, and only a folder
    that is a lampbox model folder (or the one its row names); refused while the name is in use."""
    check_model_name(name)
    folder = model_path(name)
    work = [work_path(name, suffix) for suffix in WORK_SUFFIXES]  # every path checked before any delete
    with hold_name(name, f"models rm {name}"):
        artifact = get_artifact(store, name)
        registered_here = artifact is not None and Path(artifact.path).resolve() == folder.resolve()
        removed: list[str] = []
        if folder.exists() or folder.is_symlink():
            if not (is_model_folder(folder) or (registered_here and folder.is_dir() and not folder.is_symlink())):
                raise LampboxError(f"{folder} is not a lampbox model folder (no lampbox-model.json); not deleting it")
            shutil.rmtree(folder)
            removed.append(str(folder))
        for path in work:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
                removed.append(str(path))
        if artifact is not None:
            delete_artifact(store, name)
            removed.append("its registration")
        if not removed:
            raise LampboxError(f"no trained model named {name!r} (see `lampbox models list`)")
        return removed

