"""The processes of a torchrun job, as the training jobs use them (no-ops in one process).

Rank 0 alone reads and writes the store; the other ranks wait for what it prepares (examples,
feedback, a plan of users) and get it from it here. Preparing can take hours (ROPG's feedback
generates an output per candidate item), longer than the process group's own timeout (30
minutes for gloo), so the waits go through a second gloo group with a long timeout, joined by
every rank when its job starts: `join()`, then `barrier()`, `share(value)` (rank 0's value on
every rank) and `gather(value)` (every rank's value on rank 0). The DDP training itself keeps
the default group and its usual timeout.
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any

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


def gather(value: Any) -> list[Any] | None:
    """Every rank's `value`, in rank order, on rank 0 (None on the others)."""
    group = join()
    if group is None:
        return [value]
    import torch.distributed as dist

    found: list[Any] | None = [None] * world_size() if rank() == 0 else None
    dist.gather_object(value, found, dst=0, group=group)
    return found
