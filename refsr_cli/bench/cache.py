"""One benchmark unit — a method on one test pair at one scale — run, scored and cached.

A unit is stored as ``OUT/cache/<method>__<digest>__<device>__x<scale>__<data>__<view>__<image>.json``
(written atomically as soon as it is done), so a rerun computes only what is missing: an interrupted
bench continues, and adding one method computes only it. Per unit: PSNR, SSIM and IFC
(:func:`refsr_cli.metrics.evaluate`: RGB in [0, 1], whole image, no border crop; SR clamped to [0, 1],
not quantised) and the wall time of the method call (inputs already in memory; padding and the device
transfer included, metrics excluded). Per test pair (method-independent, ``OUT/cache/pairs/``): the
parallax and, for the first image of each group, a fixed crop region for the side-by-side comparison.
"""
from __future__ import annotations

import time
import weakref
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from refsr_cli.bench.plan import MethodPlan, load_plan_method
from refsr_cli.bench.sources import Source, safe_name
from refsr_cli.data.files import read_json, write_json
from refsr_cli.data.image_io import write_image
from refsr_cli.inference.footprint import Footprint, footprint_inference
from refsr_cli.metrics import finite_or_none
from refsr_cli.ops.block_match import luma
from refsr_cli.workers import exit_with

CACHE_VERSION = 1
ESTIMATOR = "ops.geometry-v2"   # bump when the parallax estimator changes what it reports
QUICK = 0.5                     # seconds: shorter calls on sizes not yet run are timed a second time
# The input sizes each method object has been timed on (objects of the main process live through a bench).
_TIMED_SIZES: "weakref.WeakKeyDictionary[object, set]" = weakref.WeakKeyDictionary()
CROP = 128                      # side (HR pixels) of the side-by-side crops in the HTML page


