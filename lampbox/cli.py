"""The one lampbox CLI: bare `lampbox` opens the TUI; subcommands for data, eval, rank, bench."""

from __future__ import annotations

from pathlib import Path

import click

from lampbox import __version__
from lampbox.commands.bench import bench_command
from lampbox.commands.data import data
from lampbox.commands.evaluate import eval_all_command, eval_command
from lampbox.commands.models import models
from lampbox.commands.rank import rank_command
from lampbox.commands.report import compare_command, report_command
from lampbox.commands.rspg import rspg
from lampbox.commands.tasks import tasks_command
from lampbox.commands.train import train


@click.group(invoke_without_command=True, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="lampbox")
@click.option(
    "--db",
    "db_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Store the TUI opens (DuckDB). Default: $LAMPBOX_DB, else lampbox.duckdb in the user data folder.",
)
@click.pass_context
def cli(ctx: click.Context, db_path: Path | None) -> None:
    """lampbox: a terminal sandbox for personalizing LLMs with the LaMP benchmark.

    \b
    Start with data:   lampbox data demo        (a small built-in LaMP_7-format set)
                       lampbox data fetch LaMP_7 (official files; needs the network)
                       lampbox data import PATH  (official-format files or a custom task)
    See what is there: lampbox data list
    Rank profiles:     lampbox rank --task LaMP_7 --split dev --retriever bm25
    Benchmark:         lampbox bench --task LaMP_7 --limit 50
    Paper table:       lampbox report BENCH --format latex --figures figs/
    Two runs:          lampbox compare RUN RUN
    Train:             lampbox train ipa --task LaMP_7 --retriever bm25 --k 4 --name my-model
    Trained models:    lampbox models list
    Score predictions: lampbox eval --task LaMP_7 --golds G.json --preds P.json
    Explore (TUI):     lampbox
    """
    if _watch_for_crashes and ctx.invoked_subcommand in WATCHED:
        from lampbox.supervise import supervise, supervision_wanted

        # a native crash in a backend is then reported, not silent (lampbox/supervise.py)
        if supervision_wanted():
            what, hint = WATCHED[ctx.invoked_subcommand]
            supervise(what, terminal=ctx.invoked_subcommand is None, hint=hint)
    if ctx.invoked_subcommand is None:
        from lampbox.tui import create_app  # textual loads only when the TUI opens

        app = create_app(db_path)
        app.run()
        ctx.exit(app.return_code or 0)


for command in (
    data, bench_command, report_command, compare_command, rank_command, eval_command, eval_all_command, tasks_command,
    train, models, rspg,
):  # fmt: skip
    cli.add_command(command)


# The commands that run model backends for long, watched by a parent for a native crash; only
# in a process of their own (main), never inside a caller's process (tests' CliRunner).
WATCHED = {
    None: ("the TUI", None),
    "bench": ("the bench", "what was stored is kept: the same command resumes where it stopped"),
}
_watch_for_crashes = False


def main() -> None:
    global _watch_for_crashes
    _watch_for_crashes = True
    cli(prog_name="lampbox")


if __name__ == "__main__":
    main()
