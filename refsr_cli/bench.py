"""``refsr bench``: every method × scale × view on a test set, with a cache that survives interruption.

The work is a grid of *units* — one method on one test image at one scale — each evaluated once and
stored as ``OUT/cache/<method>__<digest>__<device>__x<scale>__<data>__<view>__<image>.json`` (written
atomically as soon as the unit is done). ``digest`` is the SHA-256 of the checkpoint file for a network
and of the baseline's source file and options for a baseline, so a changed checkpoint or baseline is
never served stale results; ``data`` identifies the test set (store digest). A rerun therefore only
computes what is missing: an interrupted bench continues, and adding one method computes only it.

Per unit: PSNR, SSIM and IFC (:func:`refsr_cli.metrics.evaluate`: RGB in [0, 1], whole image, no border
crop; SR clamped to [0, 1], not quantised) and the wall time of the method call (inputs already in
memory; padding and the device transfer included, metrics excluded). Per test pair (method-independent,
``OUT/cache/pairs/``): the parallax and, for the first image of each group, a fixed crop region for
the side-by-side comparison.

Parallax is the mean displacement magnitude (HR pixels) between the LR view and the reference:

* built-in synthetic light fields: from the renderer's ground-truth disparity ``d`` of view (0,0):
  view (k,k) is displaced by ``d·k/7`` per axis, i.e. ``√2·d·k/7``;
* ``stereo_motorcycle``: the mean of its ground-truth disparity map over the crop;
* anything else: *estimated* by block matching (9×9 mean absolute difference on luma) between GT and
  Ref — along the baseline (1,1) for light-field views, in 2-D at reduced resolution for video frames
  and folder pairs — averaged over the most distinctive quarter of the pixels.

Baselines run in joblib worker processes (``jobs``; each worker gets ``cpu_count // jobs`` torch
threads so that workers do not oversubscribe the cores), networks in the main process with all
threads. Each row records its ``threads``; ``--jobs 1`` times every method under the same conditions.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import inspect
import json
import math
import os
import platform
import re
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import torch
import torch.nn.functional as F

from refsr_cli import __version__, console
from refsr_cli.errors import RefsrError
from refsr_cli.metrics import finite_or_none
from refsr_cli.image_io import atomic_write, write_image

CACHE_VERSION = 1
DEFAULT_VIEWS = (1, 7)
QUICK = 0.5                     # seconds: calls shorter than this are timed a second time
CROP = 128                      # side (HR pixels) of the side-by-side crops in the HTML page
BASELINE_ORDER = ("bicubic", "patchmatch")
METRICS = ("psnr", "ssim", "ifc")


# ------------------------------------------------------------------------------------------------
# Methods
# ------------------------------------------------------------------------------------------------

@dataclass
class MethodPlan:
    """One method at one scale, as the bench runs it."""

    label: str                  # name in the report (variant, baseline, or a --weights label)
    name: str                   # variant or baseline name
    kind: str                   # "network" | "baseline"
    weights: Path | None = None
    digest: str = ""            # cache key part: checkpoint / baseline-source hash
    options: dict = field(default_factory=dict)


def file_digest(path: str | os.PathLike, length: int = 12) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:length]


def _baseline_digest(name: str, options: dict) -> str:
    """Hash of the baseline's source file and options: editing the baseline invalidates its cache."""
    from refsr_cli.methods import baselines

    fn = baselines()[name]
    h = hashlib.sha256(f"{name}:{json.dumps(options, sort_keys=True, default=str)}".encode())
    try:
        h.update(Path(inspect.getsourcefile(fn)).read_bytes())
    except (TypeError, OSError):
        h.update(__version__.encode())
    return h.hexdigest()[:12]


def _checkpoint_info(path: Path) -> dict:
    from refsr_cli.checkpoint import read_checkpoint

    payload = read_checkpoint(path)
    return {"variant": payload.get("variant"), "scale": int(payload.get("scale") or 0)}


