"""``prepare`` pipelines: discover light fields, split them, decode in parallel, write the stores.

How a run goes (the same for every kind of data):

1. Build the list of *tasks* (one per light field, in a fixed order) and the split (train/test).
2. Record the run's arguments and task list in ``OUT/.refsr-prepare.partial/manifest.json``. A rerun with
   the same arguments continues where the last one stopped; different arguments are refused while the
   partial folder holds a finished light field, and replace it when it holds none (a run that failed on
   its arguments, e.g. a crop larger than the views, must not block the corrected command). A run that
   fails before finishing any light field removes its partial folder.
3. Decode/render the tasks in parallel (joblib); each worker writes its light field as a compressed part
   file ``OUT/.refsr-prepare.partial/NNNNNN.h5`` (atomically, so a killed run leaves none half-written).
   Finished parts are skipped on a rerun. A worker exits as soon as the prepare process is gone, so a
   killed prepare leaves nothing computing.
4. Assemble ``OUT/train.h5`` and ``OUT/test.h5`` from the parts in task order (verbatim chunk copies under a
   temporary name, renamed when complete), then delete the partial folder.

Adding a kind of data means writing a function that builds tasks and calling :func:`run_tasks`.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
from joblib import Parallel, delayed

from refsr_cli import __version__, console
from refsr_cli.data import store
from refsr_cli.prepare import lightfield
from refsr_cli.errors import RefsrError
from refsr_cli.data.files import folder_lock, read_json, remove_temporaries, write_json
from refsr_cli.workers import exit_with

PARTIAL_DIR = ".refsr-prepare.partial"
DEFAULT_CROP = (320, 512)

# Papers' splits, used when the whole dataset is present (recognised by its light-field count).
PAPER_SPLITS = {
    "flower": {"total": 3343, "test": 100},   # Srinivasan et al. 2017 / CrossNet: 3243 train, 100 test
    "lfvideo": {"total": 1350, "test": 270},  # Wang et al. 2017 / CrossNet: 1080 train, 270 test
}

Progress = Callable[[int, int], None]
STORE_FILES = ("train.h5", "test.h5")


@contextmanager
def claimed_output(out: Path) -> Iterator[None]:
    """Hold the output folder ``out`` (created) for one prepare: a second prepare into it fails at once
    instead of writing the same stores, and the temporaries of the stores that a prepare killed while
    writing them left (no other prepare can be writing them now) are removed."""
    out.mkdir(parents=True, exist_ok=True)
    with folder_lock(out, busy="another refsr prepare is writing this folder; wait for it to end or use "
                                "another --out"):
        remove_temporaries(out, STORE_FILES)
        yield


@dataclass
class Task:
    """One light field to produce. ``kind`` selects the producer in :data:`PRODUCERS`."""

    index: int                 # position in the run; parts and stores follow this order
    name: str
    split: str                 # "train" or "test"
    kind: str
    params: dict = field(default_factory=dict)

    def where(self) -> str:
        return str(self.params.get("path", self.name))


# ------------------------------------------------------------------------------------------ producers

def _produce_lightfield(task: Task, crop) -> np.ndarray:
    source = lightfield.LightFieldSource(task.name, task.params["layout"], Path(task.params["path"]))
    return lightfield.decode(source, crop)


def _produce_synthetic(task: Task, crop):
    """The views, or ``(views, per-view disparity)`` when the task asks for disparity."""
    from refsr_cli.prepare.synthetic import render_light_field  # imports scikit-image: only when used

    p = task.params
    with_disparity = bool(p.get("disparity"))
    rendered = render_light_field(p["seed"], height=p["height"], width=p["width"], max_disparity=p["max_disparity"],
                                  **p.get("options", {}), **({"return_disparity": "views"} if with_disparity else {}))
    views, disparity = rendered if with_disparity else (rendered, None)
    views = np.asarray(views)
    expected = (lightfield.GRID, lightfield.GRID, p["height"], p["width"], 3)
    if views.dtype != np.uint8 or views.shape != expected:
        raise RefsrError(f"{task.name}: renderer returned {views.dtype} {views.shape}, expected uint8 {expected}")
    return (views, disparity) if with_disparity else views


PRODUCERS: dict[str, Callable[[Task, tuple | None], np.ndarray | tuple]] = {
    "lightfield": _produce_lightfield,
    "synthetic": _produce_synthetic,
}


def _part_path(workdir: Path, index: int) -> Path:
    return workdir / f"{index:06d}.h5"


def _work(task: Task, workdir: str, crop, parent: int) -> tuple[int, str | None]:
    """Produce one light field and write its part file. Returns ``(index, error message or None)``.

    Runs in a joblib worker (that exits with ``parent``, :func:`refsr_cli.workers.exit_with`): errors come back as one-line
    messages (naming the file) rather than exceptions, so the main process decides between failing and
    ``--skip-bad``.
    """
    exit_with(parent)
    try:
        produced = PRODUCERS[task.kind](task, crop)
        views, disparity = produced if isinstance(produced, tuple) else (produced, None)
        store.write_part(_part_path(Path(workdir), task.index), views, task.name, disparity)
    except RefsrError as exc:
        return task.index, str(exc)
    except MemoryError:
        return task.index, f"{task.where()}: out of memory while decoding"
    except Exception as exc:  # corrupt data can fail deep inside a decoder
        return task.index, f"{task.where()}: {type(exc).__name__}: {exc}".splitlines()[0]
    return task.index, None


# ------------------------------------------------------------------------------------------ the run

def _digest(record: dict) -> str:
    return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()


def _resolve_jobs(jobs: int | None) -> int:
    if jobs is None or jobs <= 0:
        return max(1, os.cpu_count() or 1)
    return jobs


def _describe_difference(old: dict, new: dict) -> str:
    keys = [k for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
    return ", ".join(keys) if keys else "task list"


def run_tasks(out: str | os.PathLike, tasks: Sequence[Task], args: dict, attrs: dict, crop,
              jobs: int | None = None, skip_bad: bool = False,
              progress: Progress | None = None) -> dict:
    """Produce ``tasks`` into ``OUT/train.h5`` and ``OUT/test.h5`` (resumable, parallel, atomic).

    Args:
        out: output folder.
        tasks: light fields in their final order; ``task.index`` must be ``0…len-1``.
        args: the arguments that define the result (recorded; a rerun must match them to resume).
        attrs: extra store attributes.
        crop: ``(H, W)`` top-left crop, or None.
        jobs: worker processes (None or ≤ 0: all cores).
        skip_bad: log a bad light field and carry on instead of failing.
        progress: called as ``progress(done, total)`` after each light field is committed.
    Returns:
        dict with ``store_dir``, ``train``, ``test`` (paths), ``train_count``, ``test_count``, ``skipped``
        (names), ``seconds``.
    """
    out = Path(out)
    with claimed_output(out):
        return _run_claimed(out, tasks, args, attrs, crop, jobs, skip_bad, progress)


def _run_claimed(out: Path, tasks: Sequence[Task], args: dict, attrs: dict, crop, jobs: int | None,
                 skip_bad: bool, progress: Progress | None) -> dict:
    """:func:`run_tasks` in the output folder it holds."""
    workdir = out / PARTIAL_DIR
    finals = {"train": out / "train.h5", "test": out / "test.h5"}
    record = {"args": args, "tasks": [[t.name, t.split] for t in tasks], "format_version": store.FORMAT_VERSION}
    digest = _digest(record)
    started = time.perf_counter()

    if not workdir.exists() and all(store.read_digest(p) == digest for p in finals.values()):
        console.notice(f"{out}: train.h5 and test.h5 are already prepared with these arguments")
        return _result(out, finals, None, started)

    workdir.mkdir(exist_ok=True)
    manifest = workdir / "manifest.json"
    finished = sorted(workdir.glob("[0-9]*.h5"))
    old = read_json(manifest)
    if old is None and finished:
        # Parts count only under the manifest of their run (written before any part): these are strays.
        for part in finished:
            part.unlink()
        finished = []
    if old is not None and old.get("digest") != digest:
        if finished:
            raise RefsrError(f"{workdir}: holds {len(finished)} finished light field(s) of an interrupted run "
                             f"with different arguments or input ({_describe_difference(old.get('args', {}), args)}"
                             f" differ); rerun that command to finish it, or delete that folder to start over")
        console.notice(f"{out}: replacing an interrupted run with other arguments that finished no light field")
    elif old is not None:
        console.notice(f"{out}: resuming an interrupted run")
    write_json(manifest, {**record, "digest": digest}, sort_keys=True, indent=1)
    remove_temporaries(workdir)  # left by a worker killed mid-write

    total = len(tasks)
    done = {t.index for t in tasks if _part_path(workdir, t.index).exists()}
    pending = [t for t in tasks if t.index not in done]
    errors: dict[int, str] = {}
    n_jobs = _resolve_jobs(jobs)
    try:
        if pending:
            if done:
                console.notice(f"{len(done)} of {total} light fields already done; {len(pending)} to go")
            parallel = Parallel(n_jobs=min(n_jobs, len(pending)), return_as="generator", batch_size=1)
            results = parallel(delayed(_work)(t, str(workdir), crop, os.getpid()) for t in pending)
            count = len(done)
            with console.progress_bar("prepare", total) as bar:
                bar.advance(len(done))
                try:
                    for index, error in results:
                        count += 1
                        bar.advance()
                        if error is not None:
                            if not skip_bad:
                                raise RefsrError(error)
                            console.warn(f"skipped: {error}")
                            errors[index] = error
                        if progress is not None:
                            progress(count, total)
                finally:
                    close = getattr(results, "close", None)
                    if close is not None:
                        close()  # stop the workers promptly on an error or an interrupt
    except BaseException:
        if not any(workdir.glob("[0-9]*.h5")):      # nothing to resume: nothing to keep
            shutil.rmtree(workdir, ignore_errors=True)
        raise

    # Every light field of a store must have the same size; the first good one (in order) sets it.
    reference = None
    split_parts: dict[str, list[tuple[str, Path]]] = {"train": [], "test": []}
    skipped = [tasks[i].name for i in sorted(errors)]
    for t in tasks:
        if t.index in errors:
            continue
        part = _part_path(workdir, t.index)
        shape = store.part_shape(part)
        if reference is None:
            reference = shape
        elif shape != reference:
            message = (f"{t.where()}: light field is {shape[2]}×{shape[3]}, the others are "
                       f"{reference[2]}×{reference[3]} (use --crop H W)")
            if not skip_bad:
                raise RefsrError(message)
            console.warn(f"skipped: {message}")
            skipped.append(t.name)
            continue
        split_parts[t.split].append((t.name, part))
    for split, parts in split_parts.items():
        if not parts:
            raise RefsrError(f"{out}: no usable light fields left for the {split} split")

    common = {**attrs, "seed": args.get("seed"), "split_rule": args.get("split_rule", ""),
              "train_count": len(split_parts["train"]), "test_count": len(split_parts["test"]),
              "skipped": skipped, "prepare_digest": digest, "refsr_version": __version__,
              "crop": list(crop) if crop else []}
    for split in ("train", "test"):
        store.assemble_store(finals[split], split_parts[split], {**common, "split": split})
    shutil.rmtree(workdir)
    return _result(out, finals, skipped, started)


def _result(out: Path, finals: dict, skipped, started: float) -> dict:
    counts = {split: len(store.open_store(p)) for split, p in finals.items()}
    if skipped is None:
        skipped = store.open_store(finals["train"]).attrs.get("skipped", [])
    return {"store_dir": out, "train": finals["train"], "test": finals["test"],
            "train_count": counts["train"], "test_count": counts["test"], "skipped": list(skipped or []),
            "seconds": time.perf_counter() - started}


# ------------------------------------------------------------------------------------------ splits

def read_split_file(path: str | os.PathLike, names: Sequence[str]) -> tuple[set[str], str]:
    """Test-set names from a split file; returns ``(test names, sha256 of the file)``.

    One light field per line: ``NAME`` or ``test NAME`` puts it in the test split, ``train NAME`` in the
    train split (the default for unlisted ones). ``NAME`` is the light field's name (its path relative to
    SRC without suffix) or, when unambiguous, its last component. Blank lines and ``#`` comments are ignored.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise RefsrError(f"{path}: cannot read split file ({exc.strerror})") from None
    by_name = {n: n for n in names}
    short: dict[str, list[str]] = {}
    for n in names:
        short.setdefault(n.rsplit("/", 1)[-1], []).append(n)
    test: set[str] = set()
    for number, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        split, _, rest = line.partition(" ")
        if split in ("train", "test") and rest.strip():
            name = rest.strip()
        else:
            split, name = "test", line
        full = by_name.get(name)
        if full is None:
            candidates = short.get(name, []) if "/" not in name else []
            if len(candidates) == 1:
                full = candidates[0]
            else:
                what = "is ambiguous" if candidates else "is not among the discovered light fields"
                raise RefsrError(f"{path}:{number}: light field {name!r} {what}")
        if split == "test":
            test.add(full)
        else:
            test.discard(full)
    return test, hashlib.sha256(text.encode()).hexdigest()


