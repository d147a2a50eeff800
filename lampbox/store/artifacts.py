"""The registry of trained models (artifacts) in the store."""

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


_COLUMNS = (
    "name, kind, method, task, base_model, base_fingerprint, spec, history, metrics, path, "
    "content_hash, created_at"
)


def _artifact(row: Sequence[Any]) -> Artifact:
    name, kind, method, task, base, base_fp, spec, history, metrics, path, content, created = row
    return Artifact(
        name, kind, method, task, base, base_fp, json.loads(spec), json.loads(history),
        json.loads(metrics or "{}"), path, content, created,
    )  # fmt: skip


def save_artifact(store: Store, artifact: Artifact) -> None:
    """Register (or replace) a trained model, in one transaction."""
    with store.transaction() as cursor:
        cursor.execute("DELETE FROM artifacts WHERE name = ?", [artifact.name])
        cursor.execute(
            f"INSERT INTO artifacts ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, current_timestamp)",
            [
                artifact.name, artifact.kind, artifact.method, artifact.task, artifact.base_model,
                artifact.base_fingerprint, json.dumps(dict(artifact.spec)),
                json.dumps(list(artifact.history)), json.dumps(dict(artifact.metrics)),
                artifact.path, artifact.content_hash,
            ],
        )  # fmt: skip


def get_artifact(store: Store, name: str) -> Artifact | None:
    row = store.cursor().execute(f"SELECT {_COLUMNS} FROM artifacts WHERE name = ?", [name]).fetchone()
    return None if row is None else _artifact(row)


def list_artifacts(store: Store, task: str | None = None) -> list[Artifact]:
    sql, params = f"SELECT {_COLUMNS} FROM artifacts", []
    if task is not None:
        sql += " WHERE task = ?"
        params.append(task)
    sql += " ORDER BY created_at DESC, name"
    return [_artifact(row) for row in store.cursor().execute(sql, params).fetchall()]


def delete_artifact(store: Store, name: str) -> bool:
    """Forget a trained model's registration; True when there was one."""
    with store.transaction() as cursor:
        found = cursor.execute("SELECT count(*) FROM artifacts WHERE name = ?", [name]).fetchone()
        cursor.execute("DELETE FROM artifacts WHERE name = ?", [name])
    return bool(found and found[0])
