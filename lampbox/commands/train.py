"""`lampbox train`: fine-tune a model on a task's questions with retrieval in its prompts."""

from __future__ import annotations

import dataclasses
import os
import sys
from pathlib import Path
from typing import Any

import click

from lampbox.commands.common import (
    db_option,
    json_option,
    open_store,
    print_json,
    reports_errors,
    writer_wait_s,
)
from lampbox.engine.defaults import DEFAULT_MAX_LENGTH, HF_DTYPES


@click.group("train")
def train() -> None:
    """Train models; a trained model is then usable by name wherever a model is.

    \b
    lampbox train ipa --task commit_subject --retriever bm25 --k 4 --name subject-bm25-k4
    lampbox bench --task commit_subject --backend hf --model subject-bm25-k4 --retrievers bm25 --k 4
    lampbox models list

    Run the same command again after an interruption: training continues from its last
    complete checkpoint. Under `torchrun --nproc-per-node N -m lampbox train ...` it trains on N
    processes (DDP; `train oppu` deals its users out instead); only rank 0 reads and writes the
    store and prints the summary.
    """
    from lampbox.engine.training.memory import hand_back_freed_memory

    hand_back_freed_memory()  # from the start: preparing the examples leaves no heap behind either


def _step_logger(quiet: bool, every: int = 10, eta: bool = True) -> Any:
    """on_progress for a training job: its dev metrics when it evaluates, else its loss every
    `every` steps and at the last one (with the ETA), one line each on stderr."""

    def log(event: Any) -> None:
        if quiet:
            return
        if event.metrics:
            shown = ", ".join(f"{k} {v:.4f}" for k, v in event.metrics.items())
            print(f"step {event.step}/{event.max_steps} dev: {shown}", file=sys.stderr, flush=True)
        elif event.loss is not None and (event.step % every == 0 or event.step == event.max_steps):
            left = event.eta_seconds if eta else None
            print(
                f"step {event.step}/{event.max_steps} loss {event.loss:.4f}" + (f" eta {left:.0f}s" if left is not None else ""),
                file=sys.stderr, flush=True,
            )  # fmt: skip

    return log


def _rank0_store(db_path: Path | None, purpose: str) -> Any:
    """The store, opened by rank 0 alone (the only process, or rank 0 under torchrun: the other
    ranks get what it prepares and None here). It is given back while the job trains."""
    from lampbox.engine.training.trainer import is_main_process

    return open_store(db_path, hold_lock=False, wait_s=writer_wait_s(), purpose=purpose) if is_main_process() else None


def _report_trained(artifact: Any, result: Any, summary: dict[str, Any], as_json: bool, what: str, use: str) -> None:
    """The end of a training command: its summary as JSON, or the dev metrics and how to use it."""
    if as_json:
        print_json(summary)
        return
    metrics = ", ".join(f"{key} {value:.4f}" for key, value in artifact.metrics.items()) or "no dev evaluation"
    click.echo(f"trained {artifact.name} ({what}, {result.steps} steps, {result.seconds:.0f} s): dev {metrics}")
    click.echo(f"saved in {artifact.path}; {use}", err=True)


