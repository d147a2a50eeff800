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

    Console().print(selection_table(result))


def selection_table(result: object) -> object:
    from rich.table import Table

    data = result.to_json()  # type: ignore[attr-defined]
    main = data["main_metric"]
    table = Table(
        title=f"{data['label']} on bench {data['bench_key'][:12]} ({data['split']}, {data['questions']} questions)",
        caption=(
            f"success rate {data['success_rate']:.3f} (a best candidate picked); generations a live run needs: "
            f"post {data['generations']['post']}, pre {data['generations']['pre']} (composed from stored runs: none new); "
            "p: two-sided paired randomization test"
        ),
    )
    for column in ("configuration", main, "picked", "selection vs it", "p"):
        table.add_column(column, justify="left" if column == "configuration" else "right")
    table.add_row(data["label"], f"{data['metrics'].get(main, float('nan')):.4f}", str(data["questions"]), "", "")
    table.add_row("oracle (best per question)", f"{data['oracle'].get(main, float('nan')):.4f}", "", "", "")
    compared = {c["label"]: c for c in (data["vs_no_personalization"], data["vs_best_single"]) if c}
    for row in data["configurations"]:
        other = compared.get(row["label"])
        change = "" if not other or other["relative_change"] is None else f"{other['relative_change'] * 100:+.1f}%"
        p = "" if not other or other["p_value"] is None else f"{other['p_value']:.3f}"
        label = row["label"] + (" (best single)" if row["label"] == data["vs_best_single"]["label"] else "")
        table.add_row(label, f"{row['metrics'].get(main, float('nan')):.4f}", str(row["picked"]), change, p)
    return table
