"""`lampbox models`: the trained models in the store (list, show with curves, remove, doctor)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from lampbox.commands.common import (
    db_option,
    json_option,
    open_store,
    open_store_for_reading,
    print_json,
    reports_errors,
)


@click.group("models")
def models() -> None:
    """Trained models (from `lampbox train`): list, show, rm, doctor."""


def _to_json(artifact: Any) -> dict[str, Any]:
    return {
        "name": artifact.name, "kind": artifact.kind, "method": artifact.method, "task": artifact.task,
        "base_model": artifact.base_model, "base_fingerprint": artifact.base_fingerprint,
        "metrics": dict(artifact.metrics), "path": artifact.path, "content_hash": artifact.content_hash,
        "created_at": str(artifact.created_at), "spec": dict(artifact.spec),
    }  # fmt: skip


@models.command("list")
@click.option("--task", default=None, help="Only the models trained on this task.")
@db_option
@json_option
@reports_errors
def list_models(task: str | None, db_path: Path | None, as_json: bool) -> None:
    """Trained models, newest first, with their dev metrics."""
    from rich.console import Console
    from rich.table import Table

    from lampbox.lab.registry import leftovers
    from lampbox.store.artifacts import list_artifacts

    with open_store_for_reading(db_path) as store:
        artifacts = list_artifacts(store, task)
        _report_leftovers(leftovers(store))
    if as_json:
        print_json([_to_json(a) for a in artifacts])
        return
    if not artifacts:
        click.echo("no trained models yet: see `lampbox train --help`")
        return
    table = Table("name", "kind", "method", "task", "base", "retrieval", "dev metrics", "created")
    for a in artifacts:
        spec = a.spec
        retrieval = "none" if not spec.get("k") or spec.get("retriever") == "none" else f"{spec['retriever']} k={spec['k']}"
        metrics = ", ".join(f"{k} {v:.4f}" for k, v in a.metrics.items())
        table.add_row(a.name, a.kind, a.method, a.task, a.base_model, retrieval, metrics, str(a.created_at)[:16])
    Console().print(table)


@models.command("show")
@click.argument("name")
@click.option("--width", type=int, default=80, show_default=True, help="Plot width in characters.")
@db_option
@json_option
@reports_errors
def show_model(name: str, width: int, db_path: Path | None, as_json: bool) -> None:
    """A trained model: how it was made, and its loss and dev-metric curves."""
    from lampbox.errors import LampboxError
    from lampbox.model_folders import check_model_name
    from lampbox.store.artifacts import get_artifact

    check_model_name(name)
    with open_store_for_reading(db_path) as store:
        artifact = get_artifact(store, name)
    if artifact is None:
        raise LampboxError(f"no trained model named {name!r} (see `lampbox models list`)")
    if as_json:
        print_json({**_to_json(artifact), "history": list(artifact.history)})
        return
    for key, value in _to_json(artifact).items():
        if key != "spec":
            click.echo(f"{key:>16}: {value}")
    spec = dict(artifact.spec)
    config = spec.pop("config", {})
    click.echo(f"{'training':>16}: " + ", ".join(f"{k}={v}" for k, v in spec.items()))
    click.echo(f"{'config':>16}: " + ", ".join(f"{k}={v}" for k, v in config.items()))
    losses = [(e["step"], e["loss"]) for e in artifact.history if "loss" in e and "step" in e]
    evals = [(e["step"], {k[5:]: v for k, v in e.items() if k.startswith("eval_")}) for e in artifact.history if any(k.startswith("eval_") for k in e)]
    if losses:
        click.echo(_plot("training loss", [s for s, _ in losses], [v for _, v in losses], width))
    if evals:
        main = next(iter(evals[0][1]))
        click.echo(_plot(f"dev {main}", [s for s, _ in evals], [m[main] for _, m in evals], width))


def _plot(title: str, xs: list[Any], ys: list[float], width: int) -> str:
    import plotext as plt

    plt.clear_figure()
    plt.plot(xs, ys, marker="braille")
    plt.title(title)
    plt.xlabel("step")
    plt.plotsize(width, 15)
    plt.theme("clear")
    return str(plt.build())


@models.command("rm")
@click.argument("name")
@db_option
@reports_errors
def remove_model(name: str, db_path: Path | None) -> None:
    """Delete a trained model: its folder, its unfinished job and its registration.

    Only a trained model's name (as `lampbox train --name` takes it) and only a lampbox model
    folder inside the models folder; refused while a job of that name runs."""
    from lampbox.lab import registry
    from lampbox.model_folders import check_model_name

    check_model_name(name)  # before the store is opened: a path or '..' is refused at once
    with open_store(db_path, purpose=f"models rm {name}") as store:
        removed = registry.remove_model(store, name)
    click.echo(f"removed {name}: " + ", ".join(removed))


@models.command("doctor")
@click.option("--fix", is_flag=True, help="Repair what can be repaired (register folders, drop rows whose folder is gone, remove stale saves).")
@db_option
@reports_errors
def doctor(fix: bool, db_path: Path | None) -> None:
    """Check that the models folder and the store's registrations agree (after a kill, a
    folder removed by hand, another store), and with --fix repair them."""
    from lampbox.lab.registry import leftovers, repair

    with open_store(db_path, purpose="models doctor") if fix else open_store_for_reading(db_path) as store:
        found = leftovers(store)
        if not found:
            click.echo("models folder and store agree")
            return
        for leftover in found:
            if fix and leftover.fixable:
                click.echo(f"{leftover.name}: {repair(store, leftover)}")
            else:
                click.echo(leftover.line)
    if not fix and any(leftover.fixable for leftover in found):
        click.echo("run `lampbox models doctor --fix` to repair the fixable ones", err=True)


def _report_leftovers(found: list[Any]) -> None:
    """One stderr line per leftover, and how to repair them (models list)."""
    from lampbox.lab.registry import Leftover

    shown = [leftover for leftover in found if isinstance(leftover, Leftover) and leftover.problem != "busy"]
    for leftover in shown:
        click.echo(f"warning: {leftover.line}", err=True)
    if any(leftover.fixable for leftover in shown):
        click.echo("warning: `lampbox models doctor --fix` repairs these", err=True)
