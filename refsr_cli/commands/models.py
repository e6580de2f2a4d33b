"""``refsr models``: the network variants, their papers, sizes, input constraints and shipped weights."""
from __future__ import annotations

import json

import click
import torch

from refsr_cli.archs import build_model, count_parameters, spec, variants
from refsr_cli.archs.checkpoint import read_checkpoint, shipped_weights


def _paper_size_parameters(name: str) -> tuple[int, dict[str, int] | None]:
    """Parameter count of the paper-size variant (and its per-part breakdown when the model has one).

    Built on the ``meta`` device: shapes only, no memory or initialisation, so even the 69 M-parameter
    CrossNet++ costs milliseconds. Falls back to a CPU build for a builder that cannot run on ``meta``.
    """
    try:
        with torch.device("meta"):
            model = build_model(name)
    except Exception:  # noqa: BLE001 - a builder that needs real tensors (e.g. fixed filters)
        model = build_model(name)
    breakdown = model.parameter_breakdown() if hasattr(model, "parameter_breakdown") else None
    return count_parameters(model), breakdown


def _constraints(s) -> str:
    parts = []
    if s.needs_reference:
        parts.append("LR + Ref (Ref = s× LR size)")
    else:
        parts.append("LR only (single-image)")
    if s.input_multiple > 1:
        parts.append(f"padded to ×{s.input_multiple} internally")
    parts.append("scales " + "/".join(f"×{x}" for x in s.scales))
    return "; ".join(parts)


def describe_models() -> list[dict]:
    """One dict per registered variant: name, paper, summary, params, constraints, shipped weights."""
    rows = []
    for name in variants():
        s = spec(name)
        params, breakdown = _paper_size_parameters(name)
        weights = {f"x{scale}": (str(p) if (p := shipped_weights(name, scale)) else None) for scale in (4, 8)}
        # Shipped checkpoints may be smaller configurations than the paper's: say how large they are.
        shipped_params = {key: (sum(t.numel() for t in read_checkpoint(path)["state_dict"].values()
                                    if t.is_floating_point()) if path else None)
                          for key, path in weights.items()}
        rows.append({"name": name, "paper": s.paper, "summary": s.summary, "params": params,
                     "params_breakdown": breakdown, "needs_reference": s.needs_reference,
                     "input_multiple": s.input_multiple, "scales": list(s.scales),
                     "constraints": _constraints(s), "tiny_config": dict(s.tiny),
                     "shipped_weights": weights, "shipped_params": shipped_params})
    return rows


@click.command("models")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list instead of a table.")
def command(as_json: bool) -> None:
    """List the network variants: paper, parameter count (paper size), input constraints, shipped weights
    (with their own parameter count: shipped checkpoints may be smaller configurations).

    \b
    Examples:
      refsr models
      refsr models --json | python -c "import json,sys; print([m['name'] for m in json.load(sys.stdin)])"
    """
    rows = describe_models()
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title="refsr network variants")
    for column, justify in (("variant", "left"), ("paper", "left"), ("params", "right"),
                            ("input", "left"), ("weights ×4", "center"), ("weights ×8", "center")):
        table.add_column(column, justify=justify)
    for row in rows:
        s = spec(row["name"])
        short = ("LR+Ref" if s.needs_reference else "LR only") + (
            f", pad ×{s.input_multiple}" if s.input_multiple > 1 else "") + ", " + "/".join(f"×{x}" for x in s.scales)
        table.add_row(row["name"], row["paper"], f"{row['params'] / 1e6:.2f} M", short,
                      *(f"yes ({n / 1e6:.2f} M)" if (n := row["shipped_params"][key]) else "no" for key in ("x4", "x8")))
    # Not a terminal (piped): rich would wrap at 80 columns; give the table room instead.
    console = Console(highlight=False)
    if not console.is_terminal:
        console = Console(highlight=False, width=160)
    console.print(table)
