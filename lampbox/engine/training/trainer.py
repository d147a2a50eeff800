"""The training core: transformers' Trainer driven by a TrainingObjective (objective.py).

An objective says what is trained (model, data, loss, dev evaluation, save); the core holds
no method's branch. The Trainer brings gradient accumulation, length-grouped batches, seeds,
checkpoints, resume and torchrun (DDP) support; lampbox adds what it lacks:
- dev evaluation by the objective (generating on dev and scoring with the task's official
  metric, or a metric of its own; Trainer's own evaluation only knows the loss), which also
  picks the best checkpoint;
- checkpoints that count only once complete: a marker file is written after Trainer has
  written everything, and resume takes the newest checkpoint with the marker (a kill -9 in
  the middle of a save leaves a folder that is ignored and removed);
- progress events (step, loss, dev metric, ETA) instead of tqdm bars.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lampbox.engine.training.data import DevExample
from lampbox.engine.training.objective import TrainContext, TrainingObjective
from lampbox.errors import LampboxError

COMPLETE_MARKER = "lampbox-complete"
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
PRECISIONS = ("auto", "bf16", "fp32")


@dataclass(frozen=True)
class LoraSettings:
    r: int = 8
    alpha: int = 16
    dropout: float = 0.05
    targets: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")


@dataclass(frozen=True)
class TrainConfig:
    """How to train (everything that changes the result is here, and in the artifact's spec)."""

    epochs: float = 1.0
    lr: float = 2e-4
    weight_decay: float = 1e-4
    warmup_ratio: float = 0.05
    batch_size: int = 4
    grad_accum: int = 1
    seed: int = 0
    precision: str = "auto"  # auto | bf16 | fp32
    lora: LoraSettings | None = field(default_factory=LoraSettings)  # None: full fine-tuning
    eval_new_tokens: int = 32
    eval_batch_size: int = 8
    eval_every: int | None = None  # steps between dev evaluations (None: once per epoch)
    max_steps: int | None = None  # stop early (tests, quick checks)
    group_by_length: bool = True
    pad_to: int | None = None  # pad every batch to this length (the reference's way; None: to the longest)
    tail_logits: bool = True  # logits only where there are labels (when the model supports logits_to_keep)
    bf16_base: bool = False  # LoRA in bf16: hold the frozen base weights in bf16 too (the adapter stays fp32)
    cheap_dropout: bool = True  # on the CPU, LoRA dropout masks from numpy's PCG64 (training/dropout.py)
    frozen_bf16: bool = True  # LoRA under bf16 autocast: frozen linears held in bf16, the same matmuls (training/frozen.py)
    save_total_limit: int = 2
    checkpoints: bool = True  # False: none written and none resumed (small jobs, e.g. one adapter per user)
    cross_attention_lr: float | None = None  # an encoder-decoder objective: the cross-attention (and other new weights) at this rate
    freeze_encoder: bool = False  # an encoder-decoder objective: the encoder stays as loaded, its outputs computed once
    share_prefix: bool = False  # a causal LM's batch: the prompt prefix all its rows share computed once (training/prefix.py; not under DDP)
    attention: str | None = None  # transformers' attention implementation (eager, sdpa; None: its default)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        # defaults of settings added later are left out: specs stored before them stay the same
        for name, default in (
            ("checkpoints", True), ("cross_attention_lr", None), ("freeze_encoder", False), ("share_prefix", False),
            ("attention", None),
        ):
            if data[name] == default:
                del data[name]
        if self.lora is not None:
            data["lora"]["targets"] = list(self.lora.targets)
        return data


@dataclass(frozen=True)
class TrainProgress:
    """A progress report: a logged step (loss) or a dev evaluation (metrics)."""

    step: int
    max_steps: int
    epoch: float
    loss: float | None = None
    metrics: dict[str, float] | None = None
    seconds: float = 0.0

    @property
    def eta_seconds(self) -> float | None:
        if self.step <= 0 or self.max_steps <= 0:
            return None
        return self.seconds / self.step * (self.max_steps - self.step)


@dataclass
class TrainResult:
    history: list[dict[str, Any]]  # the Trainer's log history (loss, dev metrics per evaluation)
    best_metric: float | None
    best_step: int | None
    steps: int
    train_tokens: int  # tokens seen in training (padding excluded)
    seconds: float
    resumed_from: int | None  # the step a resumed run continued from

    def kept_metrics(self) -> dict[str, float]:
        """The dev metrics (without their eval_ prefix) of the model kept: the best dev
        checkpoint's, else the last evaluation's (no checkpoints); {} without dev evaluation."""
        evals = [entry for entry in self.history if any(key.startswith("eval_") for key in entry)]
        kept = next((e for e in evals if e.get("step") == self.best_step), evals[-1] if evals else {})
        return {k[5:]: v for k, v in kept.items() if k.startswith("eval_") and isinstance(v, (int, float))}


def resolve_precision(precision: str, device: str) -> str:
    """auto: bf16 on CUDA and on CPUs with AMX / AVX512-BF16, fp32 otherwise."""
    if precision not in PRECISIONS:
        raise LampboxError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    if precision != "auto":
        return precision
    if device.startswith("cuda"):
        return "bf16"
    from lampbox.engine.machine import this_machine

    return "bf16" if this_machine().cpu_bf16 else "fp32"


def complete_checkpoints(folder: Path) -> list[Path]:
    """Checkpoints written to the end, oldest first."""
    if not folder.is_dir():
        return []
    found = []
    for path in folder.iterdir():
        match = _CHECKPOINT.match(path.name)
        if match and (path / COMPLETE_MARKER).is_file():
            found.append((int(match.group(1)), path))
    return [path for _, path in sorted(found)]


def remove_incomplete_checkpoints(folder: Path) -> None:
    if not folder.is_dir():
        return
    for path in folder.iterdir():
        if _CHECKPOINT.match(path.name) and not (path / COMPLETE_MARKER).is_file():
            shutil.rmtree(path, ignore_errors=True)


def generate_dev(
    model: Any, tokenizer: Any, examples: Sequence[DevExample], new_tokens: int, batch_size: int, precision: str
) -> list[str]:
    """Greedy outputs of the model being trained for the dev prompts (left-padded batches)."""
    import torch

    from lampbox.engine.lm_head import canonical_head_input

    device = next(model.parameters()).device
    canonical_head_input(model)  # bfloat16's slow path for the last position's logits (lm_head.py)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    order = sorted(range(len(examples)), key=lambda index: -len(examples[index].prompt_ids))
    outputs: list[str] = [""] * len(examples)
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(order), batch_size):
            batch = order[start : start + batch_size]
            width = max(len(examples[index].prompt_ids) for index in batch)
            ids = torch.full((len(batch), width), pad, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for row, index in enumerate(batch):
                prompt = examples[index].prompt_ids
                ids[row, width - len(prompt) :] = torch.tensor(prompt, dtype=torch.long)
                mask[row, width - len(prompt) :] = 1
            autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")
            with torch.inference_mode(), autocast:
                generated = model.generate(
                    input_ids=ids.to(device), attention_mask=mask.to(device), max_new_tokens=new_tokens,
                    do_sample=False, pad_token_id=pad,
                )  # fmt: skip
            for row, index in enumerate(batch):
                tokens = generated[row, width:].tolist()
                outputs[index] = tokenizer.decode(tokens, skip_special_tokens=True)
    finally:
        if was_training:
            model.train()
    return outputs


def train(
    objective: TrainingObjective,
    config: TrainConfig,
    work_dir: Path,
    *,
    on_progress: Callable[[TrainProgress], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    callbacks: Sequence[Any] = (),
    alone: bool = False,
    threads: int | None = None,
    mmap_threshold: int | None = None,
) -> tuple[Any, TrainResult]:
    """Train what `objective` describes. Returns the trained model (the best dev checkpoint
    loaded when the objective evaluates on dev and checkpoints are on) and the result.
    Checkpoints go to work_dir/checkpoints; a run that finds complete checkpoints there
    continues from the newest (config.checkpoints=False: none written, none resumed).
    `callbacks`: more TrainerCallbacks (e.g. a benchmark's timings). `threads`: torch's CPU
    threads (None: $LAMPBOX_THREADS, else every usable core); they never change the result.
    Under torchrun every rank trains one model together (DDP) unless `alone`: then this
    process trains on its own data as if it were the only one (OPPU: each rank its own users),
    on its own GPU. `mmap_threshold`: glibc's for the steps (None: memory.MMAP_THRESHOLD_BYTES)."""
    if alone and int(os.environ.get("WORLD_SIZE", "1") or 1) > 1:
        with _one_process():
            return train(
                objective, config, work_dir, on_progress=on_progress, should_stop=should_stop,
                callbacks=callbacks, threads=threads, mmap_threshold=mmap_threshold,
            )  # fmt: skip
    if config.share_prefix and int(os.environ.get("WORLD_SIZE", "1") or 1) > 1:
        raise LampboxError("a shared prompt prefix takes two forward passes per step, which DDP does not allow: train alone")
    import torch

    from lampbox.engine.quiet import quiet_training
    from lampbox.engine.training.memory import MMAP_THRESHOLD_BYTES, hand_back_freed_memory

    quiet_training()
    hand_back_freed_memory(mmap_threshold or MMAP_THRESHOLD_BYTES)  # each step's activations go back to the system when freed (memory.py)
    dataset = objective.train_dataset()
    if len(dataset) == 0:
        raise LampboxError("nothing to train on: the objective has no training example")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":  # torch's own default is every core, shared machine or not
        from lampbox.engine.machine import default_threads

        torch.set_num_threads(threads or default_threads(spare_on_small=False))  # every usable core unless told
    context = TrainContext(config, device, resolve_precision(config.precision, device))
    if not config.checkpoints:  # the Trainer still wants an output folder: a scratch one
        with tempfile.TemporaryDirectory(prefix="lampbox-train-") as scratch:
            return _train(objective, context, dataset, Path(scratch), [], on_progress, should_stop, callbacks)
    checkpoints = work_dir / "checkpoints"
    remove_incomplete_checkpoints(checkpoints)
    resume = complete_checkpoints(checkpoints)
    return _train(objective, context, dataset, checkpoints, resume, on_progress, should_stop, callbacks)


def _train(
    objective: TrainingObjective,
    context: TrainContext,
    dataset: Any,
    checkpoints: Path,
    resume: list[Path],
    on_progress: Callable[[TrainProgress], None] | None,
    should_stop: Callable[[], bool] | None,
    callbacks: Sequence[Any],
) -> tuple[Any, TrainResult]:
    from transformers import TrainingArguments, set_seed
    from transformers.trainer_callback import PrinterCallback

    from lampbox.engine.training.lora import speed_up_frozen

    config = context.config
    set_seed(config.seed)  # before the model: LoRA's random A matrices come from this seed too
    model = objective.load_model(context)
    speed_up_frozen(model, context)
    dev = objective.dev_metric
    strategy = "steps" if config.eval_every else "epoch"
    args = TrainingArguments(
        output_dir=str(checkpoints),
        num_train_epochs=config.epochs,
        max_steps=config.max_steps or -1,
        learning_rate=config.lr,
        weight_decay=config.weight_decay,
        warmup_steps=config.warmup_ratio,  # a float below 1 is a ratio of the total steps
        per_device_train_batch_size=config.batch_size,
        gradient_accumulation_steps=config.grad_accum,
        seed=config.seed,
        data_seed=config.seed,
        bf16=context.precision == "bf16",
        use_cpu=context.device == "cpu",
        train_sampling_strategy="group_by_length" if config.group_by_length else "random",
        eval_strategy=strategy if dev else "no",
        save_strategy=strategy if config.checkpoints else "no",
        eval_steps=config.eval_every,
        save_steps=config.eval_every or 500,  # used only with eval_every (save_strategy "steps")
        save_total_limit=config.save_total_limit,
        load_best_model_at_end=dev is not None and config.checkpoints,
        metric_for_best_model=dev.name if dev else None,
        greater_is_better=dev.higher_is_better if dev else None,
        logging_steps=1,
        report_to=[],
        disable_tqdm=True,
        remove_unused_columns=False,
        dataloader_num_workers=0,
        ddp_find_unused_parameters=bool(getattr(objective, "unused_parameters", False)),
    )
    _pin_alone_device(args)
    started = time.perf_counter()
    trainer = _objective_trainer_class()(
        objective=objective,
        context=context,
        model=model,
        args=args,
        train_dataset=dataset,
        eval_dataset=[0] if dev else None,  # a placeholder: the objective evaluates (evaluate())
        data_collator=objective.collator(model, context),
        callbacks=[_progress_callback_class()(on_progress, should_stop, started), *callbacks],
    )
    trainer.remove_callback(PrinterCallback)  # progress goes through on_progress instead
    if objective.loss_counts_tokens:
        trainer.model_accepts_loss_kwargs = True  # the objective's loss takes the step's target-token count
    resumed_from = int(resume[-1].name.split("-")[-1]) if resume else None
    try:
        trainer.train(resume_from_checkpoint=str(resume[-1]) if resume else None)
    finally:
        _unwrap_forward(model)
    state = trainer.state
    best_step = None
    if state.best_model_checkpoint:
        best_step = int(Path(state.best_model_checkpoint).name.split("-")[-1])
    world = int(os.environ.get("WORLD_SIZE", "1"))
    trained_steps = state.global_step - (resumed_from or 0)
    tokens = int(trained_steps * config.batch_size * config.grad_accum * world * objective.mean_example_tokens())
    result = TrainResult(
        history=list(state.log_history),
        best_metric=state.best_metric,
        best_step=best_step,
        steps=state.global_step,
        train_tokens=tokens,
        seconds=time.perf_counter() - started,
        resumed_from=resumed_from,
    )
    return trainer.model, result


_RANK_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK", "ROLE_RANK")


@contextlib.contextmanager
def _one_process() -> Iterator[None]:
    """torchrun's rank variables hidden while the block runs: the Trainer (through
    accelerate, which reads them) trains without DDP, on this rank's data alone. On CUDA
    this rank's GPU (LOCAL_RANK, modulo the GPUs it sees) is made the current device, which
    the Trainer then uses as "cuda" (_train pins it there rather than on GPU 0)."""
    saved = {name: os.environ.pop(name) for name in _RANK_VARIABLES if name in os.environ}
    os.environ["LAMPBOX_LOCAL_RANK"] = saved.get("LOCAL_RANK", "0")
    try:
        yield
    finally:
        os.environ.pop("LAMPBOX_LOCAL_RANK", None)
        os.environ.update(saved)


def _pin_alone_device(args: Any) -> None:
    """A rank training alone on CUDA: its own GPU (not GPU 0, no DataParallel over them all)."""
    import torch

    local = os.environ.get("LAMPBOX_LOCAL_RANK")
    if local is None or not torch.cuda.is_available():
        return
    device = torch.device("cuda", int(local) % torch.cuda.device_count())
    torch.cuda.set_device(device)
    args.__dict__["_setup_devices"] = device  # TrainingArguments.device's cached value
    args._n_gpu = 1


def _unwrap_forward(model: Any) -> None:
    """Undo what accelerate leaves on a prepared model: the autocast wrapper of its forward
    (mixed precision) and the mark that it was prepared. A model trained again (one adapter
    after another) is then prepared afresh, with one wrapper, as the first time."""
    model.__dict__.pop("_is_accelerate_prepared", None)
    original = model.__dict__.pop("_original_forward", None)
    if original is None:
        return
    own = getattr(original, "__self__", None) is model and getattr(original, "__func__", None) is getattr(type(model), "forward", None)
    if own:
        model.__dict__.pop("forward", None)  # the class's own forward again
    else:
        model.forward = original


@functools.cache
def _progress_callback_class() -> type:
    """A TrainerCallback that reports progress events and stops when asked (made on first
    use: transformers loads only when training starts)."""
    from transformers import TrainerCallback

    class Progress(TrainerCallback):
        def __init__(
            self,
            on_progress: Callable[[TrainProgress], None] | None,
            should_stop: Callable[[], bool] | None,
            started: float,
        ) -> None:
            self.on_progress = on_progress
            self.should_stop = should_stop
            self.started = started

        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any) -> None:
            if self.on_progress and logs is not None and state.is_world_process_zero:
                metrics = {k[5:]: v for k, v in logs.items() if k.startswith("eval_") and isinstance(v, float)}
                self.on_progress(
                    TrainProgress(
                        state.global_step, state.max_steps, float(state.epoch or 0.0), logs.get("loss"),
                        metrics or None, time.perf_counter() - self.started,
                    )
                )  # fmt: skip

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if self.should_stop and self.should_stop():
                control.should_training_stop = True

    return Progress


@functools.cache
def _objective_trainer_class() -> type:
    """transformers' Trainer with the objective's loss and dev evaluation, and checkpoints that
    count only once their completion marker is written."""
    from transformers import Trainer

    class ObjectiveTrainer(Trainer):
        objective: TrainingObjective
        context: TrainContext

        def __init__(self, *args: Any, objective: TrainingObjective, context: TrainContext, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.objective = objective
            self.context = context

        def compute_loss(self, model: Any, inputs: Any, return_outputs: bool = False, num_items_in_batch: Any = None) -> Any:
            loss = self.objective.loss(self.accelerator.unwrap_model(model), inputs, model, num_items_in_batch)
            if loss is None:
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            # Divided by the target tokens of the whole optimizer step (all ranks, all
            # accumulated batches), like transformers' own losses; DDP averages over ranks.
            if num_items_in_batch is not None and self.objective.loss_counts_tokens and self.args.average_tokens_across_devices:
                loss = loss * self.accelerator.num_processes
            return (loss, None) if return_outputs else loss

        def create_optimizer(self, model: Any = None) -> Any:
            """Trainer's optimizer, with the parameters the objective gives a learning rate of
            their own (`learning_rates`, optional) moved into groups at that rate (same weight
            decay as before); the scheduler, made next, warms up and decays every group alike."""
            optimizer = super().create_optimizer(model)
            rates = getattr(self.objective, "learning_rates", None)
            wanted = rates(self.model, self.context) if rates is not None else {}
            if wanted:
                split_parameter_groups(optimizer, self.model, wanted)
            return optimizer

        def evaluate(self, eval_dataset: Any = None, ignore_keys: Any = None, metric_key_prefix: str = "eval") -> dict[str, float]:
            scores = self.objective.evaluate(self.model, self.context)
            metrics = {f"{metric_key_prefix}_{k}": float(v) for k, v in scores.items()}
            self.log(metrics)
            self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
            return metrics

        def _save_checkpoint(self, model: Any, trial: Any) -> None:
            super()._save_checkpoint(model, trial)
            folder = Path(self._get_output_dir(trial=trial)) / f"checkpoint-{self.state.global_step}"
            if self.args.should_save and folder.is_dir():
                marker = folder / COMPLETE_MARKER
                with marker.open("w") as handle:
                    handle.write(json.dumps({"step": self.state.global_step}))
                    handle.flush()
                    os.fsync(handle.fileno())

    return ObjectiveTrainer


def split_parameter_groups(optimizer: Any, model: Any, rates: dict[str, float]) -> None:
    """Move the named parameters of `rates` out of the optimizer's groups into groups of their
    own at the given learning rate, keeping every other setting of the group they came from
    (weight decay). Call before any step and before the scheduler is made."""
    by_id = {id(p): name for name, p in model.named_parameters()}
    moved: list[dict[str, Any]] = []
    for group in list(optimizer.param_groups):
        keep = [p for p in group["params"] if by_id.get(id(p)) not in rates]
        taken = [p for p in group["params"] if by_id.get(id(p)) in rates]
        group["params"] = keep
        for rate in sorted({rates[by_id[id(p)]] for p in taken}):
            settings = {k: v for k, v in group.items() if k != "params"}
            moved.append({**settings, "lr": rate, "params": [p for p in taken if rates[by_id[id(p)]] == rate]})
    optimizer.param_groups[:] = [g for g in optimizer.param_groups if g["params"]]
    for group in moved:
        optimizer.add_param_group(group)


def is_main_process() -> bool:
    """Rank 0 under torchrun (or the only process): the one that writes files and the store."""
    return int(os.environ.get("RANK", "0")) == 0
