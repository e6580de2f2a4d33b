"""The built-in synthetic test set of ``refsr bench``: nothing to download, the same numbers everywhere.

The real pairs beside it are :mod:`refsr_cli.bench.real_suite`.

A deterministic test store rendered by
  :func:`refsr_cli.prepare.synthetic.render_light_field` with fixed seeds, written once into the cache folder
  (``$REFSR_CACHE``, else ``$XDG_CACHE_HOME/refsr``, else ``~/.cache/refsr``) as
  ``builtin-synthetic-v<V>-g<G>-n<count>-<H>x<W>/test.h5`` and reused afterwards (``V`` = this module's
  layout version, ``G`` = the renderer's ``GENERATOR_VERSION``: a new renderer gets a new cache entry).
  Default: 8 light fields of 320×512 (the papers' evaluation crop), maximum disparity 20 px. Beside the
  store, ``disparity.json`` keeps the renderer's ground-truth mean disparity of each light field, so the
  bench reports true (not estimated) parallax for this set.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from refsr_cli import console
from refsr_cli.errors import RefsrError

LAYOUT_VERSION = 1             # bump when what this module writes changes: old caches are then ignored
SYNTHETIC_SEED = 20240607      # fixed: the built-in set must be identical everywhere
DEFAULT_COUNT = 8
DEFAULT_SIZE = (320, 512)
DEFAULT_MAX_DISPARITY = 20.0   # px per axis between views (0,0) and (7,7), like Flower's largest parallax
DISPARITY_FILE = "disparity.json"


def cache_dir() -> Path:
    """Where refsr keeps generated data: ``$REFSR_CACHE``, ``$XDG_CACHE_HOME/refsr`` or ``~/.cache/refsr``."""
    env = os.environ.get("REFSR_CACHE")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME")
    return (Path(base).expanduser() if base else Path.home() / ".cache") / "refsr"


def builtin_store_path(count: int = DEFAULT_COUNT, size: tuple[int, int] = DEFAULT_SIZE) -> Path:
    from refsr_cli.prepare.synthetic import GENERATOR_VERSION

    height, width = size
    folder = f"builtin-synthetic-v{LAYOUT_VERSION}-g{GENERATOR_VERSION}-n{count}-{height}x{width}"
    return cache_dir() / folder / "test.h5"


def builtin_store(count: int = DEFAULT_COUNT, size: tuple[int, int] = DEFAULT_SIZE, jobs: int = 1) -> Path:
    """The built-in synthetic test store, rendered on first use and reused afterwards.

    The store is assembled atomically from one part file per light field, so an interrupted first use
    leaves no half-written store; finished parts are kept and reused by the next call.
    """
    if count < 1:
        raise RefsrError(f"--builtin-count must be at least 1, not {count}")
    height, width = size
    if height < 64 or width < 64 or height % 8 or width % 8:
        raise RefsrError(f"built-in size {height}×{width}: both sides must be multiples of 8, at least 64")
    path = builtin_store_path(count, size)
    if path.is_file() and (path.parent / DISPARITY_FILE).is_file():
        return path
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RefsrError(f"{path.parent}: cannot create the cache folder ({exc.strerror}); "
                         "set REFSR_CACHE to a writable folder") from None
    from refsr_cli.data.files import folder_lock, remove_temporaries

    def waiting() -> None:
        console.notice(f"{path.parent}: another refsr bench is rendering the built-in set; waiting for it")

    # Benches sharing a cache render the set once: a second one waits for the first and takes its store.
    with folder_lock(path.parent, waiting=waiting):
        if path.is_file() and (path.parent / DISPARITY_FILE).is_file():
            return path
        # What a render killed mid-write left (nobody else writes here while the lock is held).
        for folder in (path.parent, path.parent / "parts"):
            if folder.is_dir():
                remove_temporaries(folder)
        console.notice(f"rendering the built-in synthetic test set ({count} light fields, {height}×{width}) "
                       f"into {path.parent} — first use only")
        _render_store(path, count, height, width, jobs)
    return path


def builtin_disparity(store_path: str | os.PathLike) -> dict[str, float]:
    """``{light-field name: mean disparity (px per axis, views (0,0)→(7,7))}`` of a built-in store, or {}."""
    sidecar = Path(store_path).parent / DISPARITY_FILE
    try:
        return {str(k): float(v) for k, v in json.loads(sidecar.read_text())["mean_disparity"].items()}
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def _render_one(part: Path, index: int, height: int, width: int) -> float:
    """Render light field ``index`` into ``part`` (skipped when present); returns its mean disparity."""
    from refsr_cli.data.files import write_json
    from refsr_cli.data.store import write_part

    meta = part.with_suffix(".json")
    if part.is_file() and meta.is_file():
        return float(json.loads(meta.read_text())["mean_disparity"])
    views, disparity = render_builtin(index, height, width)
    mean = float(np.asarray(disparity, dtype=np.float64).mean())
    write_part(part, np.ascontiguousarray(views, dtype=np.uint8), _name(index))
    write_json(meta, {"mean_disparity": mean})
    return mean


def render_builtin(index: int, height: int = DEFAULT_SIZE[0], width: int = DEFAULT_SIZE[1],
                   every_view: bool = False):
    """Built-in light field ``index`` as ``(views uint8 [8, 8, H, W, 3], disparity float32 [H, W])``,
    the disparity being view (0,0)'s — or every view's, ``[8, 8, H, W]``, with ``every_view`` (see
    :func:`refsr_cli.prepare.synthetic.render_light_field`)."""
    from refsr_cli.prepare.synthetic import render_light_field

    return render_light_field(SYNTHETIC_SEED + index, height, width, _max_disparity(width), grid=8,
                              return_disparity="views" if every_view else True)


def _max_disparity(width: int) -> float:
    """20 px, or less for small test sizes (the renderer allows at most a quarter of the width)."""
    return min(DEFAULT_MAX_DISPARITY, width / 4)


def _name(index: int) -> str:
    return f"builtin-{index:03d}"


def _render_store(path: Path, count: int, height: int, width: int, jobs: int) -> None:
    """Render ``count`` light fields (one part file each, in parallel) and assemble the store."""
    from refsr_cli.data.files import write_json
    from refsr_cli.data.store import assemble_store
    from refsr_cli.prepare.synthetic import synthetic_attributes

    parts_dir = path.parent / "parts"
    parts_dir.mkdir(exist_ok=True)
    parts = [(_name(i), parts_dir / f"{_name(i)}.h5") for i in range(count)]
    jobs = max(1, min(int(jobs or 1), count))
    if jobs > 1:
        from joblib import Parallel, delayed

        with console.progress_bar("render built-in set", count) as bar:
            means = []
            for mean in Parallel(n_jobs=jobs, return_as="generator")(
                    delayed(_render_one)(part, i, height, width) for i, (_, part) in enumerate(parts)):
                means.append(mean)
                bar.advance()
    else:
        means = [_render_one(part, i, height, width)
                 for i, (_, part) in console.track(list(enumerate(parts)), "render built-in set")]
    attrs = {"source": "builtin-synthetic", "source_path": "", "synthetic": True, "split": "test",
             "split_rule": "builtin", "seed": SYNTHETIC_SEED, "train_count": 0, "test_count": count,
             "crop": [height, width],
             "synthetic_params": synthetic_attributes(height=height, width=width,
                                                      max_disparity=_max_disparity(width))}
    assemble_store(path, parts, attrs)
    record = {"mean_disparity": {name: mean for (name, _), mean in zip(parts, means)},
              "unit": "px per axis between views (0,0) and (7,7), mean over the pixels of view (0,0)"}
    write_json(path.parent / DISPARITY_FILE, record, indent=1)
    for _, part in parts:
        part.unlink(missing_ok=True)
        part.with_suffix(".json").unlink(missing_ok=True)
    try:
        parts_dir.rmdir()
    except OSError:
        pass
