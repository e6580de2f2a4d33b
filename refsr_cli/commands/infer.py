"""``refsr infer``: super-resolve a folder (or CSV list) of LR/Ref pairs."""
from __future__ import annotations

import json
from pathlib import Path

import click

from refsr_cli import console
from refsr_cli.commands import StageCommand
from refsr_cli.errors import RefsrError
from refsr_cli.inference import BACK_PROJECTION

BASELINE_SCALES = tuple(range(2, 17))


def _fmt_metrics(metrics: dict | None) -> str:
    if not metrics:
        return ""
    parts = []
    for key, label, fmt in (("psnr", "PSNR", "{:.2f} dB"), ("ssim", "SSIM", "{:.4f}"), ("ifc", "IFC", "{:.3f}"),
                            ("psnr_covered", "covered", "{:.2f} dB"), ("psnr_outside", "outside", "{:.2f} dB")):
        value = metrics.get(key)
        if isinstance(value, (int, float)):
            parts.append(f"{label} {fmt.format(value)}")
    return "  " + "  ".join(parts)


@click.command("infer", cls=StageCommand)
@click.argument("source", required=False, type=click.Path(exists=True, path_type=Path))
@click.option("-s", "--scale", type=int, required=True, help="Upscaling factor (4 or 8).")
@click.option("-o", "--out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Output folder (created; NAME_sr.png per pair).")
@click.option("-m", "--method", default=None,
              help="Variant (crossnet, crossnetpp, crossmpi, refsrnet, mdsr) or baseline (bicubic, patchmatch). "
                   "Default: the --weights checkpoint's variant, else the shipped network that measures best "
                   "on the real-pair suite at --scale, as the model cards record it.")
@click.option("-w", "--weights", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Checkpoint file. Default: a checkpoint trained earlier in the same chain, else the "
                   "shipped weights for the method and scale.")
@click.option("--prealign", is_flag=True,
              help="Align references of another field of view or zoom (e.g. a telephoto camera's): a global "
                   "similarity from feature matches. Where the reference then covers only part of the view, "
                   "reference-based SR runs inside its footprint and single-image SR (MDSR) outside.")
@click.option("--detector", type=click.Choice(["sift", "orb"]), default="sift", show_default=True,
              help="Features used by --prealign.")
@click.option("--tile", type=int, default=512, show_default=True,
              help="Tile size in output pixels (multiple of 64); 0 = whole image at once.")
@click.option("--overlap", type=int, default=64, show_default=True,
              help="Tile overlap in output pixels (multiple of 64, ≥ 64). Raise it for large parallax.")
@click.option("--batch", type=click.IntRange(min=1), default=None,
              help="Tiles per forward pass (default: automatic — 1 on CPU, by free memory on GPU).")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--half", is_flag=True, help="float16 autocast (GPU only).")
@click.option("--bf16", is_flag=True, help="bfloat16 autocast (GPU only).")
@click.option("--overwrite", is_flag=True,
              help="Redo pairs whose output exists (default: skip → resume); needed to replace outputs "
                   "made with other settings (OUT/settings.json).")
@click.option("--save-flow", is_flag=True, help="Also write NAME_flow.png (colour-coded) and NAME_flow.npy.")
@click.option("--save-warped", is_flag=True, help="Also write NAME_warped.png (the aligned reference).")
@click.option("--save-depth", is_flag=True, help="Also write NAME_depth.png and NAME_depth.npy (Cross-MPI).")
@click.option("--json", "as_json", is_flag=True,
              help="One JSON object per pair on stdout (name, output, seconds, metrics).")
@click.option("--keep-going", is_flag=True, help="Report a failed pair and continue; exit 1 at the end.")
@click.option("--shard", default=None, metavar="K/N",
              help="Process pairs K, K+N, K+2N … of the sorted list (K from 0), e.g. for array jobs.")
@click.option("--baseline", nargs=2, type=float, default=None, metavar="BX BY",
              help="Cross-MPI: direction of the reference's parallax, e.g. (1 1) for light-field views "
                   "(k,k)→(0,0), (1 0) for a rectified pair with the reference on the left. Default: read "
                   "from each pair (block matching; printed and in the JSON line).")
@click.option("--disparity-range", nargs=2, type=float, default=None, metavar="LO HI",
              help="Cross-MPI: disparity span (output px along --baseline) of its planes. Default: read "
                   "from each pair, or 0 20 with --baseline alone.")
@click.option("--reference-shift", nargs=2, type=int, default=None, metavar="DX DY",
              help="CrossNet, CrossNet++, RefSR-Net: shift the reference by (DX, DY) HR px before the network "
                   "(ref(p + (DX, DY)) lands on p; 0 0 = no shift). Default: the pair's median displacement, "
                   "read from each pair (printed and in the JSON line).")
@click.option("--back-projection", type=click.IntRange(min=0), default=None, metavar="N",
              help=f"Rounds of back-projection onto the LR applied to a network's output (default "
                   f"{BACK_PROJECTION}; 0 = the network's raw output). Baselines keep their own.")
