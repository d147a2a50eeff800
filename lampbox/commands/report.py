"""`lampbox report`: a stored bench as the paper's table and figures; `lampbox compare`: two
stored runs question by question."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Any

import click

from lampbox.commands.common import (
    check_not_under_a_file,
    db_option,
    json_option,
    open_store_for_reading,
    print_json,
    reports_errors,
)

FORMAT_CHOICES = ("md", "latex", "csv", "json", "all")


@click.command("report")
@click.argument("bench_key", metavar="BENCH")
@click.option(
    "--format",
    "formats",
    type=click.Choice(FORMAT_CHOICES),
    multiple=True,
    help="Table format: md, latex, csv, json or all (repeatable; default md). Several need --output.",
)
@click.option(
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="File for the table (default: stdout). With several formats, the base name: its suffix becomes .md, .tex, .csv, .json.",
)
@click.option("--figures", "figures_dir", type=click.Path(file_okay=False, path_type=Path), default=None, help="Folder for the figures (PNG and SVG).")
@click.option("--reference", default=None, help="The row every other row is compared with: its label or a unique label prefix (default: the bench's no-personalization row).")
@click.option("--plot/--no-plot", default=True, show_default=True, help="Draw the per-configuration figure in the terminal.")
@click.option("--analysis", type=click.Choice(["peft-vs-rag"]), default=None, help="Instead of the table: peft-vs-rag, the gain of RAG, PEFT (OPPU) and both over no personalization by the users' history size (docs/report.md).")
@click.option("--row", "rows", multiple=True, metavar="ROLE=LABEL", help="With --analysis: the row that plays none, rag, peft or both (repeatable; default: found from the runs).")
@click.option("--buckets", type=int, default=4, show_default=True, help="With --analysis: history-size buckets (quantiles of the users' profile sizes).")
@db_option
@reports_errors
def report_command(
    bench_key: str,
    formats: tuple[str, ...],
    output: Path | None,
    figures_dir: Path | None,
    reference: str | None,
    plot: bool,
    analysis: str | None,
    rows: tuple[str, ...],
    buckets: int,
    db_path: Path | None,
) -> None:
    """The paper's table of a stored bench (its key, or a unique prefix, as `lampbox bench` prints).

    \b
    Per configuration: every metric with a 95% percentile bootstrap interval over questions,
    the relative change of the main metric and the paired randomization test's p against the
    reference row, with Holm's correction across rows; the best value of each metric in bold.
    --figures DIR writes means, user_gains and gain_by_history as PNG and SVG.
    Every file is written whole or not at all (rendered first, then renamed into place).

    \b
    --analysis peft-vs-rag: the gain of RAG, PEFT (each user's adapter, method oppu) and both
    over no personalization, overall and by history size, as a table (md, csv or json), a
    terminal plot and, with --figures, peft_vs_rag.png/.svg.
    """
    from lampbox.bench.figures import render_figures, terminal_means
    from lampbox.bench.formats import EXTENSIONS, FORMATS, render
    from lampbox.bench.paper import build_report
    from lampbox.errors import LampboxError

    chosen = list(dict.fromkeys(f for name in (formats or ("md",)) for f in (FORMATS if name == "all" else (name,))))
    if analysis is not None:
        chosen = [fmt for fmt in chosen if fmt != "latex"] if "all" in formats else chosen
    elif rows:
        raise LampboxError("--row names a row of --analysis peft-vs-rag")
    if len(chosen) > 1 and output is None:
        raise LampboxError("several formats need --output (a base name; each format gets its suffix)")
    targets = _table_targets(chosen, output, EXTENSIONS)
    for path in targets.values():
        check_not_under_a_file(path)
    if figures_dir is not None:
        check_not_under_a_file(figures_dir, folder=True)
    if analysis is not None:
        _peft_vs_rag(bench_key, chosen, targets, output, figures_dir, rows, buckets, plot, db_path)
        return

    with open_store_for_reading(db_path) as store:
        report = build_report(store, bench_key, reference)
    # Everything is rendered before anything is written: an error leaves no file behind.
    tables = {fmt: render(report, fmt) for fmt in chosen}
    figures = render_figures(report) if figures_dir is not None else []
    _emit(
        tables, figures, targets, figures_dir, output, chosen[0], report.left_out, plot,
        lambda width, color: terminal_means(report, width=width, color=color),
    )  # fmt: skip


def _emit(
    tables: dict[str, str], figures: list[Any], targets: dict[str, Path], figures_dir: Path | None,
    output: Path | None, first: str, left_out: list[str], plot: bool, draw: Any,
) -> None:  # fmt: skip
    """Write what was rendered, print the first table when there is no --output, say what was
    written and left out, and draw the terminal plot."""
    written = _write(tables, targets, figures, figures_dir)
    if output is None:
        sys.stdout.write(tables[first])
    for path in written:
        click.echo(f"wrote {path}", err=True)
    for note in left_out:
        click.echo(f"left out (not finished): {note}", err=True)
    if plot:
        _draw_in_terminal(draw, to_stdout=output is not None)


def _peft_vs_rag(
    bench_key: str, chosen: list[str], targets: dict[str, Path], output: Path | None, figures_dir: Path | None,
    rows: tuple[str, ...], buckets: int, plot: bool, db_path: Path | None,
) -> None:  # fmt: skip
    """`--analysis peft-vs-rag`: rendered whole, then written (as the table and figures are)."""
    from lampbox.bench.figures import render_peft_rag, terminal_peft_rag
    from lampbox.bench.peft_rag import parse_row_choices, peft_vs_rag, render_analysis

    choices = parse_row_choices(rows)
    with open_store_for_reading(db_path) as store:
        analysis = peft_vs_rag(store, bench_key, choices, buckets)
    tables = {fmt: render_analysis(analysis, fmt) for fmt in chosen}
    figures = render_peft_rag(analysis) if figures_dir is not None else []
    _emit(
        tables, figures, targets, figures_dir, output, chosen[0], analysis.left_out, plot,
        lambda width, color: terminal_peft_rag(analysis, width=width, color=color),
    )  # fmt: skip


def _table_targets(chosen: list[str], output: Path | None, extensions: dict[str, str]) -> dict[str, Path]:
    if output is None:
        return {}
    if len(chosen) == 1:
        return {chosen[0]: output}
    return {fmt: output.with_suffix(extensions[fmt]) if output.suffix else output.with_name(output.name + extensions[fmt]) for fmt in chosen}


def _write(tables: dict[str, str], targets: dict[str, Path], figures: list[Any], figures_dir: Path | None) -> list[Path]:
    from lampbox.errors import InputFileError
    from lampbox.lampfiles import write_bytes_atomic

    files: list[tuple[Path, bytes]] = [(targets[fmt], tables[fmt].encode()) for fmt in targets]
    if figures_dir is not None:
        for figure in figures:
            files += [(figures_dir / f"{figure.name}.png", figure.png), (figures_dir / f"{figure.name}.svg", figure.svg)]
    for path, data in files:
        try:
            write_bytes_atomic(path, data)
        except OSError as error:
            raise InputFileError(path, f"cannot write: {error.strerror}") from None
    return [path for path, _ in files]


def _draw_in_terminal(draw: Any, to_stdout: bool) -> None:
    """A terminal figure (`draw(width, color)`): on stdout when the table went to a file, else
    on stderr when that is a terminal (never into a table piped from stdout)."""
    stream = sys.stdout if to_stdout else sys.stderr
    if not to_stdout and not sys.stderr.isatty():
        return
    width = max(60, min(160, shutil.get_terminal_size((100, 24)).columns))
    stream.write(draw(width, stream.isatty()) + "\n")


@click.command("compare")
@click.argument("first", metavar="RUN")
@click.argument("second", metavar="RUN")
@click.option("--show", type=click.IntRange(min=0), default=10, show_default=True, help="Questions that flip to list in each direction.")
@db_option
@json_option
@reports_errors
def compare_command(first: str, second: str, show: int, db_path: Path | None, as_json: bool) -> None:
    """Two stored runs on the same questions (run keys or unique prefixes), question by question.

    \b
    The paired randomization test on the per-question scores, wins/ties/losses of the first
    run (A) against the second (B), and the questions that flip (one run better), biggest
    difference first, with their user. --json gives every flip.
    """
    from lampbox.bench.compare import compare_runs

    with open_store_for_reading(db_path) as store:
        comparison = compare_runs(store, first, second)
    if as_json:
        print_json(comparison.to_json())
        return
    _print_comparison(comparison, show)


def _print_comparison(comparison: Any, show: int) -> None:
    from rich.console import Console
    from rich.table import Table

    from lampbox.engine.metrics import higher_is_better

    console = Console(file=sys.stdout, width=max(100, Console().width))
    a, b = comparison.a, comparison.b
    better = "higher" if higher_is_better(comparison.score) else "lower"
    metrics = Table(title=f"{comparison.task.name}: {comparison.n} questions", show_edge=False)
    metrics.add_column("run")
    metrics.add_column("key")
    for metric in comparison.task.metrics:
        metrics.add_column(metric, justify="right")
    for name, record in (("A", a), ("B", b)):
        metrics.add_row(f"{name}: {record.label}", record.run_key[:12], *(f"{record.metrics.get(m, float('nan')):.4f}" for m in comparison.task.metrics))
    console.print(metrics)
    console.print(
        f"per question ({comparison.score}, {better} is better): A better on {comparison.wins}, "
        f"ties {comparison.ties}, B better on {comparison.losses}"
    )
    console.print(
        f"mean difference A - B: {comparison.mean_difference:+.4f}; "
        f"paired randomization test (two-sided, 10,000 resamples): p = {comparison.p_value:.4f}"
    )
    for title, flips in (
        ("A better", [f for f in comparison.flips if f.difference > 0]),
        ("B better", [f for f in comparison.flips if f.difference < 0]),
    ):
        if not flips or show == 0:
            continue
        table = Table(title=f"questions that flip, {title} ({len(flips)}; biggest {min(show, len(flips))})", show_edge=False)
        shown = flips[:show]
        id_widths = {
            "question": max(len("question"), *(len(flip.question_id) for flip in shown)),
            "user": max(len("user"), *(len(flip.user_id) for flip in shown)),
        }
        for column, width in id_widths.items():
            table.add_column(column, no_wrap=True, min_width=width)
        for column in ("A", "B"):
            table.add_column(column, justify="right", no_wrap=True, min_width=6)
        # the texts share what the ids, the scores and the separators (about 32) leave
        text_width = max(8, (console.width - sum(id_widths.values()) - 32) // 3)
        for column in ("A output", "B output", "gold"):
            table.add_column(column, no_wrap=True, overflow="ellipsis", max_width=text_width)
        for flip in shown:
            table.add_row(
                flip.question_id, flip.user_id, f"{flip.score_a:.4f}", f"{flip.score_b:.4f}",
                _short(flip.output_a), _short(flip.output_b), _short(flip.gold or ""),
            )  # fmt: skip
        console.print(table)


def _short(text: str, limit: int = 40) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
