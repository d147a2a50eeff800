"""The bench's results table (rich) for the terminal."""

from __future__ import annotations

from typing import Any

from lampbox.bench.runner import BenchResult


def results_table(result: BenchResult) -> Any:
    from rich.table import Table
    from rich.text import Text

    task = result.task
    plan = result.plan
    scope = f"{plan.limit} questions" if plan.limit else "all questions"
    if plan.skip:
        scope += f" after the first {plan.skip}"
    if plan.users:
        scope += f" of the first {plan.users} users"
    if plan.min_profile is not None:
        scope += f"{'' if plan.users else ' of users'} with >= {plan.min_profile} profile items"
    reference = plan.reference_configuration
    if plan.grid is not None:
        source, against = f"model {plan.grid['model']}", "no personalization on the same backend"
    else:
        source, against = f"plan {plan.source}", f"the reference row ({reference.name if reference else '-'})"
    table = Table(
        title=f"{task.name} {plan.scheme}/{plan.split}: {scope} ({source})",
        caption=(
            f"change: relative change of {task.main_metric} vs {against}; "
            "p: two-sided paired randomization test on per-question scores (10,000 resamples)"
        ),
    )
    table.add_column("configuration")
    for metric in task.metrics:
        table.add_column(metric, justify="right")
    table.add_column("change", justify="right")
    table.add_column("p", justify="right")
    table.add_column("source", justify="right")
    higher_is_better = task.higher_is_better()
    for row in result.rows:
        record = row.record
        cells = [f"{record.metrics[m]:.4f}" if m in record.metrics else "-" for m in task.metrics]
        change: Text | str = "-"
        if row.relative_change is not None:
            better = row.relative_change > 0 if higher_is_better else row.relative_change < 0
            style = "green" if better else ("red" if row.relative_change != 0 else "")
            change = Text(f"{row.relative_change * 100:+.1f}%", style=style)
        p_value = "-" if row.p_value is None else f"{row.p_value:.3f}"
        if record.from_store:
            source = "stored"
        elif record.generated or record.cached:
            source = f"{record.generated} gen / {record.cached} cached"
        else:
            source = "computed"
        # bold: the row(s) the others are compared with
        is_reference = row.role == "baseline" if reference is None else record.label == reference.name
        label = Text(record.label, style="bold") if is_reference else record.label
        table.add_row(label, *cells, change, p_value, source)
    return table


def selection_table(data: dict[str, Any]) -> Any:
    """An RSPG selection (SelectionResult.to_json) against its pool: the selection, the oracle
    (the best candidate per question), each configuration with how often it was picked, and
    the paired tests against no personalization and the best single configuration."""
    from rich.table import Table

    main = data["main_metric"]
    where = f"bench {data['bench_key'][:12]}" if data.get("bench_key") else "its pool"
    generations = data["generations"]
    table = Table(
        title=f"{data['label']} on {where} ({data['split']}, {data['questions']} questions)",
        caption=(
            f"success rate {data['success_rate']:.3f} (a best candidate picked); generations it needs: "
            f"post {generations['post']}, pre {generations['pre']} (this call: {generations['new']}); "
            f"selector inference {data.get('selector_seconds', 0.0):.2f} s; p: two-sided paired randomization test"
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


def selection_notes(result: BenchResult) -> list[Any]:
    """A table per RSPG row of a bench, or the line saying why its comparison is missing."""
    found: list[Any] = []
    for row in result.rows:
        if row.record.spec.method_impl.selects:
            if row.record.selection is not None:
                found.append(selection_table(row.record.selection.to_json()))
            else:
                found.append(
                    f"{row.record.label}: {row.record.generated + row.record.cached} answers for "
                    f"{len(row.record.predictions)} questions; no oracle or best single: its pool's runs are not "
                    "in the store (add the pool's configurations to the bench to compare)"
                )
    return found
