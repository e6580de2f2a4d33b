"""The ``refsr`` command: a Click *chained* group.

Stages run alone (``refsr prepare synthetic --out data``) or chained in one call
(``refsr prepare synthetic --out data train --variant crossnet --iters 200 bench``). Each stage
records what it produced in the shared :class:`~refsr_cli.commands.Pipeline` (``ctx.obj``); the next stage uses it as
its default input. Subcommands live one per module in :mod:`refsr_cli.commands` and stay thin:
each parses options and calls a plain function of the library.
"""
from __future__ import annotations

import importlib
import pkgutil
import sys
import click

from refsr_cli import __version__, console
from refsr_cli.commands import Pipeline
from refsr_cli.errors import RefsrError


class _CleanError(click.ClickException):
    """Prints ``refsr: error: …`` as one line and exits 1."""

    def show(self, file=None):  # noqa: D401 - click API
        click.echo(f"refsr: error: {self.format_message()}", err=True)


class RefsrGroup(click.Group):
    """Chained group that turns library errors into one-line messages instead of tracebacks."""

    def list_commands(self, ctx):  # keep the order users think in, not the alphabet
        order = ["prepare", "train", "infer", "bench", "metrics", "models"]
        names = super().list_commands(ctx)
        return sorted(names, key=lambda n: (order.index(n) if n in order else len(order), n))

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except RefsrError as exc:
            raise _CleanError(str(exc)) from None
        except KeyboardInterrupt:
            click.echo("refsr: interrupted — rerun the same command to resume", err=True)
            sys.exit(130)


@click.group(cls=RefsrGroup, chain=True, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="refsr")
@click.option("-q", "--quiet", is_flag=True, help="No progress bars or notices (errors still print).")
@click.pass_context
def main(ctx: click.Context, quiet: bool) -> None:
    """Reference-based super-resolution: prepare data, train, infer, benchmark.

    \b
    Stages chain in one call, each handing its output to the next:
      refsr prepare synthetic --out data train --variant crossnet --iters 200 bench
    \b
    Typical single stages:
      refsr prepare flower ~/Flowers --out data
      refsr infer ./pairs --scale 8 --out ./sr
      refsr bench                          # built-in test set, shipped weights
      refsr metrics ./sr ./gt --json
      refsr models
    """
    console.set_quiet(quiet)
    ctx.obj = Pipeline()


def _register_commands() -> None:
    """Add every ``command`` defined by a module of :mod:`refsr_cli.commands`."""
    from refsr_cli import commands

    for info in pkgutil.iter_modules(commands.__path__):
        module = importlib.import_module(f"refsr_cli.commands.{info.name}")
        command = getattr(module, "command", None)
        if isinstance(command, click.Command):
            main.add_command(command)


_register_commands()
