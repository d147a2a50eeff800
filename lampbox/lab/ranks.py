"""The processes of a torchrun job, as the training jobs use them (no-ops in one process).

Rank 0 alone reads and writes the store; the other ranks wait for what it prepares (examples,
feedback, a plan of users) and get it from it here. Preparing can take hours (ROPG's feedback
generates an output per candidate item), longer than the process group's own timeout (30
minutes for gloo), so the waits go through a second gloo group with a long timeout, joined by
every rank when its job starts: `join()`, then `barrier()`, `share(value)` (rank 0's value on
every rank), `scatter(values)` (rank 0's values, one to each rank) and `gather(value)` (every
rank's value on rank 0). The DDP training itself keeps the default group and its usual
timeout. `deal(weights)` splits work between the ranks, balanced by weight.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lampbox.engine.caches import GenerationCache

WAIT_TIMEOUT = timedelta(days=7)  # how long a rank waits for rank 0's preparation
_groups: dict[str, Any] = {}


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1") or 1)


def rank() -> int:
    return int(os.environ.get("RANK", "0") or 0)


def join() -> Any:
    """Under torchrun: the process group (initialized here if the Trainer has not yet: NCCL
    on CUDA, gloo on the CPU) and the waiting group; None in one process. Every rank calls it
    at the same point, at the start of a job."""
    if world_size() <= 1:
        return None
    if "wait" not in _groups:
        import torch
        import torch.distributed as dist

        if not dist.is_initialized():
            if torch.cuda.is_available():  # this rank's own GPU, for what it runs before DDP too
                torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0") or 0) % torch.cuda.device_count())
            dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        _groups["wait"] = dist.new_group(backend="gloo", timeout=WAIT_TIMEOUT)
    return _groups["wait"]


def barrier() -> None:
    """Wait for every rank."""
    group = join()
    if group is not None:
        import torch.distributed as dist

        dist.barrier(group=group)


def share(value: Any = None) -> Any:
    """Rank 0's `value` (any picklable object) on every rank; what the others pass is ignored."""
    group = join()
    if group is None:
        return value
    import torch.distributed as dist

    box = [value if rank() == 0 else None]
    dist.broadcast_object_list(box, src=0, group=group)
    return box[0]


def scatter(values: Sequence[Any] | None) -> Any:
    """values[r] on rank r: rank 0 passes one value per rank, the others pass None."""
    group = join()
    if group is None:
        return values[0] if values else None
    import torch.distributed as dist

    box: list[Any] = [None]
    dist.scatter_object_list(box, list(values) if rank() == 0 and values is not None else None, src=0, group=group)
    return box[0]


def gather(value: Any) -> list[Any] | None:
    """Every rank's `value`, in rank order, on rank 0 (None on the others)."""
    group = join()
    if group is None:
        return [value]
    import torch.distributed as dist

    found: list[Any] | None = [None] * world_size() if rank() == 0 else None
    dist.gather_object(value, found, dst=0, group=group)
    return found


def deal(weights: Sequence[int], parts: int) -> list[list[int]]:
    """The indices of `weights` dealt into `parts` shares of about equal total weight: the
    heaviest first, each to the lightest share so far (the lowest part on a tie); each share in
    index order. The same weights give the same shares on every rank; every index is in
    exactly one share."""
    if parts < 1:
        raise ValueError("work is dealt to at least one part")
    shares: list[list[int]] = [[] for _ in range(parts)]
    loads = [0] * parts
    for index in sorted(range(len(weights)), key=lambda i: (-weights[i], i)):
        lightest = min(range(parts), key=lambda part: (loads[part], part))
        shares[lightest].append(index)
        loads[lightest] += weights[index]
    return [sorted(share) for share in shares]


class SharedGenerationCache:
    """A generation cache (engine.caches.GenerationCache) that the ranks share through rank
    0's, the one cache given (the store's; None on the other ranks, which never open it).
    `load` is a collective: every rank calls it at the same point, once per computation
    (engine.generation.cached loads once per call), and rank 0 looks up every rank's keys.
    Rank 0 saves its own outputs at once; the others' wait here until `flush()` (a
    collective too) hands them to rank 0, which saves them. In one process it is `cache`."""

    def __init__(self, cache: GenerationCache | None) -> None:
        self.cache = cache
        self.pending: list[tuple[str, str, dict[str, str]]] = []

    def load(self, keys: Sequence[str]) -> dict[str, str]:
        asked = gather(list(keys))
        found = None
        if asked is not None and self.cache is not None:
            wanted = list(dict.fromkeys(key for keys_of in asked for key in keys_of))
            hits = self.cache.load(wanted) if wanted else {}
            found = [{key: hits[key] for key in keys_of if key in hits} for keys_of in asked]
        return scatter(found) or {}

    def save(self, model: str, backend: str, outputs: Mapping[str, str]) -> None:
        if self.cache is not None:
            self.cache.save(model, backend, outputs)
        else:
            self.pending.append((model, backend, dict(outputs)))

    def flush(self) -> None:
        """The other ranks' outputs since the last flush, saved by rank 0."""
        sent, self.pending = self.pending, []
        gathered = gather(sent)
        if gathered is None or self.cache is None:
            return
        for outputs_of in gathered:
            for model, backend, outputs in outputs_of:
                self.cache.save(model, backend, outputs)
