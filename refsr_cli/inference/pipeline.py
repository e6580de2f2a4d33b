"""The ``infer`` pipeline as a plain function: pairs in, ``OUT/NAME_sr.png`` (+ metrics) out.

:func:`infer_pairs` runs one :class:`~refsr_cli.inference.methods.Method` over a list of
:class:`~refsr_cli.data.pairs.Pair` and returns one :class:`PairResult` per pair processed. It never raises
for one bad pair: the pair's result carries the one-line problem, and unless ``keep_going`` the loop
stops there (the caller turns that into exit status 1). Outputs are written atomically and an existing
``NAME_sr.png`` is skipped unless ``overwrite``, so rerunning an interrupted command resumes it; the
SR image is written *last*, after the intermediates, so its presence means the pair is complete.

``OUT/settings.json`` records what decides the outputs' pixels (:func:`output_settings`), written before
the first output (:func:`record_settings`); a run under other settings is refused rather than mixed with
them (:func:`check_settings`), and ``metrics.json`` carries the same record, so it never labels outputs
with a method that did not make them.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import torch

from refsr_cli import console
from refsr_cli.errors import RefsrError
from refsr_cli.metrics import finite_or_none, mean_of_rows
from refsr_cli.data.files import (PROBE_PREFIX, atomic_write, check_writable_dir, folder_lock, read_json,
                                  remove_temporaries, write_json)
from refsr_cli.data.image_io import array_to_tensor, encode_png, read_image, write_image
from refsr_cli.inference.footprint import MIN_COVERAGE, Footprint, blends, footprint_inference
from refsr_cli.inference.matched_reference import guided_matching, matching_patch, reference_matching
from refsr_cli.inference.methods import Method
from refsr_cli.data.pairs import Pair
from refsr_cli.inference.tiling import DEFAULT_OVERLAP, DEFAULT_TILE, tiled_inference

MIN_LR_SIDE = 8
INTERMEDIATES = ("flow", "warped", "depth")
PAIR_SUFFIXES = ("_sr.png", "_flow.png", "_flow.npy", "_warped.png", "_footprint.png", "_depth.png", "_depth.npy")
METRICS_FILE = "metrics.json"
SETTINGS_FILE = "settings.json"
# The settings that decide an output's pixels, each with the options that set it (for the messages).
# Tiling (--tile, --overlap, --batch) and --device only change how the work is split and where it runs.
SETTING_OPTIONS = {"method": "--method", "scale": "--scale", "weights_digest": "--weights",
                   "precision": "--half/--bf16", "prealign": "--prealign/--detector",
                   "geometry": "--baseline/--disparity-range/--reference-shift", "back_projection": "--back-projection",
                   "paste_gate": "--paste-gate/--no-paste-gate", "rematch": "--rematch/--no-rematch",
                   "matching_patch": "--matching-patch"}
# What a record written before a setting existed meant by its absence (no rematching then; the patch sides
# unrecorded: a matched-reference network's record from then differs from any sides, and is not reused).
SETTING_BEFORE = {"rematch": [], "matching_patch": None}


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
    check_writable_dir(out_dir, "output directory")


def output_path(out_dir: Path, name: str) -> Path:
    return out_dir / f"{name}_sr.png"


def pair_files(out_dir: Path, name: str) -> list[Path]:
    """Every file a pair may write: its SR image and the intermediates of ``--save-*``."""
    return [out_dir / f"{name}{suffix}" for suffix in PAIR_SUFFIXES]


def output_settings(method: Method, prealign: bool = False, detector: str = "sift") -> dict:
    """What decides the pixels of ``method``'s outputs (the keys of :data:`SETTING_OPTIONS`), plus the
    weights file for the reader; recorded in ``OUT/settings.json`` and ``OUT/metrics.json``."""
    from refsr_cli.archs.checkpoint import model_digest

    precision = {torch.float16: "float16", torch.bfloat16: "bfloat16"}.get(method.autocast_dtype, "float32")
    return {"method": method.name, "scale": method.scale,
            "weights_digest": model_digest(method.model) if method.model is not None else None,
            "precision": precision, "prealign": detector if prealign else None,
            "geometry": _plain({**method.forward_options, **({"reference_shift": list(method.given_shift)}
                                                             if method.given_shift is not None else {})}) or None,
            "back_projection": method.back_projection,
            "paste_gate": method.paste_gate,
            "rematch": list(method.rematch_plan),
            "matching_patch": list(matching_patch(method.model)) if reference_matching(method.model) else None,
            "weights": os.path.abspath(method.weights) if method.weights else None}


def _plain(value):
    """Forward options as JSON values (tensors → lists, rounded so that the record is stable)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in sorted(value.items())}
    if isinstance(value, torch.Tensor):
        value = value.tolist()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return round(value, 6) if isinstance(value, float) else value


