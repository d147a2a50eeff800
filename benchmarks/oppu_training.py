"""The training part of bench_oppu.py (`--only training`): users' adapters through `lampbox train oppu`.

On a private LAMPBOX_HOME and store (a scratch folder), the task folder given with --data is
imported and `lampbox train oppu` runs in this process (the CLI's own command, so the same
settings and code path: lab/oppu.py, engine/training/adapters.py). Its task adapter is the
LoRA model folder given with --task-adapter (copied in), else one trained by the same job for
--task-steps steps (k 0, no dev evaluation): either way it is merged into the base once, so
its quality does not change the per-user cost. The functions the job calls are wrapped with
timers, which split each user's wall time (`_train_user`, the time the CLI reports) into:

- examples: the user's profile items tokenized as training pairs (`user_objective`);
- add LoRA: the fresh adapter on the shared base (`AdapterTrainer._fresh_adapter`);
- trainer setup: the rest of train_adapter up to the first step (Trainer, accelerate, optimizer);
- steps: inside the optimizer steps (on_step_begin -> on_step_end: forward, backward, update);
- between steps: the training loop around them (batches, collation, logging);
- trainer end: after the last step until the adapter is saved (Trainer's end, unwrapping);
- save: peft's save_pretrained of the adapter; remove LoRA: its deletion from the base;
- install + register: the model folder's record, the rename, hashing and the store's row.

With more --users than the split has, the split's users are repeated under new ids (USER~2,
...) in a copy of the data: the flatness check (`--users 200 --user-max-steps 2`) measures
per-user time and memory growth, not training.
"""

from __future__ import annotations

import atexit
import contextlib
import io
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPEAT_MARK = "~"


def repeated_users(data: Path, split: str, users: int, folder: Path) -> Path:
    """A copy of the task folder whose `split` has at least `users` users: its questions again
    for copies 2, 3, ... of each user (user and question ids suffixed ~2, ~3, ...; the same
    profiles). Other splits are copied as they are."""
    questions = json.loads((data / f"{split}_questions.json").read_text())
    golds = json.loads((data / f"{split}_outputs.json").read_text())
    originals = list(dict.fromkeys(q["user_id"] for q in questions))
    copies = -(-users // len(originals))  # ceiling
    folder.mkdir(parents=True, exist_ok=True)
    for path in data.iterdir():
        if path.is_file() and not path.name.startswith(f"{split}_"):
            shutil.copy(path, folder / path.name)
    made, made_golds = list(questions), list(golds["golds"])
    for copy in range(2, copies + 1):
        made += [{**q, "id": f"{q['id']}{REPEAT_MARK}{copy}", "user_id": f"{q['user_id']}{REPEAT_MARK}{copy}"} for q in questions]
        made_golds += [{**g, "id": f"{g['id']}{REPEAT_MARK}{copy}"} for g in golds["golds"]]
    (folder / f"{split}_questions.json").write_text(json.dumps(made))
    (folder / f"{split}_outputs.json").write_text(json.dumps({**golds, "golds": made_golds}))
    return folder


def split_users(data: Path, split: str) -> int:
    return len({q["user_id"] for q in json.loads((data / f"{split}_questions.json").read_text())})


def rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def folder_mb(folder: Path) -> float:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file()) / 2**20


def machine_state() -> str:
    """The load average and the CPU's AVX-512 / AMX flags, to print beside every figure."""
    load = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    flags: set[str] = set()
    with contextlib.suppress(OSError):
        for word in Path("/proc/cpuinfo").read_text().split():
            if word.startswith(("avx512", "amx")):
                flags.add(word)
    return f"{load}; cpu flags: {' '.join(sorted(flags)) or 'no avx512/amx'}"


