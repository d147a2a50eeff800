"""Many adapters on one loaded base: the fixed cost per adapter beyond its training steps.

    .venv/bin/python benchmarks/bench_adapters.py [--users 6] [--steps 4] [--threads 2]
        [--precision auto] [--one-shot 2]

SmolLM2-135M-Instruct (the packaged GGUF, converted once to an HF folder in the lampbox
cache), each LaMP_7 demo user's tweets as that user's examples (plain language modelling of
each tweet, the task's profile pairs), LoRA r8 q/k/v/o, batch 4, no checkpoints, no dev evaluation.
`AdapterTrainer` loads the base once, then trains one adapter per user. For each adapter:
the wall time of `train_adapter` (adapter added, Trainer made, steps, adapter saved and
removed) and the time inside its optimizer steps (on_step_begin -> on_step_end: forward,
backward, optimizer); the difference is the fixed cost per adapter. For comparison, the same
users through the one-shot path (`train(SFTObjective)` + save), which loads the base each time.
Prints one table; the first adapter of each path is listed apart (warm-up: first-use imports,
allocator growth).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any


def user_examples(tokenizer: Any) -> dict[str, list[Any]]:
    """Each demo user's tweets (profile items) as LaMP_7's training pairs (plain language
    modelling of each tweet: TaskSpec.profile_pair)."""
    from lampbox.demo import demo_path
    from lampbox.engine.tasks import builtin_task
    from lampbox.engine.training.data import encode_profile_examples
    from lampbox.engine.types import ProfileItem

    items: dict[str, dict[str, ProfileItem]] = defaultdict(dict)
    for question in json.loads((demo_path() / "train_questions.json").read_text()):
        for item in question["profile"]:
            items[question["user_id"]][item["id"]] = ProfileItem(item["id"], item["id"], {"text": item["text"]})
    task = builtin_task("LaMP_7")
    return {
        user: encode_profile_examples(tokenizer, True, task, list(profile.values()))
        for user, profile in sorted(items.items())
    }


def step_timer() -> Any:
    """A TrainerCallback that adds up the time inside optimizer steps."""
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        def __init__(self) -> None:
            self.seconds = 0.0
            self.began = 0.0

        def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.began = time.perf_counter()

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.seconds += time.perf_counter() - self.began

    return StepTimer()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=6)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--one-shot", type=int, default=2, help="users through the one-shot path (0: none)")
    args = parser.parse_args()
    import os

    os.environ["LAMPBOX_THREADS"] = str(args.threads)
    from lampbox.engine.generation.hf import _local_folder, load_hf_tokenizer
    from lampbox.engine.tasks import builtin_task
    from lampbox.engine.training.adapters import AdapterTrainer
    from lampbox.engine.training.sft import SFTObjective
    from lampbox.engine.training.trainer import LoraSettings, TrainConfig, train
    from lampbox.models import resolve_model

    resolved = resolve_model("smollm2-135m-instruct")
    source = _local_folder(resolved)
    tokenizer = load_hf_tokenizer(resolved).hf_tokenizer
    users = list(user_examples(tokenizer).items())[: args.users]
    task = builtin_task("LaMP_7")
    config = TrainConfig(
        max_steps=args.steps, batch_size=4, lr=2e-4, lora=LoraSettings(), precision=args.precision, checkpoints=False
    )
    rows: list[tuple[str, str, float, float]] = []  # path, user, wall, steps
    with tempfile.TemporaryDirectory(prefix="lampbox-bench-adapters-") as work:
        started = time.perf_counter()
        trainer = AdapterTrainer(source, config)
        load = time.perf_counter() - started
        for user, examples in users:
            timer = step_timer()
            began = time.perf_counter()
            result = trainer.train_adapter(
                SFTObjective(source, tokenizer, task, examples), Path(work) / "shared" / user, callbacks=[timer]
            )
            rows.append(("one base", user, time.perf_counter() - began, timer.seconds))
            assert result.steps == args.steps
        for user, examples in users[: args.one_shot]:
            timer = step_timer()
            began = time.perf_counter()
            objective = SFTObjective(source, tokenizer, task, examples)
            model, result = train(objective, config, Path(work) / "one-shot-work", callbacks=[timer])
            (Path(work) / "one-shot" / user).mkdir(parents=True)
            objective.save(model, Path(work) / "one-shot" / user)
            rows.append(("one-shot", user, time.perf_counter() - began, timer.seconds))
            del model
    print(f"SmolLM2-135M-Instruct, LoRA r8 q/k/v/o, batch 4, {args.steps} steps per adapter, {args.threads} threads, "
          f"precision {args.precision}; base loaded once in {load:.2f} s")  # fmt: skip
    print(f"{'path':9} {'user':10} {'examples':>8} {'wall s':>7} {'steps s':>8} {'fixed s':>8}")
    counts = dict((user, len(examples)) for user, examples in users)
    for path, user, wall, steps in rows:
        print(f"{path:9} {user:10} {counts[user]:8} {wall:7.2f} {steps:8.2f} {wall - steps:8.2f}")
    for path in ("one base", "one-shot"):
        fixed = [wall - steps for p, _, wall, steps in rows if p == path]
        if len(fixed) > 1:
            print(f"{path}: fixed cost per adapter after the first: median {statistics.median(fixed[1:]):.2f} s "
                  f"(first {fixed[0]:.2f} s, all {', '.join(f'{f:.2f}' for f in fixed)})")  # fmt: skip


if __name__ == "__main__":
    main()
