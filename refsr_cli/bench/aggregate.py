"""Aggregating the benchmark's per-image records into the report: means ± std, speed, crops, environment."""
from __future__ import annotations

import datetime as _dt
import math
import os
import platform
import statistics
from pathlib import Path

import torch

from refsr_cli import __version__
from refsr_cli.metrics import METRICS, REGION_METRICS, mean_of


def _mean_std(values: list) -> tuple[float | None, float | None]:
    """Mean and sample std of the finite values; the std is undefined (``None``) for one image."""
    finite = [v for v in values if v is not None and math.isfinite(float(v))]
    std = statistics.stdev(float(v) for v in finite) if len(finite) > 1 else None
    return mean_of(finite), std


def speedup(method_records: dict, pm_records: dict) -> tuple[float | None, int]:
    """``median(PatchMatch s) / median(method s)`` over the images both ran on."""
    common = sorted(set(method_records) & set(pm_records))
    if not common:
        return None, 0
    mine = statistics.median(method_records[k] for k in common)
    theirs = statistics.median(pm_records[k] for k in common)
    return (theirs / mine if mine > 0 else None), len(common)


def _megapixels(hr_size) -> float | None:
    """``H·W / 10⁶`` of an output ``[H, W]`` (``None`` when the pair's size was not recorded)."""
    return hr_size[0] * hr_size[1] / 1e6 if hr_size else None


def _suite_summary(records, sources, scales, order_methods) -> list[dict]:
    """Per (suite, scale, method): the mean over the suite's cases and each method's gain over the
    baselines on the same cases. A *suite* is a source whose views are separate cases (the real pairs)."""
    summary = []
    for source in sources:
        if source.kind != "real":
            continue
        for scale in scales:
            psnr: dict[str, dict[str, float]] = {}
            for r in records:
                if r["scale"] == scale and r["data"] == source.label and r.get("psnr") is not None:
                    psnr.setdefault(r["method"], {})[str(r["view"])] = float(r["psnr"])
            for method in order_methods:
                mine = psnr.get(method)
                if not mine:
                    continue
                row = {"data": source.label, "scale": scale, "method": method, "cases": len(mine),
                       "psnr": mean_of(mine.values()),
                       "ssim": mean_of(r.get("ssim") for r in records if r["scale"] == scale
                                       and r["data"] == source.label and r["method"] == method)}
                for base in ("patchmatch", "mdsr", "bicubic"):
                    theirs = psnr.get(base, {})
                    common = [case for case in mine if case in theirs]
                    gains = [mine[c] - theirs[c] for c in common]
                    row[f"vs_{base}"] = mean_of(gains) if base != method else None
                    if base == "bicubic" and base != method:
                        row["below_bicubic"] = [c for c in common if mine[c] < theirs[c]]
                summary.append(row)
    return summary