class Turns:
    """Each user's turn, timed phase by phase, by wrapping what `lampbox train oppu` calls."""

    def __init__(self, mmap_threshold: int | None = None) -> None:
        self.mmap_threshold = mmap_threshold  # glibc's for the users' steps (None: AdapterTrainer's own)
        self.users: list[dict[str, Any]] = []
        self.once: dict[str, float] = {}
        self.current: dict[str, Any] = {}

    def add(self, phase: str, seconds: float) -> None:
        self.current[phase] = self.current.get(phase, 0.0) + seconds

    @contextlib.contextmanager
    def wrapped(self) -> Iterator[None]:
        import lampbox.engine.training.oppu as engine_oppu
        import lampbox.lab.oppu as lab_oppu
        from lampbox.engine.training.adapters import AdapterTrainer
        from lampbox.engine.training.data import PadToLongest
        from lampbox.engine.training.prefix import SharedPrefixCollator
        from lampbox.engine.training.sft import SFTObjective

        turns = self
        timer = _step_timer(self)

        def timed(phase: str, function: Any) -> Any:
            def run(*args: Any, **kwargs: Any) -> Any:
                started = time.perf_counter()
                try:
                    return function(*args, **kwargs)
                finally:
                    turns.add(phase, time.perf_counter() - started)

            return run

        real_user, real_train, real_init, real_collate, real_shared = (
            lab_oppu._train_user, AdapterTrainer.train_adapter, AdapterTrainer.__init__, PadToLongest.__call__,
            SharedPrefixCollator.__call__,
        )  # fmt: skip

        def train_user(trainer: Any, spec: Any, store: Any, adapter_name: str, user: str, items: Any, *rest: Any) -> Any:
            turns.current = {"user": user, "items": len(items), "adapter": adapter_name, "steps": 0, "real tokens": 0, "padded tokens": 0}
            started, usage = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)
            artifact = real_user(trainer, spec, store, adapter_name, user, items, *rest)
            turns.current["wall"] = time.perf_counter() - started
            after = resource.getrusage(resource.RUSAGE_SELF)
            turns.current["cpu user s"] = after.ru_utime - usage.ru_utime
            turns.current["cpu sys s"] = after.ru_stime - usage.ru_stime
            turns.current["minor faults"] = after.ru_minflt - usage.ru_minflt
            turns.current["rss MB"] = rss_mb()
            turns.users.append(turns.current)
            done = turns.current
            print(f"user {len(turns.users)} {user} ({done['items']} items): {done['steps']} steps, {done['wall']:.2f} s, "
                  f"steps {done.get('steps s', 0.0):.2f} s, rss {done['rss MB']:.0f} MB", file=sys.stderr, flush=True)  # fmt: skip
            return artifact

        def train_adapter(self: Any, objective: Any, folder: Path, **kwargs: Any) -> Any:
            timer.began = time.perf_counter()
            kwargs["callbacks"] = [*kwargs.get("callbacks", ()), timer]
            return timed("train_adapter", real_train)(self, objective, folder, **kwargs)

        def init(self: Any, *args: Any, **kwargs: Any) -> None:
            started = time.perf_counter()
            real_init(self, *args, **kwargs)
            if turns.mmap_threshold is not None:
                self.mmap_threshold = turns.mmap_threshold
            turns.once["base load + task adapter merge"] = time.perf_counter() - started
            turns.once["rss after base load MB"] = rss_mb()

        def collate(self: Any, batch: Any) -> Any:
            padded = real_collate(self, batch)
            turns.current["real tokens"] = turns.current.get("real tokens", 0) + int(padded["attention_mask"].sum())
            turns.current["padded tokens"] = turns.current.get("padded tokens", 0) + padded["input_ids"].numel()
            turns.current["batches"] = turns.current.get("batches", 0) + 1
            return padded

        def collate_shared(self: Any, batch: Any) -> Any:  # the tails count above, the prefix once here
            padded = real_shared(self, batch)
            if "prefix_ids" in padded:
                prefix = padded["prefix_ids"].numel()
                for count in ("real tokens", "padded tokens", "shared prefix tokens"):
                    turns.current[count] = turns.current.get(count, 0) + prefix
            return padded

        patches = [
            (lab_oppu, "_train_user", train_user),
            (lab_oppu, "_write_folder", timed("install + register", lab_oppu._write_folder)),
            (engine_oppu, "user_objective", timed("examples", engine_oppu.user_objective)),
            (AdapterTrainer, "train_adapter", train_adapter),
            (AdapterTrainer, "__init__", init),
            (AdapterTrainer, "_fresh_adapter", timed("add LoRA", AdapterTrainer._fresh_adapter)),
            (AdapterTrainer, "_remove_adapter", timed("remove LoRA", AdapterTrainer._remove_adapter)),
            (SFTObjective, "save", timed("save", SFTObjective.save)),
            (PadToLongest, "__call__", collate),
            (SharedPrefixCollator, "__call__", collate_shared),
        ]
        saved = [(owner, name, owner.__dict__[name]) for owner, name, _ in patches]
        try:
            for owner, name, replacement in patches:
                setattr(owner, name, replacement)
            yield
        finally:
            for owner, name, original in saved:
                setattr(owner, name, original)

    def phases(self, user: dict[str, Any]) -> dict[str, float]:
        """One user's wall time split into phases (they add up to it, `other` the remainder)."""
        setup = user.get("first step at", 0.0) - user.get("add LoRA", 0.0)
        loop = user.get("loop s", 0.0) - user.get("steps s", 0.0)
        inside = user.get("train_adapter", 0.0)
        end = inside - user.get("first step at", 0.0) - user.get("loop s", 0.0) - user.get("save", 0.0) - user.get("remove LoRA", 0.0)
        parts = {
            "examples": user.get("examples", 0.0), "add LoRA": user.get("add LoRA", 0.0), "trainer setup": setup,
            "steps": user.get("steps s", 0.0), "between steps": loop, "trainer end": end, "save": user.get("save", 0.0),
            "remove LoRA": user.get("remove LoRA", 0.0), "install + register": user.get("install + register", 0.0),
        }  # fmt: skip
        parts["other"] = user["wall"] - sum(parts.values())
        return parts