def setting_differences(recorded: dict, settings: dict) -> list[str]:
    """The settings in which ``recorded`` differs from ``settings``, as ``--option old (this run: new)``."""
    def shown(record: dict, key: str):
        value = record.get(key, SETTING_BEFORE.get(key))
        if key == "weights_digest":  # name the file; the digest is what is compared
            return f"{record.get('weights')} (digest {value})"
        if key == "rematch":
            return ", ".join(value) or "off"
        if key == "matching_patch":
            return ",".join(map(str, value)) if value else "unrecorded"
        return {"prealign": "off", "geometry": "read from each pair"}.get(key, "none") if value is None else value

    differing = [key for key in SETTING_OPTIONS
                 if recorded.get(key, SETTING_BEFORE.get(key)) != settings.get(key, SETTING_BEFORE.get(key))]
    if "method" in differing:  # other weights go without saying
        differing = [key for key in differing if key != "weights_digest"]
    return [f"{SETTING_OPTIONS[key]} {shown(recorded, key)} (this run: {shown(settings, key)})" for key in differing]


def check_settings(out_dir: Path, settings: dict, names: Iterable[str], overwrite: bool = False) -> None:
    """Before a run of ``settings`` on the pairs ``names``: refuse it if ``out_dir`` is another settings'.

    Every ``NAME_sr.png`` in it must have been made under ``settings.json``'s settings. A run under other
    settings is refused (the message names what differs) unless ``overwrite`` — also when the folder holds
    no output yet but a record, which a run writes just before its first output (it may be writing it now).
    With ``overwrite`` the outputs of the other settings, all of them pairs of this run, are removed and
    the new record written first, so that a kill during the run cannot leave them under the new record;
    outputs of pairs outside the run are never replaced, so ``overwrite`` under other settings is refused
    while there are any. Also clears what a killed run left: the temporaries of ``settings.json`` and
    ``metrics.json`` (only written under the folder's lock, which is held here) and of the files of the
    pairs ``names`` (no other run writes them: runs into one folder share out its pairs), and probes.
    """
    names = set(names)
    with folder_lock(out_dir):
        remove_temporaries(out_dir, {SETTINGS_FILE, METRICS_FILE,
                                     *(file.name for name in names for file in pair_files(out_dir, name))})
        # Writability probes, and the lock file of earlier versions (the lock is now the folder itself).
        for debris in [*out_dir.glob(f"{PROBE_PREFIX}*"), out_dir / ".metrics.lock"]:
            debris.unlink(missing_ok=True)
        recorded = read_json(out_dir / SETTINGS_FILE)
        differences = setting_differences(recorded, settings) if recorded is not None else None
        if differences == []:
            return
        existing = sorted(p for p in out_dir.glob("*_sr.png") if not p.name.startswith("."))
        if not existing and differences is None:
            return  # a new folder (or one whose runs all failed): record_settings claims it at the first output
        made = (f"made with {'; '.join(differences)}" if differences is not None
                else f"with no record of the settings that made them ({SETTINGS_FILE})")
        if not overwrite:
            held = (f"holds {len(existing)} output(s) {made}" if existing
                    else f"was started with {'; '.join(differences)} ({SETTINGS_FILE}; no output yet)")
            raise RefsrError(f"{out_dir}: {held}; use another --out, or --overwrite to replace them")
        outside = [p for p in existing if p.name[:-len("_sr.png")] not in names]
        if outside:
            raise RefsrError(f"{out_dir}: holds {len(outside)} output(s) of pairs outside this run (e.g. "
                             f"{outside[0].name}) {made}; --overwrite would leave them beside this run's "
                             "outputs: use another --out, or remove them")
        for path in existing:
            for file in pair_files(out_dir, path.name[:-len("_sr.png")]):
                file.unlink(missing_ok=True)
        write_json(out_dir / SETTINGS_FILE, settings, indent=2)