def _common_options(function: Any) -> Any:
    """The options every `lampbox train` method shares."""
    options = [
        click.option("--task", "task_name", required=True, help="Task, e.g. LaMP_7 or commit_subject."),
        click.option("--split", default="train", show_default=True, help="Split to train on."),
        click.option("--dev-split", default="dev", show_default=True, help="Split evaluated during training (best checkpoint kept)."),
        click.option("--scheme", default=None, help="LaMP split scheme (default: the one stored)."),
        click.option("--retriever", default="bm25", show_default=True, help="Retriever ('none' or --k 0: no retrieval, the control)."),
        click.option("--k", type=int, default=4, show_default=True, help="Retrieved profile items per question."),
        click.option("--epochs", type=float, default=1.0, show_default=True),
        click.option("--max-steps", type=int, default=None, help="Stop after this many optimizer steps (quick checks)."),
        click.option("--lr", type=float, default=None, help="Learning rate (default: 2e-4 for LoRA, 5e-5 otherwise)."),
        click.option("--batch-size", type=int, default=4, show_default=True),
        click.option("--grad-accum", type=int, default=1, show_default=True, help="Gradient accumulation steps."),
        click.option("--max-length", type=int, default=DEFAULT_MAX_LENGTH, show_default=True, help="Prompt (IPA) or passage (FiD) token budget."),
        click.option("--max-target-tokens", type=int, default=64, show_default=True, help="Gold tokens learned per example."),
        click.option("--precision", type=click.Choice(["auto", "bf16", "fp32"]), default="auto", show_default=True, help="auto: bf16 on CUDA and on CPUs with AMX or AVX512-BF16, fp32 otherwise."),
        click.option("--seed", type=int, default=0, show_default=True),
        click.option("--limit", type=int, default=None, help="Only the first N training questions."),
        click.option("--dev-limit", type=int, default=100, show_default=True, help="Dev questions scored at each evaluation (0: none)."),
        click.option("--eval-every", type=int, default=None, help="Steps between dev evaluations (default: each epoch)."),
        click.option("--group-by-length/--random-order", default=True, show_default=True, help="Batches of similar lengths (less padding) or plain shuffled order."),
        click.option("--name", required=True, help="Name of the trained model (use it with --model)."),
        click.option("--threads", type=int, default=None, help="CPU threads for torch (default: $LAMPBOX_THREADS, else every usable core; lower it when the machine is shared: threads waiting on a busy core stall each other)."),
        click.option("--overwrite", is_flag=True, help="Replace a trained model of the same name."),
        db_option,
        json_option,
        reports_errors,
    ]
    for option in reversed(options):
        function = option(function)
    return function


@train.command("ipa")
@click.option("--model", default=None, help="Base causal LM: manifest name, HF folder or hub id (default: the manifest's default).")
@click.option("--lora/--full", "use_lora", default=True, show_default=True, help="LoRA adapter (peft) or full fine-tuning.")
@click.option("--lora-r", type=int, default=8, show_default=True)
@click.option("--lora-alpha", type=int, default=16, show_default=True)
@click.option("--lora-dropout", type=float, default=0.05, show_default=True)
@click.option("--lora-targets", default="q_proj,k_proj,v_proj,o_proj", show_default=True, help="Comma-separated module names.")
@click.option("--profile-pairs", is_flag=True, help="Also train on the training users' profile items as questions of the task (each with --k of that user's earlier items retrieved): more data where a task has few questions.")
@_common_options
def train_ipa(
    model: str | None, use_lora: bool, lora_r: int, lora_alpha: int, lora_dropout: float, lora_targets: str,
    profile_pairs: bool, **options: Any,
) -> None:  # fmt: skip
    """Fine-tune a decoder-only model on IPA prompts (retrieved items in the prompt, the
    official token budget), loss on the gold only; the best dev checkpoint is kept.
    --k 0 trains the same model without retrieval (the paper's control). --profile-pairs adds
    each training user's profile items as questions (docs/oppu.md)."""
    from lampbox.engine.defaults import default_model
    from lampbox.lab.training import lora_settings

    lora = lora_settings(lora_r, lora_alpha, lora_dropout, lora_targets) if use_lora else None
    _train("ipa", model or default_model(), lora, profile_pairs=profile_pairs, **options)


@train.command("fid")
@click.option("--model", default=None, help="Encoder-decoder base: a T5 folder or hub id (default offline: minilm-bert2bert, warm-started from the packaged all-MiniLM-L6-v2; minilm-bert2bert-dN: a decoder of its first N layers; -sa suffix: cross-attention copied from self-attention).")
@click.option("--cross-attention-lr", type=float, default=None, help="Learning rate of the decoder's cross-attention and the other weights the warm start leaves random (minilm-bert2bert's output head); default: --lr.")
@click.option("--freeze-encoder", is_flag=True, help="Keep the encoder as loaded and train the decoder only: each passage is encoded once and its outputs kept for every epoch and dev evaluation (far less compute on a CPU).")
@_common_options
def train_fid(model: str | None, cross_attention_lr: float | None, freeze_encoder: bool, **options: Any) -> None:
    """Fusion-in-Decoder: each (input, retrieved item) pair encoded separately, the decoder
    attends over all of them; the whole encoder-decoder is fine-tuned (the decoder alone with
    --freeze-encoder). Run the result with `lampbox bench --method fid --backend fid --model NAME`.

    \b
    The recipe that learned on the offline base (docs/training.md, measured at k 2):
    lampbox train fid --task commit_area --model minilm-bert2bert-d2 --k 2 --max-length 128 --epochs 10 --lr 1e-4 --cross-attention-lr 1e-3 --freeze-encoder --name area-fid"""
    from lampbox.engine.training.fid import OFFLINE_BASE

    _train("fid", model or OFFLINE_BASE, None, cross_attention_lr=cross_attention_lr, freeze_encoder=freeze_encoder, **options)


