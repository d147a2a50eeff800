"""`lampbox tasks`: the tasks lampbox knows (built-in and custom)."""

from __future__ import annotations

from pathlib import Path

import click

from lampbox.commands.common import (
    db_option,
    json_option,
    open_store_for_reading,
    print_json,
    reports_errors,
)


@click.command("tasks")
@db_option
@json_option
@reports_errors
def tasks_command(db_path: Path | None, as_json: bool) -> None:
    """List the tasks: LaMP_1..LaMP_7 and the custom tasks declared in the store."""
    from rich.console import Console
    from rich.table import Table

    store = open_store_for_reading(db_path)
    specs = [store.task(name) for name in store.task_names()]
    if as_json:
        print_json([spec.to_json() for spec in specs])
        return
    table = Table(title="lampbox tasks")
    for column in ("task", "kind", "metrics", "like", "description"):
        table.add_column(column)
    for spec in specs:
        table.add_row(spec.name, spec.kind, ", ".join(spec.metrics), spec.like if spec.custom else "", spec.description)
    Console().print(table)
