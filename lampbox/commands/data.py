"""`lampbox data`: get LaMP data into the store and see what is there."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from lampbox.commands.common import (
    db_option,
    json_option,
    open_store,
    open_store_for_reading,
    print_json,
    reports_errors,
    split_list,
)

if TYPE_CHECKING:
    from lampbox.engine.tasks import TaskSpec


@click.group("data")
def data() -> None:
    """Get LaMP data into the store (fetch, import, demo, build-lamp6) and list it."""


@data.command("import")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--task", "task_name", default=None, help="Task name (default: task.json in the folder, else detected).")
@click.option(
    "--split",
    "scheme",
    type=click.Choice(["user", "time", "demo"]),
    default=None,
    help="Which LaMP split the files come from (default: time if the path has a 'time' folder, else user).",
)
@click.option("--sets", default=None, help="Only these sets, e.g. train,dev (default: all found).")
@click.option("--allow-empty-profiles", is_flag=True, help="Import questions whose profile is empty.")
@click.option(
    "--replace-task",
    is_flag=True,
    help="Replace a custom task whose task.json changed since it was stored (runs made under the old definition stay apart).",
)
@db_option
@reports_errors
def import_command(
    path: Path,
    task_name: str | None,
    scheme: str | None,
    sets: str | None,
    allow_empty_profiles: bool,
    replace_task: bool,
    db_path: Path | None,
) -> None:
    """Import official-format LaMP files (.json or .json.gz) from PATH.

    PATH is a folder ({train,dev,test}_questions.json with their _outputs.json, flat or in
    train/ dev/ test/ subfolders), one questions file, or a custom task's folder with its
    task.json. Importing is all or nothing; re-importing the same files changes nothing. A
    task.json that differs from the stored task is refused unless --replace-task is given.
    """
    from lampbox.store.importer import import_path

    store = open_store(db_path)
    report = import_path(
        store,
        path,
        task_name=task_name,
        scheme=scheme,
        sets=split_list(sets),
        allow_empty_profiles=allow_empty_profiles,
        on_progress=lambda message: print(message, file=sys.stderr),
        replace_task=replace_task,
    )
    for warning in report.warnings:
        click.echo(f"warning: {warning}", err=True)
    if report.task_status == "replaced":
        click.echo(f"{report.task}: task definition replaced (changed: {', '.join(report.task_changes)})")
    for split in report.splits:
        click.echo(
            f"{report.task} {report.scheme} {split.split}: {split.status} "
            f"({split.questions} questions, {split.golds} golds, {split.new_items} new profile items)"
        )
    click.echo(f"store: {store.path}", err=True)


@data.command("demo")
@db_option
@reports_errors
def demo_command(db_path: Path | None) -> None:
    """Import the small demo dataset shipped with lampbox (LaMP_7 format, split 'demo').

    The demo users and tweets were written for lampbox: they are NOT LaMP data. They let
    every command run with no network.
    """
    from lampbox.demo import demo_path
    from lampbox.store.importer import import_path

    store = open_store(db_path)
    report = import_path(store, demo_path(), task_name="LaMP_7", scheme="demo")
    for split in report.splits:
        click.echo(f"LaMP_7 demo {split.split}: {split.status} ({split.questions} questions)")


@data.command("list")
@db_option
@json_option
@reports_errors
def list_command(db_path: Path | None, as_json: bool) -> None:
    """Show what the store holds: task, split, users, questions, mean profile size."""
    from rich.console import Console
    from rich.table import Table

    store = open_store_for_reading(db_path)
    summaries = store.datasets()
    if as_json:
        print_json([summary.to_json() for summary in summaries])
        return
    if not summaries:
        click.echo(f"The store {store.path} is empty. Try `lampbox data demo` or `lampbox data import PATH`.")
        return
    table = Table(title=f"lampbox store: {store.path}")
    rows = [
        (
            summary.task, summary.scheme, summary.split, str(summary.users), str(summary.questions),
            str(summary.golds), f"{summary.mean_profile_size:.1f}", str(summary.distinct_items),
        )  # fmt: skip
        for summary in summaries
    ]
    # Task names are never cut: their column keeps the width of the longest; on a narrow
    # terminal the other columns wrap or shrink instead.
    table.add_column("task", no_wrap=True, min_width=max(len(row[0]) for row in rows))
    for header in ("split", "set"):
        table.add_column(header)
    for header in ("users", "questions", "golds", "mean profile", "distinct items"):
        table.add_column(header, justify="right")
    for row in rows:
        table.add_row(*row)
    Console().print(table)


@data.command("fetch")
@click.argument("task_name", metavar="TASK")
@click.option(
    "--split",
    "scheme",
    type=click.Choice(["user", "time"]),
    default="user",
    show_default=True,
    help="Which official split: user-based or time-based.",
)
@click.option(
    "--sets",
    default="train,dev",
    show_default=True,
    help="Sets to fetch: train, dev, test (questions only).",
)
@click.option(
    "--base-url",
    default=None,
    help="Download root (default: $LAMPBOX_LAMP_URL, else https://ciir.cs.umass.edu/downloads/LaMP).",
)
@db_option
@reports_errors
def fetch_command(
    task_name: str, scheme: str, sets: str, base_url: str | None, db_path: Path | None
) -> None:
    """Download the official LaMP files of TASK (e.g. LaMP_7) and import them.

    Files are kept in the download cache in the official layout, so fetching again does not
    download again; a broken download resumes where it stopped. Every file is checked before
    the store is touched, and the import is all or nothing.
    """
    from lampbox.fetch import RichDownloadProgress, fetch_task

    spec = _downloadable_task(task_name, db_path)
    with RichDownloadProgress() as progress:
        report = fetch_task(
            spec,
            scheme,
            open_store=lambda: open_store(db_path),
            sets=split_list(sets),
            base=base_url,
            progress=progress,
        )
    for path in report.reused:
        click.echo(f"cached: {path}", err=True)
    assert report.imported is not None
    for warning in report.imported.warnings:
        click.echo(f"warning: {warning}", err=True)
    for split in report.imported.splits:
        click.echo(
            f"{report.task} {report.scheme} {split.split}: {split.status} "
            f"({split.questions} questions, {split.golds} golds, {split.new_items} new profile items)"
        )


def _downloadable_task(task_name: str, db_path: Path | None) -> TaskSpec:
    """The task to fetch: a built-in one, or (to say it cannot be fetched) a stored custom one."""
    from lampbox.engine.tasks import builtin_task
    from lampbox.errors import UnknownNameError
    from lampbox.paths import default_db_path

    try:
        return builtin_task(task_name)
    except UnknownNameError:
        path = db_path or default_db_path()
        if not path.exists():
            raise
        with open_store(path, read_only=True) as store:
            return store.task(task_name)


@data.command("build-lamp6")
@click.option(
    "--avocado-dir",
    required=True,
    type=click.Path(path_type=Path),
    help="Your licensed Avocado copy: avocado-1.0.2 (or its data/text folder of per-custodian zips).",
)
@click.option(
    "--questions",
    "question_paths",
    required=True,
    multiple=True,
    type=click.Path(path_type=Path),
    help="The LaMP_6 id files ({split}_questions.json, or a folder of them); repeat for more.",
)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(path_type=Path),
    default=None,
    help="Where to write the LaMP_6 files.",
)
@click.option(
    "--split",
    "scheme",
    type=click.Choice(["user", "time"]),
    default=None,
    help="Which LaMP split the id files belong to (default: time if a path has a 'time' folder, else user).",
)
@click.option(
    "--no-import", is_flag=True, help="Only write the files; do not import them into the store."
)
@db_option
@reports_errors
def build_lamp6_command(
    avocado_dir: Path,
    question_paths: tuple[Path, ...],
    out_dir: Path | None,
    scheme: str | None,
    no_import: bool,
    db_path: Path | None,
) -> None:
    """Build LaMP_6 (email subjects) from the Avocado corpus and the LaMP_6 id files.

    The LaMP authors publish only email ids; the text comes from your licensed copy of the
    Avocado Research Email Collection (LDC2015T03). The archives are read in place.
    """
    from rich.console import Console
    from rich.progress import Progress

    from lampbox.lamp6 import build_lamp6, import_lamp6
    from lampbox.paths import cache_dir

    if scheme is None:
        parts = {part.lower() for path in question_paths for part in path.resolve().parts}
        scheme = "time" if "time" in parts else "user"
    out_dir = out_dir or cache_dir("LaMP_6") / scheme
    with Progress(console=Console(stderr=True)) as progress:
        bar = progress.add_task("reading Avocado archives", total=None)

        def on_archive(done: int, total: int, name: str) -> None:
            progress.update(
                bar, completed=done, total=total, description=f"reading {name or 'archives'}"
            )

        files = build_lamp6(avocado_dir, list(question_paths), out_dir, on_archive)
    for split_files in files:
        click.echo(
            f"wrote {split_files.questions}"
            + (f" and {split_files.outputs.name}" if split_files.outputs else "")
        )
    if no_import:
        return
    store = open_store(db_path)
    report = import_lamp6(store, files, scheme)
    for split in report.splits:
        click.echo(
            f"LaMP_6 {scheme} {split.split}: {split.status} ({split.questions} questions, {split.golds} golds)"
        )