@train.command("oppu")
@click.option("--model", default=None, help="Base causal LM (default: the manifest's default); the task adapter's base.")
@click.option("--task-adapter", default=None, help="An existing LoRA model trained on this task and base (default: train one on --split as `train ipa` does, named NAME.task).")
@click.option("--users", "user_count", type=int, default=None, help="Only the first N users of --dev-split (default: all).")
@click.option("--user", "user_ids", multiple=True, help="A user of --dev-split to train (repeatable).")
@click.option("--min-profile", type=int, default=None, metavar="N", help="Only users with at least N profile items (a user's smallest profile over their questions); --users N takes the first N of them, --user IDs below it are left out and named.")
@click.option("--user-epochs", type=float, default=2.0, show_default=True, help="Epochs over each user's profile items.")
@click.option("--user-max-steps", type=int, default=None, help="Stop each user after this many steps (quick checks).")
@click.option("--user-lr", type=float, default=1e-4, show_default=True)
@click.option("--user-targets", default="q_proj,v_proj", show_default=True, help="Modules of each user's LoRA.")
@click.option("--lora-r", type=int, default=8, show_default=True, help="LoRA rank (task and user adapters).")
@click.option("--lora-alpha", type=int, default=8, show_default=True)
@click.option("--lora-dropout", type=float, default=0.05, show_default=True)
@click.option("--lora-targets", default="q_proj,k_proj,v_proj", show_default=True, help="Modules of the task adapter's LoRA.")
@click.option("--profile-pairs", is_flag=True, help="Also train the task adapter on the training users' profile items as questions of the task (each with --k of that user's earlier items retrieved): more data where a task has few questions.")
@click.option("--share-prefix/--no-share-prefix", default=True, show_default=True, help="Each user's batch: compute the prompt prefix its profile pairs share (chat template, instruction) once, not once per pair: fewer tokens per step, the same loss up to rounding (LoRA dropout's mask on the prefix is one per batch). Part of the set's settings: add users to a set made before it with --no-share-prefix.")
@click.option("--attention", type=click.Choice(["auto", "eager", "sdpa"]), default="auto", show_default=True, help="The users' attention implementation: auto is eager on the CPU (faster for profile pairs of a few hundred tokens: no flash-attention backward), sdpa on CUDA. Part of the set's settings (sets made before it: --attention sdpa).")
@click.option("--bf16-base/--no-bf16-base", default=True, show_default=True, help="Under bf16 precision, hold the users' base (the task adapter merged in fp32 first) wholly in bf16, the residual stream and norms included; each user's adapter still trains in fp32. --no-bf16-base: only the frozen linear weights in bf16, the rest fp32 under autocast (slower: a median 8-10%% more time per user on an AMX CPU). Part of the set's settings (sets made before it: --no-bf16-base).")
@_common_options
def train_oppu(
    model: str | None, task_adapter: str | None, user_count: int | None, user_ids: tuple[str, ...], min_profile: int | None,
    user_epochs: float, user_max_steps: int | None, user_lr: float, user_targets: str, lora_r: int, lora_alpha: int,
    lora_dropout: float, lora_targets: str, profile_pairs: bool, share_prefix: bool, attention: str, bf16_base: bool,
    **options: Any,
) -> None:  # fmt: skip
    """OPPU: one LoRA adapter per user of --dev-split (the evaluated split), each trained on
    that user's own profile items only, on the base with the task adapter merged.

    \b
    lampbox train oppu --task LaMP_7 --users 100 --name lamp7-oppu
    lampbox bench --task LaMP_7 --method oppu --backend hf --model lamp7-oppu --retrievers none,bm25 --k 1

    Run it again after an interruption: users already trained are skipped. Under
    `torchrun --nproc-per-node N -m lampbox train oppu ...` each process trains its share of
    the users on its own base; rank 0 registers them all."""
    from lampbox.engine.defaults import default_model
    from lampbox.lab.training import lora_settings

    task_lora = lora_settings(lora_r, lora_alpha, lora_dropout, lora_targets)
    user_lora = lora_settings(lora_r, lora_alpha, lora_dropout, user_targets)
    _train_oppu(
        model or default_model(), task_adapter, user_count, tuple(user_ids), min_profile, user_epochs, user_max_steps,
        user_lr, task_lora, user_lora, profile_pairs, share_prefix, attention, bf16_base, **options,
    )  # fmt: skip