def record_settings(out_dir: Path, settings: dict) -> None:
    """Record ``settings`` in ``settings.json`` before a run's first output; refuse when another run has
    recorded others since :func:`check_settings` (two runs of different settings started together)."""
    with folder_lock(out_dir):
        recorded = read_json(out_dir / SETTINGS_FILE)
        if recorded is None:
            write_json(out_dir / SETTINGS_FILE, settings, indent=2)
        elif setting_differences(recorded, settings):
            raise RefsrError(f"{out_dir}: another run has started writing into it with "
                             f"{'; '.join(setting_differences(recorded, settings))}; use another --out")


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
            footprint = aux.get("footprint")
            if footprint is not None:   # where the prealigned reference has content (white), for metrics --mask
                mask = footprint.mask().numpy().astype(np.uint8) * 255
                write_image(out_dir / f"{name}_footprint.png", np.repeat(mask[:, :, None], 3, axis=2))
        elif key == "depth":
            depth = value[0, 0].float().numpy()
            lo, hi = float(np.nanmin(depth)), float(np.nanmax(depth))
            scaled = (depth - lo) / (hi - lo) if hi > lo else np.zeros_like(depth)
            gray = np.round(scaled * 65535).astype(np.uint16)
            atomic_write(out_dir / f"{name}_depth.png", lambda tmp, g=gray: tmp.write_bytes(encode_png(g[:, :, None])))
            _save_npy(out_dir / f"{name}_depth.npy", depth.astype(np.float32))
    return notes


def _load_pair_inputs(pair: Pair, method: Method, prealign: bool, detector: str):
    """Read and validate LR, Ref and HR; returns ``(lr 1×3×h×w, ref or None, hr or None, bits, notes,
    footprint, unusable)``: with ``prealign`` the reference resampled onto the HR grid and its
    :class:`~refsr_cli.inference.footprint.Footprint` there (else ``None``). ``unusable``: why the
    prealigned reference cannot help (no alignment found — another scene? — or a footprint under
    ``MIN_COVERAGE`` of the view), when the method has a single-image network to fall back on; else ``None``."""
    s = method.scale
    lr, bits = read_image(pair.lr)
    h, w = lr.shape[-2:]
    if min(h, w) < MIN_LR_SIDE:
        raise RefsrError(f"LR image {pair.lr.name} is {w}×{h} px; at least {MIN_LR_SIDE} px per side needed")
    notes = []
    hr = footprint = unusable = None
    if pair.hr is not None:
        hr, _ = read_image(pair.hr)
        if tuple(hr.shape[-2:]) != (s * h, s * w):
            raise RefsrError(f"ground truth {pair.hr.name} is {hr.shape[-1]}×{hr.shape[-2]}, expected "
                             f"{s * w}×{s * h} ({s}× the LR)")
    ref = None
    if method.needs_reference:
        ref, _ = read_image(pair.ref)
        if prealign:
            from refsr_cli.ops.prealign import ReferenceNotAligned, prealign as align

            ref_size = tuple(ref.shape[-2:])
            try:
                ref, alignment = align(lr, ref, s, detector)
            except ReferenceNotAligned as exc:
                if method.fallback_method() is None:      # a baseline: nothing to fall back on
                    raise
                reason = str(exc).removeprefix("--prealign: ")
                unusable = f"the reference cannot be aligned with the LR view ({reason})"
                return lr.unsqueeze(0), None, hr, bits, notes, None, unusable
            footprint = Footprint(alignment.matrix, ref_size, (s * h, s * w), s)
            notes.append(f"prealigned reference: {alignment.describe()}; zoom {footprint.zoom:.3f}× the LR, "
                         f"covers {footprint.coverage:.0%} of the view")
            if footprint.coverage < MIN_COVERAGE and method.fallback_method() is not None:
                unusable = f"the reference covers {footprint.coverage:.1%} of the view (under {MIN_COVERAGE:.0%})"
        elif tuple(ref.shape[-2:]) != (s * h, s * w):
            raise RefsrError(f"reference {pair.ref.name} is {ref.shape[-1]}×{ref.shape[-2]}, expected "
                             f"{s * w}×{s * h} ({s}× the LR {w}×{h}); pass --prealign to align a reference "
                             "with a different field of view")
        ref = ref.unsqueeze(0) if ref.dim() == 3 else ref
    return lr.unsqueeze(0), ref, hr, bits, notes, footprint, unusable


