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
    if plan.users:
        scope += f" of the first {plan.users} users"
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