def plan_methods(methods: Iterable[str] | None, weights: dict[str, str | os.PathLike] | None,
                 scales: Iterable[int], baseline_options: dict | None = None) -> dict[int, list[MethodPlan]]:
    """Which method runs at which scale, with which weights.

    ``weights`` maps a label to a checkpoint: a variant name (``crossnet=FILE``: that variant's weights)
    or any other label (``mine=FILE``: an extra method named ``mine``, variant read from the file). A
    checkpoint is used at the scale it was trained for; at other scales a variant falls back to its
    shipped weights. ``methods=None`` means: every variant with weights for the scale (shipped or
    given), every ``weights`` label, and the baselines.
    """
    from refsr_cli.archs import variants
    from refsr_cli.checkpoint import shipped_weights
    from refsr_cli.methods import baselines

    scales = [int(s) for s in scales]
    known_variants = variants()
    known_baselines = [b for b in BASELINE_ORDER if b in baselines()] + \
        [b for b in baselines() if b not in BASELINE_ORDER]
    options = baseline_options or {}
    given: dict[str, dict] = {}
    for label, path in (weights or {}).items():
        path = Path(path)
        info = _checkpoint_info(path)
        if label in known_baselines:
            raise RefsrError(f"--weights {label}=…: {label} is a baseline and has no weights")
        if label in known_variants and info["variant"] != label:
            raise RefsrError(f"{path}: checkpoint holds a {info['variant']} network, not {label}")
        if info["scale"] not in scales:
            raise RefsrError(f"{path}: trained for ×{info['scale']}, which is not among the scales "
                             f"({', '.join(map(str, scales))}); add --scales {info['scale']}")
        given[label] = {"path": path, **info}

    explicit = methods is not None
    if explicit:
        names = list(dict.fromkeys(m.strip() for m in methods if m.strip()))
        unknown = [m for m in names if m not in known_variants and m not in known_baselines and m not in given]
        if unknown:
            raise RefsrError(f"unknown method(s) {', '.join(unknown)} (known: "
                             f"{', '.join(known_baselines + known_variants + [g for g in given if g not in known_variants])})")
    else:
        names = known_baselines + [v for v in known_variants
                                   if v in given or any(shipped_weights(v, s) for s in scales)]
        names += [g for g in given if g not in names]

    plans: dict[int, list[MethodPlan]] = {s: [] for s in scales}
    for name in names:
        if name in known_baselines:
            opts = dict(options.get(name, {}))
            for s in scales:
                plans[s].append(MethodPlan(name, name, "baseline", None, _baseline_digest(name, opts), opts))
            continue
        found = False
        for s in scales:
            if name in given and given[name]["scale"] == s:
                path, variant = given[name]["path"], given[name]["variant"]
            elif name in known_variants and shipped_weights(name, s) is not None:
                path, variant = shipped_weights(name, s), name
            else:
                continue
            found = True
            plans[s].append(MethodPlan(name, variant, "network", Path(path), file_digest(path)))
        if not found:
            if explicit:
                raise RefsrError(f"no weights for {name} at ×{', ×'.join(map(str, scales))}: train them with "
                                 f"`refsr train --variant {name}` and pass --weights {name}=FILE")
            continue
        missing = [s for s in scales if not any(p.label == name for p in plans[s])]
        if missing and explicit:
            console.warn(f"{name}: no weights for ×{', ×'.join(map(str, missing))} — skipped at that scale")
    return plans


def _load_method(plan: MethodPlan, scale: int, device):
    from refsr_cli.methods import load_method

    if plan.kind == "baseline":
        return load_method(plan.name, scale, device=device, **plan.options)
    return load_method(plan.name, scale, weights=plan.weights, device=device)


# ------------------------------------------------------------------------------------------------
# Test data
# ------------------------------------------------------------------------------------------------

def _safe(text: str) -> str:
    """A file-name-safe form of ``text`` (a short hash keeps different names apart)."""
    clean = re.sub(r"[^A-Za-z0-9._-]+", "_", str(text)).strip("._") or "x"
    if clean != str(text):
        clean = f"{clean[:60]}-{hashlib.sha1(str(text).encode()).hexdigest()[:6]}"
    return clean[:80]


class Source:
    """A test set: named views, each a list of ``(name, lr, ref, hr)`` pairs per scale."""

    label: str = ""        # shown in the report's ``data`` column
    ident: str = ""        # cache key part
    kind: str = ""         # "lightfield" | "video" | "stereo" | "pairs"
    path: str | None = None

    def views(self) -> list:
        raise NotImplementedError

    def view_label(self, view) -> str:
        return str(view)

    def pairs(self, scale: int, view) -> list[tuple[str, torch.Tensor, torch.Tensor, torch.Tensor]]:
        raise NotImplementedError

    def parallax(self, name: str, view, hr: torch.Tensor, ref: torch.Tensor) -> tuple[float | None, str]:
        """``(mean parallax in HR px, how it was obtained)``."""
        return estimate_parallax(hr, ref, None), "estimated (2-D block matching)"

    def plane_sweep(self, view) -> dict:
        """Geometry of the view pair for plane-sweep networks (Cross-MPI): ``baseline`` ``(bx, by)`` and
        optionally ``disparity_range`` ``(lo, hi)`` in HR px along it; empty when unknown."""
        return {}

    def describe(self) -> dict:
        return {"label": self.label, "kind": self.kind, "path": self.path, "views": [self.view_label(v)
                                                                                  for v in self.views()]}