def _step_timer(turns: Turns) -> Any:
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        began = 0.0  # train_adapter's start, set by its wrapper

        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.loop_began = time.perf_counter()
            turns.current["first step at"] = self.loop_began - self.began

        def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.step_began = time.perf_counter()

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            turns.current["steps s"] = turns.current.get("steps s", 0.0) + time.perf_counter() - self.step_began
            turns.current["steps"] = turns.current.get("steps", 0) + 1

        def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            turns.current["loop s"] = time.perf_counter() - self.loop_began

    return StepTimer()


def oppu_command(args: Any, db: Path, data_task: str, name: str) -> list[str]:
    """`lampbox train oppu` as the bench runs it (its --json summary read back)."""
    command = [
        "train", "oppu", "--db", str(db), "--task", data_task, "--dev-split", args.split,
        *([arg for user in args.user for arg in ("--user", user)] if args.user else ["--users", str(args.users)]),
        "--name", name, "--precision", args.precision, "--batch-size", str(args.batch_size),
        "--user-epochs", str(args.user_epochs), "--json",
    ]  # fmt: skip
    if args.model:
        command += ["--model", args.model]
    if args.threads:
        command += ["--threads", str(args.threads)]
    if args.user_max_steps:
        command += ["--user-max-steps", str(args.user_max_steps)]
    if args.no_share_prefix:
        command += ["--no-share-prefix"]
    if args.attention:
        command += ["--attention", args.attention]
    if args.no_bf16_base:
        command.append("--no-bf16-base")
    if args.min_profile is not None:
        command += ["--min-profile", str(args.min_profile)]
    if args.task_adapter:
        command += ["--task-adapter", args.task_adapter.name]
    else:  # a tiny task adapter trained first by the same job: merged once, its quality costs nothing per user
        command += ["--max-steps", str(args.task_steps), "--limit", str(4 * args.task_steps), "--dev-limit", "0", "--k", "0"]
    return command


def run_training(args: Any) -> dict[str, Any]:
    """Train --users adapters on a private home; print the figures and return them."""
    import tempfile

    work = Path(args.work or tempfile.mkdtemp(prefix="bench-oppu-train-"))
    if not args.work:  # a scratch folder of its own (about 0.5 GB): gone when the process ends
        atexit.register(shutil.rmtree, work, True)
    home = work / "home"
    for old in (home / "models", home / "lampbox.duckdb"):  # a re-run in the same --work keeps only the cache
        shutil.rmtree(old, ignore_errors=True) if old.is_dir() else old.unlink(missing_ok=True)
    os.environ["LAMPBOX_HOME"] = str(home)
    os.environ.pop("LAMPBOX_DB", None)
    data = args.data.resolve()
    if args.users > split_users(data, args.split):
        data = repeated_users(data, args.split, args.users, work / f"data-{args.users}" / data.name)
        print(f"{args.split} has {split_users(args.data, args.split)} users: repeated under new ids up to {args.users}")
    from lampbox.cli import cli
    from lampbox.engine.training.memory import ADAPTER_MMAP_THRESHOLD_BYTES

    threshold = args.mmap_threshold if args.mmap_threshold is not None else ADAPTER_MMAP_THRESHOLD_BYTES
    print(f"glibc mmap threshold during the users' steps: {threshold} bytes")
    from lampbox.store import Store
    from lampbox.store.importer import import_path

    db = home / "lampbox.duckdb"
    home.mkdir(parents=True, exist_ok=True)
    with Store(db) as store:
        task = import_path(store, data, allow_empty_profiles=True).task  # such users are skipped, and named
    if args.task_adapter:
        folder = home / "models" / args.task_adapter.name
        if not folder.exists():
            shutil.copytree(args.task_adapter, folder)
    name = f"bench-{args.users}"
    command = oppu_command(args, db, task, name)
    print(f"before: {machine_state()}")
    print("lampbox " + " ".join(command))
    turns = Turns(threshold)
    started = time.perf_counter()
    out = io.StringIO()
    with turns.wrapped(), contextlib.redirect_stdout(out):
        cli.main(command, prog_name="lampbox", standalone_mode=False)
    total = time.perf_counter() - started
    summary = json.loads(out.getvalue())
    print(f"after:  {machine_state()}")
    figures = report(turns, summary, total, home)
    return figures


