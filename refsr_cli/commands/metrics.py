"""`refsr metrics` — thin wrapper over :func:`refsr_cli.metrics.compare_paths`."""
from __future__ import annotations

import math
from pathlib import Path

import click

from refsr_cli import console
from refsr_cli.commands import StageCommand


def _fmt(value: float, digits: int) -> str:
    if math.isnan(value):
        return "n/a"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return f"{value:.{digits}f}"


_COLUMNS = {"psnr": ("PSNR (dB)", 2), "ssim": ("SSIM", 4), "ifc": ("IFC", 3),
            "psnr_covered": ("PSNR covered", 2), "psnr_outside": ("PSNR outside", 2),
            "ssim_covered": ("SSIM covered", 4), "ssim_outside": ("SSIM outside", 4)}


def _table(rows: list[dict], mean: dict):
    from rich.table import Table

    keys = [k for k in _COLUMNS if k in mean]
    table = Table()
    table.add_column("image")
    for key in keys:
        table.add_column(_COLUMNS[key][0], justify="right")

    def values(row):
        return [_fmt(math.nan if row.get(k) is None else row[k], _COLUMNS[k][1]) for k in keys]

    for r in rows:
        table.add_row(r["name"], *values(r))
    table.add_section()
    table.add_row(f"mean ({len(rows)})", *values(mean), style="bold")
    return table


@click.command("metrics", cls=StageCommand)
@click.argument("sr", required=False, type=click.Path(path_type=Path))
@click.argument("gt", required=False, type=click.Path(path_type=Path))
@click.option("--y", "y_channel", is_flag=True, help="Y channel (BT.601 luma from RGB) instead of RGB.")
@click.option("--crop", type=click.IntRange(min=0), default=0, show_default=True,
              help="Pixels dropped at every border before measuring.")
@click.option("--json", "as_json", is_flag=True,
              help='Print {"images": [...], "mean": {...}} (strict JSON: inf/NaN → null) instead of a table.')
@click.option("--csv", "csv_file", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="Also write per-image values and the mean to this CSV file.")
@click.option("--jobs", type=click.IntRange(min=0), default=0, show_default=True,
              help="Parallel workers (0 = one per core, serial for fewer than 4 images).")
@click.option("--mask", "mask", type=click.Path(path_type=Path, exists=True), default=None,
              help="Also measure inside / outside a region: a mask image (nonzero = covered) for every image, "
                   "or a folder of masks named after the images (NAME_footprint.png, as `refsr infer "
                   "--save-warped` writes a partial reference's footprint).")
def command(sr, gt, y_channel, crop, as_json, csv_file, jobs, mask):
    """PSNR, SSIM and IFC of SR images against ground truth GT.

    SR and GT are two image files or two folders; folders are matched by file name (stem), ignoring
    a trailing _sr/_hr/_gt, so `refsr infer` outputs (NAME_sr.png) meet NAME_hr.png or NAME.png.
    Defaults follow the CrossNet papers: RGB in [0, 1], whole image. --y and --crop give the
    BasicSR/mmagic conventions. After a chained `infer`, SR defaults to its output folder and a
    single path is taken as GT.

    \b
    Examples:
      refsr metrics sr/ gt/                       # table per image + mean
      refsr metrics sr/ gt/ --y --crop 8 --json   # BasicSR-style numbers, JSON on stdout
      refsr metrics out.png hr.png --csv scores.csv
      refsr metrics sr/ gt/ --mask sr/                # + covered / outside a telephoto footprint
      refsr infer ./pairs --scale 8 --out ./sr metrics ./pairs
    """
    from refsr_cli.commands import pipeline
    from refsr_cli.metrics import compare_paths, mean_row, to_json, write_csv

    state = pipeline()
    paths = [p for p in (sr, gt) if p is not None]
    if len(paths) < 2 and state.outputs is not None:
        gt = paths[0] if paths else state.extra.get("gt")
        if gt is None:
            raise click.UsageError(f"give GT to compare the outputs of the chained stage ({state.outputs}) with")
        paths = [Path(state.outputs), Path(gt)]
    if len(paths) < 2:
        raise click.UsageError("give SR and GT (two image files or two folders)")
    sr_path, gt_path = paths
    if csv_file is not None:  # a bad --csv fails now, not after every image was measured
        from refsr_cli.data.files import check_writable_dir

        check_writable_dir(csv_file.parent, f"the folder of --csv {csv_file.name}")

    rows = compare_paths(sr_path, gt_path, y=y_channel, crop=crop, jobs=jobs, mask=mask)
    mean = mean_row(rows)
    if csv_file is not None:
        write_csv(csv_file, rows)
        console.notice(f"wrote {csv_file}")
    if any(math.isnan(r["ifc"]) for r in rows):
        console.warn("IFC needs images of at least 72×72 pixels (after --crop); smaller ones show n/a")
    if as_json:
        click.echo(to_json(rows))
    else:
        from rich.console import Console

        convention = ("Y (BT.601)" if y_channel else "RGB") + (f", crop {crop}" if crop else ", whole image")
        out = Console(highlight=False, soft_wrap=True)
        out.print(f"{sr_path} vs {gt_path} ({convention})", markup=False)
        out.print(_table(rows, mean))