def _is_video_store(store) -> bool:
    attrs = getattr(store, "attrs", None) or {}
    return attrs.get("kind") == "video" or attrs.get("format") == "refsr-video-store"


class StoreSource(Source):
    """A light-field store (views (k,k) against Ref (0,0)) or a video store (frame gap k)."""

    def __init__(self, path: str | os.PathLike, views: Iterable[int], label: str | None = None,
                 disparity: dict[str, float] | None = None):
        from refsr_cli.store import open_store

        self.path = str(path)
        store = open_store(path)
        self.kind = "video" if _is_video_store(store) else "lightfield"
        self.grid = store.grid
        self.names = list(store.names)
        if views is None:     # default: the light-field views 1 and 7, or every gap a video store holds
            gaps = store.attrs.get("gaps") if self.kind == "video" else None
            views = [int(g) for g in gaps] if isinstance(gaps, (list, tuple)) and gaps else DEFAULT_VIEWS
        self._views = [int(v) for v in views]
        limit = min(self.grid) - 1
        if self.kind == "lightfield":
            bad = [v for v in self._views if not 1 <= v <= limit]
            if bad:
                raise RefsrError(f"{path}: view(s) {', '.join(map(str, bad))} outside 1…{limit} of its "
                                 f"{self.grid[0]}×{self.grid[1]} angular grid")
        digest = store.attrs.get("prepare_digest")
        stat = Path(path).stat()
        basis = f"{digest}" if digest else f"{stat.st_size}:{stat.st_mtime_ns}"
        # "data/test.h5" → "data/test": prepare writes test.h5 into a named folder, so the folder says more.
        stem = Path(path).stem
        parent = Path(path).resolve().parent.name
        self.label = label or (f"{parent}/{stem}" if stem in ("test", "train", "val") and parent else stem)
        self.ident = f"{_safe(self.label)}-{hashlib.sha1(basis.encode()).hexdigest()[:8]}"
        self.disparity = disparity or {}
        if hasattr(store, "close"):
            store.close()

    def views(self) -> list:
        return list(self._views)

    def view_label(self, view) -> str:
        return f"gap {view}" if self.kind == "video" else f"({view},{view})"

    def pairs(self, scale: int, view):
        try:
            if self.kind == "video":
                from refsr_cli import dataset

                iterator = getattr(dataset, "iter_video_test_pairs", None) or dataset.iter_test_pairs
                return list(iterator(self.path, scale, int(view)))
            from refsr_cli.dataset import iter_test_pairs

            return list(iter_test_pairs(self.path, scale, int(view)))
        except (ValueError, IndexError) as exc:
            raise RefsrError(f"{self.path}: {exc}") from None

    def plane_sweep(self, view) -> dict:
        if self.kind != "lightfield":
            return {}
        k = int(view) / (self.grid[0] - 1)   # LR view (k,k), Ref (0,0): planes in (0,0)→(7,7) disparities
        return {"baseline": (k, k)}

    def parallax(self, name, view, hr, ref):
        if self.kind == "lightfield" and name in self.disparity:
            per_axis = self.disparity[name] * int(view) / (self.grid[0] - 1)
            return math.sqrt(2.0) * per_axis, "ground-truth disparity"
        if self.kind == "lightfield":
            return estimate_parallax(hr, ref, (1.0, 1.0)), "estimated (block matching along (1,1))"
        return estimate_parallax(hr, ref, None), "estimated (2-D block matching)"


class StereoSource(Source):
    """The real ``stereo_motorcycle`` pair (see :mod:`refsr_cli.builtin_data`)."""

    kind = "stereo"
    label = "stereo_motorcycle"
    ident = "stereo_motorcycle-v1"
    path = "skimage.data.stereo_motorcycle"

    def views(self) -> list:
        from refsr_cli.builtin_data import STEREO_LABEL

        return [STEREO_LABEL]

    def pairs(self, scale, view):
        from refsr_cli.builtin_data import stereo_pair

        return [stereo_pair(scale)]

    def parallax(self, name, view, hr, ref):
        from refsr_cli.builtin_data import stereo_parallax

        return stereo_parallax(), "ground-truth disparity"

    def plane_sweep(self, view) -> dict:
        from refsr_cli.builtin_data import stereo_disparity_range

        # LR = right view, Ref = left view: the backward flow is (+d, 0) (x_right = x_left − d).
        return {"baseline": (1.0, 0.0), "disparity_range": stereo_disparity_range()}


