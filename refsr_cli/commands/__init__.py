"""One module per subcommand. Each defines ``command`` (a ``click.Command``); cli.py registers it.

Commands parse options, read defaults from :func:`pipeline` (what earlier chained
stages produced), call a plain library function, and record what they produced for later stages.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import click


@dataclass
class Pipeline:
    """What earlier stages of a chained call produced (``None`` when no stage produced it)."""

    store_dir: Path | None = None     # folder holding train.h5 / test.h5 (prepare)
    train_store: Path | None = None   # prepare → train
    test_store: Path | None = None    # prepare → bench (never train's validation: bench reports on it)
    checkpoint: Path | None = None    # train → infer / bench
    outputs: Path | None = None       # infer → metrics
    extra: dict = field(default_factory=dict)


def pipeline() -> Pipeline:
    """The :class:`Pipeline` of the running invocation (a fresh one outside the CLI)."""
    ctx = click.get_current_context(silent=True)
    if ctx is None:
        return Pipeline()
    root = ctx.find_root()
    if not isinstance(root.obj, Pipeline):
        root.obj = Pipeline()
    return root.obj


class StageCommand(click.Command):
    """A chained stage whose options may follow its positional arguments.

    In a chained group Click stops reading a stage's options at its first positional argument, so
    ``refsr infer ./pairs --scale 8`` would lose ``--scale``. A stage therefore takes its own tokens up to
    the next stage's name (or the first positional beyond its arguments) and parses them with options
    allowed anywhere; the rest goes to the following stages. A token named like a stage (``bench``) is
    taken for the next stage unless a file or folder of that name exists.
    """

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        group = ctx.parent.command if ctx.parent is not None else None
        stages = set(getattr(group, "commands", {}))
        params = self.get_params(ctx)
        takes: dict[str, int] = {}
        for param in params:
            if isinstance(param, click.Option):
                n = 0 if (param.is_flag or param.count) else param.nargs
                for name in param.opts + param.secondary_opts:
                    takes[name] = n
        arguments = [p for p in params if isinstance(p, click.Argument)]
        unbounded = any(p.nargs < 0 for p in arguments)
        most = sum(max(p.nargs, 0) for p in arguments)
        required = sum(max(p.nargs, 1) for p in arguments if p.required)
        i = seen = 0
        while i < len(args):
            token = args[i]
            if token == "--":
                break
            if token.startswith("-") and token != "-":
                i += 1 + (takes.get(token, 0) if "=" not in token else 0)
                continue
            next_stage = token in stages and seen >= required and not Path(token).exists()
            if (not unbounded and seen >= most) or next_stage:
                break
            seen += 1
            i += 1
        head, tail = args[:i], args[i:]
        ctx.allow_interspersed_args = True
        rest = super().parse_args(ctx, head)
        ctx.args = list(rest) + list(tail)
        return ctx.args
