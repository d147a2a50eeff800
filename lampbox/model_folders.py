"""The trained-models folder (<lampbox home>/models): names, paths, per-name locks.

The one owner of every path under that folder: a name is checked here by the rule `lampbox
train` uses, a path made from a name never leaves the folder, and a per-name lock
(models/.NAME.lock, fcntl.flock, there while held) keeps a training job, a second job and
`models rm` apart. The kinds a folder's record can be, and the trained models a record stands
on (an OPPU user's adapter on its task adapter), are read here too.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from lampbox.errors import InputFileError, LampboxError

TRAINED_INFO = "lampbox-model.json"
TRAINED_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
# The dot folders a job of NAME works in, beside models/NAME (each removed once it is done).
WORK_SUFFIXES = ("training", "staging", "old")


# Every kind of trained model (a record's "kind"), with what makes it; `models list --kind`
# takes these names and the groups below.
KINDS: dict[str, str] = {
    "lora": "a generator: a LoRA adapter on its base model (train ipa)",
    "full": "a generator: every weight fine-tuned (train ipa --full)",
    "fid": "a Fusion-in-Decoder encoder-decoder (train fid)",
    "user-adapter": "one user's LoRA adapter of an OPPU set, on the set's task adapter (train oppu)",
    "oppu": "an OPPU set: a task adapter and one adapter per user (train oppu)",
    "retriever": "a ROPG retriever, ranked with as ropg:NAME (train ropg)",
    "selector": "an RSPG selector among a bench's runs (train rspg)",
}
KIND_GROUPS: dict[str, tuple[str, ...]] = {"generator": ("lora", "full")}


class ModelInUse(LampboxError):
    """Another process holds a trained model's name (a training job, `models rm`)."""


def models_dir() -> Path:
    """Where `lampbox train` keeps trained models: one folder per name."""
    from lampbox.paths import data_home

    return data_home() / "models"


def check_model_name(name: str) -> str:
    """`name` when it can name a trained model; a one-line error otherwise."""
    if not TRAINED_NAME.match(name):
        raise LampboxError(f"model name {name!r}: use letters, digits, '.', '_' and '-' (at most 100)")
    return name


def _inside(path: Path) -> Path:
    """`path` when it (links followed) stays directly inside the models folder."""
    root = models_dir().resolve()
    if path.resolve().parent != root or path.is_symlink():
        raise LampboxError(f"{path} leads outside {root}; lampbox only manages folders inside it")
    return path


def model_path(name: str) -> Path:
    """models/NAME for a valid name (whether it exists or not), never a path outside."""
    return _inside(models_dir() / check_model_name(name))


def work_path(name: str, suffix: str) -> Path:
    """models/.NAME.SUFFIX: a job's work folder (training), its staged save, the old model."""
    assert suffix in WORK_SUFFIXES
    return _inside(models_dir() / f".{check_model_name(name)}.{suffix}")


def read_info(folder: Path) -> dict[str, Any]:
    """A model folder's lampbox-model.json; a one-line error naming it when unreadable."""
    path = folder / TRAINED_INFO
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise InputFileError(path, f"not a readable lampbox trained-model record ({error})") from None
    if not isinstance(info, dict) or "kind" not in info:
        raise InputFileError(path, "not a lampbox trained-model record (no 'kind')")
    return info


def record_kind(info: Mapping[str, Any]) -> str:
    """A record's kind. A FiD model saved before kind "fid" existed says "full" (with method
    and architecture fid): it is a fid."""
    kind = str(info["kind"])
    if kind == "full" and "fid" in (info.get("method"), info.get("architecture")):
        return "fid"
    return kind


def kinds_selected(name: str) -> tuple[str, ...]:
    """The kinds `--kind NAME` selects (a kind, or a group such as generator); one line
    naming the known ones otherwise."""
    from lampbox.errors import UnknownNameError

    if name in KINDS:
        return (name,)
    if name in KIND_GROUPS:
        return KIND_GROUPS[name]
    raise UnknownNameError("model kind", name, [*KINDS, *KIND_GROUPS])


