"""The ``infer`` pipeline as a plain function: pairs in, ``OUT/NAME_sr.png`` (+ metrics) out.

:func:`infer_pairs` runs one :class:`~refsr_cli.inference.methods.Method` over a list of
:class:`~refsr_cli.data.pairs.Pair` and returns one :class:`PairResult` per pair processed. It never raises
for one bad pair: the pair's result carries the one-line problem, and unless ``keep_going`` the loop
stops there (the caller turns that into exit status 1). Outputs are written atomically and an existing
``NAME_sr.png`` is skipped unless ``overwrite``, so rerunning an interrupted command resumes it; the
SR image is written *last*, after the intermediates, so its presence means the pair is complete.
"""
from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import torch

from refsr_cli import console
from refsr_cli.errors import RefsrError
from refsr_cli.metrics import finite_or_none, mean_of_rows
from refsr_cli.data.files import atomic_write, write_json
from refsr_cli.data.image_io import array_to_tensor, encode_png, read_image, write_image
from refsr_cli.inference.methods import Method
from refsr_cli.data.pairs import Pair
from refsr_cli.inference.tiling import DEFAULT_OVERLAP, DEFAULT_TILE, tiled_inference

MIN_LR_SIDE = 8
INTERMEDIATES = ("flow", "warped", "depth")
METRICS_FILE = "metrics.json"


@dataclass
class PairResult:
    """What happened to one pair. ``status``: ``"done"``, ``"skipped"`` (output existed) or ``"failed"``."""

    name: str
    status: str
    output: Path | None = None
    seconds: float = 0.0
    metrics: dict | None = None
    error: str | None = None
    notes: list[str] = field(default_factory=list)
    geometry: dict | None = None      # the pair's geometry as estimated for the method (ops.geometry)

    @property
    def ok(self) -> bool:
        return self.status != "failed"

    def to_json(self) -> dict:
        record = {"name": self.name, "status": self.status,
                  "output": str(self.output) if self.output else None, "seconds": round(self.seconds, 3)}
        if self.metrics:
            record.update({k: finite_or_none(v) for k, v in self.metrics.items()})
        if self.error:
            record["error"] = self.error
        if self.geometry:
            record["geometry"] = self.geometry
        return record