class PairsSource(Source):
    """A folder (or CSV) of LR/Ref/HR pairs, as ``refsr infer`` reads them; pairs without HR are skipped."""

    kind = "pairs"

    def __init__(self, path: str | os.PathLike):
        from refsr_cli.pairs import discover_pairs

        self.path = str(path)
        found = discover_pairs(path)
        self.items = [p for p in found if p.problem is None and p.hr is not None]
        skipped = len(found) - len(self.items)
        if skipped:
            console.warn(f"{path}: {skipped} pair(s) without a ground truth (HR) or with problems skipped")
        if not self.items:
            raise RefsrError(f"{path}: no pair has a ground-truth image (NAME_hr.* or hr/NAME.*) to score against")
        self.label = Path(path).name or str(path)
        h = hashlib.sha1()
        for p in self.items:
            for f in (p.lr, p.ref, p.hr):
                st = Path(f).stat()
                h.update(f"{f}:{st.st_size}:{st.st_mtime_ns}".encode())
        self.ident = f"{_safe(self.label)}-{h.hexdigest()[:8]}"
        self._warned: set[int] = set()

    def views(self) -> list:
        return ["pairs"]

    def pairs(self, scale, view):
        from refsr_cli.image_io import read_image

        out, wrong = [], []
        for p in self.items:
            lr, _ = read_image(p.lr)
            ref, _ = read_image(p.ref)
            hr, _ = read_image(p.hr)
            if tuple(hr.shape[-2:]) != (lr.shape[-2] * scale, lr.shape[-1] * scale):
                wrong.append(p.name)
                continue
            if ref.shape != hr.shape:
                raise RefsrError(f"{p.ref}: reference is {ref.shape[-1]}×{ref.shape[-2]}, the ground truth "
                                 f"{hr.shape[-1]}×{hr.shape[-2]}")
            out.append((p.name, lr, ref, hr))
        if wrong and scale not in self._warned:
            self._warned.add(scale)
            console.warn(f"{self.path}: {len(wrong)} pair(s) are not ×{scale} (HR ≠ {scale}·LR) — "
                         f"skipped at ×{scale}")
        return out


def builtin_sources(count: int, size: tuple[int, int], views: Iterable[int], jobs: int) -> list[Source]:
    from refsr_cli.builtin_data import builtin_disparity, builtin_store

    store = builtin_store(count, size, jobs=jobs)
    return [StoreSource(store, views, label="synthetic", disparity=builtin_disparity(store)), StereoSource()]


# ------------------------------------------------------------------------------------------------
# Parallax
# ------------------------------------------------------------------------------------------------

def _luma(x: torch.Tensor) -> torch.Tensor:
    w = torch.tensor([0.299, 0.587, 0.114], dtype=x.dtype).view(3, 1, 1)
    return (x * w).sum(0, keepdim=True)[None]          # 1×1×H×W


def _box_mean(x: torch.Tensor, block: int) -> torch.Tensor:
    """Mean over ``block×block`` windows (same size, windows clipped at the borders) of ``S×H×W``,
    with integral images: four look-ups per pixel whatever the block size."""
    r = block // 2
    s, h, w = x.shape
    c = F.pad(x.cumsum(1).cumsum(2), (1, 0, 1, 0))
    y0 = torch.arange(h).sub(r).clamp(0, h)
    y1 = torch.arange(h).add(r + 1).clamp(0, h)
    x0 = torch.arange(w).sub(r).clamp(0, w)
    x1 = torch.arange(w).add(r + 1).clamp(0, w)
    total = (c[:, y1][:, :, x1] - c[:, y0][:, :, x1] - c[:, y1][:, :, x0] + c[:, y0][:, :, x0])
    area = ((y1 - y0)[:, None] * (x1 - x0)[None, :]).float()
    return total / area