def stands_on(info: Mapping[str, Any]) -> str | None:
    """The trained model a record cannot be used without, by name: the task adapter of an
    OPPU set or of one of its users' adapters; None for every other kind."""
    if record_kind(info) in ("user-adapter", "oppu") and info.get("task_adapter"):
        return str(info["task_adapter"])
    return None


def user_adapter_name(set_name: str, user_id: str) -> str:
    """models/<set>.u.<user>: the user id as it is when it is a valid name part, else made one
    (other characters replaced) with a short hash of the id, so two ids never share a name."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", user_id)
    if safe != user_id or len(set_name) + 3 + len(safe) > 100:
        digest = hashlib.sha256(user_id.encode()).hexdigest()[:8]
        safe = f"{safe[: max(1, 100 - len(set_name) - 13)]}-{digest}"
    name = f"{set_name}.u.{safe}"
    if len(name) > 100:
        raise LampboxError(f"the name {set_name!r} is too long to name its users' adapters; choose a shorter one")
    return check_model_name(name)


def is_model_folder(folder: Path) -> bool:
    """A real folder (not a link) holding a readable lampbox-model.json."""
    if folder.is_symlink() or not folder.is_dir():
        return False
    try:
        read_info(folder)
    except LampboxError:
        return False
    return True


def model_names() -> list[str]:
    """The names of the model folders in the models folder."""
    root = models_dir()
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if TRAINED_NAME.match(p.name) and is_model_folder(p))


def _lock_path(name: str) -> Path:
    return models_dir() / f".{check_model_name(name)}.lock"


def _holder_text(raw: str) -> str:
    try:
        holder = json.loads(raw)
        command = f": {holder['command']}" if holder.get("command") else ""
        return f"{holder['purpose']} (pid {holder['pid']}{command})"
    except (ValueError, KeyError, TypeError):
        return "another lampbox process"


@contextmanager
def hold_name(name: str, purpose: str) -> Iterator[None]:
    """Hold the name's lock for the block, or fail at once naming who holds it.

    The lock is an flock on models/.NAME.lock, released by the kernel when its process ends
    (kill -9 included); the file records the holder's pid, `purpose` and command for the
    message, and is removed when the block ends (a process that opened it just before checks
    that the file it locked is still the one at that path, else takes the new one)."""
    import fcntl

    path = _lock_path(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            who = _holder_text(os.pread(descriptor, 4096, 0).decode("utf-8", "replace"))
            os.close(descriptor)
            raise ModelInUse(f"model {name!r} is in use by {who}; try again when it finishes") from None
        try:
            current = os.stat(path).st_ino == os.fstat(descriptor).st_ino
        except FileNotFoundError:
            current = False
        if current:
            break
        os.close(descriptor)  # its last holder removed it: lock the file now at that path
    try:
        os.ftruncate(descriptor, 0)
        os.pwrite(descriptor, json.dumps({"pid": os.getpid(), "purpose": purpose, "command": command_line()}).encode(), 0)
        yield
    finally:
        path.unlink(missing_ok=True)  # still holding the lock: nobody else has this file locked
        os.close(descriptor)  # closing releases the flock


def name_holder(name: str) -> str | None:
    """Who holds the name's lock now ('train k9 (pid 42)'), or None."""
    import fcntl

    path = _lock_path(name)
    try:
        descriptor = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _holder_text(os.pread(descriptor, 4096, 0).decode("utf-8", "replace"))
        fcntl.flock(descriptor, fcntl.LOCK_UN)
        return None
    finally:
        os.close(descriptor)


def command_line() -> str:
    """This process's command, shortened, as a lock names its holder."""
    words = [Path(sys.argv[0]).name, *sys.argv[1:]] if sys.argv and sys.argv[0] else ["lampbox"]
    if words[0] in ("__main__.py", "-m", "-c"):
        words[0] = "lampbox"
    text = " ".join(words)
    return text if len(text) <= 120 else text[:117] + "..."