def choose_test(n: int, test_count: int, seed: int) -> list[int]:
    """Deterministic random choice of ``test_count`` of ``n`` indices (sorted) for a given seed."""
    rng = np.random.default_rng(seed)
    return sorted(int(i) for i in rng.permutation(n)[:test_count])


# ------------------------------------------------------------------------------------------ kinds

def prepare_light_fields(kind: str, src: str | os.PathLike, out: str | os.PathLike,
                         crop: tuple[int, int] | None = DEFAULT_CROP, test_count: int | None = None,
                         split_file: str | os.PathLike | None = None, seed: int = 0,
                         jobs: int | None = None, skip_bad: bool = False,
                         progress: Progress | None = None) -> dict:
    """Prepare Flower or LFVideo light fields found under ``src`` into ``out/train.h5`` and ``out/test.h5``.

    Split: ``split_file`` if given; else ``test_count`` if given; else the papers' split sizes when the
    whole dataset is present (Flower: 3343 light fields → 100 test; LFVideo: 1350 → 270 test). Test light
    fields are chosen by a seeded permutation (``seed``); both splits keep the sorted name order.
    See :func:`run_tasks` for the return value.
    """
    if kind not in PAPER_SPLITS:
        raise RefsrError(f"unknown light-field dataset {kind!r} (known: {', '.join(PAPER_SPLITS)})")
    src = Path(src)
    sources = lightfield.discover(src)
    n = len(sources)
    if n == 0:
        raise RefsrError(f"{src}: no light fields found (expected lenslet PNGs or sub-aperture folders)")
    names = [s.name for s in sources]
    split_hash = None
    if split_file is not None:
        test_names, split_hash = read_split_file(split_file, names)
        test_idx = [i for i, name in enumerate(names) if name in test_names]
        rule = f"split-file {Path(split_file).name}"
    else:
        if test_count is None:
            paper = PAPER_SPLITS[kind]
            if n != paper["total"]:
                raise RefsrError(f"{src}: found {n} light fields, not the whole {kind} dataset "
                                 f"({paper['total']}); choose the test set with --test-count N or --split-file")
            test_count, rule = paper["test"], "paper"
        else:
            rule = "test-count"
        if not 1 <= test_count < n:
            raise RefsrError(f"{src}: --test-count {test_count} must be between 1 and {n - 1} "
                             f"({n} light fields found)")
        test_idx = choose_test(n, test_count, seed)
    if not test_idx or len(test_idx) == n:
        raise RefsrError(f"{split_file}: the split leaves an empty train or test set")
    test_set = set(test_idx)
    # Train first, then test, each in name order: part indices follow the order of the stores.
    ordered = [i for i in range(n) if i not in test_set] + sorted(test_set)
    tasks = [Task(k, sources[i].name, "test" if i in test_set else "train", "lightfield",
                  {"layout": sources[i].layout, "path": str(sources[i].path)}) for k, i in enumerate(ordered)]
    args = {"kind": kind, "src": str(src.resolve()), "crop": list(crop) if crop else None, "seed": seed,
            "split_rule": rule, "test_count": len(test_idx), "split_file_sha256": split_hash}
    attrs = {"source": kind, "source_path": str(src.resolve()), "synthetic": False,
             "view_selection": "central 8x8 of the source angular grid"}
    return run_tasks(out, tasks, args, attrs, crop, jobs=jobs, skip_bad=skip_bad, progress=progress)


