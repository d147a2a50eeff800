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
        "user": artifact.user_id, "stands_on": artifact.stands_on,
        "metrics": dict(artifact.metrics), "path": artifact.path, "content_hash": artifact.content_hash,
        "created_at": str(artifact.created_at), "spec": dict(artifact.spec),
    }  # fmt: skip


def _kinds_help() -> str:
    from lampbox.model_folders import KIND_GROUPS, KINDS

    groups = "; ".join(f"{group}: {', '.join(kinds)}" for group, kinds in KIND_GROUPS.items())
    return f"Only models of this kind: {', '.join(KINDS)} ({groups})."


@models.command("list")
@click.option("--kind", default=None, help=_kinds_help())
@click.option("--task", default=None, help="Only the models trained on this task.")
@db_option
@json_option
@reports_errors
def list_models(kind: str | None, task: str | None, db_path: Path | None, as_json: bool) -> None:
    """Trained models, newest first, with their dev metrics; an OPPU user's adapter with its
    user and the task adapter it stands on.

    \b
    lampbox models list --kind generator --task commit_subject
    lampbox models list --kind user-adapter"""
    from rich.console import Console
    from rich.table import Table

    from lampbox.lab.registry import leftovers
    from lampbox.model_folders import kinds_selected
    from lampbox.store.artifacts import list_artifacts

    kinds = kinds_selected(kind) if kind is not None else None  # one line for an unknown kind, before the store
    with open_store_for_reading(db_path) as store:
        artifacts = list_artifacts(store, task, kinds)
        _report_leftovers(leftovers(store))
    if as_json:
        print_json([_to_json(a) for a in artifacts])
        return
    if not artifacts:
        which = " ".join(part for part in (kind and f"of kind {kind}", task and f"for {task}") if part)
        click.echo(f"no trained models {which}".rstrip() + " yet: see `lampbox train --help`")
        return
    stands = any(a.stands_on for a in artifacts)
    columns = ["name", "kind", "method", "task", "base", *(["user", "stands on"] if stands else []), "retrieval", "dev metrics", "created"]
    table = Table(*columns)
    for a in artifacts:
        spec = a.spec
        retrieval = "none" if not spec.get("k") or spec.get("retriever") == "none" else f"{spec['retriever']} k={spec['k']}"
        metrics = ", ".join(f"{k} {v:.4f}" for k, v in a.metrics.items())
        oppu = [a.user_id or "", a.stands_on or ""] if stands else []
        table.add_row(a.name, a.kind, a.method, a.task, a.base_model, *oppu, retrieval, metrics, str(a.created_at)[:16])
    Console().print(table)


@models.command("show")
@click.argument("name")
@click.option("--width", type=int, default=80, show_default=True, help="Plot width in characters.")
@db_option
@json_option
@reports_errors
def show_model(name: str, width: int, db_path: Path | None, as_json: bool) -> None:
    """A trained model: how it was made, what it stands on and what stands on it, and its
    loss and dev-metric curves."""
    from lampbox.errors import LampboxError
    from lampbox.lab.registry import removal_plan
    from lampbox.model_folders import check_model_name
    from lampbox.store.artifacts import get_artifact

    check_model_name(name)
    with open_store_for_reading(db_path) as store:
        artifact = get_artifact(store, name)
        plan = removal_plan(store, name) if artifact is not None else None
    if artifact is None or plan is None:
        raise LampboxError(f"no trained model named {name!r} (see `lampbox models list`)")
    if as_json:
        print_json({**_to_json(artifact), "parts": list(plan.parts), "stood_on_by": list(plan.dependents),
                    "history": list(artifact.history)})  # fmt: skip
        return
    for key, value in _to_json(artifact).items():
        if key != "spec" and not (key in ("user", "stands_on") and value is None):
            click.echo(f"{key:>16}: {value}")
    if plan.parts:
        click.echo(f"{'parts':>16}: {plan.describe(plan.parts)}")
    if plan.dependents:
        click.echo(f"{'dependents':>16}: {plan.dependents_line()}")
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
@click.option("--with-dependents", is_flag=True, help="Also remove the models that stand on it (the OPPU sets and users' adapters on a task adapter).")
@db_option
@reports_errors
def remove_model(name: str, with_dependents: bool, db_path: Path | None) -> None:
    """Delete a trained model: its folder, its unfinished job and its registration. An OPPU
    set goes with its users' adapters (NAME.u.*); its task adapter stays.

    A model that others stand on (a task adapter under OPPU users' adapters and sets) is
    refused, naming them, unless --with-dependents. Only a trained model's name (as `lampbox
    train --name` takes it) and only lampbox model folders inside the models folder; refused
    while a job of any of those names runs."""
    from lampbox.lab import registry
    from lampbox.model_folders import check_model_name

    check_model_name(name)  # before the store is opened: a path or '..' is refused at once
    with open_store(db_path, purpose=f"models rm {name}") as store:
        plan, removed = registry.remove_model(store, name, with_dependents=with_dependents)
    for each, what in removed.items():
        click.echo(f"removed {each}: " + ", ".join(what))
    if plan.stands_on and plan.stands_on not in removed:
        kept = plan.stands_on
        click.echo(f"kept {kept}, which {name} stood on (`lampbox models rm {kept}` removes it)", err=True)


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
