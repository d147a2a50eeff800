"""`lampbox rank`: rank every question's profile with a retriever (like LaMP's rank_profiles.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from lampbox.commands.common import (
    db_option,
    json_option,
    open_store_for_reading,
    print_json,
    ready_to_write,
    reports_errors,
    write_json_file,
)
from lampbox.errors import LampboxError


def _parse_options(pairs: tuple[str, ...]) -> dict[str, str]:
    options = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name.strip():
            raise LampboxError(f"--option {pair!r}: expected NAME=VALUE")
        options[name.strip().replace("-", "_")] = value.strip()
    return options


@click.command("rank")
@click.option("--task", "task_name", required=True, help="Task name (LaMP_7, commit_subject, ...).")
@click.option("--split", "split", default="dev", show_default=True, help="Set: train, dev or test.")
@click.option(
    "--scheme",
    default=None,
    help="LaMP split scheme: user, time or demo (default: the stored one).",
)
@click.option("--retriever", "retriever_name", default="bm25", show_default=True,
              help="bm25 (official), bm25-fast, dense, recency, random, none.")  # fmt: skip
@click.option("--use-date", is_flag=True, help="Append ' date: {date}' to every document.")
@click.option("--model", default=None, help="dense: model name, local folder or hub id.")
@click.option("--seed", type=int, default=None, help="random: the seed (default 0).")
@click.option("--option", "extra_options", multiple=True, metavar="NAME=VALUE",
              help="Other retriever options, e.g. pooling=mean, score=dot, missing_dates=last.")  # fmt: skip
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Only the first N questions.")
@click.option("--recompute", is_flag=True, help="Ignore stored rankings and rank again.")
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write rank_profiles.py's format: question id -> item ids, best first (missing folders are created).")  # fmt: skip
@click.option("--export-questions", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the questions (official format, golds as 'output') with sorted profiles (missing folders are created).")  # fmt: skip
@db_option
@json_option
@reports_errors
def rank_command(
    task_name: str,
    split: str,
    scheme: str | None,
    retriever_name: str,
    use_date: bool,
    model: str | None,
    seed: int | None,
    extra_options: tuple[str, ...],
    limit: int | None,
    recompute: bool,
    output: Path | None,
    export_questions: Path | None,
    db_path: Path | None,
    as_json: bool,
) -> None:
    """Rank each question's profile items and store the rankings (reused by later steps).

    Rankings already stored for the same retriever and options are served from the store.
    """
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    from lampbox.engine.retrieval import create_retriever
    from lampbox.engine.retrieval.service import rankings_file_data, sorted_questions_data
    from lampbox.lab.ranking import rank_stored

    options: dict[str, object] = dict(_parse_options(extra_options))
    if use_date:
        options["use_date"] = True
    if model is not None:
        options["model"] = model
    if seed is not None:
        options["seed"] = seed
    retriever = create_retriever(retriever_name, **options)
    for path in (output, export_questions):
        if path is not None:
            ready_to_write(path)  # before ranking, which can take long
    # Read-only until a ranking is missing: rankings already stored are served beside a bench.
    store = open_store_for_reading(db_path, upgradable=True)
    task = store.task(task_name)
    scheme = store.resolve_scheme(task.name, split, scheme)
    questions = store.questions(task.name, scheme, split, limit=limit)
    if not questions:
        raise LampboxError(f"no {task.name} {scheme} {split} questions in {store.path}")
    console = Console(stderr=True)
    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=as_json,
    ) as progress:
        bar = progress.add_task(f"ranking with {retriever.name}", total=len(questions))
        rankings = rank_stored(
            store,
            task,
            questions,
            retriever,
            on_progress=lambda done, total: progress.update(bar, completed=done, total=total),
            recompute=recompute,
            on_warning=lambda message: console.print(f"warning: {message}"),
        )
    if output is not None:
        write_json_file(output, rankings_file_data(rankings))
    if export_questions is not None:
        write_json_file(export_questions, sorted_questions_data(questions, rankings), indent=2)
    summary = {
        "task": task.name,
        "scheme": scheme,
        "split": split,
        "retriever": retriever.key,
        "questions": len(rankings),
        "ranked_items": sum(len(r) for r in rankings),
        "output": str(output) if output else None,
        "export_questions": str(export_questions) if export_questions else None,
    }
    if as_json:
        print_json(summary)
        return
    click.echo(
        f"{task.name} {scheme} {split}: {len(rankings)} questions ranked with {retriever.key}"
        + (f"; rankings in {output}" if output else "")
        + (f"; sorted questions in {export_questions}" if export_questions else "")
    )
    print(f"store: {store.path}", file=sys.stderr)