def run_pair(pair: Pair, out_dir: Path, method: Method, *, tile: int = DEFAULT_TILE,
             overlap: int = DEFAULT_OVERLAP, batch: int | None = None, prealign: bool = False,
             detector: str = "sift", overwrite: bool = False, save: Iterable[str] = (),
             metrics_y: bool = False, metrics_crop: int = 0,
             progress: Callable[[int, int], None] | None = None,
             before_writing: Callable[[], None] | None = None) -> PairResult:
    """Process one pair; raises :class:`RefsrError` for its problems (see :func:`infer_pairs`).
    ``before_writing`` is called once the pair is computed, before its first file is written."""
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
    lr, ref, hr, bits, notes, footprint, unusable = _load_pair_inputs(pair, method, prealign, detector)
    wanted = [k for k in save if k in INTERMEDIATES]

    def run(m: Method, lr_, ref_):
        return tiled_inference(m, lr_, ref_, m.scale, tile=tile, overlap=overlap, batch=batch,
                               aux_keys=wanted, progress=progress)

    if unusable is not None:
        # A reference that cannot help is left out, as one of another scene is without --prealign.
        single = method.fallback_method()
        method.bind_pair(lr, None)               # no geometry, shift or alignment of an earlier pair
        sr, aux = run(single, lr, None)
        notes.append(f"{unusable}: single-image SR ({single.name}) instead")
    else:
        sr, aux = footprint_inference(method, lr, ref, footprint, run)
    if unusable is None and blends(method, footprint):
        single = method.fallback_method()
        notes.append(f"the reference covers {footprint.coverage:.0%} of the view: reference-based SR inside it, "
                     f"{single.name if single else method.name} outside, blended across the footprint's edge")
    if footprint is not None:
        aux["footprint"] = footprint
    geometry = method.geometry
    if geometry is not None:
        notes.append(f"geometry read from the pair: {geometry.describe()}")
    elif method.reference_unmatched:
        notes.append(f"the reference matches nothing in the LR view (another scene?): single-image SR "
                     f"({method.fallback_method().name}) instead")
    elif method.estimates_geometry and not method.geometry_given and unusable is None:
        notes.append("geometry: too few trustworthy pixels to estimate it; the network's trained defaults apply")
    if method.alignment is not None:
        a = method.alignment
        notes.append(f"reference resampled through an affine map (x' = {a[0, 0]:.4f}x {a[0, 1]:+.4f}y {a[0, 2]:+.1f}, "
                     f"y' = {a[1, 0]:+.4f}x {a[1, 1]:.4f}y {a[1, 2]:+.1f}): the pair is not rectified")
    if method.reference_shift != (0, 0):
        notes.append("reference shifted by ({:+d}, {:+d}) px to centre the parallax".format(*method.reference_shift))
    matching, guided = reference_matching(method.model), guided_matching(method.model)
    sides = matching_patch(method.model)
    if matching and not method.reference_unmatched and unusable is None:
        notes.append(f"reference patch-matched onto the LR's view (block matching + {matching} PatchMatch "
                     f"iteration{'s' if matching != 1 else ''}"
                     + (f", {'the last ' + str(guided) if guided < matching else 'all'} guided by a first paste"
                        if guided else "")
                     + (f"; patches of {', '.join(map(str, sides))} LR px, pastes blended" if len(sides) > 1 else "")
                     + ") before the network"
                     + ("; paste gate on" if method.paste_gate else "")
                     + (f"; then matched again guided by the output: {', '.join(method.rematch_steps)}"
                        if method.rematch_steps else ""))
    del lr, ref
    if before_writing is not None:
        before_writing()
    notes += _save_intermediates(out_dir, pair.name, aux, wanted, bits)
    del aux
    array = quantize(sr, bits)
    del sr
    write_image(target, array, bits)
    metrics = None
    if hr is not None:
        # Metrics of the file as written (rounded to its bit depth), so `refsr metrics` agrees.
        covered = footprint.mask() if footprint is not None and not footprint.full else None
        metrics = evaluate(array_to_tensor(array), hr, y=metrics_y, crop=metrics_crop, covered=covered)
    record = geometry.to_json() if geometry is not None else {}
    if footprint is not None:
        record.update(footprint.to_json())
    if method.reference_shift != (0, 0):
        record["reference_shift"] = list(method.reference_shift)
    if unusable is not None:
        record.update(fallback=method.fallback_method().name, reason=unusable)
    elif method.reference_unmatched:
        record["fallback"] = method.fallback_method().name
    elif matching:
        record["reference_matching"] = matching
        if guided:
            record["guided_matching"] = guided
    if method.alignment is not None:
        record["alignment"] = [[round(float(v), 6) for v in row] for row in method.alignment[:2]]
    return PairResult(pair.name, "done", target, time.perf_counter() - start, metrics, notes=notes,
                      geometry=record or None)


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
    settings = output_settings(method, prealign, detector)
    check_settings(out_dir, settings, [p.name for p in pairs], overwrite)
    recorded = False

    def claim() -> None:  # settings.json at the first output, so that a run that writes nothing leaves none
        nonlocal recorded
        if not recorded:
            record_settings(out_dir, settings)
            recorded = True

    results: list[PairResult] = []
    with console.progress_bar(f"infer {method.name} ×{method.scale}", len(pairs)) as bar:
        for pair in pairs:
            bar.info(pair.name)
            start = time.perf_counter()
            try:
                result = run_pair(pair, out_dir, method, tile=tile, overlap=overlap, batch=batch,
                                  prealign=prealign, detector=detector, overwrite=overwrite, save=save,
                                  metrics_y=metrics_y, metrics_crop=metrics_crop, before_writing=claim,
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
        update_metrics_file(out_dir / METRICS_FILE, scored, settings, metrics_y, metrics_crop)
    return results


def update_metrics_file(path: Path, results: list[PairResult], settings: dict, metrics_y: bool = False,
                        metrics_crop: int = 0) -> dict:
    """Merge this run's per-pair metrics into ``metrics.json`` (shards and resumed runs add up).

    Rows are merged only with rows of the same settings (:func:`output_settings`) and metric conventions;
    rows of others are dropped, with a warning when that loses pairs this run did not measure again. The
    read–merge–write runs under the folder's lock so that array-job shards finishing at the same moment
    do not drop each other's rows; the write itself is atomic.
    """
    conventions = {"y_channel": bool(metrics_y), "crop": int(metrics_crop)}
    with folder_lock(path.parent):
        data = read_json(path) or {}
        pairs = data.get("pairs") if isinstance(data.get("pairs"), dict) else {}
        same = (isinstance(data.get("settings"), dict) and not setting_differences(data["settings"], settings)
                and data.get("conventions") == conventions)
        if not same:
            lost = sorted(set(pairs) - {r.name for r in results})
            if lost:
                console.warn(f"{path}: dropped the rows of {len(lost)} pair(s) (e.g. {lost[0]}) measured under "
                             "other settings or metric conventions; rerun them to measure them again")
            pairs = {}
        for r in results:
            pairs[r.name] = {k: finite_or_none(v) for k, v in r.metrics.items()}
        data = {"method": settings["method"], "scale": settings["scale"], "weights": settings["weights"],
                "settings": settings, "conventions": conventions,
                "pairs": dict(sorted(pairs.items())), "mean": mean_of_rows(pairs.values()),
                "count": len(pairs)}
        write_json(path, data, indent=2)
    return data
