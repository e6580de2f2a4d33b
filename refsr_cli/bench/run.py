"""``refsr bench``: every method × scale × view on a test set, with a cache that survives interruption.

The work is a grid of *units* (:mod:`refsr_cli.bench.cache`) — one method on one test image at one
scale — each evaluated once and cached, so a rerun only computes what is missing.

Baselines run in joblib worker processes (``jobs``; each worker gets ``cpu_count // jobs`` torch
threads so that workers do not oversubscribe the cores), networks in the main process with all
threads. Each row records its ``threads``; ``--jobs 1`` times every method under the same conditions.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import torch

from refsr_cli import console
from refsr_cli.archs import spec
from refsr_cli.bench.aggregate import build_report
from refsr_cli.bench.cache import (CACHE_VERSION, aligned_reference, compute_unit, pair_info, run_unit, store_unit,
                                   valid_cached, warm_up)
from refsr_cli.bench.plan import load_plan_method, plan_methods
from refsr_cli.bench.sources import DEFAULT_VIEWS, PairsSource, Source, StoreSource, builtin_sources, safe_name
from refsr_cli.data.files import folder_lock, remove_temporaries
from refsr_cli.errors import RefsrError
from refsr_cli.inference.pipeline import MIN_LR_SIDE


@dataclass
class _Counters:
    computed: int = 0
    reused: int = 0
    computed_by_method: dict = field(default_factory=dict)

    def count(self, units: list[tuple]) -> None:
        """Count computed units (tuples whose first item is the method's plan)."""
        for unit in units:
            self.computed_by_method[unit[0].label] = self.computed_by_method.get(unit[0].label, 0) + 1
        self.computed += len(units)


def _default_jobs() -> int:
    return max(1, min(4, os.cpu_count() or 1))


def run_bench(data: str | os.PathLike | None = None, pairs: str | os.PathLike | None = None,
              methods: Iterable[str] | None = None, scales: Iterable[int] = (4, 8),
              views: Iterable[int] | None = None, out: str | os.PathLike = "refsr-report",
              weights: dict[str, str | os.PathLike] | None = None, jobs: int | None = None,
              device: str | None = "auto", builtin_count: int | None = None,
              builtin_size: tuple[int, int] | None = None, baseline_options: dict | None = None,
              command: str | None = None, suite: str = "all", skip_bad: bool = False) -> dict:
    """Benchmark ``methods`` on a test set and write ``report.json``, ``report.md``, ``report.html``.

    Args:
        data: an HDF5 store (light field or video) or a ``prepare`` folder (its ``test.h5``); ``pairs``: a
            folder/CSV of LR/Ref/HR pairs. Neither: the built-in sets chosen by ``suite``. Pairs ``infer``
            refuses (an LR under :data:`MIN_LR_SIDE` px) are left out with a warning.
        methods: method names (variants, baselines, ``weights`` labels); ``None``: everything available.
        scales, views: upscaling factors; light-field views ``k`` (LR = view (k,k), Ref = (0,0)) or video
            frame gaps. ``views=None``: 1 and 7, or every gap of a video store.
        out: report folder; ``out/cache`` holds the per-image results that make reruns incremental.
        weights: ``{variant or label: checkpoint}`` (see :func:`plan_methods`).
        jobs: worker processes for the baselines (default ``min(4, cores)``).
        device: networks' device (``auto``, ``cpu``, ``cuda`` …).
        builtin_count, builtin_size: size of the built-in synthetic set (default 8 × 320×512).
        suite: without ``data``/``pairs``, which built-in sets run: ``all`` (the synthetic light fields and
            the real pairs of :mod:`refsr_cli.bench.real_suite`), ``synthetic`` or ``real``.
        skip_bad: leave out store pairs whose data cannot be read (else :class:`UnreadableData`).
    Returns:
        the report dict (as written to ``report.json``).
    Raises:
        RefsrError: when no result could be computed (no pair fits any scale): an empty report is no report.
    """
    from refsr_cli.bench.builtin_data import DEFAULT_COUNT, DEFAULT_SIZE
    from refsr_cli.bench.report import REPORT_FILES
    from refsr_cli.inference.methods import resolve_device

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
        sources: list[Source] = [StoreSource(_test_store(data), views)]
    elif pairs is not None:
        sources = [PairsSource(pairs)]
    else:
        sources = builtin_sources(builtin_count or DEFAULT_COUNT, tuple(builtin_size or DEFAULT_SIZE),
                                  views or DEFAULT_VIEWS, jobs, suite)

    with folder_lock(out, busy="another refsr bench is writing this report folder; wait for it to end or use "
                                "another --out"):
        # What a bench killed mid-write left: temporaries of the report files, and of anything in the cache
        # folders, which only benches write (none other while the lock is held). `--out` may be a folder of
        # the user's: other files' temporaries there are not ours.
        remove_temporaries(out, REPORT_FILES.values())
        for folder in (cache, cache / "pairs"):
            remove_temporaries(folder)
        return _measure(out, cache, plans, sources, scales, dev, jobs, skip_bad, command)


def _measure(out: Path, cache: Path, plans: dict, sources: list[Source], scales: list[int], dev, jobs: int,
             skip_bad: bool, command: str | None) -> dict:
    """:func:`run_bench`'s results, computed or read from ``cache``, and its report in ``out``."""
    from refsr_cli.bench.report import write_reports

    counters = _Counters()
    records: list[dict] = []
    pair_infos: list[dict] = []
    skipped: list[str] = []
    for scale in scales:
        loaded: dict[str, object] = {}            # networks loaded once per scale, only when needed
        for source in sources:
            groups = []
            for view in source.views():
                # Reading a folder of large pairs takes a while: show that something happens.
                with console.progress_bar(f"×{scale} {source.label} {source.view_label(view)}: reading",
                                          None, transient=True):
                    items = _usable(source.pairs(scale, view, skipped if skip_bad else None), source, view, scale)
                if not items:
                    console.warn(f"{source.label} {source.view_label(view)} ×{scale}: no test pairs")
                    continue
                group = _plan_group(plans[scale], scale, source, view, items, cache, dev, counters)
                records += group.records
                pair_infos += group.infos
                groups.append(group)
            # The baselines of all the source's groups in one pool: a group of the real suite holds one
            # pair, and one PatchMatch unit at a time would leave the other cores idle.
            todo_base = [unit for group in groups for unit in group.todo_base]
            if todo_base:
                with console.progress_bar(f"×{scale} {source.label}: baselines", len(todo_base)) as bar:
                    records += _run_baselines(todo_base, jobs, bar)
                counters.count(todo_base)
            for group in groups:
                records += _run_networks(group, dev, jobs, loaded)
                counters.count(group.todo_net)
        loaded.clear()
    if skipped:     # one line per unreadable pair, however many scales met it
        for message in dict.fromkeys(skipped):
            console.warn(f"skipped: {message}")
        console.warn(f"{len(set(skipped))} unreadable test pair(s) skipped (--skip-bad)")
    if not records:
        raise RefsrError(f"no result: no test pair fits ×{', ×'.join(map(str, scales))} (see the warnings above); "
                         f"nothing was written to {out / 'report.json'}")

    report = build_report(records, pair_infos, plans, sources, scales, dev, jobs, counters, command)
    write_reports(report, out)
    return report


def _test_store(data: str | os.PathLike) -> Path:
    """A ``prepare`` output folder means its ``test.h5`` (as ``train --data`` takes its ``train.h5``)."""
    data = Path(data)
    if not data.is_dir():
        return data
    if not (data / "test.h5").is_file():
        raise RefsrError(f"{data}: no test.h5 in this folder (give a store, or a `refsr prepare` output folder)")
    return data / "test.h5"


def _usable(items: list, source: Source, view, scale: int) -> list:
    """The pairs ``infer`` would take: an LR of at least :data:`MIN_LR_SIDE` px a side (a smaller one has too
    little to super-resolve, and its score would only add noise to the means)."""
    small = [name for name, lr, _, _ in items if min(lr.shape[-2:]) < MIN_LR_SIDE]
    if small:
        console.warn(f"{source.label} {source.view_label(view)} ×{scale}: {len(small)} pair(s) with an LR under "
                     f"{MIN_LR_SIDE} px a side left out ({', '.join(small[:5])}{' …' if len(small) > 5 else ''})")
    return [item for item in items if item[0] not in small]


@dataclass
class _Group:
    """One (scale, data, view) group: its pairs' facts, the results already cached, and the units to run."""
    scale: int
    source: Source
    view: object
    infos: list[dict]
    records: list[dict]
    todo_base: list[tuple]
    todo_net: list[tuple]


def _plan_group(plans, scale, source, view, items, cache, dev, counters) -> _Group:
    """Read the cached units of one (scale, data, view) group; list the rest, baselines and networks."""
    view_key = safe_name(view)
    infos = []
    # A reference smaller than the view (wide/tele) is aligned onto it first, as `infer --prealign` does.
    footprints = [None] * len(items)
    for index, (name, lr, ref, hr) in enumerate(items):
        if ref.shape != hr.shape:
            aligned, footprints[index] = aligned_reference(cache, source, scale, view, name, lr, ref)
            items[index] = (name, lr, aligned, hr)
    # Estimating parallax (ops.geometry on full-size pairs) takes seconds per pair the first time; cached after.
    described = console.track(items, f"×{scale} {source.label} {source.view_label(view)}: parallax", transient=True)
    for index, (name, lr, ref, hr) in enumerate(described):
        info = pair_info(cache, source, scale, view, name, lr, ref, hr, showcase=index == 0,
                         footprint=footprints[index])
        info.update(view_label=source.view_label(view))
        infos.append(info)
    todo_base, todo_net, records = [], [], []
    for plan in plans:
        device_tag = dev.type if plan.kind == "network" or dev.type == "cuda" else "cpu"
        for index, (name, lr, ref, hr) in enumerate(items):
            key = f"{safe_name(plan.label)}__{plan.digest}__{device_tag}__x{scale}__{source.ident}__{view_key}__{safe_name(name)}"
            cache_file = cache / f"{key}.json"
            region = tuple(infos[index]["region"]) if index == 0 else None
            cached = valid_cached(cache_file, needs_crop=region is not None)
            if cached is not None:
                records.append(cached)
                counters.reused += 1
                continue
            meta = {"cache_version": CACHE_VERSION, "method": plan.label, "variant": plan.name,
                    "kind": plan.kind, "digest": plan.digest, "weights": str(plan.weights) if plan.weights else None,
                    "scale": scale, "data": source.label, "view": view, "view_label": source.view_label(view),
                    "image": name}
            unit = (plan, scale, lr, ref, hr, meta, str(cache_file), region, footprints[index])
            (todo_base if plan.kind == "baseline" and dev.type != "cuda" else todo_net).append(unit)
    return _Group(scale, source, view, infos, records, todo_base, todo_net)


def _run_networks(group: _Group, dev, jobs: int, loaded: dict) -> list[dict]:
    """The network units of one group, in the main process with all threads, each call timed alone; a
    method's outputs are scored (PSNR, SSIM, IFC: numpy, mostly on one core) after its calls of the group,
    on ``jobs`` threads. Nothing else runs while a call is timed."""
    if not group.todo_net:
        return []
    records, done = [], []
    todo = group.todo_net
    with console.progress_bar(f"×{group.scale} {group.source.label} {group.source.view_label(group.view)}",
                              len(todo)) as bar:
        for index, (plan, scale, lr, ref, hr, meta, cache_file, region, footprint) in enumerate(todo):
            bar.info(plan.label)
            method = loaded.get(plan.label)
            first_use = method is None
            if first_use:
                method = loaded[plan.label] = load_plan_method(plan, scale, dev)
            # The view pair's geometry (Cross-MPI's plane sweep) may change from group to group.
            method.forward_options = spec(plan.name).recipe.geometry_options(
                method.model, group.source.plane_sweep(group.view))
            if first_use:
                warm_up(method, lr, ref)
            done.append((*run_unit(method, lr, ref, footprint), hr, meta, cache_file, region, footprint))
            if index + 1 == len(todo) or todo[index + 1][0].label != plan.label:
                records += _store_units(done, jobs, bar)
                done = []
    return records


def _store_units(done: list[tuple], jobs: int, bar) -> list[dict]:
    """Score and store network units (:func:`refsr_cli.bench.cache.store_unit` arguments) on ``jobs`` threads."""
    with ThreadPoolExecutor(max_workers=max(1, min(jobs, len(done)))) as pool:
        futures = [pool.submit(store_unit, *unit) for unit in done]
        out = []
        for future in futures:
            out.append(future.result())
            bar.advance()
    return out


def _run_baselines(units, jobs: int, bar) -> list[dict]:
    threads = max(1, (os.cpu_count() or 1) // jobs)
    if jobs <= 1 or len(units) == 1:
        # In this process; with jobs > 1 still at the workers' thread count, so that a baseline's
        # times do not depend on how many of its units happened to be cached.
        out, before = [], torch.get_num_threads()
        try:
            for plan, scale, lr, ref, hr, meta, cache_file, region, footprint in units:
                bar.info(plan.label)
                out.append(compute_unit(plan, scale, "cpu", lr, ref, hr, meta, cache_file, region,
                                        threads if jobs > 1 else None, footprint=footprint))
                bar.advance()
        finally:
            torch.set_num_threads(before)
        return out
    from joblib import Parallel, delayed

    bar.info("baselines")
    out = []
    # Finished units land in the cache as they complete (in the workers), so an interruption keeps them.
    results = Parallel(n_jobs=min(jobs, len(units)), return_as="generator_unordered")(
        delayed(compute_unit)(plan, scale, "cpu", lr, ref, hr, meta, cache_file, region, threads, footprint=footprint,
                              parent=os.getpid())
        for plan, scale, lr, ref, hr, meta, cache_file, region, footprint in units)
    for record in results:
        out.append(record)
        bar.advance()
    return out