def crop_region(hr: torch.Tensor, size: int = CROP, within: torch.Tensor | None = None) -> tuple[int, int, int]:
    """``(y, x, side)`` of the most textured ``size``² window of ``hr`` (depends on the GT only, so it
    is the same for every method and stays put when methods are added); with ``within`` (``H×W`` bool, a
    partial reference's footprint) the most textured window inside it."""
    h, w = hr.shape[-2:]
    side = min(size, h, w)
    gray = luma(hr.float().cpu()[None])
    gy = (gray[..., 1:, :] - gray[..., :-1, :]).abs()[..., :, :-1]
    gx = (gray[..., :, 1:] - gray[..., :, :-1]).abs()[..., :-1, :]
    energy = F.pad(gx + gy, (0, 1, 0, 1))
    step = max(1, side // 8)
    pooled = F.avg_pool2d(energy, side, stride=step)[0, 0]
    if within is not None:      # windows wholly inside the region only
        inside = F.avg_pool2d(within.float()[None, None], side, stride=step)[0, 0] > 0.999
        pooled = torch.where(inside, pooled, -1.0) if inside.any() else pooled
    iy, ix = divmod(int(pooled.argmax()), pooled.shape[1])
    return iy * step, ix * step, side


def _save_crop(path: Path, image: torch.Tensor, region) -> None:
    y, x, side = region
    write_image(path, image[..., y: y + side, x: x + side].float().clamp(0, 1).cpu())


def compute_unit(plan: MethodPlan, scale: int, device: str, lr: torch.Tensor, ref: torch.Tensor,
                 hr: torch.Tensor, meta: dict, cache_file: str, region=None, threads: int | None = None,
                 footprint=None, parent: int | None = None) -> dict:
    """Run one method on one pair, score it, write its cache entry (+ crops) and return the record.

    Baselines run so, in a joblib worker (with ``threads``) or in the main process; networks run
    :func:`run_unit` and :func:`store_unit` themselves, with the method they keep loaded. With a
    ``footprint`` (a prealigned partial reference), the method runs as ``refsr infer --prealign`` runs it
    (:func:`refsr_cli.inference.footprint.footprint_inference`) and the record adds the covered /
    outside metrics. ``parent``: the bench's process, in a worker (which then exits with it).
    """
    if parent is not None:
        exit_with(parent)
    if threads:
        torch.set_num_threads(int(threads))
    method = load_plan_method(plan, scale, device)
    return store_unit(*run_unit(method, lr, ref, footprint), hr, meta, cache_file, region, footprint)


def run_unit(method, lr: torch.Tensor, ref: torch.Tensor, footprint=None) -> tuple:
    """The timed call of one unit: ``(sr, aux, facts)``, ``facts`` the record's timing and method fields."""
    seconds, (sr, aux) = _timed(method, lr, ref, footprint)
    # A short call on input sizes this method object has not run yet is dominated by one-time costs
    # (resize matrices, oneDNN primitives built per shape, allocator): time it again. Sizes it has run
    # (the networks' method objects live through the bench) pay none of them; calling again would only
    # double the bench's time.
    sizes = (tuple(lr.shape), None if ref is None else tuple(ref.shape))
    timed_sizes = _TIMED_SIZES.setdefault(method, set())
    if seconds < QUICK and sizes not in timed_sizes:
        seconds, (sr, aux) = _timed(method, lr, ref, footprint)
    timed_sizes.add(sizes)
    facts = {"seconds": seconds, "threads": torch.get_num_threads(), "device": str(method.device)}
    if getattr(method, "geometry", None) is not None:
        facts["geometry"] = method.geometry.to_json()
    return sr[0].float().clamp(0, 1).cpu(), aux, facts


def store_unit(sr: torch.Tensor, aux, facts: dict, hr: torch.Tensor, meta: dict, cache_file: str, region=None,
               footprint=None) -> dict:
    """Score a unit's output (``3×H×W``), write its cache entry (+ crops) and return the record. Touches
    no method, so several may run at once on threads."""
    from refsr_cli.metrics import evaluate

    cache_file = Path(cache_file)
    scores = evaluate(sr, hr, covered=footprint.mask() if footprint is not None else None)
    record = {**meta, **{k: finite_or_none(v) for k, v in scores.items()}, **facts}
    if region is not None:
        crop = cache_file.with_suffix(".sr.png")
        _save_crop(crop, sr, region)
        record["crop"] = crop.name
        warped = aux.get("warped") if isinstance(aux, dict) else None
        if isinstance(warped, torch.Tensor) and warped.dim() == 4 and warped.shape[1] == 3:
            wfile = cache_file.with_suffix(".warped.png")
            _save_crop(wfile, warped[0], region)
            record["warped_crop"] = wfile.name
    write_json(cache_file, record, indent=1, allow_nan=False)
    return record


def _timed(method, lr: torch.Tensor, ref: torch.Tensor, footprint=None):
    start = time.perf_counter()
    ref = ref[None]
    # Reading the pair's geometry (bind_pair) and any single-image path are part of the method's time.
    result = footprint_inference(method, lr[None], ref, footprint)
    if method.device.type == "cuda":
        torch.cuda.synchronize(method.device)
    return time.perf_counter() - start, result


WARM_UP_LR = 32   # LR side of the warm-up call's crop


def warm_up(method, lr: torch.Tensor, ref: torch.Tensor) -> None:
    """One untimed call, so that a network's first timed image does not pay for lazy initialisation (thread
    pools, kernels). On a corner crop of the pair: costs that depend on the input size are paid by the
    first timed call of each size, which is timed a second time (:func:`run_unit`)."""
    h, w = min(lr.shape[-2], WARM_UP_LR), min(lr.shape[-1], WARM_UP_LR)
    s = ref.shape[-1] // lr.shape[-1]
    method(lr[None, :, :h, :w], ref[None, :, : s * h, : s * w])
    if method.device.type == "cuda":
        torch.cuda.synchronize(method.device)


def valid_cached(path: Path, needs_crop: bool) -> dict | None:
    record = read_json(path)
    if record is None or record.get("cache_version") != CACHE_VERSION or "seconds" not in record:
        return None
    if needs_crop and not (record.get("crop") and (path.parent / record["crop"]).is_file()):
        return None
    return record


def aligned_reference(cache: Path, source: Source, scale: int, view, name: str, lr: torch.Tensor,
                      ref: torch.Tensor) -> tuple[torch.Tensor, object]:
    """A reference of another field of view brought onto the HR grid, as ``refsr infer --prealign`` does:
    ``(3×sh×sw reference, Footprint)``. The similarity is estimated once (SIFT takes seconds) and cached
    beside the pair's facts."""
    from refsr_cli.ops.prealign import estimate_alignment, resample_reference

    path = cache / "pairs" / f"{source.ident}__x{scale}__{safe_name(view)}__{safe_name(name)}.align.json"
    size = (scale * lr.shape[-2], scale * lr.shape[-1])
    stored = read_json(path)
    if stored is None or stored.get("cache_version") != CACHE_VERSION or stored.get("ref_size") != list(ref.shape[-2:]):
        matrix = estimate_alignment(lr, ref, scale).matrix
        stored = {"cache_version": CACHE_VERSION, "ref_size": list(ref.shape[-2:]), "matrix": matrix.tolist()}
        write_json(path, stored, indent=1)
    footprint = Footprint(np.asarray(stored["matrix"], np.float64), tuple(ref.shape[-2:]), size, scale)
    return resample_reference(ref, footprint.matrix, size)[0], footprint


def pair_info(cache: Path, source: Source, scale: int, view, name: str, lr, ref, hr,
               showcase: bool, footprint=None) -> dict:
    """Method-independent facts of one pair (parallax, crop region, GT/Ref crops), cached."""
    path = cache / "pairs" / f"{source.ident}__x{scale}__{safe_name(view)}__{safe_name(name)}.json"
    info = read_json(path)
    # An estimated parallax is only as current as the estimator that made it.
    ok = info is not None and info.get("cache_version") == CACHE_VERSION and info.get("estimator") == ESTIMATOR
    if ok and showcase:
        ok = all((path.parent / info.get(k, "")).is_file() for k in ("gt_crop", "ref_crop", "lr_crop")) \
            and "region" in info
    if ok:
        return info
    parallax, how = source.parallax(name, view, hr, ref)
    info = {"cache_version": CACHE_VERSION, "data": source.label, "view": view, "image": name,
            "scale": scale, "parallax": finite_or_none(parallax) if parallax is not None else None,
            "parallax_source": how, "hr_size": list(hr.shape[-2:]), "estimator": ESTIMATOR}
    if footprint is not None:
        info.update(footprint.to_json())
    if showcase:
        region = crop_region(hr, within=footprint.mask() if footprint is not None else None)
        info["region"] = list(region)
        for key, image in (("gt_crop", hr), ("ref_crop", ref)):
            file = path.with_suffix(f".{key[:-5]}.png")
            _save_crop(file, image, region)
            info[key] = file.name
        # The LR crop, nearest-neighbour enlarged, shows what the methods started from.
        y, x, side = region
        lr_near = F.interpolate(lr[None], scale_factor=scale, mode="nearest")[0]
        file = path.with_suffix(".lr.png")
        _save_crop(file, lr_near, region)
        info["lr_crop"] = file.name
    write_json(path, info, indent=1, allow_nan=False)
    return info
