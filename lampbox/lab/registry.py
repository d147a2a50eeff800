"""Trained models as folders and store rows together.

`remove_model` deletes only folders lampbox made, inside the models folder, under the name's lock.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from lampbox.errors import LampboxError
from lampbox.model_folders import (
    WORK_SUFFIXES,
    check_model_name,
    hold_name,
    is_model_folder,
    model_path,
    work_path,
)
from lampbox.store.artifacts import delete_artifact, get_artifact
from lampbox.store.core import Store


def remove_model(store: Store, name: str) -> list[str]:
    """Delete a trained model: its registration, its folder and its job's work folders.

    Only a name `lampbox train` accepts, only paths inside the models folder, and only a folder
    that is a lampbox model folder (or the one its row names); refused while the name is in use."""
    check_model_name(name)
    folder = model_path(name)
    with hold_name(name, f"models rm {name}"):
        artifact = get_artifact(store, name)
        registered_here = artifact is not None and Path(artifact.path).resolve() == folder.resolve()
        removed: list[str] = []
        if folder.exists() or folder.is_symlink():
            if not (is_model_folder(folder) or (registered_here and folder.is_dir() and not folder.is_symlink())):
                raise LampboxError(f"{folder} is not a lampbox model folder (no lampbox-model.json); not deleting it")
            shutil.rmtree(folder)
            removed.append(str(folder))
        for suffix in WORK_SUFFIXES:
            path = work_path(name, suffix)
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
                removed.append(str(path))
        if artifact is not None:
            delete_artifact(store, name)
            removed.append("its registration")
        if not removed:
            raise LampboxError(f"no trained model named {name!r} (see `lampbox models list`)")
        return removed

