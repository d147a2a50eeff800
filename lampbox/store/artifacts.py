"""The registry of trained models (artifacts) in the store: one row per model folder, with its
kind (model_folders.KINDS), base and its fingerprint, spec, history, dev metrics, content hash,
and for an OPPU user's adapter or set the user and the task adapter it stands on."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from lampbox.store.core import Store


@dataclass(frozen=True)
class Artifact:
    name: str
    kind: str
    method: str
    task: str
    base_model: str
    base_fingerprint: str
    spec: Mapping[str, Any]
    history: Sequence[Mapping[str, Any]]
    metrics: Mapping[str, float]
    path: str
    content_hash: str
    created_at: Any
    user_id: str | None = None  # an OPPU user's adapter: the user
    stands_on: str | None = None  # the trained model it cannot be used without (an OPPU task adapter)


_COLUMNS = (
    "name, kind, method, task, base_model, base_fingerprint, spec, history, metrics, path, "
    "content_hash, created_at, user_id, stands_on"
)


def _artifact(row: Sequence[Any]) -> Artifact:
    name, kind, method, task, base, base_fp, spec, history, metrics, path, content, created, user, on = row
    return Artifact(
        name, kind, method, task, base, base_fp, json.loads(spec), json.loads(history),
        json.loads(metrics or "{}"), path, content, created, user, on,
    )  # fmt: skip


def save_artifact(store: Store, artifact: Artifact) -> None:
    """Register (or replace) a trained model, in one transaction."""
    with store.transaction() as cursor:
        cursor.execute("DELETE FROM artifacts WHERE name = ?", [artifact.name])
        cursor.execute(
            f"INSERT INTO artifacts ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, current_timestamp, ?, ?)",
            [
                artifact.name, artifact.kind, artifact.method, artifact.task, artifact.base_model,
                artifact.base_fingerprint, json.dumps(dict(artifact.spec)),
                json.dumps(list(artifact.history)), json.dumps(dict(artifact.metrics)),
                artifact.path, artifact.content_hash, artifact.user_id, artifact.stands_on,
            ],
        )  # fmt: skip


def get_artifact(store: Store, name: str) -> Artifact | None:
    row = store.cursor().execute(f"SELECT {_COLUMNS} FROM artifacts WHERE name = ?", [name]).fetchone()
    return None if row is None else _artifact(row)


def list_artifacts(store: Store, task: str | None = None, kinds: Sequence[str] | None = None) -> list[Artifact]:
    """Registered models, newest first: all, or those of `task` and of one of `kinds`."""
    where, params = [], []
    if task is not None:
        where.append("task = ?")
        params.append(task)
    if kinds is not None:
        where.append(f"kind IN ({', '.join('?' for _ in kinds)})" if kinds else "false")
        params.extend(kinds)
    sql = f"SELECT {_COLUMNS} FROM artifacts" + (f" WHERE {' AND '.join(where)}" if where else "")
    sql += " ORDER BY created_at DESC, name"
    return [_artifact(row) for row in store.cursor().execute(sql, params).fetchall()]


def delete_artifact(store: Store, name: str) -> bool:
    """Forget a trained model's registration; True when there was one."""
    with store.transaction() as cursor:
        found = cursor.execute("SELECT count(*) FROM artifacts WHERE name = ?", [name]).fetchone()
        cursor.execute("DELETE FROM artifacts WHERE name = ?", [name])
    return bool(found and found[0])
