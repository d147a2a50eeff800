"""`lampbox rspg apply`: a trained RSPG selector applied to a stored bench, as a stored run."""

from __future__ import annotations

from pathlib import Path

import click

from lampbox.commands.common import db_option, json_option, open_store, print_json, reports_errors


@click.group("rspg")
def rspg() -> None:
    """RSPG: choose, per question, among the configurations of a stored bench.

    \b
    lampbox bench --task commit_subject --split train ...      # the pool's feedback
    lampbox train rspg --task commit_subject --train-bench KEY --mode post --name sel
    lampbox bench --task commit_subject --split dev ...        # the same pool on dev
    lampbox rspg apply sel --bench KEY
    """


@rspg.command("apply")
@click.argument("name")
@click.option("--bench", "bench_key", required=True, help="A stored bench over the selector's pool (its key or a unique prefix).")
@db_option
@json_option
@reports_errors
def apply_command(name: str, bench_key: str, db_path: Path | None, as_json: bool) -> None:
    """Pick each question's answer among the bench's configurations with selector NAME and
    store the result as a run (per-question outputs, metrics, per-user scores), compared with
    no personalization and with the best single configuration (paired tests), beside the
    oracle (the best candidate per question) and the selector's success rate. The answers are
    composed from the stored runs: nothing is generated again."""
    from lampbox.lab.rspg import apply_selector

    with open_store(db_path, purpose=f"rspg apply {name}") as store:
        result = apply_selector(store, name, bench_key)
    if as_json:
        print_json(result.to_json())
        return
    from rich.console import Console

    from lampbox.bench.report import selection_table

    Console().print(selection_table(result.to_json()))
