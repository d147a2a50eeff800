"""Content fingerprints: the one place that says what identifies weights, adapters, files and
task definitions.

Everything that decides an output (GGUF files, model folders, dense encoders, trained
checkpoints and adapters, a custom task's definition) is keyed by the sha256 of its content,
never by its path or name, so a checkpoint retrained into the same folder, or a task.json
edited under the same task name, is seen as new. File hashes are cached by
(path, size, mtime) under lampbox's cache folder, so large weights are read once.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lampbox.engine.tasks import TaskSpec


def file_sha256(path: str | Path, *, cached: bool = True) -> str:
    """sha256 of a file's bytes (remembered by path, size and mtime when `cached`)."""
    path = Path(path).resolve()
    record = None
    if cached:
        from lampbox.paths import cache_dir

        stat = path.stat()
        key = f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}"
        name = hashlib.sha256(key.encode()).hexdigest()[:32] + ".json"
        record = cache_dir("fingerprints") / name
        if record.is_file():
            try:
                return str(json.loads(record.read_text())["sha256"])
            except (ValueError, KeyError):
                pass
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    if record is not None:
        record.write_text(json.dumps({"path": str(path), "sha256": digest.hexdigest()}))
    return digest.hexdigest()


def folder_sha256(folder: str | Path) -> str:
    """A folder's content: the sha256 of its files' (relative name, sha256) pairs, sorted."""
    folder = Path(folder)
    digest = hashlib.sha256()
    for file in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(f"{file.relative_to(folder)}\0{file_sha256(file)}\n".encode())
    return digest.hexdigest()


def path_sha256(path: str | Path) -> str:
    """The content fingerprint of a file or a folder."""
    path = Path(path)
    return folder_sha256(path) if path.is_dir() else file_sha256(path)


def model_fingerprint(location: str, *, is_hub_id: bool = False, adapter: str | None = None) -> str:
    """What identifies a model's weights without loading them: its content hash, or the hub id
    (a hub model cannot be hashed before it is downloaded; its id names one revision family),
    and the content of a LoRA adapter applied on top."""
    base = location if is_hub_id else path_sha256(location)
    return base if adapter is None else f"{base}+adapter:{folder_sha256(adapter)}"


def task_fingerprint(task: TaskSpec) -> str:
    """A task definition's content: the sha256 (first 16 hex digits) of its spec as canonical
    JSON. Labels, metrics, document fields, templates: any change makes a new fingerprint."""
    canonical = json.dumps(task.to_json(), sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16]