def _user_attention(choice: str) -> str | None:
    """--attention auto: eager on the CPU (a profile pair's few hundred tokens: SDPA's
    flash-attention backward cost a quarter of a user's step there), sdpa on CUDA. sdpa is
    transformers' own default: None, as in the settings of sets made before the option."""
    if choice == "auto":
        import torch

        choice = "sdpa" if torch.cuda.is_available() else "eager"
    return None if choice == "sdpa" else choice


def _train_oppu(
    model: str, task_adapter: str | None, user_count: int | None, user_ids: tuple[str, ...], min_profile: int | None,
    user_epochs: float, user_max_steps: int | None, user_lr: float, task_lora: Any, user_lora: Any, profile_pairs: bool,
    share_prefix: bool, attention: str, bf16_base: bool, task_name: str, split: str,
    dev_split: str, scheme: str | None, retriever: str, k: int, epochs: float, max_steps: int | None,
    lr: float | None, batch_size: int, grad_accum: int, max_length: int, max_target_tokens: int, precision: str,
    seed: int, limit: int | None, dev_limit: int, eval_every: int | None, group_by_length: bool, name: str,
    threads: int | None, overwrite: bool, db_path: Path | None, as_json: bool,
) -> None:  # fmt: skip
    from lampbox.engine.defaults import default_max_new_tokens
    from lampbox.engine.machine import check_threads
    from lampbox.engine.training.trainer import TrainConfig
    from lampbox.errors import LampboxError
    from lampbox.lab.oppu import OppuSpec, train_oppu
    from lampbox.lab.training import TrainSpec

    check_threads(threads)
    if user_count is not None and user_ids:
        raise LampboxError("give --users N or --user ID, not both")
    if min_profile is not None and min_profile < 0:
        raise LampboxError(f"--min-profile cannot be negative (got {min_profile})")
    store = _rank0_store(db_path, f"train oppu {name}")  # the other ranks get rank 0's spec and users
    main = store is not None
    task = store.task(task_name) if store is not None else None
    resolved_scheme = store.resolve_scheme(task.name, dev_split, scheme) if store is not None and task else (scheme or "user")
    user_config = TrainConfig(
        epochs=user_epochs, lr=user_lr, batch_size=batch_size, grad_accum=grad_accum, seed=seed,
        precision=precision, max_steps=user_max_steps, lora=user_lora, checkpoints=False,
        group_by_length=group_by_length, share_prefix=share_prefix, attention=_user_attention(attention),
        bf16_base=bf16_base,
    )  # fmt: skip
    task_spec = None
    if task_adapter is None:
        task_spec = TrainSpec.build(
            task=task.name if task is not None else task_name,
            scheme=store.resolve_scheme(task.name, split, scheme) if store is not None and task else resolved_scheme,
            method="ipa", split=split,
            dev_split=dev_split, retriever=retriever, k=k, model=model, max_length=max_length,
            max_target_tokens=max_target_tokens, limit=limit, dev_limit=dev_limit, profile_pairs=profile_pairs,
            config=dict(
                epochs=epochs, lr=lr, batch_size=batch_size, grad_accum=grad_accum, seed=seed, precision=precision,
                max_steps=max_steps, eval_every=eval_every, lora=task_lora, group_by_length=group_by_length,
                eval_new_tokens=default_max_new_tokens(task) if task is not None else 32,
            ),
        )  # fmt: skip
    elif profile_pairs:
        raise LampboxError("--profile-pairs trains the task adapter: it cannot apply to an existing --task-adapter")
    spec = OppuSpec(
        task=task.name if task is not None else task_name, scheme=resolved_scheme, model=model, config=user_config, split=dev_split,
        users=user_count, user_ids=user_ids, min_profile=min_profile, task_adapter=task_adapter, task_spec=task_spec,
    )  # fmt: skip
    quiet = as_json
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    rank = f"rank {os.environ.get('RANK', '0')}: " if world > 1 else ""  # each rank shows its own users

    def note(message: str) -> None:
        if not quiet:
            click.echo(message, err=True)

    def show_user(done: Any) -> None:
        if quiet:
            return
        what = {"trained": f"trained in {done.seconds:.1f} s", "existing": "trained before, skipped",
                "empty": "no profile items, skipped"}[done.status]  # fmt: skip
        eta = f", eta {done.eta_seconds:.0f} s" if done.eta_seconds is not None else ""
        click.echo(f"{rank}user {done.index}/{done.total} {done.user_id} ({done.items} items): {what}{eta}", err=True)

    result = train_oppu(
        spec, store, name, overwrite=overwrite, on_user=show_user, on_progress=_step_logger(quiet or not main),
        on_note=note if main else None, threads=threads,
    )  # fmt: skip
    if result is None:
        return  # another rank of a torchrun job: rank 0 registers and reports
    artifact = result.artifact
    seconds = sorted(result.seconds)
    median = seconds[len(seconds) // 2] if seconds else None
    summary = {
        "name": artifact.name, "path": artifact.path, "kind": artifact.kind, "task_adapter": result.task_adapter,
        "users": len(result.trained) + len(result.existing), "trained": result.trained,
        "existing": result.existing, "no_profile_items": result.empty, "below_min_profile": result.too_few,
        "median_user_seconds": round(median, 2) if median is not None else None,
    }  # fmt: skip
    if as_json:
        print_json(summary)
        return
    click.echo(
        f"OPPU set {artifact.name}: {len(result.trained)} users trained, {len(result.existing)} trained before"
        + (f", median {median:.1f} s per user" if median is not None else "")
        + f"; task adapter {result.task_adapter}"
    )
    if result.empty:
        click.echo(f"skipped {len(result.empty)} users with no profile items: {', '.join(result.empty)}")
    if result.too_few:
        click.echo(f"left out {len(result.too_few)} named users with fewer than {min_profile} profile items: {', '.join(result.too_few)}")
    click.echo(f"run it with --method oppu --backend hf --model {artifact.name}", err=True)


def _train(
    method: str, model: str, lora: Any, task_name: str, split: str, dev_split: str, scheme: str | None,
    retriever: str, k: int, epochs: float, max_steps: int | None, lr: float | None, batch_size: int,
    grad_accum: int, max_length: int, max_target_tokens: int, precision: str, seed: int, limit: int | None,
    dev_limit: int, eval_every: int | None, group_by_length: bool, name: str, threads: int | None, overwrite: bool,
    db_path: Path | None, as_json: bool, profile_pairs: bool = False, cross_attention_lr: float | None = None,
    freeze_encoder: bool = False,
) -> None:  # fmt: skip
    from lampbox.engine.defaults import default_max_new_tokens
    from lampbox.engine.machine import check_threads
    from lampbox.lab.training import TrainSpec

    check_threads(threads)
    # The store is given back between its reads at the start and the registration at the end.
    store = _rank0_store(db_path, f"train {name}")
    main = store is not None
    task = store.task(task_name) if store is not None else None
    resolved_scheme = store.resolve_scheme(task.name, split, scheme) if store is not None and task else (scheme or "user")
    spec = TrainSpec.build(
        task=task.name if task is not None else task_name, scheme=resolved_scheme, method=method, split=split,
        dev_split=dev_split, retriever=retriever, k=k, model=model, max_length=max_length,
        max_target_tokens=max_target_tokens, limit=limit, dev_limit=dev_limit, profile_pairs=profile_pairs,
        config=dict(
            epochs=epochs, lr=lr, batch_size=batch_size, grad_accum=grad_accum, seed=seed, precision=precision,
            max_steps=max_steps, eval_every=eval_every, lora=lora, group_by_length=group_by_length,
            eval_new_tokens=default_max_new_tokens(task) if task is not None else 32,
            cross_attention_lr=cross_attention_lr, freeze_encoder=freeze_encoder,
        ),
    )  # fmt: skip
    artifact, result = _train_with_progress(spec, store, name, overwrite, threads, quiet=as_json or not main)
    if artifact is None:
        return
    summary = {
        "name": artifact.name, "path": artifact.path, "kind": artifact.kind, "method": method, "steps": result.steps,
        "resumed_from": result.resumed_from, "seconds": round(result.seconds, 1),
        "tokens_per_second": round(result.train_tokens / result.seconds, 1) if result.seconds else None,
        "dev_metrics": dict(artifact.metrics), "best_step": result.best_step,
    }  # fmt: skip
    how = "--method fid --backend fid" if method == "fid" else "--backend hf"
    _report_trained(artifact, result, summary, as_json, f"{method} {artifact.kind}", f"use it with --model {artifact.name} ({how})")


def _train_with_progress(spec: Any, store: Any, name: str, overwrite: bool, threads: int | None, quiet: bool) -> Any:
    from lampbox.lab.training import train_model

    def note(message: str) -> None:
        click.echo(message, err=True)

    if quiet or not sys.stderr.isatty():
        return train_model(
            spec, store, name, overwrite=overwrite, on_progress=_step_logger(quiet), on_note=note, threads=threads
        )
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    state: dict[str, str] = {"loss": "", "dev": ""}
    with Progress(
        TextColumn("training {task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        TimeRemainingColumn(), console=Console(file=sys.stderr),
    ) as progress:  # fmt: skip
        bar = progress.add_task(name, total=None)

        def show(event: Any) -> None:
            if event.loss is not None:
                state["loss"] = f"loss {event.loss:.3f}"
            if event.metrics:
                state["dev"] = "dev " + ", ".join(f"{k} {v:.3f}" for k, v in event.metrics.items())
            progress.update(bar, completed=event.step, total=event.max_steps, description=f"{name} {state['loss']} {state['dev']}")

        return train_model(spec, store, name, overwrite=overwrite, on_progress=show, on_note=note, threads=threads)


@train.command("ropg")
@click.option("--task", "task_name", required=True, help="Task, e.g. LaMP_7 or commit_subject.")
@click.option("--method", type=click.Choice(["kd", "rl"]), default="kd", show_default=True, help="ROPG-KD (distillation) or ROPG-RL (REINFORCE).")
@click.option("--base-retriever", default="bm25", show_default=True, help="Retriever proposing each question's candidates.")
@click.option("--retriever-model", default="all-MiniLM-L6-v2", show_default=True, help="Encoder trained: the packaged all-MiniLM-L6-v2, a sentence-transformers folder or hub id.")
@click.option("--feedback", type=click.Choice(["generate", "likelihood"]), default="generate", show_default=True, help="Utility of an item: the task metric of the output generated with it alone (k=1), or the gold's per-token probability with it (hf backend).")
@click.option("--ctx-size", type=int, default=20, show_default=True, help="Candidates per question (the base retriever's top N).")
@click.option("--backend", default=None, help="Backend of the generator giving the feedback (default: llamacpp; auto: what `lampbox bench --backend auto` picks, e.g. hf bfloat16 on CPUs with AMX or AVX512-BF16).")
@click.option("--model", default=None, help="Generator giving the feedback (default: the manifest's default; a trained model too).")
@click.option("--dtype", type=click.Choice(HF_DTYPES), default=None, help="hf backend: weight dtype of the generator (default: float32 on CPU, bfloat16 on CUDA; with --backend auto, auto's choice). Part of the feedback key: feedback of another dtype is never reused.")
@click.option("--feedback-batch-size", type=click.IntRange(min=1), default=None, help="(question, item) prompts the generator decodes together (hf, llamacpp; default: 16 on hf, 8 on llamacpp). Not in the feedback key.")
@click.option("--split", default="train", show_default=True)
@click.option("--dev-split", default="dev", show_default=True, help="Split whose feedback evaluates the retriever (NDCG of the utilities).")
@click.option("--scheme", default=None, help="LaMP split scheme (default: the one stored).")
@click.option("--limit", type=int, default=None, help="Only the first N training questions.")
@click.option("--skip", type=click.IntRange(min=0), default=0, metavar="N", help="Leave out the first N training questions (before --limit): e.g. those a fine-tuned generator learnt from (`lampbox train ipa --limit N`), whose outputs it would recall rather than write.")
@click.option("--dev-limit", type=int, default=100, show_default=True, help="Dev questions with feedback (0: none).")
@click.option("--epochs", type=float, default=1.0, show_default=True)
@click.option("--max-steps", type=int, default=None, help="Stop after this many optimizer steps.")
@click.option("--lr", type=float, default=1e-5, show_default=True)
@click.option("--batch-size", type=int, default=4, show_default=True, help="Questions per step.")
@click.option("--temperature", type=float, default=0.1, show_default=True, help="Softmax temperature of scores and utilities.")
@click.option("--eval-every", type=int, default=None, help="Steps between dev evaluations (default: each epoch).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--name", required=True, help="Name of the trained retriever (use it as ropg:NAME).")
@click.option("--threads", type=int, default=None, help="CPU threads for torch (default: $LAMPBOX_THREADS, else every usable core).")
@click.option("--overwrite", is_flag=True, help="Replace a trained model of the same name.")
@db_option
@json_option
@reports_errors
def train_ropg(
    task_name: str, method: str, base_retriever: str, retriever_model: str, feedback: str, ctx_size: int,
    backend: str | None, model: str | None, dtype: str | None, feedback_batch_size: int | None, split: str, dev_split: str, scheme: str | None, limit: int | None,
    skip: int, dev_limit: int, epochs: float, max_steps: int | None, lr: float, batch_size: int, temperature: float,
    eval_every: int | None, seed: int, name: str, threads: int | None, overwrite: bool, db_path: Path | None,
    as_json: bool,
) -> None:  # fmt: skip
    """ROPG: train a dense retriever from the generator's feedback. Each training question's
    top --ctx-size items (base retriever) are scored by the task metric of the output made with
    that item alone in the prompt (stored, never computed twice); the encoder learns to rank
    them by KD or RL. Then: `lampbox bench --retrievers ropg:NAME`."""
    from lampbox.engine.defaults import DEFAULT_BACKEND, default_model
    from lampbox.engine.defaults import feedback_batch_size as feedback_batch_size_of
    from lampbox.engine.generation.pool import GeneratorPool, loading_options
    from lampbox.engine.generation.registry import known_backends
    from lampbox.engine.machine import check_threads
    from lampbox.errors import LampboxError, UnknownNameError
    from lampbox.lab.ropg import RopgSpec, ropg_config
    from lampbox.lab.ropg import train_ropg as run_job
    from lampbox.model_folders import check_model_name

    check_model_name(name)
    backend = backend or DEFAULT_BACKEND
    if backend == "auto":  # resolved as `lampbox bench` resolves it
        from lampbox.bench.planfile import resolve_auto

        choice, dtype = resolve_auto(model, "ipa", dtype)
        click.echo(choice.line(), err=True)
        backend = choice.backend
    if backend not in known_backends():
        raise UnknownNameError("backend", backend, known_backends())
    check_threads(threads)
    if eval_every is not None and eval_every < 1:
        raise LampboxError(f"--eval-every must be at least 1 step (got {eval_every})")
    config = ropg_config(lr=lr, epochs=epochs, batch_size=batch_size, max_steps=max_steps, seed=seed, eval_every=eval_every)
    spec = RopgSpec(
        task=task_name, scheme=scheme or "user", method=method, split=split, dev_split=dev_split,
        retriever=base_retriever, ctx_size=ctx_size, feedback=feedback, backend=backend,
        model=model or default_model(), dtype=dtype, retriever_model=retriever_model, temperature=temperature, limit=limit,
        skip=skip, dev_limit=dev_limit, config=config,
    )  # fmt: skip
    store = _rank0_store(db_path, f"train {name}")  # rank 0 alone computes the feedback (the store's)
    main = store is not None
    if store is not None:
        task = store.task(task_name)
        spec = dataclasses.replace(spec, task=task.name, scheme=store.resolve_scheme(task.name, split, scheme))
    quiet = as_json or not main

    shown: dict[str, tuple[int, int, float]] = {}  # split -> (first done, last shown, started)

    def on_feedback(which: str, done: int, total: int) -> None:
        import time

        first, last, started = shown.setdefault(which, (done, -1, time.monotonic()))
        if quiet or done == last or (done < total and done - last < 20 and last >= 0):
            return
        shown[which] = (first, done, started)
        rate = (done - first) / max(time.monotonic() - started, 1e-9)
        eta = f", eta {(total - done) / rate:.0f}s" if rate > 0 and done < total else ""
        click.echo(f"feedback {which}: {done}/{total} (question, item) pairs{eta}", err=True)

    feedback_batch_size = feedback_batch_size or feedback_batch_size_of(backend)
    artifact, result = run_job(
        spec, store, name, overwrite=overwrite, generators=GeneratorPool(loading_options(threads, feedback_batch_size)), on_feedback=on_feedback,
        on_progress=_step_logger(quiet, every=1), on_note=lambda message: click.echo(message, err=True), threads=threads,
        feedback_batch_size=feedback_batch_size,
    )  # fmt: skip
    if artifact is None:
        return  # another rank of a torchrun job: rank 0 registers and reports
    summary = {
        "name": artifact.name, "path": artifact.path, "kind": artifact.kind, "method": artifact.method,
        "steps": result.steps, "resumed_from": result.resumed_from, "seconds": round(result.seconds, 1),
        "dev_metrics": dict(artifact.metrics), "best_step": result.best_step, "retriever": f"ropg:{artifact.name}",
    }  # fmt: skip
    _report_trained(artifact, result, summary, as_json, artifact.method, f"rank with it: --retrievers ropg:{artifact.name}")


@train.command("rspg")
@click.option("--task", "task_name", required=True, help="Task of the benches, e.g. LaMP_7 or commit_subject.")
@click.option("--train-bench", required=True, help="A stored train-split bench (its key or a unique prefix): the pool's feedback.")
@click.option("--dev-bench", default=None, help="A stored dev-split bench over the same pool: picks the best checkpoint.")
@click.option("--mode", type=click.Choice(["pre", "post"]), default="post", show_default=True, help="pre: the selector sees each candidate's prompt; post: prompt and output.")
@click.option("--encoder", default="all-MiniLM-L6-v2", show_default=True, help="Text encoder: the packaged all-MiniLM-L6-v2 (offline), a folder or a hub id.")
@click.option("--temperature", type=float, default=1.0, show_default=True, help="T in KL(softmax(metric / T) || softmax(score / T)).")
@click.option("--max-length", type=int, default=256, show_default=True, help="Tokens per candidate (the prompt is cut first).")
@click.option("--epochs", type=float, default=20.0, show_default=True)
@click.option("--max-steps", type=int, default=None, help="Stop after this many optimizer steps (quick checks).")
@click.option("--lr", type=float, default=1e-5, show_default=True)
@click.option("--batch-size", type=int, default=8, show_default=True, help="Questions per batch (each with every candidate).")
@click.option("--eval-every", type=int, default=None, help="Steps between dev evaluations (default: each epoch).")
@click.option("--precision", type=click.Choice(["auto", "bf16", "fp32"]), default="auto", show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--name", required=True, help="Name of the selector (use it with `lampbox rspg apply`).")
@click.option("--overwrite", is_flag=True, help="Replace a trained model of the same name.")
@db_option
@json_option
@reports_errors
def train_rspg(
    task_name: str, train_bench: str, dev_bench: str | None, mode: str, encoder: str, temperature: float,
    max_length: int, epochs: float, max_steps: int | None, lr: float, batch_size: int, eval_every: int | None,
    precision: str, seed: int, name: str, overwrite: bool, db_path: Path | None, as_json: bool,
) -> None:  # fmt: skip
    """RSPG: train a selector that picks, per question, the best configuration of a stored
    bench (the pool: every configuration, retrieval-only rows included) from the configuration's
    prompt (pre) or prompt and output (post). Apply it with `lampbox rspg apply NAME --bench ID`."""
    from lampbox.engine.training.trainer import TrainConfig
    from lampbox.lab.rspg import RSPGSpec, train_selector

    config = TrainConfig(
        epochs=epochs, lr=lr, batch_size=batch_size, seed=seed, precision=precision, max_steps=max_steps,
        eval_every=eval_every, lora=None, group_by_length=False,
    )  # fmt: skip
    store = _rank0_store(db_path, f"train {name}")  # rank 0 alone reads the benches
    main = store is not None
    spec = RSPGSpec(
        task=store.task(task_name).name if store is not None else task_name, train_bench=train_bench, dev_bench=dev_bench, mode=mode, encoder=encoder,
        temperature=temperature, max_length=max_length, config=config,
    )  # fmt: skip

    artifact, result = train_selector(
        spec, store, name, overwrite=overwrite, on_progress=_step_logger(as_json or not main, eta=False)
    )
    if artifact is None:
        return  # another rank of a torchrun job: rank 0 registers and reports
    summary = {
        "name": artifact.name, "path": artifact.path, "kind": artifact.kind, "method": artifact.method,
        "steps": result.steps, "resumed_from": result.resumed_from, "seconds": round(result.seconds, 1),
        "dev_metrics": dict(artifact.metrics), "best_step": result.best_step,
    }  # fmt: skip
    _report_trained(
        artifact, result, summary, as_json, f"{artifact.method} selector",
        f"apply it with `lampbox rspg apply {artifact.name} --bench BENCH`",
    )  # fmt: skip
