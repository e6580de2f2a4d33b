"""Terminal output: progress bars and notices on stderr, so stdout stays clean for pipelines.

Progress bars switch off when stderr is not a terminal or when ``--quiet`` was given.
"""
from __future__ import annotations

import sys
import time
from contextlib import contextmanager
from typing import Iterable, Iterator, TypeVar

import click
from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                           TimeRemainingColumn)

T = TypeVar("T")

_state = {"quiet": False}
stderr = Console(stderr=True, highlight=False)


def set_quiet(quiet: bool) -> None:
    _state["quiet"] = bool(quiet)


def is_quiet() -> bool:
    return _state["quiet"]


def bars_enabled() -> bool:
    return not _state["quiet"] and sys.stderr.isatty()


def notice(message: str) -> None:
    """A one-line notice on stderr (silenced by --quiet)."""
    if not _state["quiet"]:
        stderr.print(f"[dim]refsr:[/dim] {message}", markup=True, soft_wrap=True)


def warn(message: str) -> None:
    """A warning on stderr; shown even with --quiet."""
    stderr.print(f"refsr: warning: {message}", markup=False, soft_wrap=True)


def error(message: str) -> None:
    """``refsr: error: …`` on stderr for one failed item of a run that goes on (shown even with --quiet)."""
    stderr.print(f"refsr: error: {message}", markup=False, soft_wrap=True)


def result(line: str) -> None:
    """One line of a command's results on stdout. When stdout is the terminal the bars draw on, the line
    goes through the bars' console, which prints it whole above a live bar instead of into it."""
    if bars_enabled() and sys.stdout.isatty():
        stderr.print(line, markup=False, highlight=False, soft_wrap=True)
    else:
        click.echo(line)


@contextmanager
def progress_bar(description: str, total: int | None, transient: bool = False) -> Iterator["_Bar"]:
    """Context manager yielding an object with ``advance(n=1)`` and ``update(**fields)``.

    ``total=None``: a pulsing bar for work of unknown length. ``transient``: the bar disappears when done
    (for a preparatory phase whose bar would only clutter the screen afterwards). A no-op when bars are
    disabled, so callers never branch on it. Without bars (stderr not a terminal: a log, CI) a finished
    stage that is not ``transient`` prints one line, ``description: done/total in S s``, so a log shows
    where the time went.
    """
    if not bars_enabled():
        bar, start = _Bar(None, None), time.perf_counter()
        yield bar
        if not transient and bar.done:
            notice(f"{description}: {bar.done}{f'/{total}' if total else ''} in "
                   f"{time.perf_counter() - start:.1f} s")
        return
    columns = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn()]
    with Progress(*columns, console=stderr, transient=transient) as prog:
        task = prog.add_task(description, total=total, info="")
        yield _Bar(prog, task)


class _Bar:
    def __init__(self, prog, task):
        self._prog, self._task = prog, task
        self.done = 0

    def advance(self, n: int = 1) -> None:
        self.done += n
        if self._prog is not None:
            self._prog.advance(self._task, n)

    def info(self, text: str) -> None:
        if self._prog is not None:
            self._prog.update(self._task, info=text)


def track(items: Iterable[T], description: str, total: int | None = None,
          transient: bool = False) -> Iterator[T]:
    """Iterate with a progress bar."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    with progress_bar(description, total, transient) as bar:
        for item in items:
            yield item
            bar.advance()
