"""`lampbox bench`: the headless benchmark."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from lampbox.commands.common import (
    check_not_under_a_file,
    db_option,
    json_option,
    open_store,
    print_json,
    reports_errors,
    split_list,
    writer_wait_s,
)
from lampbox.engine.defaults import (
    DEFAULT_KS,
    DEFAULT_MAX_LENGTH,
    DEFAULT_RETRIEVERS,
    HF_DTYPES,
)

# The flags that make a grid; a plan's configurations name these themselves.
GRID_FLAGS = {
    "retrievers": "--retrievers", "ks": "--k", "model": "--model", "backends": "--backend", "method": "--method",
    "max_length": "--max-length", "max_new_tokens": "--max-new-tokens", "postprocess": "--postprocess",
    "decode": "--decode", "baselines": "--baselines/--no-baselines", "quantize": "--quantize", "dtype": "--dtype",
    "selectors": "--selectors",
}  # fmt: skip


@click.command("bench")
@click.option("--plan", "plan_path", type=click.Path(dir_okay=False, path_type=Path), default=None, help="A TOML plan: the bench's configurations as data (docs/plans.md). Instead of the grid flags.")
@click.option("--config", "configs", multiple=True, metavar="'NAME=VALUE ...'", help="One configuration, e.g. \"method=ipa model=M backend=hf retriever=bm25 k=4 label=X\" (repeatable; the fields of a plan's [[configurations]]). Instead of the grid flags.")
@click.option("--reference", default=None, help="With --plan or --config: the row every other row is compared with, by label or number (default: the plan's reference, else the first configuration).")
@click.option("--task", "task_name", default=None, help="Task, e.g. LaMP_7 or a custom task such as commit_subject (a plan may name it instead).")
@click.option("--split", default=None, help="Set to run on: train, dev or test (default: the plan's, else dev).")
@click.option("--scheme", default=None, help="LaMP split scheme: user, time or demo (default: the one stored).")
@click.option(
    "--retrievers",
    default=",".join(DEFAULT_RETRIEVERS),
    show_default=True,
    help="Comma-separated retrievers; 'none' is the no-personalization baseline (always run).",
)
@click.option("--k", "ks", default=",".join(map(str, DEFAULT_KS)), show_default=True, help="Comma-separated numbers of retrieved items (0: no retrieval, which is the no-personalization row every bench has).")
@click.option("--model", default=None, help="Manifest name, .gguf path, HF folder or hub id (default: the manifest's default model).")
@click.option(
    "--backend",
    "backends",
    default="auto",
    show_default=True,
    help="Comma-separated: auto, llamacpp, hf, fid, openai, dummy (a deterministic stand-in for wiring checks). auto: the fastest path on this machine at the reference's quality (hf batched on CPU and CUDA, fid for --method fid, llamacpp for a GGUF file); the choice is printed and recorded.",
)
@click.option("--method", default="ipa", show_default=True, help="How the model gets the retrieved items: ipa (in the prompt), fid (Fusion-in-Decoder, with --backend fid) or oppu (each user's adapter of an OPPU set: --backend hf, llamacpp, or openai with $LAMPBOX_OPENAI_ADAPTERS).")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Only the first N questions.")
@click.option("--users", type=click.IntRange(min=1), default=None, help="Only the questions of the first N users.")
@click.option("--min-profile", type=click.IntRange(min=0), default=None, metavar="N", help="Only the users with at least N profile items (a user's smallest profile over their questions); with --users, the first N of them.")
@click.option("--skip", type=click.IntRange(min=0), default=None, metavar="N", help="Skip the first N questions (in file order, after --users/--min-profile select the users, before --limit): e.g. the training questions a fine-tuned model saw, so that `lampbox train ipa --limit 200` then `lampbox bench --split train --skip 200` scores it only on held-out questions.")
@click.option("--max-length", type=click.IntRange(min=1), default=DEFAULT_MAX_LENGTH, show_default=True, help="IPA prompt token budget (official: 256).")
@click.option("--max-new-tokens", type=click.IntRange(min=1), default=None, help="Tokens to generate (default: 8 for labels and ratings, 32 otherwise).")
@click.option(
    "--postprocess",
    default="",
    help="Recorded post-processing of outputs: first-line, strip-quotes (comma-separated; default: none, raw outputs stripped).",
)
@click.option(
    "--decode",
    type=click.Choice(["generate", "labels"]),
    default="generate",
    show_default=True,
    help="generate: the model's raw text is the answer. labels (tasks with labels): every label is scored as the answer by the model's log-likelihood and the most likely one answers (hf, llamacpp, dummy). Recorded in the runs and the predictions files.",
)
@click.option("--baselines/--no-baselines", default=True, show_default=True, help="Add model-free retrieval-only baselines.")
@click.option(
    "--selectors",
    default="",
    help="Comma-separated RSPG rows after the grid's: rspg-pre:NAME (the selector chooses from the prompts, only the chosen configuration generates) or rspg-post:NAME (every configuration of its pool answers, it keeps one), NAME a selector from `lampbox train rspg` (docs/rspg.md).",
)
@click.option("--batch-size", type=click.IntRange(min=1), default=8, show_default=True, help="Prompts per generation batch (hf and llamacpp decode them together).")
@click.option(
    "--quantize",
    type=click.Choice(["int8"]),
    default=None,
    help="hf backend on CPU: dynamic int8 Linear layers (faster; outputs differ slightly from fp32, recorded in the runs).",
)
@click.option(
    "--dtype",
    type=click.Choice(HF_DTYPES),
    default=None,
    help="hf backend: weight dtype (default: bfloat16 on CUDA, float32 on CPU; with --backend auto, auto's choice: bfloat16 also on CPUs with AMX or AVX512-BF16).",
)
@click.option("--threads", type=int, default=None, help="CPU threads for llamacpp and hf (default: $LAMPBOX_THREADS, else the usable cores, one fewer on 2 or fewer).")
@click.option("--base-url", default=None, help="openai backend: the server's URL (e.g. http://127.0.0.1:8000/v1).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=None, help="Folder for the official-format predictions files (default: runs/ in the data folder).")
@db_option
@json_option
@click.pass_context
@reports_errors
def bench_command(
    ctx: click.Context,
    plan_path: Path | None,
    configs: tuple[str, ...],
    reference: str | None,
    task_name: str | None,
    split: str | None,
    scheme: str | None,
    retrievers: str,
    ks: str,
    model: str | None,
    backends: str,
    method: str,
    limit: int | None,
    users: int | None,
    min_profile: int | None,
    skip: int | None,
    max_length: int,
    max_new_tokens: int | None,
    postprocess: str,
    decode: str,
    baselines: bool,
    selectors: str,
    batch_size: int,
    quantize: str | None,
    dtype: str | None,
    threads: int | None,
    base_url: str | None,
    out_dir: Path | None,
    db_path: Path | None,
    as_json: bool,
) -> None:
    """Run a plan of configurations, or retrievers x k x backends, on a task and print the table.

    \b
    A plan (--plan FILE or repeated --config) lists heterogeneous configurations (method,
    model or trained model, backend, retriever, k, decoding, label) and the reference row;
    the grid flags (--retrievers, --k, --backend, --model, --method, ...) are a shorthand
    for one model and method.
    Each configuration's official-format predictions file is written (ready for
    `lampbox eval` and the leaderboard), and every prediction (prompt, retrieved items,
    output, gold, scores) and per-user score is stored with the run's full spec.
    Interrupted? Run the same command again: finished configurations come from the store
    and generations are cached by (model, parameters, prompt), so nothing is redone.
    Results go to stdout; progress and logs to stderr.
    """
    from lampbox.bench.runner import BenchSpec
    from lampbox.engine.defaults import default_max_new_tokens, default_model
    from lampbox.engine.generation.base import GenerationParams
    from lampbox.engine.generation.registry import known_backends
    from lampbox.engine.retrieval import is_retriever_name, known_retriever_names
    from lampbox.errors import LampboxError, UnknownNameError

    bench: Any
    if plan_path is not None or configs:
        store, bench = _plan_bench(
            ctx, plan_path, configs, reference, task_name, split, scheme, limit, users, min_profile, skip, db_path
        )
        task = store.task(bench.task)
        _run_and_print(bench, store, task, bench.scheme, bench.split, batch_size, threads, base_url, out_dir, as_json)
        return
    if reference is not None:
        raise LampboxError("--reference applies to a plan (--plan or --config); a grid compares each row with its no-personalization row")
    if task_name is None:
        raise LampboxError("--task is missing (or give a plan: --plan FILE or --config)")
    split = split or "dev"
    backend_list = split_list(backends) or ["auto"]
    if "auto" in backend_list:
        from lampbox.bench.planfile import resolve_auto

        choice, dtype = resolve_auto(model, method, dtype)  # auto's dtype recorded like an explicit --dtype
        click.echo(choice.line(), err=True)
        backend_list = list(dict.fromkeys(choice.backend if b == "auto" else b for b in backend_list))
    for backend in backend_list:
        if backend not in known_backends():
            raise UnknownNameError("backend", backend, known_backends())
    if quantize and "hf" not in backend_list:
        raise LampboxError(f"--quantize {quantize} applies to the hf backend; add --backend hf")
    if dtype and "hf" not in backend_list:
        raise LampboxError(f"--dtype {dtype} applies to the hf backend; add --backend hf")
    from lampbox.engine.methods import get_method

    if get_method(method).selects:
        raise LampboxError(f"--method {method}: RSPG rows come from --selectors {method}:NAME (the grid's method is its model runs')")
    if not get_method(method).uses_model:
        raise LampboxError(f"--method {method} needs no model; its runs are the bench's model-free baselines")
    if get_method(method).needs_adapters:
        from lampbox.engine.generation.registry import backend_class

        for backend in backend_list:
            if backend_class(backend).supports_adapters is not True:
                raise LampboxError(
                    f"--method {method} needs a backend that loads per-user adapters (hf, llamacpp, openai), not {backend}"
                )
    retriever_list = split_list(retrievers) or ["none"]
    for retriever in retriever_list:
        if not is_retriever_name(retriever):
            raise UnknownNameError("retriever", retriever, known_retriever_names())
    try:
        k_list = tuple(int(k) for k in split_list(ks) or ["1"])
    except ValueError:
        raise LampboxError(f"--k takes comma-separated whole numbers, not {ks!r}") from None
    # The bench takes the write lock only while it writes a batch: readers (data list, eval,
    # the TUI) open the store between its writes. It waits longer than a reader for the lock.
    store = open_store(db_path, hold_lock=False, wait_s=writer_wait_s())
    task = store.task(task_name)
    if decode != "generate":
        from lampbox.engine.generation.labels import check_decoding, check_label_scoring
        from lampbox.engine.generation.registry import backend_class

        check_decoding(decode, task)
        for backend in backend_list:
            check_label_scoring(backend_class(backend))
    scheme = _resolve_scheme(store, task, split, scheme)
    if max_new_tokens is None:
        max_new_tokens = default_max_new_tokens(task)
    hf_options = tuple((name, value) for name, value in (("dtype", dtype), ("quantize", quantize)) if value)
    bench = BenchSpec(
        task=task.name,
        scheme=scheme,
        split=split,
        retrievers=tuple(retriever_list),
        ks=k_list,
        backends=tuple(backend_list),
        method=method,
        model=model or default_model(),
        params=GenerationParams(max_new_tokens=max_new_tokens),
        max_length=max_length,
        postprocess=tuple(split_list(postprocess) or ()),
        limit=limit,
        users=users,
        min_profile=min_profile,
        skip=skip or 0,
        baselines=baselines,
        decode=decode,
        selectors=tuple(split_list(selectors) or ()),
        backend_options=(("hf", hf_options),) if hf_options else (),
    )
    _run_and_print(bench, store, task, scheme, split, batch_size, threads, base_url, out_dir, as_json)


def _run_and_print(
    bench: Any,
    store: Any,
    task: Any,
    scheme: str,
    split: str,
    batch_size: int,
    threads: int | None,
    base_url: str | None,
    out_dir: Path | None,
    as_json: bool,
) -> None:
    """Run a bench (a grid or a plan) with progress, then print its table (or JSON)."""
    from lampbox.engine.generation.pool import GeneratorPool, loading_options
    from lampbox.paths import data_home

    backend_options = loading_options(threads, batch_size)
    if base_url:
        backend_options["openai"] = {"base_url": base_url}
    pool = GeneratorPool(backend_options)
    predictions_dir = out_dir or data_home() / "runs" / f"{task.name}-{scheme}-{split}"
    check_not_under_a_file(predictions_dir, folder=True)  # created when the first run writes
    try:
        result = _run_with_progress(bench, store, pool, predictions_dir, batch_size)
    finally:
        pool.close()
    if as_json:
        print_json(result.to_json())
        return
    from rich.console import Console

    from lampbox.bench.report import results_table, selection_notes

    console = Console(file=sys.stdout, width=max(120, Console().width))
    console.print(results_table(result))
    for note in selection_notes(result):  # RSPG rows: the oracle, the success rate, the best single
        console.print(note)
    click.echo(f"predictions: {predictions_dir}", err=True)
    click.echo(f"bench {result.bench_key} stored in {store.path}", err=True)


def _plan_bench(
    ctx: click.Context,
    plan_path: Path | None,
    configs: tuple[str, ...],
    reference: str | None,
    task_name: str | None,
    split: str | None,
    scheme: str | None,
    limit: int | None,
    users: int | None,
    min_profile: int | None,
    skip: int | None,
    db_path: Path | None,
) -> tuple[Any, Any]:
    """The store and the Plan of --plan or --config; the plan's header gives what no flag does.
    A bad plan is one line (file, configuration, problem) before anything runs or is written."""
    from lampbox.bench.planfile import build_plan, parse_config_strings, plan_task, read_plan_file
    from lampbox.errors import LampboxError

    if plan_path is not None and configs:
        raise LampboxError("give --plan or --config, not both")
    given = [flag for name, flag in GRID_FLAGS.items() if ctx.get_parameter_source(name) is not click.core.ParameterSource.DEFAULT]
    if given:
        raise LampboxError(f"{', '.join(given)}: grid flags; with --plan or --config each configuration names its own")
    source = read_plan_file(plan_path) if plan_path is not None else parse_config_strings(configs)
    header = source.header
    if task_name is None and "task" not in header:
        raise source.fail('task is missing: set task = "..." at the top of the plan, or give --task')
    split = split or header.get("split") or "dev"
    store = open_store(db_path, hold_lock=False, wait_s=writer_wait_s())
    task = plan_task(source, store, task_name)
    resolved_scheme = _resolve_scheme(store, task, split, scheme or header.get("scheme"))
    said: set[str] = set()

    def on_auto(line: str) -> None:  # each distinct auto choice once
        if line not in said:
            said.add(line)
            click.echo(line, err=True)

    plan = build_plan(
        source, task, resolved_scheme, split,
        limit=limit if limit is not None else header.get("limit"),
        users=users if users is not None else header.get("users"),
        min_profile=min_profile if min_profile is not None else header.get("min_profile"),
        skip=skip if skip is not None else header.get("skip", 0),
        reference=reference, on_auto=on_auto,
    )  # fmt: skip
    return store, plan


def _resolve_scheme(store: Any, task: Any, split: str, scheme: str | None) -> str:
    """The stored scheme; when the task has no data at all, fetch it (LaMP tasks) or explain."""
    from lampbox.errors import LampboxError

    if scheme is not None or store.schemes(task.name, split):
        resolved = store.resolve_scheme(task.name, split, scheme)
        if resolved == "demo":
            click.echo(f"using the {task.name} demo data (written for lampbox, not LaMP data)", err=True)
        return resolved
    if task.custom or task.url_path is None:
        return store.resolve_scheme(task.name, split)
    click.echo(f"no {task.name} data in {store.path}: fetching the official files", err=True)
    from lampbox.fetch import RichDownloadProgress, fetch_task

    try:
        with RichDownloadProgress() as progress:
            fetch_task(task, "user", open_store=lambda: store, sets=[split], progress=progress)
    except LampboxError as error:
        raise LampboxError(
            f"{task.name} data is not in the store and could not be fetched ({error}). "
            f"Import files you have with `lampbox data import PATH`, or try the demo: `lampbox data demo`"
        ) from None
    return store.resolve_scheme(task.name, split)


def _run_with_progress(bench: Any, store: Any, pool: Any, predictions_dir: Path, batch_size: int) -> Any:
    from lampbox.bench.runner import run_bench

    names = [c.name for c in getattr(bench, "configurations", ())]  # a plan's labels

    def name(event: Any, index: int) -> str:
        return names[index] if names else event.spec.label

    if not sys.stderr.isatty():
        return run_bench(
            bench, store, generators=pool, predictions_dir=predictions_dir, on_progress=_log_progress(name), batch_size=batch_size
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

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=Console(file=sys.stderr),
        transient=False,
    ) as progress:
        overall = progress.add_task("configurations", total=None)
        current = progress.add_task("", total=None)

        def on_progress(event: Any, index: int, count: int) -> None:
            progress.update(overall, total=count, completed=index, description=f"configuration {index + 1}/{count}")
            progress.update(current, total=event.total, completed=event.done, description=f"{name(event, index)}: {event.phase}")

        result = run_bench(bench, store, generators=pool, predictions_dir=predictions_dir, on_progress=on_progress, batch_size=batch_size)
        progress.update(overall, completed=len(result.rows), total=len(result.rows))
    return result


def _log_progress(name: Any) -> Any:
    """Plain progress lines for logs (stderr is not a terminal): one per phase change or batch;
    name(event, index) is the configuration's name."""
    last: dict[str, Any] = {}

    def on_progress(event: Any, index: int, count: int) -> None:
        state = (index, event.phase, event.done)
        if last.get("state") == state or (event.phase == "prompt" and event.done):
            return
        last["state"] = state
        print(f"[{index + 1}/{count}] {name(event, index)}: {event.phase} {event.done}/{event.total}", file=sys.stderr, flush=True)

    return on_progress