def check_output_dir(out_dir: Path) -> None:
    """Create ``out_dir`` and prove it writable before any work, so a bad ``--out`` fails in one line."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".refsr-probe.", dir=out_dir)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise RefsrError(f"{out_dir}: output directory is not writable ({exc.strerror or exc})") from None


def output_path(out_dir: Path, name: str) -> Path:
    return out_dir / f"{name}_sr.png"


def quantize(image: torch.Tensor, bits: int, band: int = 256) -> np.ndarray:
    """``1×3×H×W`` float → ``H×W×3`` uint8/uint16, converted in bands of rows so a 4000×6000 output
    does not need several float copies at once. Same rounding as :func:`image_io.tensor_to_array`."""
    x = image[0] if image.dim() == 4 else image
    _, H, W = x.shape
    peak = 65535.0 if bits == 16 else 255.0
    out = np.empty((H, W, 3), dtype=np.uint16 if bits == 16 else np.uint8)
    for y0 in range(0, H, band):
        chunk = x[:, y0:y0 + band].float().clamp(0, 1).mul_(peak).round_()
        out[y0:y0 + band] = chunk.permute(1, 2, 0).numpy().astype(out.dtype)
    return out


def _save_npy(path: Path, array: np.ndarray) -> None:
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as handle:  # np.save on a path would append ".npy" to the temp name
            np.save(handle, array)
    atomic_write(path, write)


def _save_intermediates(out_dir: Path, name: str, aux: dict, wanted: Iterable[str], bits: int) -> list[str]:
    """Write the requested intermediates; returns notes for those the method does not produce."""
    from refsr_cli.ops.flowviz import flow_to_color

    notes = []
    for key in wanted:
        value = aux.get(key)
        if value is None:
            notes.append(f"the method produces no {key}; --save-{key} skipped")
            continue
        if key == "flow":
            flow = value[0].float()
            write_image(out_dir / f"{name}_flow.png", flow_to_color(flow))
            _save_npy(out_dir / f"{name}_flow.npy", flow.numpy().astype(np.float32))
        elif key == "warped":
            write_image(out_dir / f"{name}_warped.png", quantize(value, bits), bits)
        elif key == "depth":
            depth = value[0, 0].float().numpy()
            lo, hi = float(np.nanmin(depth)), float(np.nanmax(depth))
            scaled = (depth - lo) / (hi - lo) if hi > lo else np.zeros_like(depth)
            gray = np.round(scaled * 65535).astype(np.uint16)
            atomic_write(out_dir / f"{name}_depth.png", lambda tmp, g=gray: tmp.write_bytes(encode_png(g[:, :, None])))
            _save_npy(out_dir / f"{name}_depth.npy", depth.astype(np.float32))
    return notes


def _load_pair_inputs(pair: Pair, method: Method, prealign: bool, detector: str):
    """Read and validate LR, Ref and HR; returns ``(lr 1×3×h×w, ref or None, hr or None, bits, notes)``."""
    s = method.scale
    lr, bits = read_image(pair.lr)
    h, w = lr.shape[-2:]
    if min(h, w) < MIN_LR_SIDE:
        raise RefsrError(f"LR image {pair.lr.name} is {w}×{h} px; at least {MIN_LR_SIDE} px per side needed")
    notes = []
    hr = None
    if pair.hr is not None:
        hr, _ = read_image(pair.hr)
        if tuple(hr.shape[-2:]) != (s * h, s * w):
            raise RefsrError(f"ground truth {pair.hr.name} is {hr.shape[-1]}×{hr.shape[-2]}, expected "
                             f"{s * w}×{s * h} ({s}× the LR)")
    ref = None
    if method.needs_reference:
        ref, _ = read_image(pair.ref)
        if prealign:
            from refsr_cli.ops.prealign import coverage, prealign as align

            ref_size = tuple(ref.shape[-2:])
            ref, alignment = align(lr, ref, s, detector)
            covered = coverage(alignment, (s * h, s * w), ref_size)
            notes.append(f"prealigned reference: {alignment.describe()}, covers {covered:.0%} of the view")
        elif tuple(ref.shape[-2:]) != (s * h, s * w):
            raise RefsrError(f"reference {pair.ref.name} is {ref.shape[-1]}×{ref.shape[-2]}, expected "
                             f"{s * w}×{s * h} ({s}× the LR {w}×{h}); pass --prealign to align a reference "
                             "with a different field of view")
        ref = ref.unsqueeze(0) if ref.dim() == 3 else ref
    return lr.unsqueeze(0), ref, hr, bits, notes


def run_pair(pair: Pair, out_dir: Path, method: Method, *, tile: int = DEFAULT_TILE,
             overlap: int = DEFAULT_OVERLAP, batch: int | None = None, prealign: bool = False,
             detector: str = "sift", overwrite: bool = False, save: Iterable[str] = (),
             metrics_y: bool = False, metrics_crop: int = 0,
             progress: Callable[[int, int], None] | None = None) -> PairResult:
    """Process one pair; raises :class:`RefsrError` for its problems (see :func:`infer_pairs`)."""
    from refsr_cli.metrics import evaluate

    start = time.perf_counter()
    if pair.problem:
        raise RefsrError(pair.problem)
    target = output_path(out_dir, pair.name)
    if target.exists() and not overwrite:
        metrics = None
        if pair.hr is not None:  # keep metrics.json complete across resumed runs
            sr, _ = read_image(target)
            hr, _ = read_image(pair.hr)
            if sr.shape != hr.shape:
                raise RefsrError(f"existing output {target.name} does not match {pair.hr.name} in size; "
                                 "rerun with --overwrite")
            metrics = evaluate(sr, hr, y=metrics_y, crop=metrics_crop)
        return PairResult(pair.name, "skipped", target, time.perf_counter() - start, metrics)
    lr, ref, hr, bits, notes = _load_pair_inputs(pair, method, prealign, detector)
    geometry = method.bind_pair(lr, ref)
    if geometry is not None:
        notes.append(f"geometry read from the pair: {geometry.describe()}")
    elif method.estimates_geometry and not method.forward_options:
        notes.append("geometry: too few consistent matches to estimate it; the network's trained defaults apply")
    wanted = [k for k in save if k in INTERMEDIATES]
    sr, aux = tiled_inference(method, lr, ref, method.scale, tile=tile, overlap=overlap, batch=batch,
                              aux_keys=wanted, progress=progress)
    del lr, ref
    notes += _save_intermediates(out_dir, pair.name, aux, wanted, bits)
    del aux
    array = quantize(sr, bits)
    del sr
    write_image(target, array, bits)
    metrics = None
    if hr is not None:
        # Metrics of the file as written (rounded to its bit depth), so `refsr metrics` agrees.
        metrics = evaluate(array_to_tensor(array), hr, y=metrics_y, crop=metrics_crop)
    return PairResult(pair.name, "done", target, time.perf_counter() - start, metrics, notes=notes,
                      geometry=geometry.to_json() if geometry is not None else None)


def infer_pairs(pairs: list[Pair], out_dir: str | os.PathLike, method: Method, *, tile: int = DEFAULT_TILE,
                overlap: int = DEFAULT_OVERLAP, batch: int | None = None, prealign: bool = False,
                detector: str = "sift", overwrite: bool = False, save: Iterable[str] = (),
                keep_going: bool = False, metrics_y: bool = False, metrics_crop: int = 0,
                on_result: Callable[[PairResult], None] | None = None) -> list[PairResult]:
    """Super-resolve every pair into ``out_dir``.

    Args:
        pairs: from :func:`refsr_cli.data.pairs.discover_pairs` (optionally sharded).
        out_dir: created if needed; must be writable (checked first, :class:`RefsrError` otherwise).
        method: from :func:`refsr_cli.inference.methods.load_method` or :meth:`Method.from_model`.
        tile, overlap, batch: tiling (HR pixels; ``tile=0`` = whole image), see :mod:`refsr_cli.inference.tiling`.
        prealign: align references of another field of view (:mod:`refsr_cli.ops.prealign`); without it a
            reference that is not ``scale ×`` the LR fails its pair.
        overwrite: redo pairs whose ``NAME_sr.png`` exists (default: skip them → resume).
        save: intermediates to write: any of ``"flow"``, ``"warped"``, ``"depth"``.
        keep_going: after a failed pair, go on with the others (default: stop at the first failure).
        metrics_y, metrics_crop: metric conventions (Y channel, border crop) when ground truth exists.
        on_result: called with each :class:`PairResult` as soon as the pair finishes.
    Returns:
        One :class:`PairResult` per pair attempted, in order.
    """
    out_dir = Path(out_dir)
    check_output_dir(out_dir)
    results: list[PairResult] = []
    with console.progress_bar(f"infer {method.name} ×{method.scale}", len(pairs)) as bar:
        for pair in pairs:
            bar.info(pair.name)
            start = time.perf_counter()
            try:
                result = run_pair(pair, out_dir, method, tile=tile, overlap=overlap, batch=batch,
                                  prealign=prealign, detector=detector, overwrite=overwrite, save=save,
                                  metrics_y=metrics_y, metrics_crop=metrics_crop,
                                  progress=lambda done, total: bar.info(f"{pair.name} tile {done}/{total}"))
            except RefsrError as exc:
                result = PairResult(pair.name, "failed", None, time.perf_counter() - start, error=str(exc))
            except torch.cuda.OutOfMemoryError:
                result = PairResult(pair.name, "failed", None, time.perf_counter() - start,
                                    error=f"out of GPU memory with --tile {tile}; use a smaller --tile "
                                          "or --batch 1")
            except Exception as exc:  # noqa: BLE001
                # Unexpected (a bug, a decoder quirk), but one pair must not take the run down with a
                # traceback; the type name in the message keeps it debuggable.
                first = (str(exc).splitlines() or [""])[0]
                result = PairResult(pair.name, "failed", None, time.perf_counter() - start,
                                    error=f"{type(exc).__name__}: {first}")
            results.append(result)
            if on_result is not None:
                on_result(result)
            bar.advance()
            if not result.ok and not keep_going:
                break
    scored = [r for r in results if r.metrics]
    if scored:
        update_metrics_file(out_dir / METRICS_FILE, scored, method)
    return results


def update_metrics_file(path: Path, results: list[PairResult], method: Method) -> dict:
    """Merge this run's per-pair metrics into ``metrics.json`` (shards and resumed runs add up).

    The read–merge–write runs under an exclusive lock so that array-job shards finishing at the same
    moment do not drop each other's rows; the write itself is atomic.
    """
    lock_path = path.with_name(".metrics.lock")
    with open(lock_path, "a") as lock:
        try:
            import fcntl
            fcntl.flock(lock, fcntl.LOCK_EX)
        except (ImportError, OSError):  # no flock (Windows, some network filesystems): best effort
            pass
        data = {}
        if path.is_file():
            try:
                data = json.loads(path.read_text())
            except (OSError, ValueError):
                data = {}
        pairs = data.get("pairs") if isinstance(data.get("pairs"), dict) else {}
        for r in results:
            pairs[r.name] = {k: finite_or_none(v) for k, v in r.metrics.items()}
        data = {"method": method.name, "scale": method.scale,
                "weights": str(method.weights) if method.weights else None,
                "pairs": dict(sorted(pairs.items())), "mean": mean_of_rows(pairs.values()),
                "count": len(pairs)}
        write_json(path, data, indent=2)
    return data