def report(turns: Turns, summary: dict[str, Any], total: float, home: Path) -> dict[str, Any]:
    users = turns.users
    if not users:
        print(f"no user trained ({summary})")
        return {"users": 0}
    walls = [u["wall"] for u in users]
    median = statistics.median
    five = min(5, len(users))
    steps = [u["steps"] for u in users]
    per_step = [u["steps s"] / u["steps"] for u in users if u["steps"]]
    sizes = [folder_mb(home / "models" / u["adapter"] / "adapter") for u in users]
    phases = [turns.phases(u) for u in users]
    rest = phases[1:] or phases  # the first user also pays first-use costs
    fixed = [u["wall"] - u.get("steps s", 0.0) for u in users]
    figures = {
        "users": len(users), "median s": median(walls), "mean s": statistics.fmean(walls),
        "first 5 mean s": statistics.fmean(walls[:five]), "last 5 mean s": statistics.fmean(walls[-five:]),
        "median fixed s": median(fixed), "median steps": median(steps), "median s per step": median(per_step) if per_step else 0.0,
        "real tokens per step": sum(u["real tokens"] for u in users) / max(sum(u.get("batches", 0) for u in users), 1),
        "padded tokens per step": sum(u["padded tokens"] for u in users) / max(sum(u.get("batches", 0) for u in users), 1),
        "shared prefix tokens per step": sum(u.get("shared prefix tokens", 0) for u in users) / max(sum(u.get("batches", 0) for u in users), 1),
        "median items": median(u["items"] for u in users), "adapter MB": max(sizes),
        "cpu user s": median(u["cpu user s"] for u in users), "cpu sys s": median(u["cpu sys s"] for u in users),
        "minor faults": median(u["minor faults"] for u in users), "rss first MB": users[0]["rss MB"],
        "peak rss MB": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "rss last MB": users[-1]["rss MB"], "phases": {k: median(p[k] for p in rest) for k in rest[0]},
        **turns.once,
    }  # fmt: skip
    print(f"{len(users)} users trained in {total:.1f} s (task adapter and base load included); task adapter {summary['task_adapter']}")
    print(f"once: base load + task adapter merge {turns.once.get('base load + task adapter merge', 0):.2f} s, "
          f"rss after it {turns.once.get('rss after base load MB', 0):.0f} MB")  # fmt: skip
    print(f"per user: median {figures['median s']:.2f} s, mean {figures['mean s']:.2f} s; first {five} mean "
          f"{figures['first 5 mean s']:.2f} s, last {five} mean {figures['last 5 mean s']:.2f} s")  # fmt: skip
    print(f"profile items per user: median {figures['median items']:g} (min {min(u['items'] for u in users)}, max {max(u['items'] for u in users)})")
    print(f"steps per user: median {figures['median steps']:g}; {figures['median s per step']:.3f} s per step (median); "
          f"tokens per step {figures['real tokens per step']:.0f} real, {figures['padded tokens per step']:.0f} with padding "
          f"(computed; the shared prefix {figures['shared prefix tokens per step']:.0f} of them, once per batch)")  # fmt: skip
    print(f"fixed cost per user (wall - steps): median {figures['median fixed s']:.2f} s (first user {fixed[0]:.2f} s); "
          f"median split over users after the first:")  # fmt: skip
    print("  " + ", ".join(f"{k} {v:.3f}" for k, v in figures["phases"].items()) + " (s)")
    print(f"cpu time per user (median): user {figures['cpu user s']:.2f} s, system {figures['cpu sys s']:.2f} s "
          f"({figures['minor faults']:.0f} minor page faults)")  # fmt: skip
    print(f"adapter on disk: {figures['adapter MB']:.2f} MB (largest adapter/ folder)")
    print(f"rss after the first user {figures['rss first MB']:.0f} MB, after the last {figures['rss last MB']:.0f} MB; "
          f"the process's peak {figures['peak rss MB']:.0f} MB")  # fmt: skip
    return figures