def build_report(records, pair_infos, plans, sources, scales, dev, jobs, counters, command=None) -> dict:
    """Aggregate per-image records into the report dict."""
    parallax = {(i["data"], str(i["view"]), i["image"], i["scale"]): i.get("parallax") for i in pair_infos}
    order_methods = []
    for s in scales:
        for p in plans[s]:
            if p.label not in order_methods:
                order_methods.append(p.label)
    groups: dict[tuple, list[dict]] = {}
    for r in records:
        groups.setdefault((r["scale"], r["data"], str(r["view"]), r["method"]), []).append(r)
    source_order = {s.label: i for i, s in enumerate(sources)}
    view_order = {(s.label, str(v)): i for s in sources for i, v in enumerate(s.views())}

    def sort_key(key):
        scale, data, view, method = key
        return (scale, source_order.get(data, 99), view_order.get((data, view), 99),
                order_methods.index(method) if method in order_methods else 99)

    rows = []
    for key in sorted(groups, key=sort_key):
        scale, data, view, method = key
        group = sorted(groups[key], key=lambda r: r["image"])
        first = group[0]
        row = {"method": method, "variant": first.get("variant"), "kind": first.get("kind"), "scale": scale,
               "data": data, "view": first["view"], "view_label": first.get("view_label", view), "n": len(group)}
        for metric in METRICS:
            mean, std = _mean_std([r.get(metric) for r in group])
            row[metric], row[f"{metric}_std"] = mean, std
        for metric in REGION_METRICS:      # a partial reference (wide/tele): inside / outside its footprint
            if any(r.get(metric) is not None for r in group):
                row[metric], row[f"{metric}_std"] = _mean_std([r.get(metric) for r in group])
        row["seconds"] = statistics.median(r["seconds"] for r in group)
        pvals = [parallax.get((data, view, r["image"], scale)) for r in group]
        pvals = [p for p in pvals if p is not None]
        row["parallax"] = sum(pvals) / len(pvals) if pvals else None
        pm = groups.get((scale, data, view, "patchmatch"))
        if pm is not None and method != "patchmatch":
            ratio, _ = speedup({r["image"]: r["seconds"] for r in group}, {r["image"]: r["seconds"] for r in pm})
            row["speedup_vs_patchmatch"] = ratio
        else:
            row["speedup_vs_patchmatch"] = None
        row["threads"] = first.get("threads")
        row["device"] = first.get("device")
        row["weights"] = first.get("weights")
        row["digest"] = first.get("digest")
        rows.append(row)

    # Speed over all images of a scale: each network against PatchMatch on the same images.
    speed = []
    for s in scales:
        pm = {(r["data"], str(r["view"]), r["image"]): r["seconds"] for r in records
              if r["scale"] == s and r["method"] == "patchmatch"}
        for label in order_methods:
            mine = {(r["data"], str(r["view"]), r["image"]): r["seconds"] for r in records
                    if r["scale"] == s and r["method"] == label}
            if not mine or label == "patchmatch" or not pm:
                continue
            ratio, n = speedup(mine, pm)
            if n:
                common = set(mine) & set(pm)
                speed.append({"method": label, "scale": s, "images": n,
                              "seconds": statistics.median(mine[k] for k in common),
                              "patchmatch_seconds": statistics.median(pm[k] for k in common),
                              "speedup": ratio,
                              "kind": next(r.get("kind") for r in records if r["method"] == label)})

    # Side-by-side crops: the first image of each (scale, data, view) group.
    showcase = []
    for info in pair_infos:
        if "region" not in info:
            continue
        tiles = [{"label": "LR (nearest)", "file": f"cache/pairs/{info['lr_crop']}"},
                 {"label": "GT", "file": f"cache/pairs/{info['gt_crop']}"}]
        warped = None
        for label in order_methods:
            match = [r for r in records if r["method"] == label and r["scale"] == info["scale"]
                     and r["data"] == info["data"] and str(r["view"]) == str(info["view"])
                     and r["image"] == info["image"] and r.get("crop")]
            if not match:
                continue
            r = match[0]
            tiles.append({"label": label, "file": f"cache/{r['crop']}", "psnr": r.get("psnr")})
            if r.get("warped_crop") and (warped is None or (warped[0] == "patchmatch" and r.get("kind") == "network")):
                warped = (label, f"cache/{r['warped_crop']}")
        if warped is not None:
            tiles.append({"label": f"warped Ref ({warped[0]})", "file": warped[1]})
        tiles.append({"label": "Ref (same region)", "file": f"cache/pairs/{info['ref_crop']}"})
        showcase.append({"scale": info["scale"], "data": info["data"], "view": info["view"],
                         "view_label": info.get("view_label", str(info["view"])), "image": info["image"],
                         "region": info["region"], "parallax": info.get("parallax"), "tiles": tiles})

    how = sorted({i.get("parallax_source") for i in pair_infos if i.get("parallax_source")})
    # Output size per image, so that times can be compared per megapixel across data of different sizes.
    pixels = {(i["data"], str(i["view"]), i["image"], i["scale"]): i.get("hr_size") for i in pair_infos}
    images = [{**{k: r.get(k) for k in ("method", "scale", "data", "view", "image", "psnr", "ssim", "ifc",
                                        "seconds", "threads")},
               "megapixels": _megapixels(pixels.get((r["data"], str(r["view"]), r["image"], r["scale"])))}
              for r in records]
    return {
        "refsr_report_version": 1,
        "results": rows,
        "speed": speed,
        "suites": _suite_summary(records, sources, scales, order_methods),
        "showcase": showcase,
        "images": images,
        "settings": {
            "scales": scales, "methods": order_methods,
            "data": [s.describe() for s in sources],
            "metrics": "PSNR/SSIM/IFC on RGB in [0,1] (IFC on gray 0-255), whole image, no border crop; "
                       "SR clamped to [0,1]; std = sample standard deviation over the images",
            "seconds": "median wall time per image of the method call (inputs in memory, metrics excluded)",
            "parallax": "mean displacement magnitude in HR pixels between the LR view and the reference; "
                        + "; ".join(how),
            "jobs": jobs,
        },
        "environment": environment(dev, jobs, command),
        "cache": {"computed": counters.computed, "reused": counters.reused,
                  "computed_by_method": dict(counters.computed_by_method)},
    }


def environment(dev, jobs: int, command: str | None) -> dict:
    import numpy

    env = {"refsr": __version__, "python": platform.python_version(), "torch": torch.__version__,
           "numpy": numpy.__version__, "platform": platform.platform(), "machine": platform.machine(),
           "processor": _cpu_name(), "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
           "device": str(dev), "jobs": jobs,
           "date": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
           "command": command or "refsr bench (called from Python)"}
    if dev.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(dev)
    return env


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"