@click.option("--paste-gate/--no-paste-gate", default=True, show_default=True,
              help="For a network trained on matched references (reference_matching in its card): take the "
                   "matched reference itself where it agrees with the LR, the network's output elsewhere.")
@click.option("--rematch/--no-rematch", default=True, show_default=True,
              help="For a checkpoint with rematching steps (rematch in its card): match the reference again, "
                   "guided by the output, and run the network or the paste gate on it; --no-rematch: the "
                   "first pass only (faster).")
@click.option("--matching-patch", default=None, metavar="P[,P...]",
              help="For a network trained on matched references: the sides in LR pixels of the patches its "
                   "reference is matched with, instead of its card's (several: the pastes are blended). "
                   "E.g. 3: the ×4 networks' single-size matching, 1.8-1.9× faster than their 3,5,7 on the "
                   "real suite and 0.1-0.2 dB lower.")
@click.option("--y-channel", is_flag=True, help="Metrics on the Y channel (BT.601) instead of RGB.")
@click.option("--crop", "metrics_crop", type=click.IntRange(min=0), default=0, help="Metrics border crop (px).")
def command(source, scale, out, method, weights, prealign, detector, tile, overlap, batch, device, half, bf16,
            overwrite, save_flow, save_warped, save_depth, as_json, keep_going, shard, baseline, disparity_range,
            reference_shift, back_projection, paste_gate, rematch, matching_patch, y_channel, metrics_crop):
    """Super-resolve LR/Ref pairs: SOURCE is a folder or a CSV file.

    \b
    Pairs: NAME_lr.png + NAME_ref.png (+ NAME_hr.png) in SOURCE, or lr/NAME.png + ref/NAME.png
    (+ hr/NAME.png) under it, or a CSV file of rows lr,ref[,hr]. With ground truth, PSNR/SSIM/IFC
    are printed and written to OUT/metrics.json. Existing outputs are skipped (resume); a rerun
    under other settings (method, weights, scale, …) is refused rather than mixed with them.
    \b
    Examples:
      refsr infer ./pairs --scale 8 --out ./sr
      refsr infer pairs.csv --scale 4 --out ./sr --method crossmpi --save-depth
      refsr infer ./rig --scale 4 --out ./sr --prealign --json --keep-going
      refsr infer ./pairs --scale 4 --out ./sr --method bicubic --shard 0/4
      refsr infer ./stereo --scale 4 --out ./sr --method crossmpi --baseline 1 0 --disparity-range 0 64
      refsr train --variant crossnet --scale 4 --iters 200 infer ./pairs --scale 4 --out ./sr
    """
    from refsr_cli.commands import pipeline
    from refsr_cli.inference.pipeline import check_output_dir, infer_pairs
    from refsr_cli.inference.methods import baselines, load_method, method_names, resolve_device
    from refsr_cli.data.pairs import discover_pairs, parse_shard, shard as take_shard
    from refsr_cli.inference.tiling import tile_grid

    state = pipeline()
    if source is None:
        source = state.extra.get("pairs")
        if source is None:
            raise click.UsageError("give SOURCE: a folder of pairs or a CSV file lr,ref[,hr]")
        source = Path(source)

    # -- usage checks (exit 2) before any work -------------------------------------------------------
    known = method_names()
    if method is not None and method not in known:
        raise click.BadParameter(f"{method!r} is not one of {', '.join(known)}", param_hint="--method")
    if weights is None and state.checkpoint is not None and (method is None or method not in baselines()):
        # A checkpoint trained earlier in this chain — unless --method asks for another variant.
        from refsr_cli.archs.checkpoint import read_checkpoint
        if method is None or read_checkpoint(state.checkpoint).get("variant") == method:
            weights = Path(state.checkpoint)
    if method is None and weights is None:
        from refsr_cli.archs.checkpoint import default_variant

        method, measured = default_variant(scale)
        if measured is not None:
            console.notice(f"method: {method}, the best shipped network on the real-pair suite at ×{scale} "
                           f"({measured:.2f} dB mean, its model card); --method chooses another")
    is_baseline = method in baselines()
    if is_baseline:
        if scale not in BASELINE_SCALES:
            raise click.BadParameter(f"{scale} is not a usable scale (2 … 16 for baselines)", param_hint="--scale")
    else:
        from refsr_cli.archs import spec
        # With only --weights the variant is known once the checkpoint is read (load_method checks it).
        scales = spec(method).scales if method is not None else BASELINE_SCALES
        if scale not in scales:
            shown = f"{scales[0]}–{scales[-1]}" if len(scales) > 4 else ", ".join(map(str, scales))
            raise click.BadParameter(f"{scale} is not a supported scale ({shown})",
                                     param_hint="--scale")
    if half and bf16:
        raise click.UsageError("give --half or --bf16, not both")
    try:
        run_device = resolve_device(device)
    except (RefsrError, RuntimeError) as exc:
        raise click.BadParameter(str(exc), param_hint="--device") from None
    if (half or bf16) and run_device.type != "cuda":
        raise click.UsageError("--half/--bf16 need a GPU; this run is on the CPU")
    if tile < 0:
        raise click.BadParameter("must be ≥ 0", param_hint="--tile")
    try:
        tile_grid(100 * tile + 1, 100 * tile + 1, scale, tile, overlap)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--tile/--overlap") from None
    shard_kn = None
    if shard is not None:
        try:
            shard_kn = parse_shard(shard)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--shard") from None
    save = [key for key, flag in (("flow", save_flow), ("warped", save_warped), ("depth", save_depth)) if flag]
    sides = None
    if matching_patch is not None:
        from refsr_cli.archs import matching_sides

        try:
            sides = matching_sides(matching_patch)
        except RefsrError as exc:
            raise click.BadParameter(f"{exc} (e.g. 3 or 3,5,7)", param_hint="--matching-patch") from None

    # -- the run ---------------------------------------------------------------------------------------
    pairs = discover_pairs(source)
    check_output_dir(Path(out))  # before loading a model: a bad --out fails at once
    if shard_kn is not None:
        pairs = take_shard(pairs, *shard_kn)
        console.notice(f"shard {shard_kn[0]}/{shard_kn[1]}: {len(pairs)} pair(s)")
    the_method = load_method(method, scale, weights=weights, device=run_device,
                             half="bf16" if bf16 else ("fp16" if half else False))
    from refsr_cli.archs import spec, variants
    from refsr_cli.inference.matched_reference import reference_matching

    if (baseline or disparity_range or reference_shift is not None) and reference_matching(the_method.model):
        # Its reference is patch-matched onto the LR's view first: there is no displacement left to give.
        raise click.UsageError(f"--baseline/--disparity-range/--reference-shift do not apply to {the_method.weights}: "
                               f"it takes the reference patch-matched onto the LR's view (reference_matching)")
    if sides is not None:
        if not reference_matching(the_method.model):
            raise click.UsageError(f"--matching-patch applies to networks that take a matched reference "
                                   f"(reference_matching), not to {the_method.weights or the_method.name}")
        the_method.model.matching_patch = sides
    if baseline or disparity_range:
        recipe = spec(the_method.name).recipe if the_method.model is not None else None
        if recipe is None or recipe.pair_options is None:
            sweeping = [v for v in variants() if spec(v).recipe.pair_options is not None]
            raise click.UsageError(f"--baseline/--disparity-range apply to the {', '.join(sweeping)} method only")
        geometry = {"baseline": tuple(baseline)} if baseline else {}
        if disparity_range:
            geometry["disparity_range"] = tuple(disparity_range)
        the_method.forward_options = recipe.geometry_options(the_method.model, geometry)
    if reference_shift is not None:
        if the_method.recipe is None or not the_method.recipe.centre_reference:
            centring = [v for v in variants() if spec(v).recipe.centre_reference]
            raise click.UsageError(f"--reference-shift applies to the {', '.join(centring)} methods only")
        the_method.given_shift = tuple(reference_shift)
    if back_projection is not None and the_method.model is not None:
        the_method.back_projection = back_projection
    the_method.paste_gate = the_method.paste_gate and paste_gate
    the_method.rematching = rematch
    console.notice(f"{len(pairs)} pair(s), {the_method.name} ×{scale} on {the_method.device}"
                   + (f" ({the_method.weights})" if the_method.weights else ""))

    def report(result) -> None:  # called while the progress bar is live: print through its console
        for note in result.notes:
            console.notice(f"{result.name}: {note}")
        if not result.ok:
            console.error(f"{result.name}: {result.error}")
        if as_json:
            console.result(json.dumps(result.to_json()))
            return
        if result.status == "skipped":
            console.result(f"{result.name}: {result.output} exists, skipped{_fmt_metrics(result.metrics)}")
        elif result.ok:
            console.result(f"{result.name}: {result.output} ({result.seconds:.1f} s){_fmt_metrics(result.metrics)}")

    results = infer_pairs(pairs, out, the_method, tile=tile, overlap=overlap, batch=batch, prealign=prealign,
                          detector=detector, overwrite=overwrite, save=save, keep_going=keep_going,
                          metrics_y=y_channel, metrics_crop=metrics_crop, on_result=report)
    state.outputs = Path(out)

    scored = [r.metrics for r in results if r.metrics]
    if scored:
        from refsr_cli.metrics import mean_of_rows
        line = f"mean of {len(scored)} pair(s):{_fmt_metrics(mean_of_rows(scored))}  → {Path(out) / 'metrics.json'}"
        if as_json:
            console.notice(line)
        else:
            click.echo(line)
    failed = [r for r in results if not r.ok]
    done = sum(r.status == "done" for r in results)
    skipped = sum(r.status == "skipped" for r in results)
    console.notice(f"{done} done, {skipped} skipped, {len(failed)} failed"
                   + ("" if len(results) == len(pairs) else f", {len(pairs) - len(results)} not attempted"))
    if failed:
        raise click.exceptions.Exit(1)