@torch.inference_mode()
def estimate_parallax(hr: torch.Tensor, ref: torch.Tensor, direction: tuple[float, float] | None,
                      max_shift: int = 48, block: int = 15) -> float:
    """Mean displacement magnitude (HR px) that brings ``ref`` onto ``hr``, by block matching.

    Matching runs on luma gradients (robust to gain differences between views), with ``block×block``
    mean absolute differences. ``direction=(bx, by)``: 1-D search of ``ref(p + δ·b)`` for integer
    ``δ ∈ [−max_shift, max_shift]`` with parabolic sub-pixel refinement (a light-field baseline), at
    half resolution above 256 px.
    ``None``: 2-D search at half resolution (quarter above 640 px) within the same radius (video
    frames, folder pairs); its resolution is that pixel step.
    Ties go to the smaller displacement. The mean is taken over the more distinctive quarter of the
    pixels (largest gap between the median and the best cost), away from the borders: textureless
    pixels have no measurable displacement. This is an estimate; see ``docs/bench.md`` for its error.
    """
    g, r = _luma(hr.float().cpu()), _luma(ref.float().cpu())
    factor = 1
    if direction is None:
        factor = 4 if max(g.shape[-2:]) > 640 else 2              # bounds the (2R+1)² shifts' cost
        g, r = F.avg_pool2d(g, factor), F.avg_pool2d(r, factor)
        radius = max(1, max_shift // factor)
        shifts = [(dx, dy) for dy in range(-radius, radius + 1) for dx in range(-radius, radius + 1)]
        block = max(5, block // 2 | 1)
    else:
        factor = 2 if max(g.shape[-2:]) > 256 else 1          # sub-pixel refinement keeps the precision
        if factor > 1:
            g, r = F.avg_pool2d(g, factor), F.avg_pool2d(r, factor)
        radius = max(1, max_shift // factor)
        block = max(5, (block // factor) | 1)
        bx, by = direction
        shifts = [(round(d * bx), round(d * by)) for d in range(-radius, radius + 1)]
    h, w = g.shape[-2:]
    pad = radius
    if h <= 2 * pad + block or w <= 2 * pad + block:
        pad = radius = max(1, min(h, w) // 4)
        shifts = [s for s in shifts if abs(s[0]) <= radius and abs(s[1]) <= radius]

    def gradients(x):
        x = F.pad(x, (1, 1, 1, 1), mode="replicate")[0, 0]
        return torch.stack((x[1:-1, 2:] - x[1:-1, :-2], x[2:, 1:-1] - x[:-2, 1:-1]))

    gg = gradients(g)
    rp = F.pad(gradients(r)[None], (pad, pad, pad, pad), mode="replicate")[0]
    lengths = torch.tensor([math.hypot(dx, dy) for dx, dy in shifts])
    costs = []
    for start in range(0, len(shifts), 64):                     # 64 shifts at a time bounds the memory
        moved = torch.stack([rp[:, pad + dy: pad + dy + h, pad + dx: pad + dx + w]
                             for dx, dy in shifts[start:start + 64]])
        costs.append(_box_mean((gg[None] - moved).abs().sum(1), block))
    cost = torch.cat(costs)                                     # S×H×W
    # A tiny penalty on |shift| settles ties (flat or periodic texture) towards no displacement.
    ranked = cost + 1e-4 * lengths[:, None, None] / max(float(lengths.max()), 1.0) * cost.mean()
    best = ranked.argmin(0)
    lowest = cost.gather(0, best[None])[0]
    distinct = cost.median(0).values - lowest
    if direction is None:
        magnitude = lengths[best] * factor
    else:
        idx = best.clamp(1, len(shifts) - 2)
        c0 = cost.gather(0, (idx - 1)[None])[0]
        c1 = cost.gather(0, idx[None])[0]
        c2 = cost.gather(0, (idx + 1)[None])[0]
        denom = c0 - 2 * c1 + c2
        offset = torch.where(denom > 1e-12, 0.5 * (c0 - c2) / denom.clamp_min(1e-12), torch.zeros_like(c1))
        delta = (idx.float() - radius) + offset.clamp(-0.5, 0.5)
        magnitude = delta.abs() * math.hypot(*direction) * factor
    border = pad + block // 2
    inner = (slice(border, h - border), slice(border, w - border))
    magnitude, distinct = magnitude[inner].flatten(), distinct[inner].flatten()
    if magnitude.numel() == 0:
        return float("nan")
    keep = distinct >= torch.quantile(distinct, 0.75)
    return float(magnitude[keep].mean())


# ------------------------------------------------------------------------------------------------
# Units and the cache
# ------------------------------------------------------------------------------------------------

def crop_region(hr: torch.Tensor, size: int = CROP) -> tuple[int, int, int]:
    """``(y, x, side)`` of the most textured ``size``² window of ``hr`` (depends on the GT only, so it
    is the same for every method and stays put when methods are added)."""
    h, w = hr.shape[-2:]
    side = min(size, h, w)
    gray = _luma(hr.float().cpu())
    gy = (gray[..., 1:, :] - gray[..., :-1, :]).abs()[..., :, :-1]
    gx = (gray[..., :, 1:] - gray[..., :, :-1]).abs()[..., :-1, :]
    energy = F.pad(gx + gy, (0, 1, 0, 1))
    step = max(1, side // 8)
    pooled = F.avg_pool2d(energy, side, stride=step)[0, 0]
    iy, ix = divmod(int(pooled.argmax()), pooled.shape[1])
    return iy * step, ix * step, side


def _write_json(path: Path, data: dict) -> None:
    atomic_write(path, lambda p: p.write_text(json.dumps(data, indent=1, allow_nan=False) + "\n"))


def _read_json(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _save_crop(path: Path, image: torch.Tensor, region) -> None:
    y, x, side = region
    write_image(path, image[..., y: y + side, x: x + side].float().clamp(0, 1).cpu())


def compute_unit(plan: MethodPlan, scale: int, device: str, lr: torch.Tensor, ref: torch.Tensor,
                 hr: torch.Tensor, meta: dict, cache_file: str, region=None, threads: int | None = None,
                 method=None) -> dict:
    """Run one method on one pair, score it, write its cache entry (+ crops) and return the record.

    Runs in the main process (networks) or in a joblib worker (baselines, with ``threads``).
    """
    from refsr_cli.metrics import evaluate

    if threads:
        torch.set_num_threads(int(threads))
    if method is None:
        method = _load_method(plan, scale, device)
    cache_file = Path(cache_file)
    seconds, (sr, aux) = _timed(method, lr, ref)
    if seconds < QUICK:
        # A short call is dominated by one-time costs (resize matrices, allocator): time it again.
        seconds, (sr, aux) = _timed(method, lr, ref)
    sr = sr[0].float().clamp(0, 1).cpu()
    scores = evaluate(sr, hr)
    record = {**meta, **{k: finite_or_none(scores[k]) for k in METRICS}, "seconds": seconds,
              "threads": torch.get_num_threads(), "device": str(method.device)}
    if region is not None:
        crop = cache_file.with_suffix(".sr.png")
        _save_crop(crop, sr, region)
        record["crop"] = crop.name
        warped = aux.get("warped") if isinstance(aux, dict) else None
        if isinstance(warped, torch.Tensor) and warped.dim() == 4 and warped.shape[1] == 3:
            wfile = cache_file.with_suffix(".warped.png")
            _save_crop(wfile, warped[0], region)
            record["warped_crop"] = wfile.name
    _write_json(cache_file, record)
    return record


def plane_sweep_options(method, geometry: dict) -> dict:
    """Forward options of a Cross-MPI method for a view pair's geometry (nothing for other methods)."""
    model = getattr(method, "model", None)
    if getattr(model, "variant", None) != "crossmpi" or not geometry:
        return {}
    options = {"baseline": geometry["baseline"]}
    if "disparity_range" in geometry:
        from refsr_cli.archs.crossmpi import plane_disparities

        lo, hi = geometry["disparity_range"]
        options["disparities"] = plane_disparities(lo, hi, model.config["num_planes"])
    return options


def _timed(method, lr: torch.Tensor, ref: torch.Tensor):
    start = time.perf_counter()
    result = method(lr[None], ref[None])
    if method.device.type == "cuda":
        torch.cuda.synchronize(method.device)
    return time.perf_counter() - start, result


def warm_up(method, lr: torch.Tensor, ref: torch.Tensor) -> None:
    """One untimed call, so that a network's first timed image does not pay for lazy initialisation."""
    method(lr[None], ref[None])
    if method.device.type == "cuda":
        torch.cuda.synchronize(method.device)


def _valid_cached(path: Path, needs_crop: bool) -> dict | None:
    record = _read_json(path)
    if record is None or record.get("cache_version") != CACHE_VERSION or "seconds" not in record:
        return None
    if needs_crop and not (record.get("crop") and (path.parent / record["crop"]).is_file()):
        return None
    return record


# ------------------------------------------------------------------------------------------------
# The run
# ------------------------------------------------------------------------------------------------

@dataclass
class _Counters:
    computed: int = 0
    reused: int = 0
    computed_by_method: dict = field(default_factory=dict)


def _pair_info(cache: Path, source: Source, scale: int, view, name: str, lr, ref, hr,
               showcase: bool) -> dict:
    """Method-independent facts of one pair (parallax, crop region, GT/Ref crops), cached."""
    path = cache / "pairs" / f"{source.ident}__x{scale}__{_safe(view)}__{_safe(name)}.json"
    info = _read_json(path)
    ok = info is not None and info.get("cache_version") == CACHE_VERSION
    if ok and showcase:
        ok = all((path.parent / info.get(k, "")).is_file() for k in ("gt_crop", "ref_crop", "lr_crop")) \
            and "region" in info
    if ok:
        return info
    parallax, how = source.parallax(name, view, hr, ref)
    info = {"cache_version": CACHE_VERSION, "data": source.label, "view": view, "image": name,
            "scale": scale, "parallax": finite_or_none(parallax) if parallax is not None else None,
            "parallax_source": how, "hr_size": list(hr.shape[-2:])}
    if showcase:
        region = crop_region(hr)
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
    _write_json(path, info)
    return info


def _default_jobs() -> int:
    return max(1, min(4, os.cpu_count() or 1))


def run_bench(data: str | os.PathLike | None = None, pairs: str | os.PathLike | None = None,
              methods: Iterable[str] | None = None, scales: Iterable[int] = (4, 8),
              views: Iterable[int] | None = None, out: str | os.PathLike = "refsr-report",
              weights: dict[str, str | os.PathLike] | None = None, jobs: int | None = None,
              device: str | None = "auto", builtin_count: int | None = None,
              builtin_size: tuple[int, int] | None = None, baseline_options: dict | None = None,
              command: str | None = None) -> dict:
    """Benchmark ``methods`` on a test set and write ``report.json``, ``report.md``, ``report.html``.

    Args:
        data: an HDF5 store (light field or video); ``pairs``: a folder/CSV of LR/Ref/HR pairs. Neither:
            the built-in set (synthetic light fields + ``stereo_motorcycle``, :mod:`refsr_cli.builtin_data`).
        methods: method names (variants, baselines, ``weights`` labels); ``None``: everything available.
        scales, views: upscaling factors; light-field views ``k`` (LR = view (k,k), Ref = (0,0)) or video
            frame gaps. ``views=None``: 1 and 7, or every gap of a video store.
        out: report folder; ``out/cache`` holds the per-image results that make reruns incremental.
        weights: ``{variant or label: checkpoint}`` (see :func:`plan_methods`).
        jobs: worker processes for the baselines (default ``min(4, cores)``).
        device: networks' device (``auto``, ``cpu``, ``cuda`` …).
        builtin_count, builtin_size: size of the built-in synthetic set (default 8 × 320×512).
    Returns:
        the report dict (as written to ``report.json``).
    """
    from refsr_cli.builtin_data import DEFAULT_COUNT, DEFAULT_SIZE
    from refsr_cli.methods import resolve_device
    from refsr_cli.report import write_reports

    if data is not None and pairs is not None:
        raise RefsrError("give --data or --pairs, not both")
    scales = sorted({int(s) for s in scales})
    if not scales or any(s < 2 for s in scales):
        raise RefsrError(f"scales must be integers ≥ 2 (got {scales})")
    views = list(dict.fromkeys(int(v) for v in views)) if views is not None else None
    if views is not None and (not views or any(v < 1 for v in views)):
        raise RefsrError(f"views must be integers ≥ 1 (got {views})")
    jobs = _default_jobs() if jobs in (None, 0) else max(1, int(jobs))
    dev = resolve_device(device)
    out = Path(out)
    cache = out / "cache"
    try:
        (cache / "pairs").mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RefsrError(f"{out}: cannot create the report folder ({exc.strerror})") from None

    plans = plan_methods(methods, weights, scales, baseline_options)
    if not any(plans.values()):
        raise RefsrError("no method to benchmark")
    if data is not None:
        sources: list[Source] = [StoreSource(data, views)]
    elif pairs is not None:
        sources = [PairsSource(pairs)]
    else:
        sources = builtin_sources(builtin_count or DEFAULT_COUNT, tuple(builtin_size or DEFAULT_SIZE),
                                  views or DEFAULT_VIEWS, jobs)

    counters = _Counters()
    records: list[dict] = []
    pair_infos: list[dict] = []
    for scale in scales:
        loaded: dict[str, object] = {}            # networks loaded once per scale, only when needed
        for source in sources:
            for view in source.views():
                items = source.pairs(scale, view)
                if not items:
                    console.warn(f"{source.label} {source.view_label(view)} ×{scale}: no test pairs")
                    continue
                group_records, group_pairs = _run_group(
                    plans[scale], scale, source, view, items, cache, dev, jobs, loaded, counters)
                records += group_records
                pair_infos += group_pairs
        loaded.clear()

    report = build_report(records, pair_infos, plans, sources, scales, dev, jobs, counters, command)
    write_reports(report, out)
    return report


def _run_group(plans, scale, source, view, items, cache, dev, jobs, loaded, counters):
    """All units of one (scale, data, view) group: cached ones read, the rest computed."""
    view_key = _safe(view)
    infos = []
    for index, (name, lr, ref, hr) in enumerate(items):
        info = _pair_info(cache, source, scale, view, name, lr, ref, hr, showcase=index == 0)
        info.update(view_label=source.view_label(view))
        infos.append(info)
    todo_base, todo_net, records = [], [], []
    for plan in plans:
        device_tag = dev.type if plan.kind == "network" or dev.type == "cuda" else "cpu"
        for index, (name, lr, ref, hr) in enumerate(items):
            key = f"{_safe(plan.label)}__{plan.digest}__{device_tag}__x{scale}__{source.ident}__{view_key}__{_safe(name)}"
            cache_file = cache / f"{key}.json"
            region = tuple(infos[index]["region"]) if index == 0 else None
            cached = _valid_cached(cache_file, needs_crop=region is not None)
            if cached is not None:
                records.append(cached)
                counters.reused += 1
                continue
            meta = {"cache_version": CACHE_VERSION, "method": plan.label, "variant": plan.name,
                    "kind": plan.kind, "digest": plan.digest, "weights": str(plan.weights) if plan.weights else None,
                    "scale": scale, "data": source.label, "view": view, "view_label": source.view_label(view),
                    "image": name}
            unit = (plan, scale, lr, ref, hr, meta, str(cache_file), region)
            (todo_base if plan.kind == "baseline" and dev.type != "cuda" else todo_net).append(unit)
    total = len(todo_base) + len(todo_net)
    if total == 0:
        return records, infos
    description = f"×{scale} {source.label} {source.view_label(view)}"
    with console.progress_bar(description, total) as bar:
        if todo_base:
            records += _run_baselines(todo_base, jobs, bar)
        for plan, scale_, lr, ref, hr, meta, cache_file, region in todo_net:
            bar.info(plan.label)
            method = loaded.get(plan.label)
            if method is None:
                method = loaded[plan.label] = _load_method(plan, scale_, dev)
                method.forward_options = plane_sweep_options(method, source.plane_sweep(view))
                warm_up(method, lr, ref)
            method.forward_options = plane_sweep_options(method, source.plane_sweep(view))
            records.append(compute_unit(plan, scale_, str(dev), lr, ref, hr, meta, cache_file, region,
                                        method=method))
            bar.advance()
    for unit in todo_base + todo_net:
        label = unit[0].label
        counters.computed_by_method[label] = counters.computed_by_method.get(label, 0) + 1
    counters.computed += total
    return records, infos


def _run_baselines(units, jobs: int, bar) -> list[dict]:
    threads = max(1, (os.cpu_count() or 1) // jobs)
    if jobs <= 1 or len(units) == 1:
        # In this process; with jobs > 1 still at the workers' thread count, so that a baseline's
        # times do not depend on how many of its units happened to be cached.
        out, before = [], torch.get_num_threads()
        try:
            for plan, scale, lr, ref, hr, meta, cache_file, region in units:
                bar.info(plan.label)
                out.append(compute_unit(plan, scale, "cpu", lr, ref, hr, meta, cache_file, region,
                                        threads if jobs > 1 else None))
                bar.advance()
        finally:
            torch.set_num_threads(before)
        return out
    from joblib import Parallel, delayed

    bar.info("baselines")
    out = []
    # Finished units land in the cache as they complete (in the workers), so an interruption keeps them.
    results = Parallel(n_jobs=min(jobs, len(units)), return_as="generator_unordered")(
        delayed(compute_unit)(plan, scale, "cpu", lr, ref, hr, meta, cache_file, region, threads)
        for plan, scale, lr, ref, hr, meta, cache_file, region in units)
    for record in results:
        out.append(record)
        bar.advance()
    return out


# ------------------------------------------------------------------------------------------------
# Aggregation
# ------------------------------------------------------------------------------------------------

def _mean_std(values: list) -> tuple[float | None, float | None]:
    finite = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not finite:
        return None, None
    mean = sum(finite) / len(finite)
    std = statistics.stdev(finite) if len(finite) > 1 else None   # undefined for one image
    return mean, std


def _speedup(method_records: dict, pm_records: dict) -> tuple[float | None, int]:
    """``median(PatchMatch s) / median(method s)`` over the images both ran on."""
    common = sorted(set(method_records) & set(pm_records))
    if not common:
        return None, 0
    mine = statistics.median(method_records[k] for k in common)
    theirs = statistics.median(pm_records[k] for k in common)
    return (theirs / mine if mine > 0 else None), len(common)


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
        row["seconds"] = statistics.median(r["seconds"] for r in group)
        pvals = [parallax.get((data, view, r["image"], scale)) for r in group]
        pvals = [p for p in pvals if p is not None]
        row["parallax"] = sum(pvals) / len(pvals) if pvals else None
        pm = groups.get((scale, data, view, "patchmatch"))
        if pm is not None and method != "patchmatch":
            ratio, _ = _speedup({r["image"]: r["seconds"] for r in group}, {r["image"]: r["seconds"] for r in pm})
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
            ratio, n = _speedup(mine, pm)
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
    images = [{k: r.get(k) for k in ("method", "scale", "data", "view", "image", "psnr", "ssim", "ifc",
                                     "seconds", "threads")} for r in records]
    return {
        "refsr_report_version": 1,
        "results": rows,
        "speed": speed,
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