def synthetic_seed(seed: int, split: str, index: int) -> int:
    """The renderer seed of light field ``index`` of ``split``: a hash of (seed, split, index)."""
    state = np.random.SeedSequence([seed, {"train": 0, "test": 1}[split], index]).generate_state(1)
    return int(state[0])


def prepare_synthetic(out: str | os.PathLike, count: int = 64, test_count: int = 8, seed: int = 0,
                      height: int = 320, width: int = 512, max_disparity: float = 20.0,
                      jobs: int | None = None, options: dict | None = None, disparity: bool = False,
                      progress: Progress | None = None) -> dict:
    """Render ``count`` train and ``test_count`` test synthetic light fields into ``out``.

    Light field ``i`` of a split is rendered with seed :func:`synthetic_seed` ``(seed, split, i)``, so
    the train set does not change when ``test_count`` does (and vice versa). ``options`` pass through to
    ``render_light_field``; ``disparity`` also stores every view's ground-truth disparity (``/disparity``,
    for the ``flow`` training loss). See :func:`run_tasks` for the return value.
    """
    if count < 1 or test_count < 1:
        raise RefsrError(f"--count ({count}) and --test-count ({test_count}) must be at least 1")
    if height < 1 or width < 1:
        raise RefsrError(f"--size {height} {width}: sizes must be positive")
    options = dict(options or {})
    params = {"height": height, "width": width, "max_disparity": float(max_disparity), "options": options}
    tasks = []
    for split, n in (("train", count), ("test", test_count)):
        for i in range(n):
            tasks.append(Task(len(tasks), f"synthetic-{split}-{i:05d}", split, "synthetic",
                              {**params, "seed": synthetic_seed(seed, split, i),
                               **({"disparity": True} if disparity else {})}))
    args = {"kind": "synthetic", "seed": seed, "count": count, "test_count": test_count,
            "height": height, "width": width, "max_disparity": float(max_disparity), "options": options,
            "split_rule": "synthetic", **({"disparity": True} if disparity else {})}
    attrs = {"source": "synthetic", "source_path": "", "synthetic": True,
             "synthetic_params": _synthetic_params(params)}
    return run_tasks(out, tasks, args, attrs, None, jobs=jobs, skip_bad=False, progress=progress)


def _synthetic_params(params: dict) -> dict:
    """Our record of the settings plus what the renderer says about them (``synthetic_attributes``)."""
    record = {"height": params["height"], "width": params["width"], "max_disparity": params["max_disparity"],
              **params["options"]}
    from refsr_cli.prepare.synthetic import synthetic_attributes  # imports scikit-image: only when used

    try:
        extra = synthetic_attributes(height=params["height"], width=params["width"],
                                     max_disparity=params["max_disparity"], **params["options"])
    except TypeError as exc:  # an option the renderer does not know
        raise RefsrError(f"prepare synthetic: {exc}") from None
    return {**record, **{str(k): (v if isinstance(v, (int, float, str, bool)) else str(v))
                         for k, v in dict(extra).items()}}
