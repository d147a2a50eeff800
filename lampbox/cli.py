"""The one lampbox CLI: bare `lampbox` opens the TUI; subcommands for data, eval, rank, bench."""

from __future__ import annotations

import click

from lampbox import __version__
from lampbox.commands.data import data
from lampbox.commands.tasks import tasks_command


@click.group(invoke_without_command=True, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="lampbox")
@click.pass_context
def cli(ctx: click.Context) -> None:
    """lampbox: a terminal sandbox for personalizing LLMs with the LaMP benchmark.

    \b
    Start with data:   lampbox data demo        (a small built-in LaMP_7-format set)
                       lampbox data fetch LaMP_7 (official files; needs the network)
                       lampbox data import PATH  (official-format files or a custom task)
    See what is there: lampbox data list
    Score predictions: lampbox eval --task LaMP_7 --golds G.json --preds P.json
    """
    if ctx.invoked_subcommand is None:
        click.echo(ctx.get_help())


cli.add_command(data)


cli.add_command(tasks_command)


def main() -> None:
    cli(prog_name="lampbox")


if __name__ == "__main__":
    main()
